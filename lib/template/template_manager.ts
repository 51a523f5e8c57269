/**
 * The template's keeper: `init` builds the template (and fills the clone pool), `destroy` removes
 * it, `status` describes it, `refill` tops the pool up. Clones come from {@link TemplateSource}
 * through the one factory ({@link VmFactory}).
 * @module
 */
import type { Settings } from "../config/settings.ts";
import { UsageError } from "../errors.ts";
import { type BootPlan, type BootPlanHooks, resolveBootPlan } from "../factory/boot_plan.ts";
import { ensurePrivateDir, existingPrivateDir } from "../private_dir.ts";
import { withFileLock } from "../vm/file_lock.ts";
import type { VmStore } from "../vm/vm_store.ts";
import { buildTemplate, removeLeftovers, templateInputs } from "./build_template.ts";
import { ClonePool } from "./clone_pool.ts";
import { type TemplateKeeper, TemplateSource } from "./template_source.ts";
import {
  fallbackDir,
  fallbackExists,
  fallbackRoot,
  findTemplate,
  type FoundTemplate,
  templateBytes,
  templateFiles,
} from "./template_files.ts";
import { templateDifferences, type TemplateManifest } from "./template_manifest.ts";

/** The one-line security note printed by `factory init` and shown by the linter. */
export const SHARED_MEMORY_NOTE =
  "note: clones share the template's memory copy-on-write; tenants that do not trust each other " +
  "can detect shared pages (CVE-2015-2877 class side channels). Use VMCache instead for them.";

/** Options of the template manager. */
export interface TemplateManagerOptions {
  /** Warnings and notices (one line each). */
  log?: (line: string) => void;
  /** Progress of long work (guest build, template build). */
  hooks?: BootPlanHooks & { onPhase?: (phase: string) => void; signal?: AbortSignal };
}

/** What `init` did. */
export interface InitResult {
  /** "built", or "exists" when a fresh template was already there. */
  outcome: "built" | "exists";
  /** The template's manifest. */
  manifest: TemplateManifest;
  /** Where the template lives. */
  dir: string;
}

/**
 * Keeps the template of `settings` and its clone pool.
 * @example
 * ```ts
 * const template = new TemplateManager(settings, store);
 * await template.init(); // builds the template unless a fresh one exists; fills the pool
 * const vm = await new VmFactory(template.source()).getVm();
 * await template.refill();
 * ```
 */
export class TemplateManager implements TemplateKeeper {
  readonly #pool: ClonePool;
  #plan?: BootPlan;

  /** A manager for `settings`, keeping VM folders in `store`. */
  constructor(
    readonly settings: Settings,
    readonly store: VmStore,
    readonly options: TemplateManagerOptions = {},
  ) {
    this.#pool = new ClonePool(this);
  }

  /** Bytes of serial console each clone keeps. */
  get consoleLogMax(): number {
    return this.settings.consoleLogMax;
  }

  /** The source of clones of this template (pool first), for a {@link VmFactory}. */
  source(): TemplateSource {
    return new TemplateSource(this);
  }

  /** Writes a warning or notice line. */
  log(line: string): void {
    (this.options.log ?? console.error)(line);
  }

  /** The boot plan of the configuration (resolved once; may build the built-in guest). */
  async plan(): Promise<BootPlan> {
    // resolveBootPlan makes sure the state dir (where the guest build is cached) is private
    return this.#plan ??= await resolveBootPlan(this.settings, this.options.hooks);
  }

