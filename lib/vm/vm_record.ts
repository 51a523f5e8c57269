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
  /** The container image its commands run in, when it was made with one. */
  image?: VmImage;
  /** Its network, when it was made with one. */
  network?: VmNetwork;
}

/** The container image a VM runs its commands in, and the image config's run settings. */
export interface VmImage {
  /** The REF it was made from. */
  ref: string;
  /** `sha256:…` of the image. */
  digest: string;
  /** The image's root in the guest (commands are chrooted into it). */
  root: string;
  /** `NAME=value` entries of the image config. */
  env?: string[];
  /** The image config's working folder. */
  workingDir?: string;
  /** The image config's user. */
  user?: string;
  /** The image config's entrypoint. */
  entrypoint?: string[];
  /** The image config's command. */
  cmd?: string[];
}

/** A VM's network. */
export interface VmNetwork {
  /** "user" (QEMU's NAT) or "tap". */
  kind: "user" | "tap";
  /** Its NIC's MAC. */
  mac: string;
  /** Its IPv4 address ("" when not addressed). */
  ip: string;
  /** Its default gateway ("" for none). */
  gateway: string;
  /** Host ports forwarded to it, "ADDR:HOST:GUEST/PROTO". */
  ports: string[];
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
    typeof r.timings === "object" && r.timings !== null &&
    (r.image === undefined || isImage(r.image)) &&
    (r.network === undefined || isNetwork(r.network));
  return ok ? r as unknown as VmRecord : undefined;
}

/** Strings of at most 4096 characters, at most 1024 of them. */
function isTexts(v: unknown): boolean {
  return Array.isArray(v) && v.length <= 1024 &&
    v.every((x) => typeof x === "string" && x.length <= 4096);
}

function isShortText(v: unknown): boolean {
  return typeof v === "string" && v.length <= 4096;
}

function isImage(v: unknown): boolean {
  if (typeof v !== "object" || v === null) return false;
  const i = v as Record<string, unknown>;
  return isShortText(i.ref) && typeof i.digest === "string" &&
    /^sha256:[0-9a-f]{64}$/.test(i.digest) &&
    typeof i.root === "string" && /^\/run\/vmf\/[A-Za-z0-9_-]{1,64}\/root$/.test(i.root) &&
    [i.env, i.entrypoint, i.cmd].every((x) => x === undefined || isTexts(x)) &&
    [i.workingDir, i.user].every((x) => x === undefined || isShortText(x));
}

function isNetwork(v: unknown): boolean {
  if (typeof v !== "object" || v === null) return false;
  const n = v as Record<string, unknown>;
  const ipv4 = (x: unknown) =>
    x === "" || (typeof x === "string" && /^\d{1,3}(\.\d{1,3}){3}$/.test(x));
  return (n.kind === "user" || n.kind === "tap") && typeof n.mac === "string" &&
    /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(n.mac) && ipv4(n.ip) && ipv4(n.gateway) &&
    isTexts(n.ports);
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
