/**
 * `docker save` archives: a tar holding `manifest.json`, the image config and one tar per layer
 * (Docker before 25 names them `<id>/layer.tar` and `<hex>.json`, Docker 25 and later keeps an OCI
 * layout inside: `blobs/sha256/<hex>`; skopeo's `docker-archive:` writes `<hex>.tar`). Told apart from a rootfs tar by its member names alone:
 * the first member no `docker save` writes makes it a rootfs tar, so telling costs a header or two.
 * Layers are read in place from the archive and checked against the config's `rootfs.diff_ids`;
 * the image's identity is the config's digest (Docker's image id).
 * @module
 */
import { ImageInputError } from "./_image_input_error.ts";
import type { LayerBlob } from "./_layer_stream.ts";
import type { ResolvedImage } from "./_oci_layout.ts";
import { type TarEntry, TarReader } from "./_tar_reader.ts";
import { displayName, memberPath } from "./_tar_names.ts";
import { parseImageConfigFile } from "./image_config.ts";

interface Member {
  entry: TarEntry;
  offset: number;
}

const HEX = "[0-9a-f]{64}";
const DOCKER_NAMES = new RegExp(
  `^(manifest\\.json|repositories|index\\.json|oci-layout|${HEX}\\.(json|tar)|${HEX}|` +
    `${HEX}/(layer\\.tar|json|VERSION)|blobs|blobs/sha256|blobs/sha256/${HEX})$`,
);
const MAX_MEMBERS = 10_000;
const MAX_JSON = 4 << 20;

/**
 * The members of the `docker save` archive at `path` by normalised name; undefined when the tar
 * is not one (a rootfs tar).
 * @throws ImageInputError when the file is not a tar at all.
 */
export async function listDockerArchive(path: string): Promise<Map<string, Member> | undefined> {
  using file = await Deno.open(path);
  const size = (await file.stat()).size;
  const tar = new TarReader({ file, size });
  const members = new Map<string, Member>();
  let first = true;
  for (let entry; (entry = await nextOrNotTar(tar, first));) {
    first = false;
    const name = memberPath(entry.name).join("/");
    if (!DOCKER_NAMES.test(name) || members.size >= MAX_MEMBERS) return undefined;
    members.set(name, { entry, offset: tar.dataOffset });
  }
  if (first) throw new ImageInputError("it is an empty tar archive");
  return members.has("manifest.json") ? members : undefined;
}

async function nextOrNotTar(tar: TarReader, first: boolean): Promise<TarEntry | undefined> {
  try {
    return await tar.next();
  } catch (err) {
    if (!first) throw err;
    throw new ImageInputError(
      "it is not a tar archive (neither a rootfs tar nor a docker save archive)",
      { cause: err },
    );
  }
}

/** Follows links inside the archive to the file member `name` names. */
function fileMember(members: Map<string, Member>, name: string, what: string): Member {
  let current = name;
  for (let hops = 0; hops < 8; hops++) {
    const m = members.get(current);
    if (!m) throw new ImageInputError(`${what} ${displayName(current)} is not in the archive`);
    if (m.entry.type === "file") return m;
    if (m.entry.type === "link") current = memberPath(m.entry.linkname).join("/");
    else if (m.entry.type === "symlink") {
      const base = current.split("/").slice(0, -1).join("/");
      const joined = m.entry.linkname.startsWith("/")
        ? m.entry.linkname
        : `${base}/${m.entry.linkname}`;
      const parts: string[] = [];
      for (const part of joined.split("/")) {
        if (part === "..") parts.pop();
        else if (part && part !== ".") parts.push(part);
      }
      current = parts.join("/");
    } else throw new ImageInputError(`${what} ${displayName(current)} is not a file`);
  }
  throw new ImageInputError(`${what} ${displayName(name)} is a chain of links`);
}

async function readMember(path: string, m: Member, what: string): Promise<Uint8Array> {
  if (m.entry.size > MAX_JSON) {
    throw new ImageInputError(`${what} is larger than ${MAX_JSON >> 20} MiB`);
  }
  using file = await Deno.open(path);
  await file.seek(m.offset, Deno.SeekMode.Start);
  const bytes = new Uint8Array(m.entry.size);
  for (let got = 0; got < bytes.length;) {
    const n = await file.read(bytes.subarray(got));
    if (!n) throw new ImageInputError(`${what} is truncated`);
    got += n;
  }
  return bytes;
}

function strings(value: unknown): string[] | undefined {
  return Array.isArray(value) && value.every((v) => typeof v === "string") ? value : undefined;
}

/**
 * The one image of the `docker save` archive at `path` (listed by {@link listDockerArchive}).
 * @throws ImageInputError for a malformed manifest or config, several images, a missing layer.
 */
export async function resolveDockerArchive(
  path: string,
  members: Map<string, Member>,
): Promise<ResolvedImage> {
  const manifestBytes = await readMember(path, members.get("manifest.json")!, "manifest.json");
  let manifest: unknown;
  try {
    manifest = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(manifestBytes));
  } catch (err) {
    throw new ImageInputError("the docker save manifest.json is not valid JSON", { cause: err });
  }
  if (!Array.isArray(manifest) || manifest.length === 0) {
    throw new ImageInputError("the docker save manifest.json lists no image");
  }
  if (manifest.length > 1) {
    const tags = manifest.flatMap((m) => strings(m?.RepoTags) ?? ["(untagged)"]).slice(0, 20)
      .map((t) => JSON.stringify(t.slice(0, 100)));
    throw new ImageInputError(
      `the archive holds ${manifest.length} images (${
        tags.join(", ")
      }); save one image per archive`,
    );
  }
  const image = manifest[0] as Record<string, unknown>;
  const layerNames = strings(image?.Layers);
  if (typeof image?.Config !== "string" || !layerNames) {
    throw new ImageInputError("the docker save manifest.json entry needs Config and Layers");
  }
  const config = fileMember(members, memberPath(image.Config).join("/"), "the config");
  const configBytes = await readMember(path, config, "the config");
  const hash = new Uint8Array(
    await crypto.subtle.digest("SHA-256", configBytes as Uint8Array<ArrayBuffer>),
  );
  const hex = Array.from(hash, (b) => b.toString(16).padStart(2, "0")).join("");
  const named = /([0-9a-f]{64})(\.json)?$/.exec(image.Config)?.[1];
  if (named && named !== hex) {
    throw new ImageInputError(
      `the config ${image.Config} has the digest sha256:${hex} (the archive is damaged or was changed)`,
    );
  }
  const file = parseImageConfigFile(configBytes);
  const { os, architecture } = file.platform;
  if ((os && os !== "linux") || (architecture && architecture !== "amd64")) {
    throw new ImageInputError(`the image is for ${os}/${architecture}, not linux/amd64`);
  }
  if (!file.diffIds || file.diffIds.length !== layerNames.length) {
    throw new ImageInputError(
      `the config lists ${file.diffIds?.length ?? 0} layer digests for ${layerNames.length} layers`,
    );
  }
  const layers = layerNames.map((name, i): LayerBlob => {
    const m = fileMember(members, memberPath(name).join("/"), `layer ${i + 1}`);
    return {
      path,
      offset: m.offset,
      size: m.entry.size,
      diffId: file.diffIds![i],
      what: `layer ${i + 1} (${JSON.stringify(name.slice(0, 100))})`,
    };
  });
  return { digest: `sha256:${hex}`, config: file.config, layers };
}
