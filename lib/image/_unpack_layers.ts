/**
 * Unpacks an image's layers into one folder, in two passes over the layers. The first reads the
 * tar headers only and builds the final tree (`_layer_tree.ts`: whiteouts applied, hostile names
 * refused) while checking digests and the size limit; nothing is written yet. The second writes
 * one flattened tar of that tree into GNU tar (`/usr/bin/tar` or `/bin/tar`, with fixed options,
 * never `-P`): folders, links and devices first, then each surviving file's data as its layer is
 * read again (digests checked again, so a layer changed between the passes is caught). GNU tar so
 * only sees relative names without `..`, into an empty folder, with no path through a link.
 *
 * As root, owners, modes, device nodes and the `user.*` and `security.capability` xattrs are
 * kept. As another user, files are that user's (the image makes them root's), device nodes are
 * left out and only `user.*` xattrs are kept.
 * @module
 */
import { UsageError, VmfactoryError } from "../errors.ts";
import { systemProgram } from "../system_program.ts";
import { type LayerBlob, readLayer, UnpackBudget } from "./_layer_stream.ts";
import { LayerTree } from "./_layer_tree.ts";
import { ImageInputError } from "./_image_input_error.ts";
import { padding } from "./_tar_reader.ts";
import { TAR_END, type TarHeader, tarHeader } from "./_tar_writer.ts";

/** Progress of an unpack: phase "read" (first pass) or "unpack" (second), bytes so far. */
export type UnpackProgress = (p: { phase: string; bytes: number; totalBytes: number }) => void;

/** How to unpack. */
export interface UnpackOptions {
  /** Cap on the bytes the layers unpack to. */
  maxBytes: number;
  /** True to keep owners and device nodes (needs root). */
  asRoot: boolean;
  /** Stops the work. */
  signal?: AbortSignal;
  /** Progress, at most every few MiB. */
  onProgress?: UnpackProgress;
}

const STEP = 8 << 20;

function progress(phase: string, totalBytes: number, report?: UnpackProgress) {
  let bytes = 0;
  let last = -STEP;
  report?.({ phase, bytes, totalBytes });
  return (n: number) => {
    bytes += n;
    if (bytes - last >= STEP || bytes === totalBytes) {
      last = bytes;
      report?.({ phase, bytes, totalBytes });
    }
  };
}

/** Collects writes into big pieces for the tar process's stdin. */
class BufferedWriter {
  #buffer = new Uint8Array(1 << 20);
  #length = 0;
  constructor(private readonly writer: WritableStreamDefaultWriter<Uint8Array>) {}

  async write(bytes: Uint8Array): Promise<void> {
    const big = bytes.length >= this.#buffer.length / 2;
    if (big || this.#length + bytes.length > this.#buffer.length) await this.flush();
    if (big) return await this.writer.write(bytes);
    this.#buffer.set(bytes, this.#length);
    this.#length += bytes.length;
  }

  async flush(): Promise<void> {
    if (!this.#length) return;
    const out = this.#buffer.subarray(0, this.#length);
    this.#buffer = new Uint8Array(this.#buffer.length);
    this.#length = 0;
    await this.writer.write(out);
  }
}

function keepXattrs(h: { xattrs?: Map<string, Uint8Array> }, asRoot: boolean) {
  const kept = new Map<string, Uint8Array>();
  for (const [name, value] of h.xattrs ?? []) {
    if (name.startsWith("user.") || (asRoot && name === "security.capability")) {
      kept.set(name, value);
    }
  }
  return kept;
}

function tarCommand(dest: string, asRoot: boolean, signal?: AbortSignal): Deno.ChildProcess {
  const tar = systemProgram("tar");
  if (!tar) {
    throw new UsageError("unpack an image", "GNU tar is not installed (apt-get install tar)");
  }
  return new Deno.Command(tar, {
    args: [
      "--extract",
      "--file=-",
      `--directory=${dest}`,
      "--numeric-owner",
      "--preserve-permissions",
      asRoot ? "--same-owner" : "--no-same-owner",
      "--delay-directory-restore",
      "--xattrs",
      "--xattrs-include=*",
      "--warning=no-timestamp",
    ],
    stdin: "piped",
    stdout: "null",
    stderr: "piped",
    signal,
  }).spawn();
}

/**
 * Unpacks `layers` (lowest first) into the empty folder `dest`; returns the bytes of file data.
 * @throws ImageInputError for bad input (see the module doc), VmfactoryError when tar fails.
 */
export async function unpackLayers(
  layers: readonly LayerBlob[],
  dest: string,
  options: UnpackOptions,
): Promise<number> {
  const { signal, asRoot } = options;
  const tree = new LayerTree();
  const stored = layers.reduce((sum, l) => sum + l.size, 0);
  const budget = new UnpackBudget(options.maxBytes);
  const onRead = progress("read", stored, options.onProgress);
  for (const [i, layer] of layers.entries()) {
    await readLayer(layer, { budget, signal, onBytes: onRead }, (entry, member) => {
      tree.add(entry, i, member);
    });
  }
  const plan = tree.plan();
  const onUnpack = progress("unpack", plan.bytes, options.onProgress);
  const child = tarCommand(dest, asRoot, signal);
  const stderr = new Response(child.stderr).arrayBuffer();
  const writer = child.stdin.getWriter();
  const out = new BufferedWriter(writer);
  const emit = (h: TarHeader) => out.write(tarHeader({ ...h, xattrs: keepXattrs(h, asRoot) }));
  try {
    for (const h of plan.headers) {
      if (asRoot || (h.type !== "char" && h.type !== "block")) await emit(h);
    }
    const again = new UnpackBudget(options.maxBytes);
    const withData = new Set([...plan.files.values()].map((f) => f.inode.layer));
    for (const [i, layer] of layers.entries()) {
      if (!withData.has(i)) continue;
      await readLayer(layer, { budget: again, signal }, async (entry, member, tar) => {
        const group = plan.files.get(`${i}:${member}`);
        if (!group) return;
        const { inode, paths: [first, ...links] } = group;
        if (entry.type !== "file" || entry.size !== inode.size) {
          throw new ImageInputError("it changed while it was read");
        }
        await emit({ name: first, type: "file", ...inode });
        await tar.data(async (part) => {
          await out.write(part);
          onUnpack(part.length);
        });
        await out.write(new Uint8Array(padding(inode.size)));
        for (const name of links) {
          await emit({ name, type: "link", ...inode, size: 0, linkname: first });
        }
      });
    }
    await out.write(TAR_END);
    await out.flush();
    await writer.close();
  } catch (err) {
    await writer.abort().catch(() => {});
    const status = await child.status;
    signal?.throwIfAborted();
    if (!status.success && !(err instanceof ImageInputError)) {
      throw await tarFailure(stderr, status);
    }
    throw err;
  }
  const status = await child.status;
  if (!status.success) throw await tarFailure(stderr, status);
  return plan.bytes;
}

async function tarFailure(stderr: Promise<ArrayBuffer>, status: Deno.CommandStatus) {
  const text = new TextDecoder().decode(
    (await stderr.catch(() => new ArrayBuffer(0))).slice(0, 2000),
  );
  return new VmfactoryError(
    "unpack the image with tar",
    text.trim().split("\n").slice(0, 5).join("; ") || `tar exited with ${status.code}`,
  );
}
