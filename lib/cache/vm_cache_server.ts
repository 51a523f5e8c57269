/**
 * The VMCache server process (`factory init` with `vm_cache_number > 0`), `factory destroy` and
 * `factory status` for it. The server runs in the foreground under the daemon process model
 * (lib/daemon/run_daemon.ts, shared with `serve`): Ctrl-C, SIGTERM and gRPC `Quit` all destroy
 * the VMs still cached, remove the socket and return 0; VMs handed out keep running.
 * @module
 */
import { errorMessage } from "../errors.ts";
import { identify, selfIdentity, waitForExit } from "../process_identity.ts";
import type { Settings } from "../config/settings.ts";
import { resolveBootPlan } from "../factory/boot_plan.ts";
import { DirectSource } from "../factory/direct_source.ts";
import type { VmSource } from "../factory/vm_source.ts";
import { AGENT_PORT_NAME } from "../qemu/qemu_command.ts";
import { type VmFolder, VmStore } from "../vm/vm_store.ts";
import { DaemonLog } from "../daemon/daemon_log.ts";
import { runDaemon } from "../daemon/run_daemon.ts";
import { CacheClient, CacheServerNotRunningError } from "./cache_client.ts";
import { type CacheServerHandle, startCacheServer } from "./cache_server.ts";
import { cacheVmSource, storeKeeper, VmCache } from "./vm_cache.ts";

/** Options of {@link startVmCacheServer}. */
export interface VmCacheServerOptions {
  /** Unix socket to listen on. */
  socketPath: string;
  /** State directory holding the VM folders. */
  stateDir: string;
  /** VMs to keep ready. */
  size: number;
  /** Makes the base source, whose VMs go into the given store's folders. */
  base: (store: VmStore) => VmSource;
  /** Boots at a time (default 2). */
  concurrency?: number;
  /** JSON sent as `Config.Data`. */
  config?: unknown;
  /** One line per event. */
  log?: (line: string) => void;
}

/** A running VMCache server. */
export interface VmCacheServer {
  /** The cache. */
  cache: VmCache;
  /** The gRPC server. */
  grpc: CacheServerHandle;
  /** Ids of the predecessor's orphaned VMs reaped at start. */
  reaped: string[];
  /** Resolves once stopped (after `stop` or gRPC `Quit`). */
  stopped: Promise<void>;
  /** Destroys the cached VMs (and boots in progress), closes the socket; idempotent. */
  stop(): Promise<void>;
}

/**
 * Starts a VMCache server: binds the socket (refusing a live server with a UsageError), reaps the
 * orphaned VMs of a dead predecessor, starts filling the cache. Returns at once.
 * @example
 * ```ts
 * const server = await startVmCacheServer({
 *   socketPath: "/run/vmfactory/cache.sock",
 *   stateDir: settings.stateDir,
 *   size: 4,
 *   base: (store) => new DirectSource(plan, store),
 * });
 * await server.cache.filled;
 * await server.stop(); // cached VMs destroyed, handed-out ones kept
 * ```
 */
export async function startVmCacheServer(opts: VmCacheServerOptions): Promise<VmCacheServer> {
  const log = opts.log ?? (() => {});
  const store = new VmStore(opts.stateDir);
  // the cache starts booting when made: only once the socket is ours (a live server refused);
  // a call that arrives before (while orphans are reaped) waits for it
  const made = Promise.withResolvers<VmCache>();
  const slot: { cache?: VmCache } = {};
  const source = cacheVmSource(
    {
      take: async (signal) => (slot.cache ?? await made.promise).take(signal),
      cached: () => slot.cache?.cached() ?? [],
      giveBack: (record, reason) => void made.promise.then((c) => c.giveBack(record, reason)),
    },
    {
      stateDir: opts.stateDir,
      config: opts.config ?? {},
      agentConfig: { port: AGENT_PORT_NAME },
    },
  );
  const grpc = await startCacheServer({ socketPath: opts.socketPath, source, log });
  const reaped = await store.reap();
  if (reaped.length) {
    log(
      `cache: reaped ${reaped.length} orphaned cached VM(s) of a dead server: ${reaped.join(", ")}`,
    );
  }
  const cache = slot.cache = new VmCache(opts.base(store), {
    size: opts.size,
    concurrency: opts.concurrency,
    keeper: storeKeeper(store),
    log,
  });
  made.resolve(cache);
  let stopping: Promise<void> | undefined;
  const stop = () =>
    stopping ??= (async () => {
      await grpc.close();
      await cache.close();
      // boots that outlived the grace period; VMs offered to clients become theirs
      const left = await store.reap({ owner: selfIdentity() });
      if (left.length) log(`cache: stopped ${left.length} VM(s) still booting`);
    })();
  grpc.onQuit(() => void stop());
  const stopped = grpc.closed.then(() => stop());
  return { cache, grpc, reaped, stopped, stop };
}

