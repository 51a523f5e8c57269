/**
 * Reads one layer (a blob file, or a member of a `docker save` archive) as tar entries: the
 * stored bytes are hashed and checked against the digest the manifest names, decompressed (gzip
 * natively, zstd through /usr/bin/zstd, or none: the first bytes tell), counted against the
 * unpacked-size budget and, where the image names one (docker's `diff_id`), hashed again
 * uncompressed. A mismatch is an {@link ImageInputError}; so is a malformed tar, unless the
 * blob's digest is wrong too, which is then what is reported.
 * @module
 */
import { ImageInputError, OverLimitError } from "./_image_input_error.ts";
import { type TarEntry, TarReader } from "./_tar_reader.ts";
import { systemProgram } from "../system_program.ts";

/** Where a layer's bytes are and what they must hash to. */
export interface LayerBlob {
  /** File holding the blob. */
  path: string;
  /** Where the blob starts in the file. */
  offset: number;
  /** Bytes of the blob. */
  size: number;
  /** `sha256:…` of the stored bytes (OCI manifests), checked. */
  digest?: string;
  /** `sha256:…` of the uncompressed tar (docker's `diff_id`), checked. */
  diffId?: string;
  /** How messages name it, e.g. "layer 2 (sha256:ab12…)"; also the prefix of content errors. */
  what: string;
  /** The image's only content (a rootfs tar): content errors get no prefix. */
  whole?: boolean;
}

