/**
 * The host side of a copy out of a VM: the guest's archive is unpacked into a private staging
 * folder beside the destination, checked there as it is on disk (not as the archive claims), and
 * only then moved into place. What GNU tar already refuses (`..` in names, absolute names,
 * writing through a link the archive made) never gets this far; what it allows and we do not —
 * a symbolic link that points outside the destination folder, a device, a FIFO or a socket, a
 * set-user-ID or set-group-ID bit — is refused (or, for the bits, cleared) here.
 * @module
 */
import { VmfactoryError } from "../errors.ts";

/** The guest's archive holds something the host does not take. */
export class RefusedArchiveError extends VmfactoryError {}

function lstatOrUndefined(path: string): Deno.FileInfo | undefined {
  try {
    return Deno.lstatSync(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw err;
  }
}

/**
 * Checks every entry below the staging folder `stage` without following links: folders,
 * regular files and symbolic links whose target is relative and stays inside `stage` (resolved
 * by name from where the link is); clears set-user-ID and set-group-ID bits. Throws a
 * {@link RefusedArchiveError} naming the first entry it refuses. Returns the entries checked.
 */
export function checkStagedTree(stage: string, action: string): number {
  let count = 0;
  const refuse = (rel: string, why: string): never => {
    throw new RefusedArchiveError(action, `the guest's archive holds ${rel}, ${why} (refused)`);
  };
  const walk = (dir: string, rel: string[]) => {
    for (const entry of Deno.readDirSync(dir)) {
      count++;
      const path = `${dir}/${entry.name}`;
      const here = [...rel, entry.name];
      const shown = JSON.stringify(here.join("/"));
      const info = Deno.lstatSync(path);
      if (info.isSymlink) {
        const target = Deno.readLinkSync(path);
        if (!linkStaysInside(rel.length, target)) {
          refuse(
            `${shown} -> ${JSON.stringify(target)}`,
            "a symbolic link that points outside the destination",
          );
        }
        continue;
      }
      if (!info.isFile && !info.isDirectory) {
        refuse(shown, "neither a file, a folder nor a symbolic link");
      }
      const mode = info.mode ?? 0;
      if (mode & 0o6000) Deno.chmodSync(path, mode & 0o1777); // a real file or folder: lstat said
      if (info.isDirectory) walk(path, here);
    }
  };
  walk(stage, []);
  return count;
}

/** True when `target`, read from a folder `depth` levels below the top, stays at or below it. */
export function linkStaysInside(depth: number, target: string): boolean {
  if (target.startsWith("/") || target === "") return false;
  for (const part of target.split("/")) {
    if (part === "..") depth--;
    else if (part !== "" && part !== ".") depth++;
    if (depth < 0) return false;
  }
  return true;
}

/**
 * Moves `from` (a checked staged entry) to `to`, on the same filesystem: renamed when nothing is
 * there; a folder merged into an existing folder entry by entry (the existing one keeps its
 * owner and mode); a file or link replacing an existing file or link (never what a link points
 * to). A folder never replaces a file or the other way round (a {@link VmfactoryError} naming
 * it; entries moved before stay).
 */
export function placeTree(from: string, to: string, action: string): void {
  const there = lstatOrUndefined(to);
  if (!there) return Deno.renameSync(from, to);
  const isFolder = Deno.lstatSync(from).isDirectory;
  if (there.isDirectory && isFolder) {
    for (const entry of Deno.readDirSync(from)) {
      placeTree(`${from}/${entry.name}`, `${to}/${entry.name}`, action);
    }
    return;
  }
  if (there.isDirectory) {
    throw new VmfactoryError(action, `cannot replace the folder ${to} with a file`);
  }
  if (isFolder) throw new VmfactoryError(action, `cannot replace ${to} with a folder`);
  Deno.renameSync(from, to);
}
