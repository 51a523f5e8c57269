/**
 * One daemon of a kind per state directory: `<state_dir>/<role>.lock`, an exclusive `flock` held
 * for the daemon's whole life. The kernel drops it when the holder dies, however it dies, so a
 * daemon killed -9 leaves nothing that blocks the next start. The file names its holder (pid and
 * start time) for the refusal message; it is never removed (removing a lock file lets two
 * processes lock different files of one name).
 * @module
 */
import { UsageError } from "../errors.ts";
import { ensurePrivateDir } from "../private_dir.ts";
import { isAlive, parseIdentity, selfIdentity } from "../process_identity.ts";

/** A held instance lock. */
export interface InstanceLock extends Disposable {
  /** The lock file. */
  readonly path: string;
  /** Releases the lock (idempotent). */
  release(): void;
}

/** Another daemon of the same role holds the state directory's lock (exit 2). */
export class InstanceRunningError extends UsageError {
  /** "Cannot start <what>: another one runs on <stateDir> (pid N)". */
  constructor(what: string, stateDir: string, pid?: number) {
    super(`start ${what}`, `another one runs on ${stateDir}${pid ? ` (pid ${pid})` : ""}`);
  }
}

const MAX_HOLDER_BYTES = 256;

/** Opens `path` for locking: created 0600 when missing, never through a symbolic link. */
function openLockFile(path: string): Deno.FsFile {
  const refuse = (): never => {
    throw new UsageError(`lock ${path}`, "it is not a regular file (a symbolic link?)");
  };
  let file: Deno.FsFile;
  try {
    file = Deno.openSync(path, { read: true, write: true, createNew: true, mode: 0o600 });
  } catch (err) {
    if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
    if (!Deno.lstatSync(path).isFile) refuse();
    file = Deno.openSync(path, { read: true, write: true });
  }
  const opened = file.statSync();
  const there = Deno.lstatSync(path);
  if (!there.isFile || opened.ino !== there.ino || opened.dev !== there.dev) {
    file.close();
    refuse();
  }
  return file;
}

/** The live process the lock file names, if any (the file is input: bounded, validated). */
function holderOf(file: Deno.FsFile): number | undefined {
  const buf = new Uint8Array(MAX_HOLDER_BYTES);
  file.seekSync(0, Deno.SeekMode.Start);
  const n = file.readSync(buf) ?? 0;
  try {
    const holder = parseIdentity(JSON.parse(new TextDecoder().decode(buf.subarray(0, n))));
    return holder && isAlive(holder) ? holder.pid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Takes the `role` lock of `stateDir` (made sure to be private first) without waiting.
 * @throws InstanceRunningError when another live process holds it (exit 2).
 * @example
 * ```ts
 * using lock = await acquireInstanceLock("/run/vmfactory", "serve", "the daemon");
 * // ... run; the lock is released when the block ends or the process dies
 * ```
 */
export async function acquireInstanceLock(
  stateDir: string,
  role: string,
  what: string,
): Promise<InstanceLock> {
  ensurePrivateDir(stateDir, { what: "state directory" });
  const path = `${stateDir}/${role}.lock`;
  const file = openLockFile(path);
  if (!(await file.tryLock(true))) {
    const pid = holderOf(file);
    file.close();
    throw new InstanceRunningError(what, stateDir, pid);
  }
  file.truncateSync(0);
  file.seekSync(0, Deno.SeekMode.Start);
  file.writeSync(new TextEncoder().encode(JSON.stringify(selfIdentity()) + "\n"));
  let held = true;
  const release = () => {
    if (!held) return;
    held = false;
    file.truncateSync(0);
    file.close();
  };
  return { path, release, [Symbol.dispose]: release };
}
