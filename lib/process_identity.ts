/**
 * Processes named by identity: a pid alone can be reused by another program, so every process
 * vmfactory tracks (a VM's QEMU, a VMCache server) is named by its pid and its start time
 * (`/proc/PID/stat` field 22, clock ticks since boot), recorded when it was spawned. Every
 * liveness check and every signal compares both; a zombie counts as dead (this sandbox's PID 1
 * reaps orphans late). Also the `/proc` scans the tests and the benchmark clean up with.
 * @module
 */
import { pollUntil } from "./poll_until.ts";

/** A process: its pid and its start time, which together never name another process. */
export interface ProcessIdentity {
  /** Process id. */
  pid: number;
  /** Start time in clock ticks since boot (`/proc/PID/stat` field 22). */
  startTime: number;
}

/** Start time of `pid` in clock ticks since boot; undefined when it does not run or is a zombie. */
export function processStartTime(pid: number): number | undefined {
  if (!Number.isSafeInteger(pid) || pid <= 0) return undefined;
  let stat: string;
  try {
    stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  } catch {
    return undefined;
  }
  // the command name (field 2) may hold spaces and parentheses: fields start after the last ")"
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  if (fields[0] === "Z" || fields[0] === "X" || fields[0] === "x") return undefined;
  const start = Number(fields[19]);
  return Number.isSafeInteger(start) ? start : undefined;
}

/** The identity of the running process `pid`; undefined when it does not run. */
export function identify(pid: number): ProcessIdentity | undefined {
  const startTime = processStartTime(pid);
  return startTime === undefined ? undefined : { pid, startTime };
}

let self: ProcessIdentity | undefined;

/** This process's identity. */
export function selfIdentity(): ProcessIdentity {
  return self ??= identify(Deno.pid) ?? { pid: Deno.pid, startTime: 0 };
}

/** True while the process `p` names runs (same pid, same start time, not a zombie). */
export function isAlive(p: ProcessIdentity): boolean {
  return processStartTime(p.pid) === p.startTime;
}

/** True when `a` and `b` name the same process. */
export function sameProcess(a: ProcessIdentity, b: ProcessIdentity): boolean {
  return a.pid === b.pid && a.startTime === b.startTime;
}

/**
 * `value` as a process identity when it is one (read back from disk: input, so checked); else
 * undefined.
 */
export function parseIdentity(value: unknown): ProcessIdentity | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const { pid, startTime } = value as Record<string, unknown>;
  if (!Number.isSafeInteger(pid) || (pid as number) <= 1) return undefined;
  if (!Number.isSafeInteger(startTime) || (startTime as number) < 0) return undefined;
  return { pid: pid as number, startTime: startTime as number };
}

/** The program `pid` runs (`/proc/PID/exe`); undefined when it is gone or not readable. */
export function executableOf(pid: number): string | undefined {
  try {
    return Deno.readLinkSync(`/proc/${pid}/exe`).replace(/ \(deleted\)$/, "");
  } catch {
    return undefined;
  }
}

/**
 * The file name a process runs: its executable's base name when `/proc/PID/exe` may be read, else
 * (another user's process without CAP_SYS_PTRACE) its command name from `/proc/PID/comm`,
 * which the kernel cuts at 15 bytes; undefined when the process is gone.
 */
export function programNameOf(pid: number): string | undefined {
  const exe = executableOf(pid);
  if (exe !== undefined) return exe.slice(exe.lastIndexOf("/") + 1);
  try {
    return Deno.readTextFileSync(`/proc/${pid}/comm`).replace(/\n$/, "");
  } catch {
    return undefined;
  }
}

/** Sends `sig` to `p` if it still runs; false when it does not (nothing is signalled then). */
export function signalProcess(p: ProcessIdentity, sig: Deno.Signal): boolean {
  if (!isAlive(p)) return false;
  try {
    Deno.kill(p.pid, sig);
    return true;
  } catch {
    return false; // exited meanwhile
  }
}

/** Waits up to `timeoutMs` for `p` to exit (a zombie counts as gone); true if it did. */
export async function waitForExit(p: ProcessIdentity, timeoutMs: number): Promise<boolean> {
  return await pollUntil(() => isAlive(p) ? undefined : true, { timeoutMs }) ?? false;
}

/**
 * The running processes (zombies and this one excluded) whose argv satisfies `test`; e.g. every
 * QEMU whose command line mentions a temp folder, to clean up after tests and benchmarks.
 */
export function processesWhere(test: (argv: string[]) => boolean): ProcessIdentity[] {
  const found: ProcessIdentity[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    const pid = Number(entry.name);
    if (!Number.isInteger(pid) || pid === Deno.pid) continue;
    try {
      const argv = Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0");
      const p = argv[0] !== "" && test(argv) ? identify(pid) : undefined;
      if (p) found.push(p);
    } catch {
      // gone
    }
  }
  return found;
}
