/**
 * The process model of vmfactory's long-running processes (`serve`, and the VMCache server of
 * `factory init`): one per state directory ({@link acquireInstanceLock}: a second start is refused
 * with exit 2 naming the running one; a predecessor killed -9 leaves nothing in the way), start-up
 * recovery of what a dead predecessor left, then signals:
 *
 * - SIGTERM, SIGINT: drain (stop accepting, let in-flight work finish, destroy the pooled and
 *   cached VMs; VMs handed out stay), release the lock, exit 0. A second one exits at once with
 *   code 1 (the next start cleans up).
 * - SIGHUP: reload the configuration; a bad one is logged (the service's reload throws) and the
 *   old one kept.
 *
 * A service may also stop by itself (gRPC `Quit`); it is then drained the same way.
 * @module
 */
import { errorMessage } from "../errors.ts";
import type { DaemonLog } from "./daemon_log.ts";
import { acquireInstanceLock } from "./instance_lock.ts";

/** A started service, as {@link runDaemon} drives it. */
export interface DaemonService {
  /** Resolves when the service stopped by itself (e.g. gRPC `Quit`). */
  stopped?: Promise<void>;
  /**
   * Stops accepting work, waits for what is in flight, destroys the VMs the service keeps (never
   * VMs handed out). `reason` is the signal's name, or "stopped" after {@link stopped}.
   */
  drain(reason: string): Promise<void>;
  /**
   * Re-reads the configuration (SIGHUP); throws, keeping the old one, when the new one is bad or
   * needs a restart.
   */
  reload?(): Promise<void>;
}

/** Where signals come from (the process's, or a test's). */
export interface SignalSource {
  /** Calls `fn` on each `signal`. */
  add(signal: Deno.Signal, fn: () => void): void;
  /** Stops calling `fn`. */
  remove(signal: Deno.Signal, fn: () => void): void;
}

const PROCESS_SIGNALS: SignalSource = {
  add: (signal, fn) => Deno.addSignalListener(signal, fn),
  remove: (signal, fn) => Deno.removeSignalListener(signal, fn),
};

/** Options of {@link runDaemon}. */
export interface DaemonOptions {
  /** Names the lock file, `<state_dir>/<role>.lock`: one daemon per role and state directory. */
  role: string;
  /** The daemon for messages ("the daemon", "the VMCache server"). */
  what: string;
  /** The state directory. */
  stateDir: string;
  /** The log. */
  log: DaemonLog;
  /** Cleans up after a dead predecessor (with the lock held, before `start`). */
  recover?(): Promise<void>;
  /** Starts the service; `signal` aborts when a stop signal arrives meanwhile. */
  start(signal: AbortSignal): Promise<DaemonService>;
  /** Signals (default: the process's). */
  signals?: SignalSource;
  /** Ends the process on a second stop signal (default `Deno.exit`). */
  exit?: (code: number) => void;
}

/**
 * Runs a daemon in the foreground until a stop signal (or the service's own stop), then drains
 * it and resolves 0. Throws (lock released) when the lock is held or the start fails.
 * @example
 * ```ts
 * const code = await runDaemon({
 *   role: "serve",
 *   what: "the daemon",
 *   stateDir: settings.stateDir,
 *   log: new DaemonLog("json"),
 *   start: async () => ({ drain: async () => {} }),
 * });
 * ```
 */
export async function runDaemon(options: DaemonOptions): Promise<number> {
  const { log } = options;
  const signals = options.signals ?? PROCESS_SIGNALS;
  using _lock = await acquireInstanceLock(options.stateDir, options.role, options.what);
  const stop = Promise.withResolvers<string>();
  const aborter = new AbortController();
  let service: DaemonService | undefined;
  let stopping = false;
  let reloads = Promise.resolve();
  const onStop = (name: Deno.Signal) => () => {
    if (stopping) {
      log.warn(`${name} again: exiting now (the next start cleans up what is left)`);
      (options.exit ?? Deno.exit)(1);
      return;
    }
    stopping = true;
    aborter.abort();
    stop.resolve(name);
  };
  const onTerm = onStop("SIGTERM");
  const onInt = onStop("SIGINT");
  const onHup = () => {
    if (stopping) return;
    if (!service?.reload) {
      log.info(`SIGHUP: ${service ? "nothing to reload" : "still starting; not reloaded"}`);
      return;
    }
    const current = service;
    reloads = reloads.then(() => current.reload!()).catch((err) =>
      log.error(`reload failed; keeping the configuration in force: ${errorMessage(err)}`)
    );
  };
  signals.add("SIGTERM", onTerm);
  signals.add("SIGINT", onInt);
  signals.add("SIGHUP", onHup);
  try {
    await options.recover?.();
    service = await options.start(aborter.signal);
    const reason = await Promise.race([
      stop.promise,
      ...(service.stopped ? [service.stopped.then(() => "stopped")] : []),
    ]);
    stopping = true;
    await reloads;
    await service.drain(reason);
    return 0;
  } finally {
    signals.remove("SIGTERM", onTerm);
    signals.remove("SIGINT", onInt);
    signals.remove("SIGHUP", onHup);
  }
}
