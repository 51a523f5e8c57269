/**
 * The files of a template: `memory` (guest RAM), `state` (device state), `manifest.json`
 * (written last: a template without it does not exist). A template lives on a tmpfs at
 * `template_path`, or on /dev/shm when this process may not mount.
 * @module
 */
import { writeFileAtomic } from "../vm/atomic_write.ts";
import type { TemplateManifest } from "./template_manifest.ts";

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

/** The /dev/shm folder used when a tmpfs cannot be mounted at `templatePath`. */
export function fallbackDir(templatePath: string): string {
  return `/dev/shm/vmfactory-template-${templatePath.replace(/[^A-Za-z0-9]+/g, "_")}`;
}

/** Reads a template's manifest; undefined when there is no complete template in `dir`. */
export function readManifest(dir: string): TemplateManifest | undefined {
  try {
    return JSON.parse(Deno.readTextFileSync(templateFiles(dir).manifest)) as TemplateManifest;
  } catch {
    return undefined;
  }
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

/** Finds the complete template for `templatePath` (on its tmpfs, else on the /dev/shm fallback). */
export function findTemplate(templatePath: string): FoundTemplate | undefined {
  for (const dir of [templatePath, fallbackDir(templatePath)]) {
    const manifest = readManifest(dir);
    if (manifest) return { files: templateFiles(dir), manifest };
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
