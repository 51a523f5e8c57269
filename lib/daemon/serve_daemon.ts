/**
 * `vmfactory serve`: the daemon that owns the factory the configuration enables and serves the
 * HTTP API on it. With templating it keeps the template fresh ({@link TemplateSupervisor}: built
 * when missing, rebuilt in the background when stale, requests cold-booted meanwhile) and the
 * clone pool sized to demand ({@link PoolGovernor} within `pool_min`–`pool_max`); otherwise the
 * factory is `factoryFor`'s (VMCache fetches or cold boots). It counts requests, creates,
 * refills and builds for `/metrics` ({@link DaemonMetrics}). {@link runDaemon} drives it:
 * {@link ServeDaemon.recover}, {@link ServeDaemon.start}, then drain or reload.
 * @module
 */
import type { Settings } from "../config/settings.ts";
import { UsageError } from "../errors.ts";
import { directSourceFor } from "../factory/direct_source.ts";
import { factoryFor } from "../factory/factory_for.ts";
import type { VmFactoryOptions } from "../factory/vm_factory.ts";
import type { VmSource } from "../factory/vm_source.ts";
import { selfIdentity } from "../process_identity.ts";
import {
  type ApiBackend,
  type ApiServer,
  type ApiServerOptions,
  startApiServer,
} from "../server/api_server.ts";
import { VmApiBackend } from "../server/vm_backend.ts";
import type { FolderState, VmStore } from "../vm/vm_store.ts";
import type { DaemonLog } from "./daemon_log.ts";
import { DaemonMetrics } from "./daemon_metrics.ts";
import { ObservedVmFactory } from "./observed_factory.ts";
import { type GovernedPool, PoolGovernor } from "./pool_governor.ts";
import { recoverStateDir } from "./recovery.ts";
import type { DaemonService } from "./run_daemon.ts";
import { TemplateSupervisor } from "./template_supervisor.ts";

/** Where and how the API is served (the daemon adds metrics, observation and the log). */
export type ServeApiOptions = Omit<ApiServerOptions, "metrics" | "observe" | "log">;

/** Options of {@link ServeDaemon}. */
export interface ServeDaemonOptions {
  /** Socket, TCP address and token. */
  api: ServeApiOptions;
  /** The log. */
  log: DaemonLog;
  /** Reads and checks the configuration again (SIGHUP); throws when it is bad. */
  loadSettings: () => Promise<Settings>;
  /** vmfactory's version, for `vmfactory_info`. */
  version?: string;
  /** Clones made at once for the pool (default: cores − 1, at least 1). */
  concurrency?: number;
}

/** The kind of factory `settings` enable. */
function kindOf(settings: Settings): "template" | "vmcache" | "direct" {
  return settings.enableTemplate ? "template" : settings.vmCacheNumber > 0 ? "vmcache" : "direct";
}

/** What a reload cannot change, or undefined. */
function needsRestart(now: Settings, next: Settings): string | undefined {
  if (kindOf(now) !== kindOf(next)) {
    return `the factory changes from ${kindOf(now)} to ${kindOf(next)}`;
  }
  if (now.stateDir !== next.stateDir) return "state_dir changes";
  if (now.templatePath !== next.templatePath) return "template_path changes";
  return undefined;
}

/**
 * The serve daemon of one state directory.
 * @example
 * ```ts
 * const daemon = new ServeDaemon(settings, store, {
 *   api: { socketPath: `${settings.stateDir}/vmfactory.sock` },
 *   log: new DaemonLog("json"),
 *   loadSettings: async () => settingsFrom(await loadConfig({})),
 * });
 * await runDaemon({
 *   role: "serve",
 *   what: "the daemon",
 *   stateDir: settings.stateDir,
 *   log: daemon.log,
 *   recover: () => daemon.recover(),
 *   start: () => daemon.start(),
 * });
 * ```
 */
export class ServeDaemon {
  /** The log. */
  readonly log: DaemonLog;
  readonly #store: VmStore;
  readonly #opts: ServeDaemonOptions;
  readonly #supervisor?: TemplateSupervisor;
  readonly #pool?: GovernedPool;
  #governor?: PoolGovernor;
  #settings: Settings;
  #source?: VmSource;
  #direct?: Promise<VmSource>;
  #metrics?: DaemonMetrics;