/**
 * `factory init` for VMCache: runs the server in the foreground under the daemon process model
 * ({@link runDaemon}: one server per state directory, SIGINT/SIGTERM drain, SIGHUP logged) until
 * Ctrl-C, SIGTERM or gRPC `Quit`, then returns 0. Throws a UsageError (exit 2) when a live server
 * holds the state directory or the socket.
 */
export async function runCacheServer(
  settings: Settings,
  store: VmStore,
  options: { log?: (line: string) => void } = {},
): Promise<number> {
  const log = options.log ?? console.error;
  const socketPath = settings.vmCacheEndpoint;
  const code = await runDaemon({
    role: "vmcache",
    what: "the VMCache server",
    stateDir: store.stateDir,
    log: new DaemonLog("text", log),
    // no recover step: startVmCacheServer reaps a dead predecessor's VMs once the socket is its own
    start: async () => {
      const plan = await resolveBootPlan(settings, {
        onNotice: log,
        onProgress: (phase, detail) => log(`guest: ${phase}${detail ? ` (${detail})` : ""}`),
      });
      const server = await startVmCacheServer({
        socketPath,
        stateDir: store.stateDir,
        size: settings.vmCacheNumber,
        base: (cacheStore) => new DirectSource(plan, cacheStore),
        config: { settings, plan },
        log,
      });
      log(
        `VMCache server (pid ${Deno.pid}) listening on ${socketPath}; booting ${settings.vmCacheNumber} VM(s) (Ctrl-C stops it and destroys the cached VMs)`,
      );
      return {
        stopped: server.stopped,
        async drain(reason) {
          if (reason !== "stopped") {
            log("cache: stopping: destroying the cached VMs (VMs handed out keep running)");
          }
          await server.stop();
        },
      };
    },
  });
  log("VMCache server stopped");
  return code;
}

/**
 * `factory destroy` for VMCache: asks a running server to `Quit` and waits for it to exit, then
 * reaps orphans of a dead server. Idempotent: no server is not an error. Returns 0.
 */
export async function destroyCache(
  settings: Settings,
  store: VmStore,
  options: { log?: (line: string) => void } = {},
): Promise<number> {
  const log = options.log ?? console.error;
  const socketPath = settings.vmCacheEndpoint;
  let client: CacheClient | undefined;
  try {
    client = await CacheClient.connect(socketPath, { timeoutMs: 10_000 });
    const { pid } = await client.status();
    await client.quit();
    const server = identify(pid);
    if (server && !(await waitForExit(server, 30_000))) {
      log(`the VMCache server (pid ${pid}) got Quit but is still running after 30 s`);
    } else log(`VMCache server (pid ${pid}) stopped; its cached VMs are destroyed`);
  } catch (err) {
    if (!(err instanceof CacheServerNotRunningError)) throw err;
    log(`no VMCache server running on ${socketPath}`);
  } finally {
    client?.close();
  }
  const reaped = await store.reap();
  if (reaped.length) log(`reaped ${reaped.length} orphaned cached VM(s): ${reaped.join(", ")}`);
  return 0;
}

/**
 * `factory status` for VMCache: server pid, socket and cached VMs with their age (from gRPC
 * `Status`, ages from the state directory); `running: false` when no server answers.
 */
export async function cacheStatus(settings: Settings): Promise<Record<string, unknown>> {
  const socket = settings.vmCacheEndpoint;
  const base = { kind: "cache", enabled: settings.vmCacheNumber > 0, socket };
  const folders = cachedFolders(new VmStore(settings.stateDir));
  let client: CacheClient | undefined;
  try {
    client = await CacheClient.connect(socket, { timeoutMs: 5000 });
    const status = await client.status();
    const now = Date.now();
    const vms = status.vms.map((vm) => {
      const record = folders.find((f) => f.record?.pid === vm.pid)?.record;
      return {
        ...(record ? { id: record.id } : {}),
        pid: vm.pid,
        cpus: vm.cpu,
        memoryMiB: vm.memory,
        ...(record ? { ageSeconds: Math.round((now - Date.parse(record.createdAt)) / 1000) } : {}),
      };
    });
    return {
      ...base,
      running: true,
      pid: status.pid,
      size: settings.vmCacheNumber,
      cached: vms.length,
      vms,
    };
  } catch (err) {
    if (!(err instanceof CacheServerNotRunningError)) {
      return { ...base, running: false, error: errorMessage(err) };
    }
    return {
      ...base,
      running: false,
      note: "not running (start it with `vmfactory factory init`)",
      orphans: folders.length,
    };
  } finally {
    client?.close();
  }
}

/** The folders of `store` holding VMs a VMCache server keeps (cached or being booted for it). */
export function cachedFolders(store: VmStore): VmFolder[] {
  return store.folders(["cached"]);
}
