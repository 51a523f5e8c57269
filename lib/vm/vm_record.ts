/** The JSON record kept for each VM in its state folder. @module */

/** Where a VM came from. */
export type VmSource = "direct" | "template" | "cache";

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
  /** How the VM was made. */
  source: VmSource;
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
  accel: "kvm" | "tcg";
  /** Template id the VM was cloned from, when `source` is "template". */
  templateId?: string;
  /** Creation timings. */
  timings: VmTimings;
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
