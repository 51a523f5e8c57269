/**
 * What `--image REF` names: a rootfs folder, a `.tar` file (a rootfs tar or a `docker save`
 * archive, told apart by content when the image is prepared), or `oci:PATH[:TAG]`, an OCI image
 * layout folder (as `skopeo copy` and `umoci` write it; the path ends at the first `:`, as in
 * skopeo, and TAG defaults to `latest`).
 * @module
 */
import { UsageError } from "../errors.ts";

/** A checked image reference; `path` is absolute. */
export type ImageRef =
  | { kind: "directory"; text: string; path: string }
  | { kind: "tar"; text: string; path: string }
  | { kind: "oci"; text: string; path: string; tag?: string };

/** The tag used when `oci:PATH` names none. */
export const DEFAULT_TAG = "latest";

const MAX_REF = 4096;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9._\-:/@+]{0,254}$/;
const FORMS = "REF is a rootfs folder, a .tar file or oci:PATH[:TAG]";

/** The action of every image error: "Cannot use image REF: …". */
export function imageAction(ref: string): string {
  return `use image ${JSON.stringify(ref).slice(1, -1)}`;
}

/** `path` made absolute from the current folder, `.` and `..` resolved by name (as path.resolve). */
function absolute(path: string): string {
  const parts: string[] = [];
  for (const part of (path.startsWith("/") ? path : `${Deno.cwd()}/${path}`).split("/")) {
    if (part === "..") parts.pop();
    else if (part !== "" && part !== ".") parts.push(part);
  }
  return `/${parts.join("/")}`;
}

function problem(path: string, ref: string): string | undefined {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch (err) {
    if (err instanceof Deno.errors.PermissionDenied) {
      return `cannot look at ${path} (permission denied)`;
    }
    if (!(err instanceof Deno.errors.NotFound)) {
      return `cannot look at ${path}: ${(err as Error).message}`;
    }
    const registry = /^[a-z0-9.-]+(\/[a-z0-9._-]+)*(:[\w.-]+)?$/.test(ref) && !ref.includes(".tar");
    return `${path} does not exist (${FORMS}${
      registry
        ? "; to use a registry image, copy it first: skopeo copy docker://NAME oci:DIR:TAG"
        : ""
    })`;
  }
  try {
    if (info.isDirectory) Deno.readDirSync(path)[Symbol.iterator]().next();
    else if (info.isFile) Deno.openSync(path).close();
    else return `${path} is neither a folder nor a file (${FORMS})`;
  } catch (err) {
    const why = err instanceof Deno.errors.PermissionDenied
      ? "permission denied"
      : (err as Error).message;
    return `cannot read ${path} (${why})`;
  }
  return undefined;
}

/**
 * Checks `ref` and says what it names: its syntax, and that the path exists and can be read
 * (whether a tar is a rootfs or a `docker save` archive is told when it is prepared). Relative
 * paths are taken from the current folder.
 * @throws UsageError "Cannot use image REF: …" (exit 2).
 * @example
 * ```ts
 * parseImageRef("oci:/srv/busybox:1.36"); // { kind: "oci", path: "/srv/busybox", tag: "1.36", … }
 * ```
 */
export function parseImageRef(ref: string): ImageRef {
  const fail = (detail: string): never => {
    throw new UsageError(imageAction(ref), detail);
  };
  if (ref === "") fail(`the reference is empty (${FORMS})`);
  if (ref.length > MAX_REF) fail(`the reference is longer than ${MAX_REF} characters`);
  // deno-lint-ignore no-control-regex
  if (/[\x00-\x1f\x7f]/.test(ref)) fail("the reference holds control characters");
  if (/^[a-z][a-z0-9+.-]*:\/\//.test(ref)) {
    fail(`images are not pulled; copy it into an OCI layout first: skopeo copy ${ref} oci:DIR:TAG`);
  }
  const oci = ref.startsWith("oci:");
  const rest = oci ? ref.slice(4) : ref;
  const colon = oci ? rest.indexOf(":") : -1;
  const given = colon < 0 ? rest : rest.slice(0, colon);
  const tag = colon < 0 ? undefined : rest.slice(colon + 1);
  if (given === "") fail(`oci: needs a path (oci:PATH[:TAG])`);
  if (tag !== undefined && !TAG.test(tag)) {
    fail(
      `the tag ${JSON.stringify(tag)} is not a valid tag (letters, digits, ._-:/@+; at most 255)`,
    );
  }
  const path = absolute(given);
  const bad = problem(path, ref);
  if (bad) fail(bad);
  const isDir = Deno.statSync(path).isDirectory;
  if (oci) {
    if (!isDir) fail(`${path} is not a folder (an OCI image layout is one)`);
    return tag === undefined
      ? { kind: "oci", text: ref, path }
      : { kind: "oci", text: ref, path, tag };
  }
  return { kind: isDir ? "directory" : "tar", text: ref, path };
}
