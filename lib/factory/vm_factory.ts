/**
 * The interface every factory shares (direct cold boot, template clone, VMCache client), after
 * Kata's virtcontainers/factory: get a VM, report status, close. Factories compose: the VMCache
 * server keeps VMs from a base factory, and its client is itself a factory.
 * @module
 */
import type { VmRecord } from "../vm/vm_record.ts";

/** What the caller asks of a new VM. */
export interface VmRequest {
  /** vCPUs wanted (default: the configured `default_vcpus`). */
  cpus?: number;
  /** Memory wanted in MiB (default: the configured `default_memory`). */
  memoryMiB?: number;
  /** Guest hostname (default: `vm-<id>`). */
  hostname?: string;
}

/** A factory's view of itself, for `factory status`. */
export interface FactoryStatus {
  /** "direct", "template" or "cache". */
  kind: string;
  /** Free-form details (JSON-serialisable). */
  [key: string]: unknown;
}

/** Makes VMs. `getVm` may be called any number of times until `close`. */
export interface VmFactory {
  /** "direct", "template" or "cache". */
  readonly kind: string;
  /** Returns a running VM whose agent answers; the VM belongs to the caller. */
  getVm(request: VmRequest): Promise<VmRecord>;
  /** Describes the factory's state. */
  status(): Promise<FactoryStatus>;
  /** Releases what the factory holds (never VMs already handed out). */
  close(): Promise<void>;
}
