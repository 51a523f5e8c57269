/**
 * Starting, checking and stopping QEMU processes that outlive the process that started them.
 *
 * QEMU runs with `-daemonize`: it detaches itself (new session, reparented away from us), and
 * the launcher exits only once QEMU is initialised, so its QMP socket already listens when
 * {@link startQemu} resolves. Ctrl-C or the exit of the Deno process does not reach it.
 * @module
 */
import { UsageError, VmfactoryError } from "../errors.ts";
import { QmpClient } from "./qmp_client.ts";

/** Debian package that provides `qemu-system-x86_64`. */
export const QEMU_PACKAGE = "qemu-system-x86";

/** Options of {@link startQemu}. */
export interface StartQemuOptions {
  /** QEMU's own messages (`-D`; after start-up its stderr goes here too). Absolute path. */
  logFile: string;
  /** Where QEMU writes its pid (`-pidfile`). Absolute path; a stale file is removed first. */
  pidFile: string;
  /** Extra environment variables for QEMU. */
  env?: Record<string, string>;
  /** Limit for QEMU's initialisation; default 30000 ms. */
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
 * Starts QEMU detached (`-daemonize -pidfile`) and resolves with its pid once it is initialised
 * (its QMP socket listens). `argv[0]` is the binary (see `buildQemuArgs`); paths in `argv` must be
 * absolute since a daemonized QEMU changes to `/`. Throws a {@link UsageError} when QEMU is not
 * installed, a {@link VmfactoryError} "Cannot start QEMU: <its last messages>" when it fails.
 */
export async function startQemu(
  argv: string[],
  options: StartQemuOptions,
): Promise<{ pid: number }> {
  const [binary, ...args] = argv;
  assertQemuInstalled(binary);
  const timeoutMs = options.timeoutMs ?? 30_000;
  await Deno.remove(options.pidFile).catch(() => {});
  const command = new Deno.Command(binary, {
    args: [
      ...args,
      "-daemonize",
      "-pidfile",
      options.pidFile,
      // -D with a log item makes the daemon keep stderr in the log instead of /dev/null
      "-D",
      options.logFile,
      "-d",
      "guest_errors",
    ],
    env: options.env,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    signal: AbortSignal.timeout(timeoutMs),
  });
  let output: Deno.CommandOutput;
  try {
    output = await command.output();
  } catch (error) {
    throw new VmfactoryError("start QEMU", String(error), { cause: error });
  }
  if (!output.success) {
    const messages = [
      lastLines(new TextDecoder().decode(output.stderr), 5),
      await readLogTail(options.logFile),
    ].filter(Boolean).join("; ");
    const detail = output.signal
      ? `QEMU did not finish starting within ${timeoutMs} ms`
      : messages || `QEMU exited with code ${output.code}`;
    await killFromPidFile(options.pidFile);
    throw new VmfactoryError("start QEMU", detail);
  }
  const pid = Number((await Deno.readTextFile(options.pidFile)).trim());
  if (!Number.isInteger(pid) || pid <= 0) {
    throw new VmfactoryError("start QEMU", `bad pid file ${options.pidFile}`);
  }
  return { pid };
}

/** After a failed or timed-out start, kills a daemon that got as far as writing its pid file. */
async function killFromPidFile(pidFile: string): Promise<void> {
  const pid = Number((await Deno.readTextFile(pidFile).catch(() => "")).trim());
  if (Number.isInteger(pid) && pid > 0 && isQemuAlive(pid)) signal(pid, "SIGKILL");
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

function signal(pid: number, sig: Deno.Signal): void {
  try {
    Deno.kill(pid, sig);
  } catch {
    // already gone
  }
}

async function waitGone(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (isQemuAlive(pid)) {
    if (performance.now() >= deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return true;
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
  if (await waitGone(pid, graceMs)) return;
  signal(pid, "SIGTERM");
  if (await waitGone(pid, graceMs)) return;
  signal(pid, "SIGKILL");
  if (!(await waitGone(pid, graceMs))) {
    throw new VmfactoryError("stop QEMU", `pid ${pid} is still running after SIGKILL`);
  }
}
