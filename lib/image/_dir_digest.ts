/**
 * The cache key of a rootfs folder: a SHA-256 over a deterministic walk (names sorted; for each
 * entry its path, type, mode, owner, size, mtime, ctime, device number and link target; symbolic
 * links are not followed). The trade-off: the walk reads metadata only, so a cache hit costs a
 * `stat` per entry rather than reading every file, and a change that keeps size, mtime and ctime
 * goes unseen (only a clock set back can do that: any write moves the ctime); a copy of an
 * unchanged tree (new ctimes) converts again. Extended attributes are not part of the key.
 * @module
 */
import { ImageInputError, OverLimitError } from "./_image_input_error.ts";
import { newSha256 } from "./_layer_stream.ts";
import { MAX_ENTRIES } from "./_layer_tree.ts";

/** What {@link directoryDigest} found. */
export interface DirectoryScan {
  /** `sha256:…` of the walk. */
  digest: string;
  /** Bytes of regular file data. */
  bytes: number;
}

function typeOf(info: Deno.FileInfo): string {
  if (info.isFile) return "f";
  if (info.isDirectory) return "d";
  if (info.isSymlink) return "l";
  if (info.isCharDevice) return "c";
  if (info.isBlockDevice) return "b";
  if (info.isFifo) return "p";
  return "s";
}

/**
 * Walks the folder `root` (see the module doc).
 * @throws OverLimitError when its files hold more than `maxBytes` bytes;
 * ImageInputError for an unreadable folder or more than {@link MAX_ENTRIES} entries.
 */
export async function directoryDigest(root: string, maxBytes: number): Promise<DirectoryScan> {
  const hash = await newSha256();
  let bytes = 0;
  let entries = 0;
  let text = "";
  const line = (path: string, info: Deno.FileInfo, target: string) => {
    if (++entries > MAX_ENTRIES) {
      throw new ImageInputError(`the folder has more than ${MAX_ENTRIES} entries`);
    }
    text += JSON.stringify([
      path,
      typeOf(info),
      info.mode,
      info.uid,
      info.gid,
      info.isFile ? info.size : 0,
      info.mtime?.getTime(),
      info.ctime?.getTime(),
      info.rdev,
      target,
    ]) + "\n";
    if (text.length > 1 << 16) {
      hash.update(new TextEncoder().encode(text));
      text = "";
    }
  };
  const visit = (dir: string, rel: string) => {
    let names: string[];
    try {
      names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    } catch (err) {
      throw new ImageInputError(`cannot read the folder ${dir}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    for (const name of names) {
      const path = `${dir}/${name}`;
      const info = Deno.lstatSync(path);
      const relPath = rel ? `${rel}/${name}` : name;
      if (info.isFile) {
        bytes += info.size;
        if (bytes > maxBytes) throw new OverLimitError(maxBytes);
      }
      line(relPath, info, info.isSymlink ? Deno.readLinkSync(path) : "");
      if (info.isDirectory) visit(path, relPath);
    }
  };
  line("", Deno.lstatSync(root), "");
  visit(root, "");
  hash.update(new TextEncoder().encode(text));
  return { digest: `sha256:${hash.digest("hex")}`, bytes };
}
