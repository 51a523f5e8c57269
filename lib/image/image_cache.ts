/**
 * The cache of converted images, a private folder (`<state_dir>/images/` by default): one entry
 * per image digest, `sha256-<hex>/` holding the filesystem image `rootfs.erofs` and `image.json`
 * (digest, format, size, the ref it was made from, the run settings). An entry is built in a
 * temporary folder `.tmp-<pid>-<start time>-<random>/` inside the cache and renamed into place
 * whole, so an entry is complete or absent; one whose builder died is removed by the next build or
 * prune. Builds of one digest are serialised by the lock file `sha256-<hex>.lock` (an flock, gone
 * when the build ends); if two builds still race (a lock file removed meanwhile), the second
 * rename fails and that build uses the first one's entry. `image.json` is read back as input:
 * bounded and checked, and an entry that does not check out is rebuilt.
 * @module
 */
import { existingPrivateDir } from "../private_dir.ts";
import { isAlive, selfIdentity } from "../process_identity.ts";
import { withFileLock } from "../vm/file_lock.ts";
import { checkImageConfig, type ImageConfig } from "./image_config.ts";

/** A converted image in the cache. */
export interface ImageCacheEntry {
  /** `sha256:…` of the image (manifest digest, docker image id, tar or folder digest). */
  digest: string;
  /** The filesystem image file. */
  path: string;
  /** Filesystem type of the file. */
  format: "erofs";
  /** Bytes of the file. */
  sizeBytes: number;
  /** The REF it was first made from. */
  ref: string;
  /** Run settings of the image. */
  config: ImageConfig;
  /** When it was made (ISO time). */
  createdAt: string;
  /** When it was last prepared (the entry folder's mtime). */
  usedAt: Date;
}

/** Name of the filesystem image inside an entry. */
export const IMAGE_FILE = "rootfs.erofs";
const META_FILE = "image.json";
const VERSION = 1;
const ENTRY = /^sha256-([0-9a-f]{64})$/;
const TEMP = /^\.tmp-(\d+)-(\d+)-[0-9a-f]{8}$/;

function entryName(digest: string): string {
  if (!/^sha256:[0-9a-f]{64}$/.test(digest)) throw new Error(`not a sha256 digest: ${digest}`);
  return digest.replace(":", "-");
}

/** The entry folder of `digest`. */
export function entryDir(cacheDir: string, digest: string): string {
  return `${cacheDir}/${entryName(digest)}`;
}

/**
 * The checked entry of `digest`; undefined when there is none or it does not check out (a
 * symbolic link, a bad or foreign `image.json`, a missing or resized image file).
 */
export function readCacheEntry(cacheDir: string, digest: string): ImageCacheEntry | undefined {
  const dir = entryDir(cacheDir, digest);
  try {
    const info = Deno.lstatSync(dir);
    if (!info.isDirectory) return undefined;
    const metaInfo = Deno.lstatSync(`${dir}/${META_FILE}`);
    if (!metaInfo.isFile || metaInfo.size > 1 << 20) return undefined;
    const meta = JSON.parse(Deno.readTextFileSync(`${dir}/${META_FILE}`));
    const image = Deno.lstatSync(`${dir}/${IMAGE_FILE}`);
    if (
      meta?.version !== VERSION || meta.digest !== digest || meta.format !== "erofs" ||
      !image.isFile || meta.sizeBytes !== image.size || typeof meta.ref !== "string" ||
      typeof meta.createdAt !== "string" || meta.ref.length > 4096 || meta.createdAt.length > 40
    ) return undefined;
    return {
      digest,
      path: `${dir}/${IMAGE_FILE}`,
      format: "erofs",
      sizeBytes: image.size,
      ref: meta.ref,
      config: checkImageConfig(meta.config, true),
      createdAt: meta.createdAt,
      usedAt: info.mtime ?? new Date(0),
    };
  } catch {
    return undefined;
  }
}

/** Records that the entry of `digest` was used now (its folder's mtime). */
export function markUsed(cacheDir: string, digest: string): void {
  const now = new Date();
  try {
    Deno.utimeSync(entryDir(cacheDir, digest), now, now);
  } catch {
    // removed meanwhile: the caller holds its path already
  }
}

/** Writes `image.json` of a new entry into the temporary folder `tmp`. */
export function writeEntryMeta(
  tmp: string,
  meta: { digest: string; sizeBytes: number; ref: string; config: ImageConfig },
): void {
  const text = JSON.stringify({
    version: VERSION,
    format: "erofs",
    ...meta,
    createdAt: new Date().toISOString(),
  });
  Deno.writeTextFileSync(`${tmp}/${META_FILE}`, text + "\n", { createNew: true, mode: 0o600 });
}

/** Runs `fn` holding the build lock of `digest`; the lock file is removed when `fn` settles. */
export function withImageLock<T>(
  cacheDir: string,
  digest: string,
  fn: () => Promise<T>,
): Promise<T> {
  const lock = `${entryDir(cacheDir, digest)}.lock`;
  return withFileLock(lock, async () => {
    try {
      return await fn();
    } finally {
      try {
        Deno.removeSync(lock);
      } catch {
        // removed by a waiter that ran before us, or by a prune
      }
    }
  });
}

