/**
 * Per-VM cgroup v2 limits, where the host lets the tool make cgroups with the cpu, memory and
 * pids controllers. Each QEMU is moved, right after its spawn, into `<cgroup2>/vmfactory/<name>`
 * with `cpu.max`, `memory.max` and `pids.max` from the VM's vCPU and memory ceilings (hotplug
 * included, so a hot-add never meets the limit); the cgroup is removed once the QEMU has exited.
 * Elsewhere (cgroup v1, the controllers taken, no right to write) nothing is enforced and
 * {@link cgroupSupport} says why. The pages QEMU touched before the move stay charged where the
 * tool runs: a few MiB of start-up.
 * @module
 */
import { errorMessage, VmfactoryError } from "../errors.ts";

/** The controllers a VM's cgroup needs. */
export const CGROUP_CONTROLLERS = ["cpu", "memory", "pids"] as const;

/** Name of the cgroup, below the cgroup v2 root, that holds the VMs' cgroups. */
export const CGROUP_PARENT_NAME = "vmfactory";

/** Memory a VM's cgroup allows beyond its guest RAM: 25% plus this many MiB (QEMU, TCG code). */
export const MEMORY_OVERHEAD_MIB = 64;

/** Tasks a VM's cgroup allows beyond one per vCPU (QEMU runs vCPUs + 3 threads, measured). */
export const PIDS_HEADROOM = 64;

/** A cgroup left empty this long is a leftover {@link pruneCgroups} removes. */
const LEFTOVER_MS = 10_000;

const MIB = 1024 * 1024;
const CPU_PERIOD_US = 100_000;

/** Whether per-VM limits are enforced on this host, and why (not). */
export interface CgroupSupport {
  /** True when each VM's QEMU runs in a cgroup of its own with limits. */
  enforced: boolean;
  /** One line for people: where the limits are, or what is missing. */
  why: string;
  /** The cgroup that holds the VMs' cgroups, when enforced. */
  parent?: string;
}

/** What one VM's cgroup is named and sized for. */
export interface CgroupLimits {
  /** The cgroup's name (the VM id). */
  name: string;
  /** The VM's vCPU ceiling. */
  cpus: number;
  /** The VM's memory ceiling, MiB. */
  memoryMiB: number;
}

/**
 * The limit files of a VM's cgroup: `memory.max` = guest RAM + 25% + 64 MiB, `pids.max` = one
 * task per vCPU + 64, `cpu.max` = one core per vCPU + one for QEMU's own threads.
 */
export function limitValues(limits: CgroupLimits): Record<string, string> {
  const memory = (Math.ceil(limits.memoryMiB * 1.25) + MEMORY_OVERHEAD_MIB) * MIB;
  return {
    "memory.max": String(memory),
    "pids.max": String(limits.cpus + PIDS_HEADROOM),
    "cpu.max": `${(limits.cpus + 1) * CPU_PERIOD_US} ${CPU_PERIOD_US}`,
  };
}

/** The mount point of the cgroup v2 hierarchy in `mountinfo` text (its root mount first). */
export function cgroup2Mount(mountinfo: string): string | undefined {
  const mounts = mountinfo.split("\n").map((line) => {
    const [left, right = ""] = line.split(" - ");
    const fields = left.split(" ");
    return { root: fields[3], point: fields[4], type: right.split(" ")[0] };
  }).filter((m) => m.type === "cgroup2" && m.point);
  const mount = mounts.find((m) => m.root === "/") ?? mounts[0];
  return mount?.point.replace(/\\([0-7]{3})/g, (_, oct) => String.fromCharCode(parseInt(oct, 8)));
}

function readText(path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return "";
  }
}

/** Turns the VM controllers on for the children of `dir` (when not on already). */
function enableControllers(dir: string): void {
  const on = readText(`${dir}/cgroup.subtree_control`).trim().split(/\s+/);
  const off = CGROUP_CONTROLLERS.filter((c) => !on.includes(c));
  if (off.length === 0) return;
  Deno.writeTextFileSync(`${dir}/cgroup.subtree_control`, off.map((c) => `+${c}`).join(" "));
}

/**
 * Prepares `<mount>/vmfactory` with the cpu, memory and pids controllers for its children, and
 * says whether VMs can be limited there. Idempotent. The tool's own cgroup cannot be the parent:
 * it holds the tool's process, and cgroup v2 lets controllers reach the children only of a cgroup
 * without processes (the root excepted).
 */
