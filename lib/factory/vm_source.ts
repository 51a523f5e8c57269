/**
 * A VM source: "give me a running VM in a folder the store reserved". Cold boot, a template clone
 * (claimed from the pool, else spawned on request), or a VM fetched from a VMCache server. Small on purpose: no policy (fallback, hot-add, personalization,
 * the record) lives here; {@link VmFactory} does those once for every source.
 * @module
 */
import { UsageError } from "../errors.ts";
import type { AgentClient } from "../guest/agent_client.ts";
import type { Accel } from "../qemu/qemu_command.ts";
import type { PhaseTimer, VmOrigin } from "../vm/vm_record.ts";
import type { PendingVm } from "../vm/vm_store.ts";
import type { WorkloadRequest } from "./workload.ts";

/** What the caller asks of a new VM. */
export interface VmRequest extends WorkloadRequest {
  /** vCPUs wanted (default: the source's). */
  cpus?: number;
  /** Memory wanted in MiB (default: the source's). */
  memoryMiB?: number;
  /** Guest hostname (default: `vm-<id>`). */
  hostname?: string;
}

/** vCPUs and memory of a VM. */
export interface Size {
  /** vCPUs. */
  cpus: number;
  /** Memory, MiB. */
  memoryMiB: number;
}

/** The size a source's VMs come in, and how far they can be hot-added. */
export interface SourceShape extends Size {
  /** vCPU hotplug ceiling. */
  maxCpus: number;
  /** Memory hotplug ceiling, MiB. */
  maxMemoryMiB: number;
}

/** A running VM a source hands the factory: folder reserved (building), QEMU up, agent connected. */
export interface SourceVm {
  /** The folder, building and this process's until committed; disposing it stops the VM. */
  pending: PendingVm;
  /** Connected to the guest agent (the factory closes it). */
  agent: AgentClient;
  /** What the VM has now. */
  size: Size;
  /** How the VM was made, for its record. */
  origin: VmOrigin;
  /** Accelerator QEMU runs with. */
  accel: Accel;
  /** Template the VM was cloned from. */
  templateId?: string;
  /** True for clones: they share the template's boot (boot_id) and need a new one. */
  sharesBoot: boolean;
}

/** What a prepared source offers: its VMs' shape, and how to get one. */
export interface SourceSupply {
  /** The shape of its VMs. */
  shape: SourceShape;
  /**
   * A running VM of `want` (sources that boot do so at that size; the others return their own and
   * the factory hot-adds); undefined when the source has none now (an empty pool).
   */
  acquire(want: Size, timer: PhaseTimer): Promise<SourceVm | undefined>;
}

/** A source of running VMs. */
export interface VmSource {
  /** "direct", "template" or "vmcache" (or a caller's own). */
  readonly kind: string;
  /**
   * Readies the source for `request` (may build a template first) and returns what it offers, or
   * throws {@link SourceUnfitError} saying why it cannot serve (a stale template, no server).
   */
  prepare(request: VmRequest): Promise<SourceSupply>;
  /** The source's view of itself, for `factory status`. */
  status?(): Promise<Record<string, unknown>>;
  /** Releases connections the source holds (never VMs handed out). */
  close?(): void;
}

/**
 * A source cannot serve a request (thrown by `prepare` or `acquire`): the factory falls back to a
 * cold boot with the reason, or fails with it (strict). Exit code 2.
 * @example
 * ```ts
 * const factory = new VmFactory(template.source(), { strict: true });
 * await factory.getVm().catch((err) => {
 *   if (err instanceof SourceUnfitError) console.error(err.reason); // e.g. the template is stale
 * });
 * ```
 */
export class SourceUnfitError extends UsageError {
  /** The reason alone, e.g. "the template is stale: ...". */
  readonly reason: string;
  /** "Cannot get a VM from the <kind> source: <reason>". */
  constructor(kind: string, reason: string, options?: { cause?: unknown }) {
    super(`get a VM from the ${kind} source`, reason, options);
    this.reason = reason;
  }
}
