/**
 * The daemon's template keeper: finds the template at start, builds it when missing, notices when
 * it turns stale (a check every `checkEveryMs`, and every request's own check) and rebuilds it in
 * the background, then switches the pool over to the new one. No request fails meanwhile: until
 * a fresh template is ready the source is unfit with the reason, so the daemon's factory cold-boots
 * (a rebuild first waits for the clones being made from the old template, whose files it
 * replaces). A failed build is retried with exponential backoff. It is the pool's keeper too:
 * {@link TemplateSupervisor.governedPool} is what the pool governor fills.
 * @module
 */
import type { Settings } from "../config/settings.ts";
import { errorMessage } from "../errors.ts";
import { SourceUnfitError, type VmSource } from "../factory/vm_source.ts";
import { ClonePool } from "../template/clone_pool.ts";
import type { FoundTemplate } from "../template/template_files.ts";
import { TemplateManager } from "../template/template_manager.ts";
import { type TemplateKeeper, TemplateSource } from "../template/template_source.ts";
import type { VmStore } from "../vm/vm_store.ts";
import { type Clock, type ClockTimer, systemClock } from "./clock.ts";
import type { GovernedPool } from "./pool_governor.ts";

/** Where the template stands. */
export type TemplateState = "checking" | "building" | "ready" | "failed";

/** What the supervisor needs of a template manager ({@link TemplateManager} is the real one). */
export type ManagedTemplate = Pick<TemplateManager, "inspect" | "init">;

/** Options of {@link TemplateSupervisor}. */
export interface TemplateSupervisorOptions {
  /** One line per state change and build. */
  log?: (line: string) => void;
  /** Time source (default: the real one). */
  clock?: Clock;
  /** Period of the staleness check (default 10 s). */
  checkEveryMs?: number;
  /** Backoff after a failed build: first delay and ceiling, ms (default 5 s, 5 min). */
  retryMs?: { initial: number; max: number };
  /** Called when a fresh template is ready (the governor refills then). */
  onReady?: () => void;
  /** Called after every build with its duration and whether it made a template. */
  onBuild?: (seconds: number, ok: boolean) => void;
  /** Makes the manager for `settings` (default: a {@link TemplateManager}; tests give fakes). */
  manager?: (settings: Settings, signal: AbortSignal) => ManagedTemplate;
}

/**
 * Keeps a fresh template for the daemon.
 * @example
 * ```ts
 * const supervisor = new TemplateSupervisor(settings, store, { onReady: () => governor.kick() });
 * supervisor.start();
 * const factory = new VmFactory(supervisor.source(), { fallback: () => directSourceFor(settings, store) });
 * await supervisor.close();
 * ```
 */
export class TemplateSupervisor implements TemplateKeeper {
  readonly #opts: Required<Omit<TemplateSupervisorOptions, "onReady" | "onBuild">>;
  readonly #onReady?: () => void;
  readonly #onBuild?: (seconds: number, ok: boolean) => void;
  readonly #pool: ClonePool;
  readonly #abort = new AbortController();
  #settings: Settings;
  #manager: ManagedTemplate;
  #state: TemplateState = "checking";
  #why = "";
  #template?: FoundTemplate;
  #stale = false;
  #firstCheck = Promise.withResolvers<void>();
  #checking?: Promise<void>;
  #building?: Promise<void>;
  #inFlight = 0;
  #idle?: PromiseWithResolvers<void>;
  #failures = 0;
  #retryAt = 0;
  #timer?: ClockTimer;
  #closed = false;