  /** A daemon for `settings` over `store`; nothing runs until {@link ServeDaemon.start}. */
  constructor(settings: Settings, store: VmStore, options: ServeDaemonOptions) {
    this.#settings = settings;
    this.#store = store;
    this.#opts = options;
    this.log = options.log;
    if (settings.enableTemplate) {
      this.#supervisor = new TemplateSupervisor(settings, store, {
        log: this.log.line,
        onReady: () => this.#governor?.kick(),
        onBuild: (seconds, ok) => this.#metrics?.observeBuild(seconds, ok),
      });
      this.#pool = this.#supervisor.governedPool();
    }
  }

  /** Start-up recovery: reaps dead processes' VMs; with templating, destroys leftover pool clones. */
  async recover(): Promise<void> {
    const supervisor = this.#supervisor;
    await recoverStateDir(this.#store, this.log, {
      ...(supervisor ? { drainPool: () => supervisor.drainPool() } : {}),
    });
  }

  /** Starts the factory, the template and pool keepers, and the API; returns the service. */
  async start(): Promise<DaemonService & { api: ApiServer }> {
    const settings = this.#settings;
    const store = this.#store;
    const metrics = this.#metrics = this.#newMetrics(kindOf(settings));
    let options: VmFactoryOptions;
    if (this.#supervisor) {
      this.#source = this.#supervisor.source();
      options = { fallback: () => this.#directSource(), log: this.log.line };
    } else {
      const base = await factoryFor(settings, store, { log: this.log.line });
      this.#source = base.source;
      options = base.options;
    }
    // one factory for the daemon's life; a reload swaps the source behind it
    const source = () => this.#source!;
    const switching: VmSource = {
      get kind() {
        return source().kind;
      },
      prepare: (request) => source().prepare(request),
      status: () => source().status?.() ?? Promise.resolve({}),
    };
    const factory = new ObservedVmFactory(switching, options, {
      started: () => this.#governor?.noteDemand(),
      made: (from, seconds) => metrics.observeCreate(from, seconds),
      failed: (misuse) => misuse || metrics.bootFailed("request"),
      // after the reply is on its way: a kick starts a refill, whose first steps are synchronous
      settled: () => setTimeout(() => this.#governor?.kick(), 0),
    });
    const backend = new VmApiBackend({
      factory,
      store,
      settings,
      log: (l, f) => this.log.warn(l, f),
    });
    const api = await startApiServer(this.#withDaemonHealth(backend), {
      ...this.#opts.api,
      metrics: () => metrics.render(),
      observe: (event) => metrics.observeRequest(event),
      log: this.log.line,
    });
    // the keepers start once the socket is ours: a start that fails leaves nothing running
    if (this.#supervisor && this.#pool) {
      this.#supervisor.start();
      this.#governor = new PoolGovernor(this.#pool, {
        min: settings.poolMin,
        max: settings.poolMax,
        concurrency: this.#opts.concurrency,
        log: this.log.line,
        onRefill: (seconds, ok) => metrics.observeRefill(seconds, ok),
      });
    }
    const where = [api.socketPath, api.port === undefined ? "" : `port ${api.port}`];
    const pool = this.#governor ? ` (pool ${settings.poolMin}–${settings.poolMax})` : "";
    this.log.info(
      `vmfactory serve (pid ${Deno.pid}) listening on ${
        where.filter(Boolean).join(" and ")
      }; factory: ${kindOf(settings)}${pool}`,
      { pid: Deno.pid, socket: api.socketPath, port: api.port, factory: kindOf(settings) },
    );
    return { api, drain: (reason) => this.#drain(api, reason), reload: () => this.#reload() };
  }

  /** Metrics whose gauges read the store, the governor and the supervisor. */
  #newMetrics(factory: string): DaemonMetrics {
    return new DaemonMetrics({
      folders: () => countStates(this.#store),
      pool: () => {
        const governor = this.#governor;
        if (!governor || !this.#pool) return undefined;
        const { target, bounds, making } = governor;
        return { ready: this.#pool.ready() ?? 0, target, ...bounds, making };
      },
      template: () => {
        const s = this.#supervisor;
        if (!s) return undefined;
        return { ready: s.state === "ready", stale: s.stale, ageSeconds: s.ageSeconds() };
      },
    }, { version: this.#opts.version ?? "", factory });
  }

  /** The backend, with the pool and the template in `/healthz`. */
  #withDaemonHealth(backend: VmApiBackend): ApiBackend {
    return {
      createVm: (body, signal) => backend.createVm(body, signal),
      listVms: () => backend.listVms(),
      getVm: (id) => backend.getVm(id),
      destroyVm: (id) => backend.destroyVm(id),
      exec: (id, body, sink, signal) => backend.exec(id, body, sink, signal),
      run: (body, sink, signal) => backend.run(body, sink, signal),
      health: async () => {
        const health = await backend.health();
        const governor = this.#governor;
        return {
          ...health,
          ...(governor && this.#pool
            ? { pool: { ready: this.#pool.ready() ?? 0, ...governor.status() } }
            : {}),
          ...(this.#supervisor ? { template: this.#supervisor.status() } : {}),
        };
      },
    };
  }

  /** The cold-boot source of the settings in force (made on first need, again after a reload). */
  #directSource(): Promise<VmSource> {
    return this.#direct ??= directSourceFor(this.#settings, this.#store, {
      onNotice: this.log.line,
    })
      .catch((err) => {
        this.#direct = undefined;
        throw err;
      });
  }

  async #drain(api: ApiServer, reason: string): Promise<void> {
    this.log.info(`stopping (${reason}): no new requests; waiting for those in flight`);
    await api.drain();
    await this.#governor?.close();
    const pooled = (await this.#supervisor?.close()) ?? 0;
    const left = await this.#store.reap({ owner: selfIdentity() });
    await api.close();
    this.#source?.close?.();
    this.log.info(
      `stopped: ${pooled} pooled clone(s) destroyed${
        left.length ? `, ${left.length} VM(s) still being made stopped` : ""
      }; VMs handed out keep running`,
      { pooledDestroyed: pooled },
    );
  }

  async #reload(): Promise<void> {
    const next = await this.#opts.loadSettings();
    const problem = needsRestart(this.#settings, next);
    if (problem) throw new UsageError("reload the configuration", `${problem}: restart the daemon`);
    if (!this.#supervisor) {
      const base = await factoryFor(next, this.#store, { log: this.log.line });
      const old = this.#source;
      this.#source = base.source;
      old?.close?.();
    }
    this.#settings = next;
    this.#direct = undefined;
    this.#governor?.setBounds({ min: next.poolMin, max: next.poolMax });
    this.#supervisor?.reconfigure(next);
    this.log.info(
      `reloaded the configuration${
        this.#governor ? ` (pool ${next.poolMin}–${next.poolMax})` : ""
      }`,
      { poolMin: next.poolMin, poolMax: next.poolMax },
    );
  }
}

/** VM folders of `store` by state. */
function countStates(store: VmStore): Partial<Record<FolderState, number>> {
  const counts: Partial<Record<FolderState, number>> = {};
  for (const { status } of store.folders()) {
    if (status) counts[status.state] = (counts[status.state] ?? 0) + 1;
  }
  return counts;
}
