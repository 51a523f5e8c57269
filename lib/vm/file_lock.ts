/** Exclusive advisory locks on files, to serialise work across processes. @module */
import { UsageError } from "../errors.ts";

/**
 * Opens the lock file `path` for writing, creating it new when missing, never through a symbolic
 * link: an existing one is used only when it is a regular file, and the file opened must be the
 * one at `path` (the same inode), so a link swapped in meanwhile is refused too.
 */
async function openLockFile(path: string): Promise<Deno.FsFile> {
  try {
    return await Deno.open(path, { createNew: true, write: true, mode: 0o600 });
  } catch (err) {
    if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
  }
  const refuse = (): never => {
    throw new UsageError(`lock ${path}`, "it is not a regular file (a symbolic link?)");
  };
  if (!Deno.lstatSync(path).isFile) refuse();
  const file = await Deno.open(path, { write: true });
  const [opened, there] = [file.statSync(), Deno.lstatSync(path)];
  if (!there.isFile || opened.ino !== there.ino || opened.dev !== there.dev) {
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
  using file = await openLockFile(path);
  await file.lock(true);
  try {
    return await fn();
  } finally {
    await file.unlock();
  }
}
