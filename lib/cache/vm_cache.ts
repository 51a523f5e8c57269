/**
 * The VMCache: keeps `size` VMs of a base source booted and ready (made by the one factory over
 * that source and committed `cached`, owned by this process: personalized once, so the guest code
 * a taker's personalization runs is warm), offers one per request and refills in the background. A boot that fails is logged
 * and retried with exponential backoff; it never closes the cache. `close` destroys the VMs still
 * cached, never one offered or handed out. {@link cacheVmSource} adapts it to the gRPC server;
 * the taker adopts the offered VM ({@link VmStore.adopt}) and the one factory makes it its own.
 * @module
 */
import { errorMessage, VmfactoryError } from "../errors.ts";
import { VmFactory } from "../factory/vm_factory.ts";
import type { VmSource } from "../factory/vm_source.ts";
import { selfIdentity } from "../process_identity.ts";
import type { VmRecord } from "../vm/vm_record.ts";
import type { VmStore } from "../vm/vm_store.ts";
import type { CacheVm, CacheVmSource } from "./cache_vm_source.ts";

/** What the cache does with its VMs' folders; {@link storeKeeper} is the real one. */
export interface CacheKeeper {
  /** Offers a cached VM to a taker (`cached` → `offered`); returns its record. */
  offer(record: VmRecord): Promise<VmRecord>;
  /** Takes an offered VM back (`offered` → `cached`); false when the taker already adopted it. */
  giveBack(record: VmRecord): Promise<boolean>;
  /** Stops a cached VM and removes its folder. */
  destroy(record: VmRecord): Promise<void>;
}

/** The keeper of a VMCache server's VMs in `store`. */
export function storeKeeper(store: VmStore): CacheKeeper {
  return {
    offer: (record) => store.offer(record.id),
    giveBack: (record) => store.giveBack(record.id),
    async destroy(record) {
      await store.remove(record.id, ["cached"], { owner: selfIdentity() });
    },
  };
}

/** Options of {@link VmCache}. */
export interface VmCacheOptions {
  /** How many ready VMs to keep. */
  size: number;
  /** Boots at a time (default 2). */
  concurrency?: number;
  /** Delay between a hand-out and the refill boot it triggers (default 250 ms). */
  refillDelayMs?: number;
  /** Backoff after a failed boot: first delay and ceiling in ms (default 1000, 30 000). */
  retryMs?: { initial: number; max: number };
  /** The cached VMs' files. */
  keeper: CacheKeeper;
  /** One line per fill progress, hand-out, refill and failed boot. */
  log?: (line: string) => void;
}

/** A cached VM. */
interface Entry {
  record: VmRecord;
  readyAt: number;
}

interface Waiter {
  resolve(record: VmRecord): void;
  reject(err: unknown): void;
}

/** The error of a call made while (or after) the cache closed. */
export class CacheClosedError extends VmfactoryError {
  /** Builds "Cannot get a VM from the VMCache: it is closing". */
  constructor() {
    super("get a VM from the VMCache", "it is closing");
  }
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** Keeps VMs of a base source ready; fills itself from construction until {@link close}. */
export class VmCache {
  readonly #factory: VmFactory;
  readonly #opts: Required<Omit<VmCacheOptions, "log">> & { log: (line: string) => void };
  readonly #ready: Entry[] = [];
  readonly #waiters: Waiter[] = [];
  readonly #boots = new Set<Promise<void>>();
  readonly #started = performance.now();
  #filled = false;
  #firstFill = Promise.withResolvers<void>();
  #failures = 0;
  #backoff?: ReturnType<typeof setTimeout>;
  #closing?: Promise<void>;
  #handedOut = 0;

  /** A cache of `options.size` VMs from `base`; starts booting at once. */
  constructor(base: VmSource, options: VmCacheOptions) {
    if (!(options.size > 0)) throw new RangeError("VmCache size must be > 0");
    this.#factory = new VmFactory(base, { strict: true });
    this.#opts = {
      size: options.size,
      keeper: options.keeper,
      concurrency: options.concurrency ?? 2,
      retryMs: options.retryMs ?? { initial: 1000, max: 30_000 },
      refillDelayMs: options.refillDelayMs ?? 250,
      log: options.log ?? (() => {}),
    };
    this.#pump();
  }

