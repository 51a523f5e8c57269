/**
 * The daemon's factory: the one {@link VmFactory}, with every request's VM counted. Each make
 * tells the pool governor about the demand before it starts (and to refill once it is done: a
 * pooled clone may have been claimed), and the metrics how long it took and where the VM came
 * from, or that it failed. The pool's own clones are made by another factory and not counted.
 * @module
 */
import { UsageError } from "../errors.ts";
import { type MakeOptions, VmFactory, type VmFactoryOptions } from "../factory/vm_factory.ts";
import type { VmRequest, VmSource } from "../factory/vm_source.ts";
import type { VmRecord } from "../vm/vm_record.ts";
import type { CreateSource } from "./daemon_metrics.ts";

/** What {@link ObservedVmFactory} reports to. */
export interface FactoryObserver {
  /** A request asks for a VM. */
  started(): void;
  /** It got one from `source` after `seconds`. */
  made(source: CreateSource, seconds: number): void;
  /** It failed; `misuse` when the request was refused (a UsageError), not a failed boot. */
  failed(misuse: boolean): void;
  /** The make ended, either way. */
  settled(): void;
}

/** Where `record` came from: a pooled clone (claimed), a clone spawned on request, cache, direct. */
export function createSource(record: VmRecord): CreateSource {
  if (record.source !== "template") return record.source;
  return "claimMs" in record.timings.phases ? "pool" : "template";
}

/**
 * A {@link VmFactory} that reports each make to an observer.
 * @example
 * ```ts
 * const factory = new ObservedVmFactory(source, { fallback }, {
 *   started: () => governor.noteDemand(),
 *   made: (from, s) => metrics.observeCreate(from, s),
 *   failed: (misuse) => misuse || metrics.bootFailed("request"),
 *   settled: () => governor.kick(),
 * });
 * ```
 */
export class ObservedVmFactory extends VmFactory {
  /** A factory over `source` reporting to `observer`. */
  constructor(
    source: VmSource,
    options: VmFactoryOptions,
    readonly observer: FactoryObserver,
  ) {
    super(source, options);
  }

  /** {@link VmFactory.make}, reported. */
  override async make(request: VmRequest, options: MakeOptions = {}): Promise<VmRecord> {
    const started = performance.now();
    this.observer.started();
    try {
      const record = await super.make(request, options);
      this.observer.made(createSource(record), (performance.now() - started) / 1000);
      return record;
    } catch (err) {
      this.observer.failed(err instanceof UsageError);
      throw err;
    } finally {
      this.observer.settled();
    }
  }
}