export function prepareCgroupParent(mount: string | undefined): CgroupSupport {
  const no = (why: string): CgroupSupport => ({ enforced: false, why: `not enforced: ${why}` });
  if (!mount) return no("no cgroup v2 hierarchy is mounted");
  const available = readText(`${mount}/cgroup.controllers`).trim().split(/\s+/);
  const missing = CGROUP_CONTROLLERS.filter((c) => !available.includes(c));
  if (missing.length > 0) {
    return no(
      `the cgroup v2 hierarchy at ${mount} lacks the ${missing.join(", ")} controller(s) ` +
        "(taken by cgroup v1, or not delegated)",
    );
  }
  const parent = `${mount}/${CGROUP_PARENT_NAME}`;
  try {
    enableControllers(mount);
    Deno.mkdirSync(parent, { recursive: true });
    enableControllers(parent);
  } catch (err) {
    return no(`cannot set up ${parent}: ${errorMessage(err)}`);
  }
  return {
    enforced: true,
    why: `each VM's QEMU runs in ${parent}/<vm-id> with cpu.max, memory.max and pids.max`,
    parent,
  };
}

let support: CgroupSupport | undefined;
let mountPoint: string | undefined;

/** Whether per-VM limits are enforced here (prepares the parent cgroup once per process). */
export function cgroupSupport(): CgroupSupport {
  if (!support) {
    mountPoint = cgroup2Mount(readText("/proc/self/mountinfo"));
    support = prepareCgroupParent(mountPoint);
  }
  return support;
}

/**
 * Makes the cgroup `<parent>/<limits.name>` with the VM's limits and moves `pid` (all its
 * threads) into it; returns its path. `parent` defaults to the prepared one; undefined (nothing
 * done) when limits are not enforced. Throws "Cannot limit VM <name>: <detail>".
 */
export function placeInCgroup(
  pid: number,
  limits: CgroupLimits,
  parent: string | undefined = cgroupSupport().parent,
): string | undefined {
  if (!parent) return undefined;
  const action = `limit VM ${limits.name}`;
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(limits.name)) {
    throw new VmfactoryError(action, `${JSON.stringify(limits.name)} is not a cgroup name`);
  }
  const dir = `${parent}/${limits.name}`;
  try {
    Deno.mkdirSync(dir, { recursive: true });
    for (const [file, value] of Object.entries(limitValues(limits))) {
      Deno.writeTextFileSync(`${dir}/${file}`, value);
    }
    Deno.writeTextFileSync(`${dir}/cgroup.procs`, String(pid));
  } catch (err) {
    throw new VmfactoryError(action, `${dir}: ${errorMessage(err)}`, { cause: err });
  }
  return dir;
}

/** The VM cgroup (below the prepared parent) process `pid` runs in; undefined otherwise. */
export function vmCgroupOf(pid: number): string | undefined {
  const { parent } = cgroupSupport();
  if (!parent || !mountPoint) return undefined;
  const line = readText(`/proc/${pid}/cgroup`).split("\n").find((l) => l.startsWith("0::"));
  const dir = line ? `${mountPoint}${line.slice(3)}`.replace(/\/+$/, "") : "";
  return dir.startsWith(`${parent}/`) ? dir : undefined;
}

/**
 * Removes the cgroup `dir` once it is empty (a QEMU that just exited may take a few ms to leave
 * it); false when it is still in use after ~250 ms. A missing cgroup counts as removed.
 */
export async function removeCgroup(dir: string): Promise<boolean> {
  for (let i = 0; i < 50; i++) {
    try {
      Deno.removeSync(dir);
      return true;
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return true; // else busy (EBUSY): wait
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return false;
}

/**
 * Removes the empty VM cgroups of `parent` (default: the prepared one) older than 10 s: those of
 * QEMUs that exited on their own. Returns how many.
 */
export function pruneCgroups(parent: string | undefined = cgroupSupport().parent): number {
  if (!parent) return 0;
  let removed = 0;
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(parent)].filter((e) => e.isDirectory);
  } catch {
    return 0;
  }
  for (const { name } of entries) {
    const dir = `${parent}/${name}`;
    if (!/^populated 0$/m.test(readText(`${dir}/cgroup.events`))) continue;
    try {
      const age = Date.now() - (Deno.statSync(dir).mtime?.getTime() ?? Date.now());
      if (age < LEFTOVER_MS) continue;
      Deno.removeSync(dir);
      removed++;
    } catch {
      // in use again, or gone
    }
  }
  return removed;
}