  /** A supervisor of the template of `settings`, clones in `store`; call `start`. */
  constructor(
    settings: Settings,
    readonly store: VmStore,
    options: TemplateSupervisorOptions = {},
  ) {
    this.#opts = {
      log: options.log ?? console.error,
      clock: options.clock ?? systemClock,
      checkEveryMs: options.checkEveryMs ?? 10_000,
      retryMs: options.retryMs ?? { initial: 5000, max: 300_000 },
      manager: options.manager ?? ((s, signal) => daemonManager(s, store, this.#opts.log, signal)),
    };
    this.#onReady = options.onReady;
    this.#onBuild = options.onBuild;
    this.#settings = settings;
    this.#manager = this.#opts.manager(settings, this.#abort.signal);
    this.#pool = new ClonePool(this);
  }

  /** Bytes of serial console each clone keeps. */
  get consoleLogMax(): number {
    return this.#settings.consoleLogMax;
  }

  /** Where the template stands now. */
  get state(): TemplateState {
    return this.#state;
  }

  /** Writes a line to the log. */
  log(line: string): void {
    this.#opts.log(line);
  }

  /** The manager's view; a request that finds the template stale starts the rebuild. */
  async inspect(): Promise<{ template?: FoundTemplate; differences: string[] }> {
    const found = await this.#manager.inspect();
    if (this.#state === "ready" && (!found.template || found.differences.length)) {
      void this.check();
    }
    return found;
  }

  /** A template source asks for a build: it happens in the background; the request cold-boots. */
  init(): Promise<unknown> {
    void this.check();
    return Promise.reject(new SourceUnfitError("template", "no template yet (it is being built)"));
  }

  /** Checks at once, then every `checkEveryMs`, until closed. */
  start(): void {
    void this.check();
    this.#schedule();
  }

  /** New settings (SIGHUP): a template they no longer match is rebuilt. */
  reconfigure(settings: Settings): void {
    this.#settings = settings;
    this.#manager = this.#opts.manager(settings, this.#abort.signal);
    this.#retryAt = 0;
    void this.check();
  }

  /** Checks the template now (unless a check or a build runs) and starts a build if needed. */
  check(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    if (this.#building) return this.#building;
    return this.#checking ??= this.#check().finally(() => {
      this.#checking = undefined;
      this.#firstCheck.resolve();
    });
  }

