/**
 * Container images as read-only filesystem images for VMs: `prepareImage` turns a REF (a rootfs
 * folder, a rootfs tar or `docker save` archive, an OCI image layout) into one erofs image file in
 * the image cache, keyed by the image's digest, and returns its path and run settings. The file
 * reaches a VM as a read-only block device.
 *
 * The digest: for an OCI layout the manifest's, for a `docker save` archive the config's (Docker's
 * image id), for a rootfs tar the tar file's SHA-256 (read whole on every prepare), for a folder
 * that of a metadata walk (see `_dir_digest.ts` for its trade-off). A second prepare of the same
 * image is a cache hit and converts nothing.
 *
 * A conversion: the layers are read and checked (digests, size limit, hostile names) and unpacked
 * by GNU tar into a temporary folder of the cache (`_unpack_layers.ts`), `mkfs.erofs` makes the
 * image, and the folder, with only the image and `image.json` left, is renamed into place. On an
 * error or an abort the temporary folder is removed; after a kill, the next build removes it. A
 * folder REF goes to `mkfs.erofs` as it is, without a copy (so it must not change meanwhile; as
 * root, use only trees no other user can write). As root the image keeps owners, modes, device
 * nodes and file capabilities; as another user its files are root's and device nodes are left out.
 *
 * The format, measured side by side on the 2-core dev machine on a 52.6 MB rootfs (a copy of
 * Python's standard library, 1501 entries; medians of 3): mkfs.erofs uncompressed 0.15 s → 52.5
 * MB, `-zlz4` 1.7× the time → 27.9 MB, `-zlz4hc` 12× → 24.9 MB; mksquashfs gzip 57× → 15.2 MB,
 * lz4 1.3× → 22.9 MB, uncompressed 0.8× → 52.3 MB; `mke2fs -d` (ext4) 3× → a 96.5 MB file sized
 * in advance (53.1 MB used). erofs uncompressed: the guest kernel has erofs as a module, it needs
 * no size guess (ext4 does), keeps hard links, owners, devices and xattrs with file data
 * block-aligned (squashfs uncompressed is as quick to make), and the guest reads it without
 * decompressing, which software emulation makes dear; the price is twice lz4's size.
 * @module
 */
import { UsageError, VmfactoryError } from "../errors.ts";
import { ensurePrivateDir } from "../private_dir.ts";
import { listDockerArchive, resolveDockerArchive } from "./_docker_archive.ts";
import { directoryDigest } from "./_dir_digest.ts";
import { ImageInputError } from "./_image_input_error.ts";
import { fileDigest, type LayerBlob } from "./_layer_stream.ts";
import { mkfsErofs } from "./_mkfs_erofs.ts";
import { resolveOciLayout } from "./_oci_layout.ts";
import { unpackLayers } from "./_unpack_layers.ts";
import {
  commitEntry,
  discardEntry,
  IMAGE_FILE,
  markUsed,
  newTempDir,
  readCacheEntry,
  removeStaleTemps,
  removeTree,
  withImageLock,
  writeEntryMeta,
} from "./image_cache.ts";
import type { ImageConfig } from "./image_config.ts";
import { imageAction, type ImageRef, parseImageRef } from "./image_ref.ts";

export type { ImageConfig } from "./image_config.ts";
export type { ImageRef } from "./image_ref.ts";
export { parseImageRef } from "./image_ref.ts";
export { imageCacheEntries, type ImageCacheEntry, pruneImageCache } from "./image_cache.ts";

/** A converted image, ready to attach to a VM. */
export interface PreparedImage {
  /** The REF as given. */
  ref: string;
  /** `sha256:…` identifying the image (see the module doc). */
  digest: string;
  /** The filesystem image file (in the cache; do not modify it). */
  path: string;
  /** Filesystem type of the file. */
  format: "erofs";
  /** Bytes of the file. */
  sizeBytes: number;
  /** Run settings from the image config (none for a folder or a rootfs tar). */
  config: ImageConfig;
  /** True when the cache had it already. */
  cached: boolean;
}

/** Progress of a conversion. */
export interface ImageProgress {
  /** "hash" (digest of a tar), "scan" (walk of a folder), "read" (layers checked), "unpack", "convert" (mkfs.erofs). */
  phase: string;
  /** Bytes done in this phase. */
  bytes?: number;
  /** Bytes this phase will do. */
  totalBytes?: number;
}

/** How to prepare. */
export interface PrepareImageOptions {
  /** The image cache folder, e.g. `<state_dir>/images` (made private, 0700, if missing). */
  cacheDir: string;
  /** Cap on the bytes the image unpacks to (default {@link DEFAULT_MAX_IMAGE_BYTES}). */
  maxBytes?: number;
  /** Called as a conversion goes, at most every few MiB. */
  onProgress?: (p: ImageProgress) => void;
  /** Stops a conversion; its temporary files are removed. */
  signal?: AbortSignal;
}

/**
 * Default cap on an image's unpacked size (all layers' tars, uncompressed): 4 GiB.
 * @example
 * ```ts
 * await prepareImage(ref, { cacheDir, maxBytes: DEFAULT_MAX_IMAGE_BYTES / 4 }); // 1 GiB
 * ```
 */
export const DEFAULT_MAX_IMAGE_BYTES = 4 * 2 ** 30;

type Source =
  | { kind: "layers"; digest: string; config: ImageConfig; layers: LayerBlob[] }
  | { kind: "directory"; digest: string; config: ImageConfig; path: string };

