/**
 * The one VM factory, after Kata's virtcontainers/factory (a base plus one factory): every VM,
 * whatever its source, passes through the same steps, once and in this order:
 *
 * 1. prepare the source and check the request against its shape; plan the workload (check the
 *    network asked for, convert the image once into the cache);
 * 2. when it cannot serve, fall back to the direct source (cold boot) saying why, or fail
 *    (`strict`);
 * 3. acquire a running VM in a folder the store reserved;
 * 4. hot-add the vCPUs and memory the request needs beyond what the VM has;
 * 5. attach the workload's image disk and NIC (QMP hot-plug);
 * 6. personalize it (clock, RNG seed, hostname, boot_id for clones), online what was added, mount
 *    the image and address the NIC, in one round of agent calls;
 * 7. commit its record (owned, or pooled for the clone pool).
 *
 * A failure at any step stops the VM and removes its folder (the store's {@link PendingVm}).
 * A new step of a VM's life is added here, once.
 * @module
 */
import { VmfactoryError } from "../errors.ts";
import type { AgentClient } from "../guest/agent_client.ts";
import { personalize } from "../vm/personalize.ts";
import { PhaseTimer, recordFor, type VmOrigin, type VmRecord } from "../vm/vm_record.ts";
import { attachWorkload, planWorkload, wantsWorkload, type WorkloadOptions } from "./workload.ts";
import {
  type Size,
  type SourceSupply,
  SourceUnfitError,
  type VmRequest,
  type VmSource,
} from "./vm_source.ts";

/** A factory's view of itself, for `factory status`. */
export interface FactoryStatus {
  /** The source's kind: "direct", "template" or "vmcache". */
  kind: string;
  /** Free-form details (JSON-serialisable). */
  [key: string]: unknown;
}

/** Options of {@link VmFactory}. */
export interface VmFactoryOptions {
  /** Fail instead of cold-booting when the source cannot serve a request. */
  strict?: boolean;
  /** Appended to the reason when `strict` refuses (default " (--strict)"). */
  strictHint?: string;
  /** The cold-boot source to fall back to (made on first need: it may build the guest). */
  fallback?: () => Promise<VmSource>;
  /** Warnings (one line each). */
  log?: (line: string) => void;
  /** Where images are cached and how networks are planned; without it, workloads are refused. */
  workload?: WorkloadOptions;
}

/** How {@link VmFactory.make} ends a VM's creation. */
export interface MakeOptions {
  /**
   * The folder state to commit: "owned" (the caller's VM, default), "pooled" (the clone pool) or
   * "cached" (a VMCache, which this process then owns).
   */
  as?: "owned" | "pooled" | "cached";
  /** The record's `source` (default: the source's origin). */
  origin?: VmOrigin;
  /** Run one command in the guest before committing (warms the code paths of a pooled clone). */
  warm?: boolean;
}

/**
 * Makes VMs from one source; `getVm` may be called concurrently, any number of times.
 * @example
 * ```ts
 * const template = new TemplateManager(settings, store);
 * const factory = new VmFactory(template.source(), {
 *   fallback: () => directSourceFor(settings, store), // cold-boot what the template cannot serve
 * });
 * const vm = await factory.getVm({ cpus: 2, hostname: "worker-1" });
 * ```
 */
export class VmFactory {
  /** A factory over `source`. */
  constructor(readonly source: VmSource, readonly options: VmFactoryOptions = {}) {}

  /** The source's kind. */
  get kind(): string {
    return this.source.kind;
  }

  /**
   * Returns a running VM whose agent answers, personalized and recorded; it belongs to the caller.
   * Throws {@link SourceUnfitError} (exit 2) when the source cannot serve and `strict` is set.
   */
  getVm(request: VmRequest = {}): Promise<VmRecord> {
    return this.make(request);
  }

