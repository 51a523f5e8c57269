/**
 * Starting, checking and stopping QEMU processes that outlive the process that started them.
 *
 * QEMU runs as a detached child: its own session (Ctrl-C in the terminal does not reach it), not
 * awaited (the Deno process may exit at once), stdout and stderr appended to a log file (so every
 * message QEMU prints, at start-up or later, is kept; `-daemonize` sends it to /dev/null). Spawn ->
 * QMP answered is as fast or a little faster than with `-daemonize` (median 114-149 vs 140-174 ms,
 * one interleaved run), and the spawn itself returns in ~10 ms, so callers can overlap work.
 * Files QEMU needs but must not open itself (a clone's state file) are handed over as inherited
 * file descriptors; with `cgroup`, the process is moved into its VM's cgroup right after the spawn
 * (see `cgroup.ts`), and {@link stopQemu} removes that cgroup once QEMU has exited.
 * @module
 */
import { writeFileAtomic } from "../vm/atomic_write.ts";
import { pollUntil, sleep } from "../poll_until.ts";
import { QEMU_PACKAGE } from "../config/builtin_default.ts";
import { errorMessage, UsageError, VmfactoryError } from "../errors.ts";
import {
  identify,
  isAlive,
  parseIdentity,
  type ProcessIdentity,
  programNameOf,
  signalProcess,
  waitForExit,
} from "../process_identity.ts";
import {
  type CgroupLimits,
  placeInCgroup,
  pruneCgroups,
  removeCgroup,
  vmCgroupOf,
} from "./cgroup.ts";
import { QmpClient, type QmpConnectOptions, QmpTimeoutError } from "./qmp_client.ts";

/** The file descriptor QEMU gets the first of {@link StartQemuOptions.passFiles} on. */
export const FIRST_PASSED_FD = 3;

/** Options of {@link startQemu}. */
export interface StartQemuOptions {
  /** Receives QEMU's stdout and stderr (appended). */
  logFile: string;
  /** Where the process identity is written (atomically, JSON) before `startQemu` resolves. */
  pidFile: string;
  /** Extra environment variables for QEMU. */
  env?: Record<string, string>;
  /**
   * The VM's QMP socket: when given, `startQemu` removes a stale one, then resolves only once QEMU
   * has created it, and throws "Cannot start QEMU: <last log lines>" when QEMU exits first.
   */
  qmpSocket?: string;
  /** Limit for the wait on `qmpSocket`; default 30000 ms. */
  timeoutMs?: number;
  /**
   * Files opened read-only by this process and inherited by QEMU as file descriptors
   * {@link FIRST_PASSED_FD}, 4, ... (e.g. a clone's state file for `migrate-incoming fd:3`).
   */
  passFiles?: string[];
  /** QEMU's working directory (default this process's). */
  cwd?: string;
  /** Move QEMU into a cgroup of its own with these limits, where the host allows it. */
  cgroup?: CgroupLimits;
}

/**
 * Throws a {@link UsageError} when `binary` is not an absolute path (no PATH look-up) or names no
 * file (the message names the Debian package).
 */
export function assertQemuInstalled(binary: string): void {
  if (!binary.startsWith("/")) {
    throw new UsageError("start QEMU", `${binary} is not an absolute path`);
  }
  try {
    if (Deno.statSync(binary).isFile) return;
  } catch {
    // reported below
  }
  throw new UsageError(
    "start QEMU",
    `${binary} not found; install the Debian package ${QEMU_PACKAGE}`,
  );
}

/** The last `lines` non-empty lines of a log file (from its last 8 KiB), joined by "; ". */
export async function readLogTail(path: string, lines = 5): Promise<string> {
  try {
    using file = await Deno.open(path);
    const size = (await file.stat()).size;
    const length = Math.min(size, 8192);
    await file.seek(size - length, Deno.SeekMode.Start);
    const bytes = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const n = await file.read(bytes.subarray(done));
      if (n === null) break;
      done += n;
    }
    return lastLines(new TextDecoder().decode(bytes.subarray(0, done)), lines);
  } catch {
    return "";
  }
}

function lastLines(text: string, lines: number): string {
  return text.split("\n").map((l) => l.trim()).filter(Boolean).slice(-lines).join("; ");
}