  async #check(): Promise<void> {
    let found;
    try {
      found = await this.#manager.inspect();
    } catch (err) {
      const why = `the template cannot be checked: ${errorMessage(err)}`;
      if (why !== this.#why) this.log(`template: ${why}; checking again in a while`);
      this.#set("failed", why);
      return;
    }
    const { template, differences } = found;
    this.#template = template;
    this.#stale = template !== undefined && differences.length > 0;
    if (template && differences.length === 0) {
      if (this.#state !== "ready") {
        this.#set("ready", "");
        this.log(`template: ${template.manifest.id} ready`);
        this.#onReady?.();
      }
      return;
    }
    if (this.#opts.clock.now() < this.#retryAt) return; // failed: retried after the backoff
    const why = template ? `the template is stale: ${differences.join("; ")}` : "no template yet";
    this.#building = this.#build(why);
  }

  async #build(why: string): Promise<void> {
    this.log(`template: ${why}; building one in the background (requests cold-boot meanwhile)`);
    this.#set("building", `${why}; it is being built`);
    const started = this.#opts.clock.now();
    const manager = this.#manager;
    let ok = false;
    try {
      await this.#drained(); // clones being made from the old files finish first
      const built = await manager.init({ force: true });
      ({ template: this.#template } = await manager.inspect());
      this.#stale = false;
      ok = true;
      this.#failures = 0;
      const seconds = ((this.#opts.clock.now() - started) / 1000).toFixed(1);
      this.log(
        `template: ${built.manifest.id} ready (built in ${seconds} s); the pool switches to it`,
      );
    } catch (err) {
      if (this.#closed) return;
      this.#failures++;
      const { initial, max } = this.#opts.retryMs;
      const delay = Math.min(initial * 2 ** (this.#failures - 1), max);
      this.#retryAt = this.#opts.clock.now() + delay;
      this.#set("failed", `the template could not be built: ${errorMessage(err)}`);
      this.log(
        `template: build failed (${this.#failures} in a row): ${errorMessage(err)}; retrying in ${
          (delay / 1000).toFixed(0)
        } s`,
      );
    } finally {
      this.#building = undefined;
      this.#onBuild?.((this.#opts.clock.now() - started) / 1000, ok);
    }
    if (ok && !this.#closed) {
      this.#set("ready", "");
      this.#onReady?.();
    }
    if (manager !== this.#manager) void this.check(); // reconfigured meanwhile
  }

  #set(state: TemplateState, why: string): void {
    this.#state = state;
    this.#why = why;
  }

  #schedule(): void {
    this.#timer = this.#opts.clock.after(this.#opts.checkEveryMs, () => {
      this.#schedule();
      void this.check();
    });
  }

  /** Resolves once no clone is being made from the template's files. */
  #drained(): Promise<void> {
    if (this.#inFlight === 0) return Promise.resolve();
    return (this.#idle ??= Promise.withResolvers()).promise;
  }

  /** Runs `fn` (which uses the template's files) unless the template is not ready. */
  async #tracked<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#state !== "ready") throw new SourceUnfitError("template", this.#why);
    this.#inFlight++;
    try {
      return await fn();
    } finally {
      if (--this.#inFlight === 0) {
        this.#idle?.resolve();
        this.#idle = undefined;
      }
    }
  }

  /**
   * The source of clones for the daemon's factory: the pool first, else a clone spawned on
   * request; unfit (the factory cold-boots) until a fresh template is ready.
   */
  source(): VmSource {
    const inner = new TemplateSource(this);
    return {
      kind: "template",
      prepare: async () => {
        await this.#firstCheck.promise;
        if (this.#state !== "ready") throw new SourceUnfitError("template", this.#why);
        const supply = await inner.prepare();
        return {
          shape: supply.shape,
          acquire: (want, timer) => this.#tracked(() => supply.acquire(want, timer)),
        };
      },
      status: () => Promise.resolve(this.status()),
    };
  }

  /** The pool as the governor sees it: clones of the fresh template; none while there is none. */
  governedPool(): GovernedPool {
    return {
      ready: () =>
        this.#state === "ready" && this.#template
          ? this.#pool.entries(this.#template.manifest.id).length
          : undefined,
      make: async () => {
        await this.#tracked(() => this.#pool.add());
      },
      shrink: (count) =>
        this.#template ? this.#pool.shrink(this.#template.manifest.id, count) : Promise.resolve(0),
    };
  }

  /** State, why it is not ready, the template's id and age, failed builds in a row. */
  status(): Record<string, unknown> {
    const manifest = this.#template?.manifest;
    return {
      state: this.#state,
      ...(this.#why ? { reason: this.#why } : {}),
      ...(manifest ? { id: manifest.id, ageSeconds: this.ageSeconds() } : {}),
      failuresInARow: this.#failures,
    };
  }

  /** Seconds since the current template was built; undefined without one. */
  ageSeconds(): number | undefined {
    const created = this.#template ? Date.parse(this.#template.manifest.createdAt) : NaN;
    return Number.isFinite(created) ? Math.max(0, (Date.now() - created) / 1000) : undefined;
  }

  /** True while the template found does not match the configuration (until rebuilt). */
  get stale(): boolean {
    return this.#stale;
  }

  /** Destroys every pooled clone (of any template); returns how many. */
  drainPool(): Promise<number> {
    return this.#pool.drain();
  }

  /**
   * Stops checking, aborts a build in progress and waits for it and for the clones being made;
   * then destroys the pooled clones. Returns how many it destroyed.
   */
  async close(): Promise<number> {
    this.#closed = true;
    this.#firstCheck.resolve();
    this.#timer?.cancel();
    this.#abort.abort();
    await this.#checking?.catch(() => {});
    await this.#building?.catch(() => {});
    await this.#drained();
    return await this.#pool.drain();
  }
}

/**
 * The daemon's template manager: its own pool size is 0, because the governor sizes the pool; a
 * build aborts when the daemon stops.
 */
function daemonManager(
  settings: Settings,
  store: VmStore,
  log: (line: string) => void,
  signal: AbortSignal,
): TemplateManager {
  return new TemplateManager({ ...settings, poolSize: 0 }, store, {
    log,
    hooks: {
      onNotice: log,
      onProgress: (phase, detail) => log(`guest: ${phase}${detail ? ` (${detail})` : ""}`),
      signal,
    },
  });
}
