/**
 * Starting, checking and stopping QEMU processes that outlive the process that started them.
 *
 * QEMU runs as a detached child: its own session (Ctrl-C in the terminal does not reach it), not
 * awaited (the Deno process may exit at once), stdout and stderr appended to a log file (so every
 * message QEMU prints, at start-up or later, is kept; `-daemonize` sends it to /dev/null). Spawn ->
 * QMP answered is as fast or a little faster than with `-daemonize` (median 114-149 vs 140-174 ms,
 * one interleaved run), and the spawn itself returns in ~10 ms, so callers can overlap work.
 * @module
 */
import { pollUntil } from "../poll_until.ts";
import { UsageError, VmfactoryError } from "../errors.ts";
import { QmpClient } from "./qmp_client.ts";

/** Debian package that provides `qemu-system-x86_64`. */
export const QEMU_PACKAGE = "qemu-system-x86";

/** Options of {@link startQemu}. */
export interface StartQemuOptions {
  /** Receives QEMU's stdout and stderr (appended). */
  logFile: string;
  /** Where the pid is written (atomically) before `startQemu` resolves. */
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
}

/** Throws a {@link UsageError} naming the Debian package when `binary` is not an executable file. */
export function assertQemuInstalled(binary: string): void {
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
 * Starts QEMU detached and resolves with its pid; `argv[0]` is the binary (see `buildQemuArgs`).
 * Without `options.qmpSocket` it resolves right after the spawn: then connect with
 * `waitForQmpSocket(path, { pid, logFile })`, which reports a failed start with QEMU's messages.
 * Throws a {@link UsageError} when QEMU is not installed.
 */
export async function startQemu(
  argv: string[],
  options: StartQemuOptions,
): Promise<{ pid: number }> {
  const [binary, ...args] = argv;
  assertQemuInstalled(binary);
  if (options.qmpSocket) await Deno.remove(options.qmpSocket).catch(() => {});
  // node:child_process is the Deno way to hand a child a file as stdio; loaded only when needed
  const [{ spawn }, fs] = await Promise.all([import("node:child_process"), import("node:fs")]);
  const fd = fs.openSync(options.logFile, "a");
  let pid: number | undefined;
  try {
    const child = spawn(binary, args, {
      detached: true,
      stdio: ["ignore", fd, fd],
      env: options.env ? { ...Deno.env.toObject(), ...options.env } : undefined,
    });
    child.on("error", () => {}); // a failed exec shows as a missing pid below
    child.unref();
    pid = child.pid;
  } finally {
    fs.closeSync(fd);
  }
  if (pid === undefined) throw new VmfactoryError("start QEMU", `cannot run ${binary}`);
  const temp = `${options.pidFile}.tmp`;
  await Deno.writeTextFile(temp, `${pid}\n`);
  await Deno.rename(temp, options.pidFile);
  if (options.qmpSocket) {
    await waitForSocketFile(pid, options.qmpSocket, options.logFile, options.timeoutMs ?? 30_000);
  }
  return { pid };
}

/** The error for a QEMU that exited while starting, with the last lines of its log. */
export async function qemuExitedError(pid: number, logFile?: string): Promise<VmfactoryError> {
  const tail = logFile ? await readLogTail(logFile) : "";
  return new VmfactoryError("start QEMU", tail || `QEMU (pid ${pid}) exited`);
}

async function waitForSocketFile(
  pid: number,
  path: string,
  logFile: string,
  timeoutMs: number,
): Promise<void> {
  const created = await pollUntil(async () => {
    if (!isQemuAlive(pid)) throw await qemuExitedError(pid, logFile);
    try {
      return Deno.statSync(path).isSocket || undefined;
    } catch {
      return undefined; // not created yet
    }
  }, { timeoutMs, intervalMs: 2 });
  if (!created) {
    signal(pid, "SIGKILL");
    throw new VmfactoryError("start QEMU", `no QMP socket within ${timeoutMs} ms`);
  }
}

/**
 * True while process `pid` runs (a zombie counts as dead). With `expectArg`, also requires one of
 * its command-line arguments to contain that text (e.g. the VM's QMP socket path), which guards
 * against a reused pid. May be called at any time.
 */
export function isQemuAlive(pid: number, options: { expectArg?: string } = {}): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    if (state === "Z" || state === "X" || state === "x") return false;
    if (options.expectArg === undefined) return true;
    const argv = Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0");
    return argv.some((arg) => arg.includes(options.expectArg!));
  } catch {
    return false;
  }
}

/**
 * Pids of the running processes (zombies excluded, this one too) whose argv satisfies `test`;
 * e.g. every QEMU whose command line mentions a folder, to clean up after tests and benchmarks.
 */
export function pidsWhere(test: (argv: string[]) => boolean): number[] {
  const pids: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    const pid = Number(entry.name);
    if (!Number.isInteger(pid) || pid === Deno.pid) continue;
    try {
      const argv = Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0");
      if (argv[0] !== "" && test(argv) && isQemuAlive(pid)) pids.push(pid);
    } catch {
      // gone
    }
  }
  return pids;
}

function signal(pid: number, sig: Deno.Signal): void {
  try {
    Deno.kill(pid, sig);
  } catch {
    // already gone
  }
}

/** Waits up to `timeoutMs` for process `pid` to exit (a zombie counts as gone); true if it did. */
export async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  return await pollUntil(() => isQemuAlive(pid) ? undefined : true, { timeoutMs }) ?? false;
}

/** What {@link stopQemu} needs to know about a running QEMU. */
export interface QemuHandle {
  /** QEMU's pid. */
  pid: number;
  /** Its QMP socket path (also the pid-reuse guard). */
  qmpSocket: string;
  /** An open QMP session to reuse (QEMU serves one QMP client at a time). */
  qmp?: QmpClient;
}

/**
 * Stops QEMU: `quit` over QMP, then SIGTERM, then SIGKILL, each given `graceMs` (default 2000)
 * to make the process vanish. Idempotent: a QEMU that is already gone (or a pid that now belongs
 * to another program) is left alone. Closes `handle.qmp`.
 */
export async function stopQemu(
  handle: QemuHandle,
  options: { graceMs?: number } = {},
): Promise<void> {
  const graceMs = options.graceMs ?? 2000;
  const { pid, qmpSocket } = handle;
  if (!isQemuAlive(pid, { expectArg: qmpSocket })) {
    handle.qmp?.close();
    return;
  }
  let qmp = handle.qmp;
  try {
    qmp ??= await QmpClient.connect(qmpSocket, { timeoutMs: Math.min(graceMs, 1000) });
    await qmp.execute("quit", undefined, { timeoutMs: graceMs });
  } catch {
    // QEMU closes QMP as it quits; QMP busy with another client or hung: the signals below stop it
  } finally {
    qmp?.close();
  }
  if (await waitForExit(pid, graceMs)) return;
  signal(pid, "SIGTERM");
  if (await waitForExit(pid, graceMs)) return;
  signal(pid, "SIGKILL");
  if (!(await waitForExit(pid, graceMs))) {
    throw new VmfactoryError("stop QEMU", `pid ${pid} is still running after SIGKILL`);
  }
}
