/**
 * An OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) resolved to one image: the
 * manifest whose `org.opencontainers.image.ref.name` annotation is the tag (an index, nested or
 * multi-platform, is followed to its linux/amd64 manifest), its config and its layers. Every
 * blob read is bounded and checked against its descriptor's digest and size; the manifest's
 * digest is the image's identity.
 * @module
 */
import { ImageInputError } from "./_image_input_error.ts";
import type { LayerBlob } from "./_layer_stream.ts";
import { type ImageConfig, parseImageConfigFile } from "./image_config.ts";
import { DEFAULT_TAG } from "./image_ref.ts";

/** An image ready to unpack: its identity, run settings and layers (lowest first). */
export interface ResolvedImage {
  /** `sha256:…` naming the image (a manifest digest, or docker's image id). */
  digest: string;
  /** Run settings. */
  config: ImageConfig;
  /** Layers, lowest first. */
  layers: LayerBlob[];
}

interface Descriptor {
  mediaType?: string;
  digest: string;
  size: number;
  annotations?: Record<string, unknown>;
  platform?: { os?: unknown; architecture?: unknown };
}

const MAX_JSON = 4 << 20;
const MAX_LAYERS = 1000;
const MAX_DEPTH = 4;
const REF_NAME = "org.opencontainers.image.ref.name";
const INDEX_TYPES = new Set([
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
]);
const MANIFEST_TYPES = new Set([
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.v2+json",
]);
const LAYER_TYPE =
  /^application\/vnd\.(oci\.image\.layer\.(nondistributable\.)?v1\.tar(\+gzip|\+zstd)?|docker\.image\.rootfs\.(foreign\.)?diff\.tar\.gzip)$/;

/** A value from the image, quoted and cut for a message. */
function shown(value: string): string {
  return JSON.stringify(value.slice(0, 100));
}

/** Hex of a `sha256:` digest; throws for another algorithm or a malformed one. */
function hexOf(digest: unknown, where: string): string {
  if (typeof digest !== "string") throw new ImageInputError(`${where} has no digest`);
  const m = /^sha256:([0-9a-f]{64})$/.exec(digest);
  if (!m) {
    throw new ImageInputError(
      `${where} has the digest ${JSON.stringify(digest.slice(0, 80))}; only sha256 is supported`,
    );
  }
  return m[1];
}

function descriptor(value: unknown, where: string): Descriptor {
  if (typeof value !== "object" || value === null) {
    throw new ImageInputError(`${where} is not a descriptor`);
  }
  const d = value as Record<string, unknown>;
  hexOf(d.digest, where);
  if (!Number.isSafeInteger(d.size) || (d.size as number) < 0) {
    throw new ImageInputError(`${where} has no valid size`);
  }
  if (d.mediaType !== undefined && typeof d.mediaType !== "string") {
    throw new ImageInputError(`${where} has a malformed mediaType`);
  }
  return d as unknown as Descriptor;
}

function parseJson(bytes: Uint8Array, what: string): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (err) {
    throw new ImageInputError(`${what} is not valid JSON`, { cause: err });
  }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) {
    throw new ImageInputError(`${what} is not a JSON object`);
  }
  return doc as Record<string, unknown>;
}

async function sha256(bytes: Uint8Array): Promise<string> {
  const hash = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return "sha256:" +
    Array.from(new Uint8Array(hash), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Reads a small file whole, at most `max` bytes. */
async function readSmall(path: string, max: number, what: string): Promise<Uint8Array> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) throw new ImageInputError(`${what} is missing`);
    throw new ImageInputError(`cannot read ${what}: ${(err as Error).message}`, { cause: err });
  }
  using _ = file;
  const info = await file.stat();
  if (!info.isFile) throw new ImageInputError(`${what} is not a file`);
  if (info.size > max) throw new ImageInputError(`${what} is larger than ${max >> 20} MiB`);
  const bytes = new Uint8Array(info.size);
  for (let got = 0; got < bytes.length;) {
    const n = await file.read(bytes.subarray(got));
    if (!n) throw new ImageInputError(`${what} is shorter than it was`);
    got += n;
  }
  return bytes;
}

/** Resolves image layouts: one {@link resolveOciLayout} call. */
class Layout {
  constructor(readonly root: string) {}

  blobPath(d: Descriptor, where: string): string {
    return `${this.root}/blobs/sha256/${hexOf(d.digest, where)}`;
  }

  /** A small blob, checked against its descriptor. */
  async blob(d: Descriptor, what: string): Promise<Uint8Array> {
    if (d.size > MAX_JSON) {
      throw new ImageInputError(`${what} is larger than ${MAX_JSON >> 20} MiB`);
    }
    const bytes = await readSmall(this.blobPath(d, what), MAX_JSON, `${what} (blob ${d.digest})`);
    const actual = await sha256(bytes);
    if (actual !== d.digest || bytes.length !== d.size) {
      throw new ImageInputError(
        `${what} has the digest ${actual} (${bytes.length} bytes), not ${d.digest} ` +
          `(${d.size} bytes) as the index says (the layout is damaged or was changed)`,
      );
    }
    return bytes;
  }

