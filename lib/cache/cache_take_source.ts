/**
 * The cache-take source: VMs taken from an in-process {@link VmCache} and adopted, for a program
 * that keeps the cache itself (the VMCache server serves the same VMs to other processes).
 * @module
 */
import type { SourceShape, SourceSupply, VmSource } from "../factory/vm_source.ts";
import type { VmStore } from "../vm/vm_store.ts";
import { adoptOffered } from "./adopt_offered.ts";
import type { VmCache } from "./vm_cache.ts";

/** Takes VMs of `shape` from `cache`, whose folders live in `store`. */
export class CacheTakeSource implements VmSource {
  /** Always "cache". */
  readonly kind = "cache";

  /** A source over `cache`. */
  constructor(
    readonly cache: VmCache,
    readonly store: VmStore,
    readonly shape: SourceShape,
  ) {}

  /** Offers the cached VMs' shape; a take waits for the next ready VM. */
  prepare(): Promise<SourceSupply> {
    return Promise.resolve({
      shape: this.shape,
      acquire: async (_want, timer) => {
        const offered = await this.cache.take();
        timer.mark("takeMs");
        return await adoptOffered(this.store, offered);
      },
    });
  }

  /** The cache's status. */
  status(): Promise<Record<string, unknown>> {
    return this.cache.status();
  }
}
