/**
 * tmpfs mounts for templates: mount once (never stacked), lazy unmount, and a /dev/shm fallback
 * when this process may not mount.
 * @module
 */
import { VmfactoryError } from "../errors.ts";
import { fallbackDir } from "./template_files.ts";

/** True when `path` is itself a mount point (read from /proc/self/mountinfo). */
export function isMountPoint(path: string): boolean {
  const target = path.replace(/\/+$/, "") || "/";
  let info: string;
  try {
    info = Deno.readTextFileSync("/proc/self/mountinfo");
  } catch {
    return false;
  }
  return info.split("\n").some((line) => unescapeMount(line.split(" ")[4] ?? "") === target);
}

/** How many mounts are stacked at `path` (0 when none). */
export function mountCount(path: string): number {
  const target = path.replace(/\/+$/, "") || "/";
  const info = Deno.readTextFileSync("/proc/self/mountinfo");
  return info.split("\n").filter((line) => unescapeMount(line.split(" ")[4] ?? "") === target)
    .length;
}

function unescapeMount(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct) => String.fromCharCode(parseInt(oct, 8)));
}

/** Where a template lives and whether it is a mount of its own. */
export interface TemplateDir {
  /** Folder that holds the template files. */
  path: string;
  /** True when `path` is a tmpfs this tool mounted (or found mounted). */
  mounted: boolean;
  /** A warning to show (e.g. the /dev/shm fallback). */
  warning?: string;
}

async function run(cmd: string, args: string[]): Promise<{ ok: boolean; stderr: string }> {
  try {
    const out = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).output();
    return { ok: out.success, stderr: new TextDecoder().decode(out.stderr).trim() };
  } catch (err) {
    return { ok: false, stderr: String(err) };
  }
}

/**
 * Makes sure a tmpfs of `sizeMiB` is mounted at `path` (mounting only when it is not already a
 * mount point). Without permission to mount, falls back to a folder on /dev/shm with a warning.
 */
export async function ensureTmpfs(path: string, sizeMiB: number): Promise<TemplateDir> {
  await Deno.mkdir(path, { recursive: true, mode: 0o700 });
  if (isMountPoint(path)) return { path, mounted: true };
  const res = await run("mount", [
    "-t",
    "tmpfs",
    "-o",
    `size=${sizeMiB}M,mode=0700`,
    "vmfactory-template",
    path,
  ]);
  if (res.ok) return { path, mounted: true };
  const fallback = fallbackDir(path);
  await Deno.mkdir(fallback, { recursive: true, mode: 0o700 });
  return {
    path: fallback,
    mounted: false,
    warning: `cannot mount a tmpfs at ${path} (${
      res.stderr || "permission denied"
    }); using ${fallback} on /dev/shm instead`,
  };
}

/** Lazily unmounts every mount stacked at `path`; files still mapped by clones stay valid. */
export async function unmountAll(path: string): Promise<void> {
  for (let i = 0; i < 16 && isMountPoint(path); i++) {
    const res = await run("umount", ["-l", path]);
    if (!res.ok) throw new VmfactoryError(`unmount ${path}`, res.stderr);
  }
}
