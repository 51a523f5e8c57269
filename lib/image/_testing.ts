/**
 * Test helpers for lib/image: tars made by GNU tar from trees the test writes, hand-made tars
 * (for hostile names GNU tar would not write), gzip, OCI layouts and `docker save` archives
 * written by hand, and the content of an erofs image read back with `fsck.erofs --extract` and
 * `dump.erofs` (no mount).
 * @module
 */
import { TAR_END, type TarHeader, tarHeader } from "./_tar_writer.ts";
import { padding } from "./_tar_reader.ts";
import { removeTree } from "./image_cache.ts";

const enc = new TextEncoder();

/** Runs a system program; throws with its stderr when it fails. */
export async function run(program: string, args: string[], cwd?: string): Promise<string> {
  const out = await new Deno.Command(program, { args, cwd, stdout: "piped", stderr: "piped" })
    .output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(`${program} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return text;
}

/** A tree spec: path → file content, `{ dir }`, `{ symlink }`, with optional mode. */
export type TreeSpec = Record<
  string,
  string | { dir: true; mode?: number } | { symlink: string } | { data: string; mode: number }
>;

/** Writes `spec` below `root` (parents made as needed). */
export function writeTree(root: string, spec: TreeSpec): void {
  Deno.mkdirSync(root, { recursive: true });
  for (const [path, what] of Object.entries(spec)) {
    const full = `${root}/${path}`;
    Deno.mkdirSync(full.slice(0, full.lastIndexOf("/")), { recursive: true });
    if (typeof what === "string") Deno.writeTextFileSync(full, what);
    else if ("dir" in what) {
      Deno.mkdirSync(full, { recursive: true });
      if (what.mode !== undefined) Deno.chmodSync(full, what.mode);
    } else if ("symlink" in what) Deno.symlinkSync(what.symlink, full);
    else {
      Deno.writeTextFileSync(full, what.data);
      Deno.chmodSync(full, what.mode);
    }
  }
}

/** A tar of the folder `dir`'s content, made by GNU tar (members "./…"). */
export async function gnuTar(dir: string, out: string, extra: string[] = []): Promise<Uint8Array> {
  await run("/usr/bin/tar", ["-c", "-f", out, "-C", dir, "--numeric-owner", ...extra, "."]);
  return Deno.readFileSync(out);
}

/** One member of a hand-made tar: a header, and data for a file. */
export type RawMember = Partial<TarHeader> & { name: string; data?: string };

/** A tar written member by member with the module's own writer (names taken as they are). */
export function rawTar(members: RawMember[], end = true): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const m of members) {
    const data = enc.encode(m.data ?? "");
    const type = m.type ?? (m.data !== undefined ? "file" : "dir");
    parts.push(
      tarHeader({ mode: 0o644, uid: 0, gid: 0, mtime: 1700000000, ...m, type, size: data.length }),
    );
    if (data.length) parts.push(data, new Uint8Array(padding(data.length)));
  }
  if (end) parts.push(TAR_END);
  return concat(parts);
}

/** The bytes of `parts`, one after the other. */
export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

/** `bytes` gzip-compressed. */
export async function gzip(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
    new CompressionStream("gzip"),
  );
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** `sha256:<hex>` of `bytes`. */
export async function digestOf(bytes: Uint8Array): Promise<string> {
  const hash = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return "sha256:" +
    Array.from(new Uint8Array(hash), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Docker/OCI config JSON with the given run settings. */
export function configJson(
  config: Record<string, unknown>,
  diffIds: string[],
  arch = "amd64",
): Uint8Array {
  return enc.encode(JSON.stringify({
    architecture: arch,
    os: "linux",
    config,
    rootfs: { type: "layers", diff_ids: diffIds },
  }));
}

/** A layer of a hand-written image: its tar, and how it is stored. */
export interface TestLayer {
  /** The uncompressed layer tar. */
  tar: Uint8Array;
  /** Stored compressed (default gzip for OCI, none for docker). */
  compression?: "gzip" | "zstd" | "none";
}

async function stored(layer: TestLayer, fallback: "gzip" | "none"): Promise<[Uint8Array, string]> {
  const how = layer.compression ?? fallback;
  if (how === "gzip") return [await gzip(layer.tar), "application/vnd.oci.image.layer.v1.tar+gzip"];
  if (how === "zstd") {
    const dir = Deno.makeTempDirSync();
    Deno.writeFileSync(`${dir}/l`, layer.tar);
    await run("/usr/bin/zstd", ["-q", `${dir}/l`, "-o", `${dir}/l.zst`]);
    const bytes = Deno.readFileSync(`${dir}/l.zst`);
    Deno.removeSync(dir, { recursive: true });
    return [bytes, "application/vnd.oci.image.layer.v1.tar+zstd"];
  }
  return [layer.tar, "application/vnd.oci.image.layer.v1.tar"];
}

/** What {@link writeOciLayout} made: the manifest and layer digests. */
export interface WrittenLayout {
  /** Manifest digest (what the tag names; for `platforms`, the amd64 one). */
  manifest: string;
  /** Stored layer digests. */
  layers: string[];
}

/**
 * Writes an OCI image layout at `root` by hand: the image under each tag of `tags`; with
 * `multiArch`, the tag names an index of an arm64 and the amd64 image (nested one level).
 */
export async function writeOciLayout(
  root: string,
  image: {
    layers: TestLayer[];
    config?: Record<string, unknown>;
    tags?: string[];
    multiArch?: boolean;
    arch?: string;
  },
): Promise<WrittenLayout> {
  Deno.mkdirSync(`${root}/blobs/sha256`, { recursive: true });
  const blob = async (bytes: Uint8Array) => {
    const digest = await digestOf(bytes);
    Deno.writeFileSync(`${root}/blobs/sha256/${digest.slice(7)}`, bytes);
    return { digest, size: bytes.length };
  };
  const layerDescs: { mediaType: string; digest: string; size: number }[] = [];
  const diffIds: string[] = [];
  for (const layer of image.layers) {
    const [bytes, mediaType] = await stored(layer, "gzip");
    layerDescs.push({ mediaType, ...await blob(bytes) });
    diffIds.push(await digestOf(layer.tar));
  }
  const manifestFor = async (arch: string) => {
    const config = await blob(configJson(image.config ?? {}, diffIds, arch));
    const manifest = {
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config },
      layers: layerDescs,
    };
    return await blob(enc.encode(JSON.stringify(manifest)));
  };
  const amd64 = await manifestFor(image.arch ?? "amd64");
  let top = { mediaType: "application/vnd.oci.image.manifest.v1+json", ...amd64 };
  if (image.multiArch) {
    const arm = await manifestFor("arm64");
    const index = {
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: [
        {
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          ...arm,
          platform: { os: "linux", architecture: "arm64" },
        },
        {
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          ...amd64,
          platform: { os: "linux", architecture: "amd64" },
        },
      ],
    };
    top = {
      mediaType: "application/vnd.oci.image.index.v1+json",
      ...await blob(enc.encode(JSON.stringify(index))),
    };
  }
  Deno.writeTextFileSync(`${root}/oci-layout`, JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  Deno.writeTextFileSync(
    `${root}/index.json`,
    JSON.stringify({
      schemaVersion: 2,
      manifests: (image.tags ?? ["latest"]).map((tag) => ({
        ...top,
        annotations: { "org.opencontainers.image.ref.name": tag },
      })),
    }),
  );
  return { manifest: amd64.digest, layers: layerDescs.map((d) => d.digest) };
}

/**
 * Writes a `docker save` archive to `out`, made by GNU tar from a staged folder: the format
 * before Docker 25 (`<id>/layer.tar`, `<hex>.json`, a layer listed twice is a symbolic link) or,
 * with `oci`, Docker 25's (`blobs/sha256/<hex>` beside `index.json` and `oci-layout`); returns
 * the image id (the config digest).
 */
export async function writeDockerSave(
  out: string,
  image: { layers: TestLayer[]; config?: Record<string, unknown>; tags?: string[]; oci?: boolean },
): Promise<string> {
  const stage = Deno.makeTempDirSync();
  try {
    const names: string[] = [];
    const diffIds: string[] = [];
    const put = async (bytes: Uint8Array) => {
      const hex = (await digestOf(bytes)).slice(7);
      Deno.mkdirSync(`${stage}/blobs/sha256`, { recursive: true });
      Deno.writeFileSync(`${stage}/blobs/sha256/${hex}`, bytes);
      return `blobs/sha256/${hex}`;
    };
    for (const [i, layer] of image.layers.entries()) {
      const [bytes] = await stored(layer, "none");
      diffIds.push(await digestOf(layer.tar));
      if (image.oci) {
        names.push(await put(bytes));
        continue;
      }
      const id = (await digestOf(enc.encode(`layer ${i}`))).slice(7);
      Deno.mkdirSync(`${stage}/${id}`);
      const first = diffIds.indexOf(diffIds[i]);
      if (first < i) {
        Deno.symlinkSync(`../${names[first].split("/")[0]}/layer.tar`, `${stage}/${id}/layer.tar`);
      } else Deno.writeFileSync(`${stage}/${id}/layer.tar`, bytes);
      Deno.writeTextFileSync(`${stage}/${id}/VERSION`, "1.0");
      names.push(`${id}/layer.tar`);
    }
    const config = configJson(image.config ?? {}, diffIds);
    const configDigest = await digestOf(config);
    let configName = `${configDigest.slice(7)}.json`;
    if (image.oci) {
      configName = await put(config);
      Deno.writeTextFileSync(
        `${stage}/oci-layout`,
        JSON.stringify({ imageLayoutVersion: "1.0.0" }),
      );
      Deno.writeTextFileSync(
        `${stage}/index.json`,
        JSON.stringify({ schemaVersion: 2, manifests: [] }),
      );
    } else Deno.writeFileSync(`${stage}/${configName}`, config);
    Deno.writeTextFileSync(
      `${stage}/manifest.json`,
      JSON.stringify([{
        Config: configName,
        RepoTags: image.tags ?? ["test:latest"],
        Layers: names,
      }]),
    );
    const members = [...Deno.readDirSync(stage)].map((e) => e.name).sort();
    await run("/usr/bin/tar", ["-c", "-f", out, "-C", stage, ...members]);
    return configDigest;
  } finally {
    Deno.removeSync(stage, { recursive: true });
  }
}

/** An entry of an image read back: type, mode, owner, and content or link target. */
export interface ReadBackEntry {
  /** f, d, l, c, b, p. */
  type: string;
  /** Permission bits. */
  mode: number;
  /** Owner. */
  uid: number;
  /** Group. */
  gid: number;
  /** File content or symbolic link target. */
  text?: string;
}

/** The content of the erofs image `image`, extracted with `fsck.erofs --extract` into a temp folder. */
export async function readErofs(image: string): Promise<Map<string, ReadBackEntry>> {
  const dir = Deno.makeTempDirSync({ prefix: "vmf-erofs-" });
  try {
    await run("/usr/bin/fsck.erofs", [`--extract=${dir}/x`, "--preserve", image]);
    const found = new Map<string, ReadBackEntry>();
    const visit = (path: string, rel: string) => {
      for (const e of [...Deno.readDirSync(path)].sort((a, b) => a.name < b.name ? -1 : 1)) {
        const full = `${path}/${e.name}`;
        const name = rel ? `${rel}/${e.name}` : e.name;
        let info: Deno.FileInfo;
        try {
          info = Deno.lstatSync(full);
        } catch {
          found.set(name, { type: "?", mode: 0, uid: 0, gid: 0 }); // a name that is not UTF-8
          continue;
        }
        const type = info.isFile
          ? "f"
          : info.isDirectory
          ? "d"
          : info.isSymlink
          ? "l"
          : info.isFifo
          ? "p"
          : info.isCharDevice
          ? "c"
          : "b";
        const entry: ReadBackEntry = {
          type,
          mode: info.mode! & 0o7777,
          uid: info.uid!,
          gid: info.gid!,
        };
        if (info.isFile) entry.text = Deno.readTextFileSync(full);
        if (info.isSymlink) entry.text = Deno.readLinkSync(full);
        found.set(name, entry);
        if (info.isDirectory) visit(full, name);
      }
    };
    visit(`${dir}/x`, "");
    return found;
  } finally {
    removeTree(dir); // also folders extracted 0555
  }
}

/**
 * The full mode (with set-id and sticky bits, which dump.erofs and fsck.erofs 1.5 drop) of
 * `path` in `image`, read from its on-disk inode: `i_mode` is at byte 4 of an inode, which is at
 * `meta_blkaddr * 4096 + nid * 32` (meta_blkaddr: byte 40 of the superblock at 1024).
 */
export async function erofsMode(image: string, path: string): Promise<number> {
  const nid = Number(/NID: (\d+)/.exec(await dumpErofs(image, path))?.[1]);
  const bytes = Deno.readFileSync(image);
  const view = new DataView(bytes.buffer);
  const meta = view.getUint32(1024 + 40, true);
  return view.getUint16(meta * 4096 + nid * 32 + 4, true) & 0o7777;
}

/** `dump.erofs --path=PATH` of `image`: e.g. "Links: 2", "Xattr size: 24", "Uid: 0". */
export function dumpErofs(image: string, path: string): Promise<string> {
  return run("/usr/bin/dump.erofs", [`--path=${path}`, image]);
}

/** The names in `dir` (none when missing). */
export function namesIn(dir: string): string[] {
  try {
    return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  } catch {
    return [];
  }
}
