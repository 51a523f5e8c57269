/** Exclusive advisory locks on files, to serialise work across processes. @module */

/**
 * Runs `fn` while holding an exclusive lock on `path` (created if missing); other processes
 * calling this with the same path wait their turn. The lock is released when `fn` settles or the
 * process dies.
 */
export async function withFileLock<T>(path: string, fn: () => Promise<T>): Promise<T> {
  using file = await Deno.open(path, { create: true, write: true });
  await file.lock(true);
  try {
    return await fn();
  } finally {
    await file.unlock();
  }
}
