/**
 * Where a copy lands, by `docker cp`'s rules: a file into an existing folder keeps its name, onto
 * a file replaces it, to a new name takes that name (its folder must exist, and a name ending in
 * `/` must be a folder); a folder into an existing folder becomes a folder of its name there
 * (merged with one of that name), to a new name becomes that folder; `SRC/.` copies a folder's
 * content rather than the folder. The same rules for both directions; pure, nothing is touched.
 * @module
 */
import { UsageError } from "../errors.ts";

/** One side of a copy, read as `docker cp` reads it. */
export interface CopyPath {
  /** Absolute, with `.`, `..` and repeated slashes resolved by name, no trailing slash. */
  path: string;
  /** Ended in `/.` (or was `.`): the folder's content rather than the folder. */
  contents: boolean;
  /** Ended in `/`: it must be a folder. */
  folder: boolean;
}

/** What a path is on its side: a folder (or a link to one), anything else, or nothing. */
export type PathKind = "folder" | "file" | "missing";

/** Where the source goes. */
export interface CopyPlan {
  /** The existing folder the result goes into. */
  into: string;
  /**
   * "contents": the source folder's entries are merged into `into`; "entry": the source goes
   * into `into` as `name` (a folder merges with a folder of that name).
   */
  how: "contents" | "entry";
  /** The result's name in `into` ("entry"). */
  name: string;
}

/**
 * Reads `text` as one side of a copy: relative to `base` (an absolute folder) unless absolute.
 * @example
 * ```ts
 * readCopyPath("src/.", "/home/me"); // { path: "/home/me/src", contents: true, folder: true }
 * ```
 */
export function readCopyPath(text: string, base: string): CopyPath {
  const contents = text === "." || text.endsWith("/.");
  const folder = contents || text.endsWith("/");
  const parts: string[] = [];
  for (const part of (text.startsWith("/") ? text : `${base}/${text}`).split("/")) {
    if (part === "..") parts.pop();
    else if (part !== "" && part !== ".") parts.push(part);
  }
  return { path: `/${parts.join("/")}`, contents, folder };
}

/** The folder holding `path` ("/" for the root and what is directly in it). */
export function parentOf(path: string): string {
  return path.slice(0, path.lastIndexOf("/")) || "/";
}

/** The last name of `path` ("" for the root). */
export function nameOf(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

/**
 * Where `src` (a folder or a file, links counted as files) goes given what `dst` is now and
 * whether its parent is a folder. Throws a {@link UsageError} "Cannot <action>: …" for a copy
 * `docker cp` refuses too.
 */
export function planCopy(
  action: string,
  src: { at: CopyPath; kind: "folder" | "file" },
  dst: { at: CopyPath; kind: PathKind; parentIsFolder: boolean },
): CopyPlan {
  const fail = (detail: string): never => {
    throw new UsageError(action, detail);
  };
  if (src.at.path === "/" && !src.at.contents) fail("copy the root's content with `/.`");
  if (src.kind === "file" && src.at.folder) fail(`${src.at.path} is not a folder`);
  if (dst.kind === "folder") {
    return src.at.contents
      ? { into: dst.at.path, how: "contents", name: "" }
      : { into: dst.at.path, how: "entry", name: nameOf(src.at.path) };
  }
  const entry = { into: parentOf(dst.at.path), how: "entry" as const, name: nameOf(dst.at.path) };
  if (dst.kind === "file") {
    if (dst.at.folder) fail(`${dst.at.path} is not a folder`);
    if (src.kind === "folder") fail(`cannot copy a folder onto the file ${dst.at.path}`);
    return entry;
  }
  if (!dst.parentIsFolder) fail(`the folder ${entry.into} does not exist`);
  if (src.kind === "file" && dst.at.folder) fail(`the folder ${dst.at.path} does not exist`);
  return entry;
}