/** A cap on the bytes all layers unpack to, shared by the reads of one image. */
export class UnpackBudget {
  #left: number;
  /** Allows `max` bytes. */
  constructor(readonly max: number) {
    this.#left = max;
  }
  /** Counts `n` bytes; throws once the total is over the cap. */
  take(n: number): void {
    this.#left -= n;
    if (this.#left < 0) throw new OverLimitError(this.max);
  }
}

/** How a read goes. */
export interface LayerReadOptions {
  /** Shared cap on unpacked bytes. */
  budget: UnpackBudget;
  /** Called with the count of stored bytes read, as they are read. */
  onBytes?: (n: number) => void;
  /** Stops the read. */
  signal?: AbortSignal;
}

type Hash = { update(data: Uint8Array): void; digest(encoding: "hex"): string };

/** A streaming SHA-256 (node:crypto, imported on first use: it costs start-up time). */
export async function newSha256(): Promise<Hash> {
  const { createHash } = await import("node:crypto");
  return createHash("sha256");
}

/** `sha256:<hex>` of `size` bytes of `path` from `offset`. */
export async function fileDigest(
  path: string,
  offset = 0,
  size = Infinity,
  signal?: AbortSignal,
  onBytes?: (n: number) => void,
): Promise<string> {
  const hash = await newSha256();
  using file = await Deno.open(path);
  await file.seek(offset, Deno.SeekMode.Start);
  const buffer = new Uint8Array(1 << 20);
  while (size > 0) {
    signal?.throwIfAborted();
    const got = await file.read(buffer.subarray(0, Math.min(buffer.length, size)));
    if (!got) break;
    hash.update(buffer.subarray(0, got));
    onBytes?.(got);
    size -= got;
  }
  return `sha256:${hash.digest("hex")}`;
}

function sliceStream(file: Deno.FsFile, offset: number, size: number): ReadableStream<Uint8Array> {
  let position = offset;
  const end = offset + size;
  return new ReadableStream({
    async pull(controller) {
      if (position >= end) return controller.close();
      const buffer = new Uint8Array(Math.min(1 << 20, end - position));
      await file.seek(position, Deno.SeekMode.Start);
      const got = await file.read(buffer);
      if (!got) return controller.error(new ImageInputError("the file is shorter than it was"));
      position += got;
      controller.enqueue(buffer.subarray(0, got));
    },
  });
}

function tap(fn: (chunk: Uint8Array) => void): TransformStream<Uint8Array, Uint8Array> {
  return new TransformStream({
    transform(chunk, controller) {
      fn(chunk);
      controller.enqueue(chunk);
    },
  });
}

/** `input` through `zstd -d`; `done` settles when zstd exits (rejecting when it failed). */
function zstdStream(input: ReadableStream<Uint8Array>, signal?: AbortSignal) {
  const zstd = systemProgram("zstd");
  if (!zstd) {
    throw new ImageInputError(
      "a layer is zstd-compressed and zstd is not installed (apt-get install zstd)",
    );
  }
  const child = new Deno.Command(zstd, {
    args: ["-d", "-c", "-q"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    signal,
  }).spawn();
  input.pipeTo(child.stdin).catch(() => {}); // a failure shows in zstd's status or the hash
  const stderr = new Response(child.stderr).arrayBuffer();
  const done = child.status.then(async (status) => {
    if (!status.success) {
      const why = new TextDecoder().decode((await stderr).slice(0, 300)).trim();
      throw new ImageInputError(`zstd could not decompress a layer: ${why || status.code}`);
    }
  });
  done.catch(() => {}); // awaited after the read; never an unhandled rejection meanwhile
  return { output: child.stdout, done, kill: () => child.kill() };
}

async function sniff(file: Deno.FsFile, offset: number): Promise<"gzip" | "zstd" | "none"> {
  const head = new Uint8Array(4);
  await file.seek(offset, Deno.SeekMode.Start);
  const got = await file.read(head);
  if (got !== null && got >= 2 && head[0] === 0x1f && head[1] === 0x8b) return "gzip";
  if (got === 4 && head.join() === "40,181,47,253") return "zstd";
  return "none";
}

/** True for what a corrupt gzip stream makes DecompressionStream throw. */
function fromDecompressor(err: unknown): boolean {
  return err instanceof TypeError || (err instanceof Error && err.name === "InvalidData");
}

function mismatch(blob: LayerBlob, expected: string, actual: string, what: string): never {
  throw new ImageInputError(
    `${blob.what} has the ${what} ${actual}, not ${expected} as the image says ` +
      "(the file is damaged or was changed)",
  );
}

/**
 * Calls `onEntry` for each entry of layer `blob` in order (`index` counts from 0), then checks
 * the digests. `onEntry` may read a file entry's data through `tar`.
 * @throws ImageInputError for a wrong digest, a bad tar, a size over the budget.
 */
export async function readLayer(
  blob: LayerBlob,
  options: LayerReadOptions,
  onEntry: (entry: TarEntry, index: number, tar: TarReader) => Promise<void> | void,
): Promise<void> {
  const { signal } = options;
  using file = await Deno.open(blob.path);
  const compression = await sniff(file, blob.offset);
  const stored = await newSha256();
  let storedBytes = 0;
  const unpacked = blob.diffId ? await newSha256() : undefined;
  let stream = sliceStream(file, blob.offset, blob.size).pipeThrough(tap((chunk) => {
    signal?.throwIfAborted();
    stored.update(chunk);
    storedBytes += chunk.length;
    options.onBytes?.(chunk.length);
  }));
  let zstd: ReturnType<typeof zstdStream> | undefined;
  if (compression === "gzip") {
    stream = stream.pipeThrough(
      new DecompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>,
    );
  }
  if (compression === "zstd") stream = (zstd = zstdStream(stream, signal)).output;
  const tar = new TarReader(stream.pipeThrough(tap((chunk) => {
    options.budget.take(chunk.length);
    unpacked?.update(chunk);
  })));
  try {
    for (let index = 0, entry; (entry = await tar.next()); index++) {
      await onEntry(entry, index, tar);
    }
    await zstd?.done;
  } catch (err) {
    await tar.cancel();
    try {
      zstd?.kill();
    } catch {
      // exited already
    }
    await zstd?.done.catch(() => {});
    signal?.throwIfAborted();
    if (
      err instanceof OverLimitError || !(err instanceof ImageInputError || fromDecompressor(err))
    ) {
      throw err;
    }
    const check = blob.digest ?? (compression === "none" ? blob.diffId : undefined);
    if (check) {
      const actual = await fileDigest(blob.path, blob.offset, blob.size, signal);
      if (actual !== check) mismatch(blob, check, actual, "digest");
    }
    const detail = err instanceof ImageInputError
      ? err.message
      : `cannot decompress it (${(err as Error).message})`;
    throw new ImageInputError(blob.whole ? detail : `${blob.what}: ${detail}`, { cause: err });
  }
  // what the decompressor did not need (trailing bytes) still counts for the digest
  await file.seek(blob.offset + storedBytes, Deno.SeekMode.Start);
  for (const buffer = new Uint8Array(1 << 16); storedBytes < blob.size;) {
    const got = await file.read(
      buffer.subarray(0, Math.min(buffer.length, blob.size - storedBytes)),
    );
    if (!got) throw new ImageInputError(`${blob.what} is shorter than the image says`);
    stored.update(buffer.subarray(0, got));
    storedBytes += got;
  }
  const storedDigest = `sha256:${stored.digest("hex")}`;
  if (blob.digest && storedDigest !== blob.digest) {
    mismatch(blob, blob.digest, storedDigest, "digest");
  }
  const diffId = unpacked && `sha256:${unpacked.digest("hex")}`;
  if (blob.diffId && diffId !== blob.diffId) {
    mismatch(blob, blob.diffId, diffId!, "uncompressed digest");
  }
}
