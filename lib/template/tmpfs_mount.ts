/**
 * tmpfs mounts for templates: mount once (never stacked), resize a mount of the wrong size, lazy
 * unmount, and a /dev/shm fallback when this process may not mount. Only a tmpfs the tool
 * mounted (source `vmfactory-template` in /proc/self/mountinfo) is resized or unmounted; a
 * system folder (`/run`, `/dev/shm`, …) or another mount at the path is refused. `mount` and
 * `umount` are run from fixed system paths, never looked up in PATH.
 * @module
 */
import { SYSTEM_DIRS, systemProgram } from "../system_program.ts";
import { UsageError, VmfactoryError } from "../errors.ts";
import { ensurePrivateDir, isSystemPath, PrivateDirError } from "../private_dir.ts";
import { fallbackDir, fallbackRoot } from "./template_files.ts";

/** The source name of the tool's tmpfs mounts, which tells them from anyone else's. */
export const MOUNT_SOURCE = "vmfactory-template";

/** One mount from /proc/self/mountinfo. */
export interface MountEntry {
  /** Filesystem type, e.g. "tmpfs". */
  fsType: string;
  /** Mount source, e.g. "vmfactory-template". */
  source: string;
  /** The tmpfs size in KiB, when the options name one. */
  sizeKiB?: number;
}

function unescapeMount(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct) => String.fromCharCode(parseInt(oct, 8)));
}

/** The mount point `path` as the kernel names it: symbolic links resolved when it exists. */
function mountTarget(path: string): string {
  try {
    return Deno.realPathSync(path);
  } catch {
    return path.replace(/\/+$/, "") || "/";
  }
}

/** The mounts stacked at `path`, bottom first (empty when it is not a mount point). */
export function mountsAt(path: string): MountEntry[] {
  const target = mountTarget(path);
  let info: string;
  try {
    info = Deno.readTextFileSync("/proc/self/mountinfo");
  } catch {
    return [];
  }
  const entries: MountEntry[] = [];
  for (const line of info.split("\n")) {
    const fields = line.split(" ");
    if (unescapeMount(fields[4] ?? "") !== target) continue;
    const rest = fields.slice(fields.indexOf("-") + 1);
    const size = /(?:^|,)size=(\d+)k(?:,|$)/.exec(rest[2] ?? "");
    entries.push({
      fsType: rest[0] ?? "",
      source: unescapeMount(rest[1] ?? ""),
      ...(size ? { sizeKiB: Number(size[1]) } : {}),
    });
  }
  return entries;
}

/** True when `path` is itself a mount point (read from /proc/self/mountinfo). */
export function isMountPoint(path: string): boolean {
  return mountsAt(path).length > 0;
}

/** How many mounts are stacked at `path` (0 when none). */
export function mountCount(path: string): number {
  return mountsAt(path).length;
}

/** True when the top mount at `path` is a tmpfs the tool mounted. */
export function isToolMount(path: string): boolean {
  const top = mountsAt(path).at(-1);
  return top !== undefined && top.fsType === "tmpfs" && top.source === MOUNT_SOURCE;
}

/** Where a template lives and whether it is a mount of its own. */
export interface TemplateDir {
  /** Folder that holds the template files. */
  path: string;
  /** True when `path` is a tmpfs this tool mounted. */
  mounted: boolean;
  /** A warning to show (e.g. the /dev/shm fallback). */
  warning?: string;
}

async function run(name: string, args: string[]): Promise<{ ok: boolean; stderr: string }> {
  const cmd = systemProgram(name);
  if (!cmd) return { ok: false, stderr: `no ${name} in ${SYSTEM_DIRS.join(", ")}` };
  try {
    const out = await new Deno.Command(cmd, {
      args,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      clearEnv: true,
      env: { LC_ALL: "C", PATH: SYSTEM_DIRS.join(":") },
    }).output();
    return { ok: out.success, stderr: new TextDecoder().decode(out.stderr).trim() };
  } catch (err) {
    return { ok: false, stderr: String(err) };
  }
}

/** Refuses a system folder as a mount point. */
function refuseSystemPath(path: string): void {
  if (isSystemPath(path)) {
    throw new UsageError(
      `mount a tmpfs at ${path}`,
      "it is a system folder; set [factory] template_path to a folder of its own",
    );
  }
}

/**
 * Makes sure a tmpfs of `sizeMiB` the tool mounted is at `path`: mounts one when `path` is not a
 * mount point, resizes one of another size, and refuses a mount the tool did not make. Without
 * permission to create `path` or to mount, falls back to this user's folder on /dev/shm with a
 * warning. `path` and the fallback are private folders ({@link ensurePrivateDir}).
 * @throws UsageError for a system folder, a foreign mount, or an unsafe folder.
 */
export async function ensureTmpfs(path: string, sizeMiB: number): Promise<TemplateDir> {
  refuseSystemPath(path);
  let why: string;
  try {
    ensurePrivateDir(path, { what: "template folder" });
    why = await mountAt(path, sizeMiB);
    if (!why) {
      ensurePrivateDir(path, { what: "template folder" }); // the mount's root: 0700, ours
      return { path, mounted: true };
    }
  } catch (err) {
    if (!(err instanceof PrivateDirError && err.denied)) throw err;
    why = err.problem;
  }
  const fallback = fallbackDir(path);
  ensurePrivateDir(fallbackRoot(), { what: "template fallback folder" });
  ensurePrivateDir(fallback, { what: "template fallback folder" });
  return {
    path: fallback,
    mounted: false,
    warning: `cannot mount a tmpfs at ${path} (${why}); using ${fallback} on /dev/shm instead`,
  };
}

/** Mounts or resizes the tool's tmpfs at `path`; returns why it could not mount ("" when it did). */
async function mountAt(path: string, sizeMiB: number): Promise<string> {
  const mounts = mountsAt(path);
  if (mounts.length > 0 && !isToolMount(path)) {
    const top = mounts.at(-1)!;
    throw new UsageError(
      `mount a tmpfs at ${path}`,
      `a ${top.fsType} from ${JSON.stringify(top.source)} is mounted there, not the tool's; ` +
        "set [factory] template_path to a folder of its own",
    );
  }
  if (mounts.length > 0) {
    if (mounts.at(-1)!.sizeKiB === sizeMiB * 1024) return "";
    const res = await run("mount", ["-o", `remount,size=${sizeMiB}M`, path]);
    if (!res.ok) {
      throw new VmfactoryError(`resize the tmpfs at ${path} to ${sizeMiB} MiB`, res.stderr);
    }
    return "";
  }
  const res = await run("mount", [
    "-t",
    "tmpfs",
    "-o",
    `size=${sizeMiB}M,mode=0700,nosuid,nodev`,
    MOUNT_SOURCE,
    path,
  ]);
  return res.ok ? "" : res.stderr || "permission denied";
}

/**
 * Lazily unmounts every tmpfs the tool stacked at `path`; files still mapped by clones stay
 * valid. Stops at a mount the tool did not make and leaves it.
 */
export async function unmountAll(path: string): Promise<void> {
  for (let i = 0; i < 16 && isToolMount(path); i++) {
    const res = await run("umount", ["-l", path]);
    if (!res.ok) throw new VmfactoryError(`unmount ${path}`, res.stderr);
  }
}