/** Makes a new temporary folder (0700) in the cache, named after this process. */
export function newTempDir(cacheDir: string): string {
  const { pid, startTime } = selfIdentity();
  const path = `${cacheDir}/.tmp-${pid}-${startTime}-${crypto.randomUUID().slice(0, 8)}`;
  Deno.mkdirSync(path, { mode: 0o700 });
  return path;
}

/** Removes the folder `path` and all in it, also folders its owner may not write (mode 0555). */
export function removeTree(path: string): void {
  try {
    Deno.removeSync(path, { recursive: true });
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return;
    if (!(err instanceof Deno.errors.PermissionDenied)) throw err;
    const open = (dir: string) => {
      Deno.chmodSync(dir, 0o700); // a real folder (lstat): chmod follows no link here
      for (const e of Deno.readDirSync(dir)) {
        if (e.isDirectory && !e.isSymlink) open(`${dir}/${e.name}`);
      }
    };
    open(path);
    Deno.removeSync(path, { recursive: true });
  }
}

/** Removes the temporary folders whose process is gone. */
export function removeStaleTemps(cacheDir: string): void {
  for (const e of Deno.readDirSync(cacheDir)) {
    const m = TEMP.exec(e.name);
    if (m && e.isDirectory && !isAlive({ pid: Number(m[1]), startTime: Number(m[2]) })) {
      removeTree(`${cacheDir}/${e.name}`);
    }
  }
}

/**
 * Moves the finished temporary folder `tmp` into place as the entry of `digest`. False when an
 * entry was there already (`tmp` is then left for the caller to remove).
 */
export function commitEntry(tmp: string, cacheDir: string, digest: string): boolean {
  try {
    Deno.renameSync(tmp, entryDir(cacheDir, digest));
    return true;
  } catch (err) {
    try {
      if (Deno.lstatSync(entryDir(cacheDir, digest))) return false;
    } catch {
      // not there: the rename failed for another reason
    }
    throw err;
  }
}

/**
 * Removes the entry of `digest`, whole: it is first renamed to a temporary name, so no reader
 * sees half an entry. A VM that has the image file open keeps it.
 */
export function discardEntry(cacheDir: string, digest: string): void {
  const dir = entryDir(cacheDir, digest);
  const { pid, startTime } = selfIdentity();
  const doomed = `${cacheDir}/.tmp-${pid}-${startTime}-${crypto.randomUUID().slice(0, 8)}`;
  try {
    Deno.renameSync(dir, doomed);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return;
    throw err;
  }
  removeTree(doomed);
}

/**
 * The images in the cache `cacheDir`, most recently used first; none when the folder does not
 * exist. Entries that do not check out are left out. May be called at any time.
 * @throws PrivateDirError when the folder is not private to this user.
 * @example
 * ```ts
 * for (const e of imageCacheEntries(`${stateDir}/images`)) console.log(e.digest, e.ref, e.sizeBytes);
 * ```
 */
export function imageCacheEntries(cacheDir: string): ImageCacheEntry[] {
  if (!existingPrivateDir(cacheDir, { what: "image cache" })) return [];
  const entries: ImageCacheEntry[] = [];
  for (const e of Deno.readDirSync(cacheDir)) {
    const m = ENTRY.exec(e.name);
    const entry = m && readCacheEntry(cacheDir, `sha256:${m[1]}`);
    if (entry) entries.push(entry);
  }
  return entries.sort((a, b) => b.usedAt.getTime() - a.usedAt.getTime());
}

/**
 * Removes every image of the cache but those whose digest is in `keep` (the images running VMs
 * use), entries that do not check out, and temporary folders of dead builds; returns the removed
 * images. Each image is removed under its build lock, so a build of it in progress finishes first.
 * A VM that has an image file open keeps it; pass the digests of the images VMs use in `keep`.
 * @throws PrivateDirError when the folder is not private to this user.
 * @example
 * ```ts
 * const removed = await pruneImageCache(`${stateDir}/images`, { keep: inUse.map((vm) => vm.imageDigest) });
 * ```
 */
export async function pruneImageCache(
  cacheDir: string,
  options: { keep?: Iterable<string> } = {},
): Promise<ImageCacheEntry[]> {
  if (!existingPrivateDir(cacheDir, { what: "image cache" })) return [];
  const keep = new Set(options.keep ?? []);
  const removed: ImageCacheEntry[] = [];
  removeStaleTemps(cacheDir);
  for (const e of [...Deno.readDirSync(cacheDir)]) {
    const m = ENTRY.exec(e.name);
    if (!m || keep.has(`sha256:${m[1]}`)) continue;
    const digest = `sha256:${m[1]}`;
    await withImageLock(cacheDir, digest, () => {
      const entry = readCacheEntry(cacheDir, digest);
      discardEntry(cacheDir, digest);
      if (entry) removed.push(entry);
      return Promise.resolve();
    });
  }
  return removed;
}
