/**
 * The files of a template: `memory` (guest RAM), `state` (device state), `manifest.json`
 * (written last: a template without it does not exist). A template lives on a tmpfs at
 * `template_path`, or, when this process may not mount there, in a folder of this user's on
 * /dev/shm. A folder is read only when it is private to this user ({@link existingPrivateDir}):
 * a template planted by another user would run their memory in this user's QEMU.
 * @module
 */
import { existingPrivateDir } from "../private_dir.ts";
import { writeFileAtomic } from "../vm/atomic_write.ts";
import { manifestProblem, type TemplateManifest } from "./template_manifest.ts";

/** Paths of one template folder. */
export interface TemplateFiles {
  /** The folder. */
  dir: string;
  /** Guest RAM file (mapped `share=on` by the template, `share=off` by clones). */
  memory: string;
  /** Saved device state (loaded by clones with `migrate-incoming`). */
  state: string;
  /** The manifest; its presence marks a complete template. */
  manifest: string;
}

/** Paths of the template in `dir`. */
export function templateFiles(dir: string): TemplateFiles {
  return {
    dir,
    memory: `${dir}/memory`,
    state: `${dir}/state`,
    manifest: `${dir}/manifest.json`,
  };
}

/** This user's folder on /dev/shm, holding the fallbacks of every template path: 0700, its own. */
export function fallbackRoot(): string {
  return `/dev/shm/vmfactory-${Deno.uid() ?? "user"}`;
}

/**
 * The folder used when a tmpfs cannot be mounted at `templatePath`:
 * `/dev/shm/vmfactory-<uid>/template-<hash of the path>`, short whatever the path.
 */
export function fallbackDir(templatePath: string): string {
  let hash = 0x811c9dc5; // FNV-1a, 32 bits: a name, not a secret
  for (const byte of new TextEncoder().encode(templatePath)) {
    hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  }
  return `${fallbackRoot()}/template-${hash.toString(16).padStart(8, "0")}`;
}

/** True when the fallback of `templatePath` exists and is private to this user. */
export function fallbackExists(templatePath: string): boolean {
  return existingPrivateDir(fallbackRoot()) && existingPrivateDir(fallbackDir(templatePath));
}

/** A template folder's manifest as read back: absent, unusable (and why), or usable. */
export type ManifestRead =
  | { state: "absent" }
  | { state: "unusable"; reason: string }
  | { state: "usable"; manifest: TemplateManifest };

/**
 * Reads and checks the manifest in `dir`. It is input from disk, so it is trusted only when it
 * is valid JSON of the current manifest format with every field of the right type; otherwise
 * the folder holds no usable template and the result says why.
 */
export function loadManifest(dir: string): ManifestRead {
  const path = templateFiles(dir).manifest;
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return { state: "absent" };
    return { state: "unusable", reason: `cannot read ${path}: ${(err as Error).message}` };
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return { state: "unusable", reason: `${path} is not JSON: ${(err as Error).message}` };
  }
  const problem = manifestProblem(value);
  if (problem) return { state: "unusable", reason: `${path} is not a usable manifest: ${problem}` };
  return { state: "usable", manifest: value as TemplateManifest };
}

/** The usable manifest in `dir`; undefined when there is none or it is unusable. */
export function readManifest(dir: string): TemplateManifest | undefined {
  const read = loadManifest(dir);
  return read.state === "usable" ? read.manifest : undefined;
}

/** Publishes `manifest` (the last step of a build: the template exists from now on). */
export async function writeManifest(dir: string, manifest: TemplateManifest): Promise<void> {
  await writeFileAtomic(templateFiles(dir).manifest, JSON.stringify(manifest, null, 2) + "\n");
}

/** A complete template: where it is and what it was built from. */
export interface FoundTemplate {
  /** Its files. */
  files: TemplateFiles;
  /** Its manifest. */
  manifest: TemplateManifest;
}

/**
 * Finds the complete template for `templatePath` (on its tmpfs, else on the /dev/shm fallback).
 * A folder whose manifest is unusable holds no template; `onUnusable` hears why. A folder that
 * is missing or not this user's to use (root's, for another user) holds none either.
 * @throws PrivateDirError when a folder is unsafe (a symbolic link, another user's, writable).
 */
export function findTemplate(
  templatePath: string,
  onUnusable?: (dir: string, reason: string) => void,
): FoundTemplate | undefined {
  for (const dir of [templatePath, fallbackDir(templatePath)]) {
    const usable = dir === templatePath ? existingPrivateDir(dir) : fallbackExists(templatePath);
    if (!usable) continue;
    const read = loadManifest(dir);
    if (read.state === "usable") return { files: templateFiles(dir), manifest: read.manifest };
    if (read.state === "unusable") onUnusable?.(dir, read.reason);
  }
  return undefined;
}

/** Bytes a template's files occupy (allocated blocks, so a sparse memory file counts as used). */
export function templateBytes(files: TemplateFiles): number {
  let total = 0;
  for (const path of [files.memory, files.state, files.manifest]) {
    try {
      total += (Deno.statSync(path).blocks ?? 0) * 512;
    } catch {
      // missing file: nothing to count
    }
  }
  return total;
}
