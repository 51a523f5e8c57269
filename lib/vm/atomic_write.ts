/** Atomic file writes: write a temporary file beside the target, then rename it into place. @module */

/**
 * Writes `text` to `path` atomically (readers see the old or the new content, never a part).
 * The temporary file is created new (`O_EXCL`: never an existing file, never through a symbolic
 * link), and the rename replaces `path` itself, not what a link there points to.
 * The files are small, so the work is synchronous: Deno's first async `writeTextFile` of a
 * process costs ~10 ms (measured), which the `vm create` hot path must not pay.
 */
export function writeFileAtomic(path: string, text: string, mode = 0o600): Promise<void> {
  const tmp = `${path}.tmp-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
  try {
    Deno.writeTextFileSync(tmp, text, { mode, createNew: true });
    Deno.renameSync(tmp, path);
    return Promise.resolve();
  } catch (err) {
    try {
      if (!(err instanceof Deno.errors.AlreadyExists)) Deno.removeSync(tmp); // not another's file
    } catch {
      // never created
    }
    return Promise.reject(err);
  }
}
