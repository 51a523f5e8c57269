/**
 * What the VMCache gRPC server serves: the VMs it hands out and the source it takes them from.
 * The server (`cache_server.ts`) only moves these over the wire; the VMCache implements the source.
 * @module
 */

/** A ready VM as the source hands it out; `pid` (its QEMU) is for logs and stays off the wire. */
export interface CacheVm {
  /** VM id, sent as `GrpcVM.id`. */
  id: string;
  /** JSON telling the client how to take the VM over, sent as `GrpcVM.hypervisor`. */
  hypervisor: Uint8Array;
  /** vCPUs, sent as `GrpcVM.cpu`. */
  cpu: number;
  /** Memory in MiB, sent as `GrpcVM.memory`. */
  memory: number;
  /** QEMU pid of the VM. */
  pid: number;
}

/** Where the server gets VMs from; implemented by the VMCache. */
export interface CacheVmSource {
  /** Waits for a ready VM and removes it from the cache; must reject once `signal` aborts. */
  take(signal: AbortSignal): Promise<CacheVm>;
  /** The VMs currently cached (for `Status`). */
  status(): { pid: number; cpu: number; memory: number }[];
  /** Opaque configuration blobs (for `Config`). */
  config(): { data: Uint8Array; agentConfig: Uint8Array };
  /**
   * Receives a VM that was taken for a client that went away before the reply was written; the
   * source may cache it again or destroy it. May be called while the server runs or closes.
   */
  giveBack?(vm: CacheVm, reason: string): void;
}
