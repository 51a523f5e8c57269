/** The JSON record kept for each VM in its state folder. @module */
import type { Accel } from "../qemu/qemu_command.ts";
import type { VmPaths } from "./vm_paths.ts";

/** How a VM was made: cold boot, template clone, or from a VMCache. */
export type VmOrigin = "direct" | "template" | "cache";

/** Named phases of a VM's creation and the whole duration, in milliseconds. */
export interface VmTimings {
  /** Request to agent-ready. */
  totalMs: number;
  /** Phase name → milliseconds, in the order they happened. */
  phases: Record<string, number>;
}

/** Everything needed to find, use and stop a VM; written as `record.json` in the VM's folder. */
export interface VmRecord {
  /** Short unique id (also the folder name). */
  id: string;
  /** QEMU's process id. */
  pid: number;
  /** QEMU's start time (clock ticks since boot): with `pid`, names the process. */
  startTime: number;
  /** How the VM was made. */
  source: VmOrigin;
  /** Online vCPUs. */
  cpus: number;
  /** Guest memory in MiB (boot memory plus hot-added). */
  memoryMiB: number;
  /** Guest hostname. */
  hostname: string;
  /** ISO time of creation. */
  createdAt: string;
  /** The VM's folder. */
  dir: string;
  /** QMP Unix socket. */
  qmpSocket: string;
  /** Guest agent Unix socket (virtio-serial port). */
  agentSocket: string;
  /** Serial console log. */
  consoleLog: string;
  /** Accelerator QEMU runs with. */
  accel: Accel;
  /** Template id the VM was cloned from, when `source` is "template". */
  templateId?: string;
  /** Creation timings. */
  timings: VmTimings;
}

/**
 * `value` as the record of the VM in `paths` when it is one: read back from disk, so checked
 * (types, bounds, and id, folder and sockets equal to the folder's own paths); else undefined.
 */
export function parseRecord(value: unknown, paths: VmPaths): VmRecord | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const r = value as Record<string, unknown>;
  const int = (v: unknown, min: number) => Number.isSafeInteger(v) && (v as number) >= min;
  const text = (v: unknown) => typeof v === "string" && v.length <= 4096;
  const ok = r.id === paths.id && r.dir === paths.dir && r.qmpSocket === paths.qmpSocket &&
    r.agentSocket === paths.agentSocket && r.consoleLog === paths.consoleLog &&
    int(r.pid, 2) && int(r.startTime, 0) && int(r.cpus, 1) && int(r.memoryMiB, 1) &&
    ["direct", "template", "cache"].includes(r.source as string) &&
    (r.accel === "kvm" || r.accel === "tcg") && text(r.hostname) && text(r.createdAt) &&
    (r.templateId === undefined || text(r.templateId)) &&
    typeof r.timings === "object" && r.timings !== null;
  return ok ? r as unknown as VmRecord : undefined;
}

/** Records phase timings; `mark(name)` closes the phase that started at the previous mark. */
export class PhaseTimer {
  #start = performance.now();
  #last = this.#start;
  /** Phases so far. */
  readonly phases: Record<string, number> = {};

  /** Ends the current phase under `name`. */
  mark(name: string): void {
    const now = performance.now();
    this.phases[name] = round(now - this.#last);
    this.#last = now;
  }

  /** Timings up to now. */
  done(): VmTimings {
    return { totalMs: round(performance.now() - this.#start), phases: this.phases };
  }
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}

/** The record of a VM living in `paths`, created now. */
export function recordFor(
  paths: VmPaths,
  fields: Omit<VmRecord, "id" | "dir" | "qmpSocket" | "agentSocket" | "consoleLog" | "createdAt">,
): VmRecord {
  return {
    id: paths.id,
    ...fields,
    createdAt: new Date().toISOString(),
    dir: paths.dir,
    qmpSocket: paths.qmpSocket,
    agentSocket: paths.agentSocket,
    consoleLog: paths.consoleLog,
  };
}