async function resolveSource(
  ref: ImageRef,
  options: PrepareImageOptions,
  maxBytes: number,
): Promise<Source> {
  if (ref.kind === "oci") return { kind: "layers", ...await resolveOciLayout(ref.path, ref.tag) };
  if (ref.kind === "directory") {
    options.onProgress?.({ phase: "scan" });
    const { digest } = await directoryDigest(ref.path, maxBytes);
    return { kind: "directory", digest, config: {}, path: ref.path };
  }
  const info = await Deno.stat(ref.path);
  const head = new Uint8Array(4);
  await Deno.open(ref.path).then(async (f) => {
    using file = f;
    await file.read(head);
  });
  if ((head[0] === 0x1f && head[1] === 0x8b) || head.join() === "40,181,47,253") {
    throw new ImageInputError("it is a compressed file; decompress it to a .tar first");
  }
  const members = await listDockerArchive(ref.path);
  if (members) return { kind: "layers", ...await resolveDockerArchive(ref.path, members) };
  const onProgress = options.onProgress;
  let bytes = 0;
  onProgress?.({ phase: "hash", bytes, totalBytes: info.size });
  const digest = await fileDigest(ref.path, 0, Infinity, options.signal, (n) => {
    bytes += n;
    if (bytes % (64 << 20) < n || bytes === info.size) {
      onProgress?.({ phase: "hash", bytes, totalBytes: info.size });
    }
  });
  const layer = {
    path: ref.path,
    offset: 0,
    size: info.size,
    digest,
    what: "the tar file",
    whole: true,
  };
  return { kind: "layers", digest, config: {}, layers: [layer] };
}

function prepared(ref: string, digest: string, cacheDir: string, cached: boolean): PreparedImage {
  const entry = readCacheEntry(cacheDir, digest);
  if (!entry) {
    throw new VmfactoryError(imageAction(ref), "its cache entry vanished (pruned meanwhile?)");
  }
  markUsed(cacheDir, digest);
  const { path, format, sizeBytes, config } = entry;
  return { ref, digest, path, format, sizeBytes, config, cached };
}

async function build(
  source: Source,
  ref: string,
  cacheDir: string,
  options: PrepareImageOptions,
  maxBytes: number,
) {
  const { signal, onProgress } = options;
  const asRoot = Deno.uid() === 0;
  removeStaleTemps(cacheDir);
  const tmp = newTempDir(cacheDir);
  try {
    const rootfs = source.kind === "directory" ? source.path : `${tmp}/rootfs`;
    if (source.kind === "layers") {
      Deno.mkdirSync(rootfs, { mode: 0o700 });
      await unpackLayers(source.layers, rootfs, { maxBytes, asRoot, signal, onProgress });
    }
    onProgress?.({ phase: "convert" });
    await mkfsErofs(rootfs, `${tmp}/${IMAGE_FILE}`, {
      digest: source.digest,
      allRoot: !asRoot,
      signal,
    });
    if (source.kind === "layers") removeTree(rootfs);
    const sizeBytes = Deno.statSync(`${tmp}/${IMAGE_FILE}`).size;
    writeEntryMeta(tmp, { digest: source.digest, sizeBytes, ref, config: source.config });
    // under the lock, what is there now is a broken entry or one a racing build just made
    if (!readCacheEntry(cacheDir, source.digest)) discardEntry(cacheDir, source.digest);
    commitEntry(tmp, cacheDir, source.digest);
  } finally {
    removeTree(tmp); // gone when committed
  }
}

/**
 * Makes (or finds in the cache) the erofs image of `ref`; see the module doc. May be called
 * concurrently, also from several processes: one builds, the others wait and find it cached.
 * @throws UsageError "Cannot use image REF: …" (exit 2) for a missing or unreadable REF, an unknown
 * tag (the message lists the tags), a tar that is neither a rootfs nor a `docker save` archive, a
 * blob with a wrong digest, an image over the size limit, hostile names in a tar; VmfactoryError
 * when tar or mkfs.erofs fail or when `signal` aborts ("interrupted").
 * @example
 * ```ts
 * const image = await prepareImage("oci:/srv/layouts/busybox:latest", { cacheDir: `${stateDir}/images` });
 * console.log(image.path, image.config.cmd); // …/sha256-…/rootfs.erofs [ "sh" ]
 * ```
 */
export async function prepareImage(
  ref: string,
  options: PrepareImageOptions,
): Promise<PreparedImage> {
  const action = imageAction(ref);
  const { signal } = options;
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_IMAGE_BYTES;
  try {
    signal?.throwIfAborted();
    const parsed = parseImageRef(ref);
    const cacheDir = ensurePrivateDir(options.cacheDir, { what: "image cache" });
    const source = await resolveSource(parsed, options, maxBytes);
    if (readCacheEntry(cacheDir, source.digest)) {
      return prepared(ref, source.digest, cacheDir, true);
    }
    return await withImageLock(cacheDir, source.digest, async () => {
      if (readCacheEntry(cacheDir, source.digest)) {
        return prepared(ref, source.digest, cacheDir, true);
      }
      await build(source, ref, cacheDir, options, maxBytes);
      return prepared(ref, source.digest, cacheDir, false);
    });
  } catch (err) {
    if (signal?.aborted) throw new VmfactoryError(action, "interrupted", { cause: signal.reason });
    if (err instanceof ImageInputError) throw new UsageError(action, err.message, { cause: err });
    if (err instanceof Deno.errors.NotFound || err instanceof Deno.errors.PermissionDenied) {
      throw new UsageError(action, (err as Error).message, { cause: err });
    }
    throw err;
  }
}
