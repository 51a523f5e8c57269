/** Exclusive advisory locks on files, to serialise work across processes. @module */
import { UsageError } from "../errors.ts";

/**
 * Opens the lock file `path` for writing, creating it new when missing, never through a symbolic
 * link: an existing one is used only when it is a regular file, and the file opened must be the
 * one at `path` (the same inode), so a link swapped in meanwhile is refused too. Synchronous: the
 * lock file is local and opening it never waits (the async calls cost ~0.3 ms per lock, measured
 * on a claim).
 */
function openLockFile(path: string): Deno.FsFile {
  const refuse = (): never => {
    throw new UsageError(`lock ${path}`, "it is not a regular file (a symbolic link?)");
  };
  let there: Deno.FileInfo;
  try {
    there = Deno.lstatSync(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
    try {
      return Deno.openSync(path, { createNew: true, write: true, mode: 0o600 });
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
      there = Deno.lstatSync(path); // another process created it meanwhile
    }
  }
  if (!there.isFile) refuse();
  const file = Deno.openSync(path, { write: true });
  const [opened, now] = [file.statSync(), Deno.lstatSync(path)];
  if (!now.isFile || opened.ino !== now.ino || opened.dev !== now.dev) {
    file.close();
    refuse();
  }
  return file;
}

/**
 * Runs `fn` while holding an exclusive lock on `path` (created if missing); other processes
 * calling this with the same path wait their turn. The lock is released when `fn` settles or the
 * process dies. A lock file that is not a regular file is refused ({@link UsageError}).
 */
export async function withFileLock<T>(path: string, fn: () => Promise<T>): Promise<T> {
  using file = openLockFile(path);
  await file.lock(true);
  try {
    return await fn();
  } finally {
    file.unlockSync();
  }
}
