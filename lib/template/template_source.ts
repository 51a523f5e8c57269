/**
 * The template source: a clone of the current template, claimed from the warm pool when one is
 * ready, else spawned on request (start, load the state, resume, wait for the agent). A missing
 * template is built first; a stale one makes the source unfit (the factory then says why).
 * @module
 */
import { VmfactoryError } from "../errors.ts";
import { AgentClient } from "../guest/agent_client.ts";
import { SourceUnfitError } from "../factory/vm_source.ts";
import type { SourceSupply, SourceVm, VmSource } from "../factory/vm_source.ts";
import type { PhaseTimer } from "../vm/vm_record.ts";
import type { PendingVm, VmStore } from "../vm/vm_store.ts";
import type { FoundTemplate } from "./template_files.ts";

/** What the source needs of whoever keeps the template (the template manager). */
export interface TemplateKeeper {
  /** Where clones' folders live. */
  readonly store: VmStore;
  /** The complete template, if any, and what differs between it and the configuration. */
  inspect(): Promise<{ template?: FoundTemplate; differences: string[] }>;
  /** Builds the template unless a fresh one exists. */
  init(): Promise<unknown>;
  /** One-line notices. */
  log(line: string): void;
  /** Bytes of serial console each clone keeps (`[vmfactory] console_log_max`). */
  readonly consoleLogMax?: number;
}

/** Clones of the keeper's template; `pool: false` never claims (the pool's own refills). */
export class TemplateSource implements VmSource {
  /** Always "template". */
  readonly kind = "template";

  /** A source of clones of `keeper`'s template. */
  constructor(readonly keeper: TemplateKeeper, readonly options: { pool?: boolean } = {}) {}

  /** Finds (or first builds) the template; unfit when it is stale. */
  async prepare(): Promise<SourceSupply> {
    let { template, differences } = await this.keeper.inspect();
    if (!template) {
      this.keeper.log("no template yet: building it first (vmfactory factory init)");
      await this.keeper.init();
      ({ template, differences } = await this.keeper.inspect());
      if (!template) throw new VmfactoryError("clone a VM", "the template vanished after init");
    }
    if (differences.length > 0) {
      throw new SourceUnfitError(this.kind, `the template is stale: ${differences.join("; ")}`);
    }
    const found = template;
    return {
      shape: found.manifest.shape,
      acquire: (_want, timer) => this.#acquire(found, timer),
    };
  }

  async #acquire(template: FoundTemplate, timer: PhaseTimer): Promise<SourceVm> {
    const vm = (pending: PendingVm, agent: AgentClient): SourceVm => ({
      pending,
      agent,
      size: { cpus: template.manifest.shape.cpus, memoryMiB: template.manifest.shape.memoryMiB },
      origin: "template",
      accel: template.manifest.accel,
      templateId: template.manifest.id,
      sharesBoot: true,
    });
    const { store } = this.keeper;
    if (this.options.pool !== false) {
      for (let claimed; (claimed = await store.claim(template.manifest.id));) {
        try {
          const agent = await AgentClient.connect(claimed.paths.agentSocket, { timeoutMs: 10_000 });
          timer.mark("claimMs");
          return vm(claimed, agent);
        } catch {
          await claimed.dispose(); // its agent is gone: drained, try the next
        }
      }
    }
    // only a spawn needs these: a pool claim does not load them
    const [{ planFromManifest }, { resumeClone, startCloneProcess }] = await Promise.all([
      import("./build_template.ts"),
      import("./clone_vm.ts"),
    ]);
    const pending = await store.allocate();
    try {
      const process = pending.process = await startCloneProcess(
        planFromManifest(template.manifest, this.keeper.consoleLogMax),
        template,
        pending.paths,
      );
      timer.mark("spawnMs");
      return vm(pending, await resumeClone(template, pending.paths, process, timer));
    } catch (err) {
      await pending.dispose();
      throw err;
    }
  }
}