/**
 * Starts QEMU detached and resolves with its identity (pid + start time, also written to
 * `options.pidFile`); `argv[0]` is the binary (see `buildQemuArgs`). Without `options.qmpSocket`
 * it resolves right after the spawn: then connect with `connectQmp(path, { process, logFile })`,
 * which reports a failed start with QEMU's messages. Throws a {@link UsageError} when QEMU is not
 * installed, a {@link VmfactoryError} when a file to pass cannot be opened or the process cannot
 * be moved into its cgroup (QEMU is killed then).
 */
export async function startQemu(
  argv: string[],
  options: StartQemuOptions,
): Promise<ProcessIdentity> {
  const [binary, ...args] = argv;
  assertQemuInstalled(binary);
  if (options.qmpSocket) await Deno.remove(options.qmpSocket).catch(() => {});
  // node:child_process is the Deno way to hand a child a file as stdio; loaded only when needed
  const [{ spawn }, fs] = await Promise.all([import("node:child_process"), import("node:fs")]);
  const fds: number[] = [];
  let pid: number | undefined;
  try {
    const fd = fs.openSync(options.logFile, "a", 0o600);
    fds.push(fd);
    for (const path of options.passFiles ?? []) {
      try {
        fds.push(fs.openSync(path, "r"));
      } catch (err) {
        throw new VmfactoryError("start QEMU", `cannot open ${path}: ${errorMessage(err)}`, {
          cause: err,
        });
      }
    }
    const child = spawn(binary, args, {
      detached: true,
      stdio: ["ignore", fd, fd, ...fds.slice(1)],
      cwd: options.cwd,
      env: options.env ? { ...Deno.env.toObject(), ...options.env } : undefined,
    });
    child.on("error", () => {}); // a failed exec shows as a missing pid below
    child.unref();
    pid = child.pid;
  } finally {
    for (const fd of fds) fs.closeSync(fd);
  }
  const process = pid === undefined ? undefined : identify(pid);
  if (!process) throw new VmfactoryError("start QEMU", `cannot run ${binary}`);
  if (options.cgroup) {
    try {
      placeInCgroup(process.pid, options.cgroup);
    } catch (err) {
      signalProcess(process, "SIGKILL");
      throw err;
    }
  }
  await writeFileAtomic(options.pidFile, JSON.stringify(process) + "\n");
  if (options.qmpSocket) {
    await waitForSocketFile(
      process,
      options.qmpSocket,
      options.logFile,
      options.timeoutMs ?? 30_000,
    );
  }
  return process;
}

/** The identity in a pid file written by {@link startQemu}; undefined when missing or invalid. */
export function readPidFile(pidFile: string): ProcessIdentity | undefined {
  try {
    const text = Deno.readTextFileSync(pidFile);
    return text.length > 200 ? undefined : parseIdentity(JSON.parse(text));
  } catch {
    return undefined;
  }
}

/** The error for a QEMU that exited while starting, with the last lines of its log. */
async function qemuExitedError(
  process: ProcessIdentity,
  logFile?: string,
): Promise<VmfactoryError> {
  const tail = logFile ? await readLogTail(logFile) : "";
  return new VmfactoryError("start QEMU", tail || `QEMU (pid ${process.pid}) exited`);
}

async function waitForSocketFile(
  process: ProcessIdentity,
  path: string,
  logFile: string,
  timeoutMs: number,
): Promise<void> {
  const created = await pollUntil(async () => {
    if (!isAlive(process)) throw await qemuExitedError(process, logFile);
    try {
      return Deno.statSync(path).isSocket || undefined;
    } catch {
      return undefined; // not created yet
    }
  }, { timeoutMs, intervalMs: 2 });
  if (!created) {
    signalProcess(process, "SIGKILL");
    throw new VmfactoryError("start QEMU", `no QMP socket within ${timeoutMs} ms`);
  }
}

/** Options of {@link connectQmp}. */
export interface ConnectQmpOptions extends QmpConnectOptions {
  /** The QEMU serving the socket: stop waiting at once when it has exited. */
  process?: ProcessIdentity;
  /** QEMU's log file: its last lines go into the error message. */
  logFile?: string;
  /** Delay between connection attempts; default 5 ms. */
  retryMs?: number;
}