  /** The state directory, made sure to be private to this user. */
  #stateDir(): string {
    return ensurePrivateDir(this.settings.stateDir, { what: "state directory" });
  }

  /** The complete template, if any, and what differs between it and the configuration. */
  async inspect(): Promise<{ template?: FoundTemplate; differences: string[] }> {
    const template = findTemplate(
      this.settings.templatePath,
      (dir, reason) => this.log(`warning: ignoring the template in ${dir}: ${reason}`),
    );
    if (!template) return { differences: [] };
    const differences = templateDifferences(template.manifest, templateInputs(await this.plan()));
    return { template, differences };
  }

  /**
   * Builds the template unless a fresh one exists. A stale one is refused unless `force`.
   * Idempotent; never stacks mounts; fills the clone pool. Builds and destroys of one state
   * directory take turns through a lock file, so concurrent callers never interleave.
   */
  init(opts: { force?: boolean } = {}): Promise<InitResult> {
    return this.#locked("template", () => this.#init(opts));
  }

  async #init(opts: { force?: boolean }): Promise<InitResult> {
    const plan = await this.plan();
    const { template, differences } = await this.inspect();
    if (template && differences.length === 0) {
      await this.#pool.drain(template.manifest.id);
      await this.refill();
      return { outcome: "exists", manifest: template.manifest, dir: template.files.dir };
    }
    if (template && !opts.force) {
      throw new UsageError(
        "initialize the template",
        `the template in ${template.files.dir} is stale:\n  - ${
          differences.join("\n  - ")
        }\nrun \`vmfactory factory init --force\` to rebuild it`,
      );
    }
    if (template) await this.#removeFiles(template.files.dir); // first: a resize needs the room
    // room for two generations: running clones keep the old (deleted) memory file allocated
    // until they stop, and a rebuild must not wait for them (a tmpfs size is a cap, not memory)
    const { ensureTmpfs } = await import("./tmpfs_mount.ts");
    const dir = await ensureTmpfs(this.settings.templatePath, 2 * (plan.memoryMiB + 8));
    if (dir.warning) this.log(`warning: ${dir.warning}`);
    await removeLeftovers(dir.path);
    const manifest = await buildTemplate(plan, dir.path, this.options.hooks);
    await this.#pool.drain(manifest.id);
    this.options.hooks?.onPhase?.("start the clone pool");
    await this.refill();
    return { outcome: "built", manifest, dir: dir.path };
  }

  async #removeFiles(dir: string): Promise<void> {
    const files = templateFiles(dir);
    await this.#pool.drain();
    for (const path of [files.manifest, files.state, files.memory]) {
      await Deno.remove(path).catch(() => {});
    }
  }

  /** VMs cloned from the template `id` that still run. */
  async clonesOf(id: string): Promise<number> {
    return (await this.store.list()).filter((e) => e.alive && e.record.templateId === id).length;
  }

  /**
   * Removes the template: stops the clone pool, deletes the files, unmounts the tmpfs.
   * Running clones keep working (their memory mapping stays valid). Idempotent. Touches only
   * folders private to this user and a tmpfs the tool mounted; refuses (before deleting
   * anything) when a folder is unsafe.
   */
  destroy(): Promise<{ removed: boolean; runningClones: number }> {
    // the pool lock too: a background refill must not start clones of a template being removed
    return this.#locked("template", () => this.#locked("pool", () => this.#destroy()));
  }

  async #destroy(): Promise<{ removed: boolean; runningClones: number }> {
    const path = this.settings.templatePath;
    const template = findTemplate(path);
    const own = existingPrivateDir(path, { what: "template folder" });
    const fallback = fallbackExists(path);
    await this.#pool.drain();
    const runningClones = template ? await this.clonesOf(template.manifest.id) : 0;
    for (const dir of [own ? path : undefined, fallback ? fallbackDir(path) : undefined]) {
      if (!dir) continue;
      await removeLeftovers(dir);
      await this.#removeFiles(dir);
    }
    if (own) {
      const { unmountAll } = await import("./tmpfs_mount.ts");
      await unmountAll(path);
    }
    if (fallback) {
      await Deno.remove(fallbackDir(path), { recursive: true });
      await Deno.remove(fallbackRoot()).catch(() => {}); // kept while other fallbacks live in it
    }
    return { removed: template !== undefined, runningClones };
  }

  /**
   * Prepares pool clones until the configured pool size is reached (after a clone). Refills of
   * several processes take turns through a lock file, so the pool never overshoots.
   */
  async refill(): Promise<number> {
    return await this.#locked("pool", async () => {
      const template = findTemplate(this.settings.templatePath);
      if (!template) return 0;
      return await this.#pool.topUp(template.manifest.id, this.settings.poolSize);
    });
  }

  /** Runs `fn` holding the state directory's `<name>.lock` (template builds, pool refills). */
  async #locked<T>(name: string, fn: () => Promise<T>): Promise<T> {
    return await withFileLock(`${this.#stateDir()}/${name}.lock`, fn);
  }

  /** Template presence, size, age, freshness (and why not), clones and pool. */
  async status(): Promise<Record<string, unknown>> {
    const { template, differences } = await this.inspect();
    if (!template) {
      return {
        kind: "template",
        enabled: this.settings.enableTemplate,
        path: this.settings.templatePath,
        present: false,
        pool: this.#pool.entries().length,
      };
    }
    return {
      kind: "template",
      enabled: this.settings.enableTemplate,
      path: template.files.dir,
      present: true,
      id: template.manifest.id,
      sizeBytes: templateBytes(template.files),
      stateBytes: template.manifest.stateBytes,
      createdAt: template.manifest.createdAt,
      ageSeconds: Math.round((Date.now() - Date.parse(template.manifest.createdAt)) / 1000),
      fresh: differences.length === 0,
      staleReasons: differences,
      shape: template.manifest.shape,
      accel: template.manifest.accel,
      clones: await this.clonesOf(template.manifest.id),
      pool: this.#pool.entries(template.manifest.id).length,
    };
  }
}