  /** The manifest `d` names, following indexes to the linux/amd64 entry. */
  async manifest(
    d: Descriptor,
    depth: number,
  ): Promise<{ digest: string; doc: Record<string, unknown> }> {
    const what = `the manifest ${d.digest}`;
    const doc = parseJson(await this.blob(d, what), what);
    const type = (doc.mediaType as string | undefined) ?? d.mediaType;
    if (Array.isArray(doc.manifests) && (type === undefined || INDEX_TYPES.has(type))) {
      if (depth >= MAX_DEPTH) throw new ImageInputError("the image indexes nest too deep");
      return this.manifest(pickPlatform(doc.manifests, `the index ${d.digest}`), depth + 1);
    }
    if (type !== undefined && !MANIFEST_TYPES.has(type)) {
      throw new ImageInputError(
        `the manifest ${d.digest} has the unsupported media type ${shown(type)}`,
      );
    }
    return { digest: d.digest, doc };
  }
}

function pickPlatform(manifests: unknown[], where: string): Descriptor {
  const all = manifests.map((m, i) => descriptor(m, `${where} entry ${i}`));
  const amd64 = all.filter((m) =>
    m.platform?.os === "linux" && m.platform?.architecture === "amd64"
  );
  if (amd64.length) return amd64[0];
  if (all.length === 1 && !all[0].platform) return all[0];
  const word = (v: unknown) => typeof v === "string" && /^[\w.-]{1,32}$/.test(v) ? v : "?";
  const platforms = all.map((m) => `${word(m.platform?.os)}/${word(m.platform?.architecture)}`)
    .join(", ");
  throw new ImageInputError(`${where} has no linux/amd64 image (it has: ${platforms || "none"})`);
}

/**
 * The image tagged `tag` in the OCI layout at `root` (default tag {@link DEFAULT_TAG}; with no
 * tag given and no `latest`, the layout's only image).
 * @throws ImageInputError: not a layout, an unknown tag (the message lists the tags), a wrong
 * digest, a malformed manifest or config, an image for another platform.
 */
export async function resolveOciLayout(
  root: string,
  tag: string | undefined,
): Promise<ResolvedImage> {
  const marker = await readSmall(`${root}/oci-layout`, 64 << 10, "the oci-layout file").catch(
    (err) => {
      throw new ImageInputError(`${root} is not an OCI image layout (${err.message})`);
    },
  );
  if (typeof parseJson(marker, "the oci-layout file").imageLayoutVersion !== "string") {
    throw new ImageInputError("the oci-layout file has no imageLayoutVersion");
  }
  const index = parseJson(
    await readSmall(`${root}/index.json`, MAX_JSON, "index.json"),
    "index.json",
  );
  if (!Array.isArray(index.manifests)) {
    throw new ImageInputError("index.json has no manifests list");
  }
  const entries = index.manifests.map((m, i) => descriptor(m, `index.json entry ${i}`));
  const nameOf = (d: Descriptor) => d.annotations?.[REF_NAME];
  const wanted = tag ?? DEFAULT_TAG;
  let chosen = entries.filter((d) => nameOf(d) === wanted);
  if (!chosen.length && tag === undefined && entries.length === 1) chosen = entries;
  if (!chosen.length) {
    const tags = [
      ...new Set(entries.map(nameOf).filter((t): t is string => typeof t === "string")),
    ];
    const list = tags.length ? tags.slice(0, 20).map((t) => JSON.stringify(t)).join(", ") : "none";
    throw new ImageInputError(`the layout has no tag ${JSON.stringify(wanted)} (tags: ${list})`);
  }
  const layout = new Layout(root);
  const chosenOne = chosen.length === 1 ? chosen[0] : pickPlatform(chosen, `the tag ${wanted}`);
  const { digest, doc } = await layout.manifest(chosenOne, 0);
  const configDesc = descriptor(doc.config, `the manifest ${digest} config`);
  const file = parseImageConfigFile(await layout.blob(configDesc, "the image config"));
  const { os, architecture } = file.platform;
  if ((os && os !== "linux") || (architecture && architecture !== "amd64")) {
    throw new ImageInputError(`the image is for ${os}/${architecture}, not linux/amd64`);
  }
  if (!Array.isArray(doc.layers)) {
    throw new ImageInputError(`the manifest ${digest} has no layers list`);
  }
  if (doc.layers.length > MAX_LAYERS) {
    throw new ImageInputError(`the manifest ${digest} has more than ${MAX_LAYERS} layers`);
  }
  const layers = doc.layers.map((value, i): LayerBlob => {
    const what = `layer ${i + 1}`;
    const d = descriptor(value, what);
    if (!d.mediaType || !LAYER_TYPE.test(d.mediaType)) {
      throw new ImageInputError(
        `${what} has the unsupported media type ${d.mediaType ? shown(d.mediaType) : "(none)"}`,
      );
    }
    return {
      path: layout.blobPath(d, what),
      offset: 0,
      size: d.size,
      digest: d.digest,
      what: `${what} (${d.digest.slice(0, 19)}…)`,
    };
  });
  for (const layer of layers) {
    const info = await Deno.stat(layer.path).catch(() => undefined);
    if (!info?.isFile) throw new ImageInputError(`${layer.what} is missing from the layout`);
    if (info.size !== layer.size) {
      throw new ImageInputError(
        `${layer.what} is ${info.size} bytes, not ${layer.size} as the manifest says`,
      );
    }
  }
  return { digest, config: file.config, layers };
}