  /** Resolves once the cache was full the first time. */
  get filled(): Promise<void> {
    return this.#firstFill.promise;
  }

  /** The VMs ready now (oldest first). */
  cached(): VmRecord[] {
    return this.#ready.map((e) => e.record);
  }

  /**
   * Takes a ready VM, waiting for the next boot when none is; the VM is offered (the keeper's
   * `offer`) for the caller to adopt. Rejects when `signal` aborts or the cache closes.
   */
  async take(signal?: AbortSignal): Promise<VmRecord> {
    if (this.#closing) throw new CacheClosedError();
    signal?.throwIfAborted();
    const entry = this.#ready.shift();
    const record = entry ? entry.record : await this.#wait(signal);
    try {
      const handed = await this.#opts.keeper.offer(record);
      // The refill starts a little after the reply went out: a booting VM takes a whole core
      // under TCG, and the caller is still taking over the VM it just got.
      setTimeout(() => this.#pump(), this.#opts.refillDelayMs);
      this.#handedOut++;
      this.#opts.log(
        `cache: handed out VM ${record.id} (pid ${record.pid}); ${this.#ready.length}/${this.#opts.size} ready, ${this.#boots.size} booting`,
      );
      return handed;
    } catch (err) {
      this.#offer(record, true); // still cached: the offer did not happen
      throw err;
    }
  }

  #wait(signal?: AbortSignal): Promise<VmRecord> {
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        resolve: (r) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(r);
        },
        reject: (e) => {
          signal?.removeEventListener("abort", onAbort);
          reject(e);
        },
      };
      const onAbort = () => {
        const i = this.#waiters.indexOf(waiter);
        if (i >= 0) this.#waiters.splice(i, 1);
        reject(signal!.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#waiters.push(waiter);
    });
  }

  /**
   * Takes back a VM that was taken but never reached its caller: it is cached again (first in
   * line), or destroyed when the cache is closing.
   */
  giveBack(record: VmRecord, reason: string): void {
    void (async () => {
      try {
        if (!(await this.#opts.keeper.giveBack(record))) {
          this.#opts.log(`cache: VM ${record.id} not taken back: its client took it over`);
          return;
        }
      } catch (err) {
        this.#opts.log(`cache: cannot take back VM ${record.id}: ${errorMessage(err)}`);
        return;
      }
      this.#opts.log(`cache: VM ${record.id} taken back (${reason})`);
      this.#handedOut--;
      this.#offer(record, true);
    })();
  }

  /** A ready VM arrives: first waiter, else the ready list (or destroyed when closing). */
  #offer(record: VmRecord, front = false): void {
    if (this.#closing) {
      void this.#destroy(record);
      return;
    }
    const waiter = this.#waiters.shift();
    if (waiter) return waiter.resolve(record);
    const entry = { record, readyAt: Date.now() };
    if (front) this.#ready.unshift(entry);
    else this.#ready.push(entry);
  }

  async #destroy(record: VmRecord): Promise<void> {
    try {
      await this.#opts.keeper.destroy(record);
    } catch (err) {
      this.#opts.log(`cache: cannot destroy VM ${record.id}: ${errorMessage(err)}`);
    }
  }

  /** Starts boots while the cache (ready + booting) is below size, within the concurrency. */
  #pump(): void {
    const { size, concurrency } = this.#opts;
    while (
      !this.#closing && !this.#backoff && this.#boots.size < concurrency &&
      this.#ready.length + this.#boots.size < size + this.#waiters.length
    ) {
      const boot = this.#boot().finally(() => {
        this.#boots.delete(boot);
        this.#pump();
      });
      this.#boots.add(boot);
    }
  }

  async #boot(): Promise<void> {
    const started = performance.now();
    let record: VmRecord;
    try {
      record = await this.#factory.make({}, { as: "cached", origin: "cache" });
    } catch (err) {
      if (this.#closing) return;
      this.#failures++;
      const { initial, max } = this.#opts.retryMs;
      const delay = Math.min(initial * 2 ** (this.#failures - 1), max);
      const why = errorMessage(err);
      this.#opts.log(
        `cache: boot failed (${this.#failures} in a row): ${why}; retrying in ${seconds(delay)}`,
      );
      clearTimeout(this.#backoff);
      this.#backoff = setTimeout(() => {
        this.#backoff = undefined;
        this.#pump();
      }, delay);
      return;
    }
    this.#failures = 0;
    this.#offer(record);
    if (this.#closing) return;
    const { size } = this.#opts;
    const readyNow = `${this.#ready.length}/${size}`;
    if (!this.#filled) {
      this.#opts.log(
        `cache: ${readyNow} VMs ready (${seconds(performance.now() - this.#started)})`,
      );
      if (this.#ready.length >= size) {
        this.#filled = true;
        this.#firstFill.resolve();
      }
    } else {
      this.#opts.log(
        `cache: refilled with VM ${record.id} in ${
          seconds(performance.now() - started)
        } (${readyNow} ready)`,
      );
    }
  }

  /** Size, ready VMs (id, pid, age), boots in progress, hand-outs, failures in a row. */
  status(): Promise<Record<string, unknown>> {
    const now = Date.now();
    return Promise.resolve({
      kind: "cache",
      size: this.#opts.size,
      ready: this.#ready.map((e) => ({
        id: e.record.id,
        pid: e.record.pid,
        ageSeconds: Math.round((now - e.readyAt) / 1000),
      })),
      booting: this.#boots.size,
      handedOut: this.#handedOut,
      failuresInARow: this.#failures,
    });
  }

  /**
   * Stops refilling, fails waiting takes, destroys the cached VMs and, as they finish, the boots
   * in progress (waiting for them at most `graceMs`, default 15 s). VMs handed out are never
   * touched. Idempotent.
   */
  close(options: { graceMs?: number } = {}): Promise<void> {
    this.#closing ??= (async () => {
      clearTimeout(this.#backoff);
      for (const waiter of this.#waiters.splice(0)) waiter.reject(new CacheClosedError());
      const cached = this.#ready.splice(0).map((e) => e.record);
      await Promise.all(cached.map((r) => this.#destroy(r)));
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        Promise.allSettled([...this.#boots]),
        new Promise((r) => timer = setTimeout(r, options.graceMs ?? 15_000)),
      ]);
      clearTimeout(timer);
      this.#firstFill.reject(new CacheClosedError());
      this.#firstFill.promise.catch(() => {});
    })();
    return this.#closing;
  }
}

/** The JSON a client needs to take a cached VM over (sent as `GrpcVM.hypervisor`). */
export interface HandOffInfo extends VmRecord {
  /** The server's state directory (the VM's folder lives there). */
  stateDir: string;
}

/** Adapts `cache` to the gRPC server's {@link CacheVmSource}. */
export function cacheVmSource(
  cache: Pick<VmCache, "take" | "cached" | "giveBack">,
  info: { stateDir: string; config: unknown; agentConfig: unknown },
): CacheVmSource {
  const encoder = new TextEncoder();
  return {
    async take(signal): Promise<CacheVm> {
      const record = await cache.take(signal);
      const handOff: HandOffInfo = { ...record, stateDir: info.stateDir };
      return {
        id: record.id,
        hypervisor: encoder.encode(JSON.stringify(handOff)),
        cpu: record.cpus,
        memory: record.memoryMiB,
        pid: record.pid,
      };
    },
    status: () => cache.cached().map((r) => ({ pid: r.pid, cpu: r.cpus, memory: r.memoryMiB })),
    config: () => ({
      data: encoder.encode(JSON.stringify(info.config)),
      agentConfig: encoder.encode(JSON.stringify(info.agentConfig)),
    }),
    giveBack(vm, reason) {
      const { stateDir: _, ...record } = JSON.parse(new TextDecoder().decode(vm.hypervisor));
      cache.giveBack(record as VmRecord, reason);
    },
  };
}