  /**
   * {@link VmFactory.getVm} with the end state chosen: the clone pool and the VMCache make their
   * VMs here too, so every VM passes through the same steps.
   */
  async make(request: VmRequest, options: MakeOptions = {}): Promise<VmRecord> {
    const timer = new PhaseTimer();
    const [prepared, plan] = await Promise.all([this.#prepare(request), this.#plan(request)]);
    let { supply, source } = prepared;
    let want = wanted(request, supply);
    if (!want.ok) ({ supply, source, want } = await this.#fallBack(want.why, request));
    timer.mark("checkMs");
    let vm;
    try {
      vm = await supply.acquire(want.size, timer);
    } catch (err) {
      if (!(err instanceof SourceUnfitError) || source !== this.source) throw err;
      ({ supply, source, want } = await this.#fallBack(err.reason, request));
      vm = await supply.acquire(want.size, timer);
    }
    if (!vm) throw new VmfactoryError("get a VM", `the ${source.kind} source has none ready`);
    try {
      const { pending, agent } = vm;
      const size = want.size.cpus > vm.size.cpus || want.size.memoryMiB > vm.size.memoryMiB
        ? await this.#grow(vm.pending.paths.qmpSocket, vm.size, want.size, agent)
        : undefined;
      const attached = plan && (await attachWorkload(plan, pending.paths, this.options.workload!));
      if (attached) timer.mark("attachMs");
      const hostname = request.hostname ?? `vm-${pending.paths.id}`;
      await Promise.all([
        personalize(agent, { hostname, newBootId: vm.sharesBoot }),
        size?.online(),
        attached?.inGuest(agent),
      ]);
      if (options.warm) await agent.exec(["true"]);
      timer.mark(size ? "personalizeAndHotplugMs" : "personalizeMs");
      const reached = size?.reached ?? vm.size;
      const record = recordFor(pending.paths, {
        pid: pending.process!.pid,
        startTime: pending.process!.startTime,
        source: options.origin ?? vm.origin,
        cpus: reached.cpus,
        memoryMiB: reached.memoryMiB,
        hostname,
        accel: vm.accel,
        ...(vm.templateId ? { templateId: vm.templateId } : {}),
        ...(attached?.image ? { image: attached.image } : {}),
        ...(attached?.network ? { network: attached.network } : {}),
        timings: timer.done(),
      });
      await pending.commit(options.as ?? "owned", record, { templateId: vm.templateId });
      return record;
    } finally {
      vm.agent.close();
      await vm.pending.dispose(); // after a commit: nothing to do
    }
  }

  /** The request's workload, checked and its image converted (undefined when it has none). */
  async #plan(request: VmRequest) {
    if (!wantsWorkload(request)) return undefined;
    if (!this.options.workload) {
      throw new VmfactoryError(
        "run a workload",
        `the ${this.kind} factory takes no images or networks`,
      );
    }
    return await planWorkload(request, this.options.workload);
  }

  async #prepare(request: VmRequest): Promise<{ supply: SourceSupply; source: VmSource }> {
    try {
      return { supply: await this.source.prepare(request), source: this.source };
    } catch (err) {
      if (!(err instanceof SourceUnfitError)) throw err;
      return await this.#fallBack(err.reason, request);
    }
  }

  /** The fallback source's supply for `request`, after saying why (or failing when strict). */
  async #fallBack(
    why: string,
    request: VmRequest,
  ): Promise<{ supply: SourceSupply; source: VmSource; want: Wanted & { ok: true } }> {
    if (this.options.strict || !this.options.fallback) {
      const hint = this.options.strict ? this.options.strictHint ?? " (--strict)" : "";
      throw new SourceUnfitError(this.source.kind, `${why}${hint}`);
    }
    (this.options.log ?? console.error)(`warning: ${why}; cold-booting instead`);
    const source = await this.options.fallback();
    const supply = await source.prepare(request);
    const want = wanted(request, supply);
    if (!want.ok) throw new SourceUnfitError(source.kind, want.why);
    return { supply, source, want };
  }

  async #grow(qmpSocket: string, have: Size, want: Size, agent: AgentClient) {
    const { hotAdd, onlineHotAdded } = await import("./hot_add.ts"); // only a VM that grows
    const before = (await agent.info()).memTotal;
    const reached = await hotAdd(qmpSocket, have, want);
    return {
      reached,
      online: () => onlineHotAdded(agent, reached.cpus, before, reached.memoryMiB - have.memoryMiB),
    };
  }

  /** The source's status (its kind at least). */
  async status(): Promise<FactoryStatus> {
    return { kind: this.kind, ...(await this.source.status?.()) };
  }

  /** Releases what the source holds (never VMs handed out). */
  close(): Promise<void> {
    this.source.close?.();
    return Promise.resolve();
  }
}

type Wanted = { ok: true; size: Size } | { ok: false; why: string; size: Size };

/** The size to give a request from `supply`: at least the source's, within its ceilings. */
function wanted(request: VmRequest, { shape }: SourceSupply): Wanted {
  const size = {
    cpus: Math.max(request.cpus ?? shape.cpus, shape.cpus),
    memoryMiB: Math.max(request.memoryMiB ?? shape.memoryMiB, shape.memoryMiB),
  };
  if (size.cpus > shape.maxCpus) {
    return {
      ok: false,
      size,
      why: `${size.cpus} vCPUs asked, its VMs can hot-add up to ${shape.maxCpus}`,
    };
  }
  if (size.memoryMiB > shape.maxMemoryMiB) {
    return {
      ok: false,
      size,
      why: `${size.memoryMiB} MiB asked, its VMs can grow to ${shape.maxMemoryMiB}`,
    };
  }
  return { ok: true, size };
}