/**
 * Connects to the QMP socket of a QEMU that may not have created it yet: retries until it answers
 * or `timeoutMs` (default 5000) passes. When `process` has exited, fails at once with "Cannot
 * start QEMU: <last lines of logFile>". Call it right after `startQemu`.
 */
export async function connectQmp(
  socketPath: string,
  options: ConnectQmpOptions = {},
): Promise<QmpClient> {
  const timeoutMs = options.timeoutMs ?? 5000;
  const deadline = performance.now() + timeoutMs;
  const { process, logFile } = options;
  const exited = () => process !== undefined && !isAlive(process);
  while (true) {
    if (exited()) throw await qemuExitedError(process!, logFile);
    const left = deadline - performance.now();
    if (left <= 0) throw new QmpTimeoutError(`connect to QMP at ${socketPath}`, timeoutMs);
    try {
      return await QmpClient.connect(socketPath, { ...options, timeoutMs: left });
    } catch (error) {
      const retry = error instanceof Deno.errors.NotFound ||
        error instanceof Deno.errors.ConnectionRefused;
      if (exited()) throw await qemuExitedError(process!, logFile);
      // a QEMU that fails after creating its socket closes the connection while it is still
      // exiting: give it a moment to vanish so the error names QEMU's own message
      if (!retry && process && await waitForExit(process, 1000)) {
        throw await qemuExitedError(process, logFile);
      }
      if (!retry) throw error;
    }
    await sleep(options.retryMs ?? 5);
  }
}

/** What {@link stopQemu} needs to know about a running QEMU. */
export interface QemuHandle {
  /** QEMU's identity: nothing is signalled unless it still names that process. */
  process: ProcessIdentity;
  /** Its QMP socket path. */
  qmpSocket: string;
  /** An open QMP session to reuse (QEMU serves one QMP client at a time). */
  qmp?: QmpClient;
}

/**
 * Stops QEMU: `quit` over QMP, then SIGTERM, then SIGKILL, each given `graceMs` (default 2000)
 * to make the process vanish, then removes its VM cgroup. Idempotent: a QEMU that is already gone
 * (or a pid that now belongs to another process) is left alone, and the cgroups left empty by
 * QEMUs that exited on their own are removed. Closes `handle.qmp`.
 */
export async function stopQemu(
  handle: QemuHandle,
  options: { graceMs?: number } = {},
): Promise<void> {
  const cgroup = isAlive(handle.process) ? vmCgroupOf(handle.process.pid) : undefined;
  await endQemu(handle, options);
  if (cgroup) await removeCgroup(cgroup);
  else pruneCgroups();
}

/**
 * True while `p` runs and is a QEMU system emulator: pid, start time and executable together, so
 * a record that names another program (forged, or a pid reused at the same tick) is never obeyed.
 */
function isQemu(p: ProcessIdentity): boolean {
  if (!isAlive(p)) return false;
  // comm when exe cannot be read (a QEMU of another user, a daemon without CAP_SYS_PTRACE)
  return /^qemu-system-/.test(programNameOf(p.pid) ?? "");
}

async function endQemu(handle: QemuHandle, options: { graceMs?: number }): Promise<void> {
  const graceMs = options.graceMs ?? 2000;
  const { process, qmpSocket } = handle;
  if (!isQemu(process)) {
    handle.qmp?.close();
    return;
  }
  let qmp = handle.qmp;
  let asked = false;
  try {
    qmp ??= await QmpClient.connect(qmpSocket, { timeoutMs: Math.min(graceMs, 1000) });
    asked = true;
    await qmp.execute("quit", undefined, { timeoutMs: graceMs });
  } catch {
    // QEMU closes QMP as it quits; QMP gone, busy with another client or hung: signals stop it
  } finally {
    qmp?.close();
  }
  if (asked && await waitForExit(process, graceMs)) return;
  signalProcess(process, "SIGTERM");
  if (await waitForExit(process, graceMs)) return;
  signalProcess(process, "SIGKILL");
  if (!(await waitForExit(process, graceMs))) {
    throw new VmfactoryError("stop QEMU", `pid ${process.pid} is still running after SIGKILL`);
  }
}
