/**
 * The pool governor: keeps the clone pool sized to demand. Its target is the number of requests
 * expected while one refill runs (the recent request rate, {@link DemandRate}, times the measured
 * time one refill takes) plus two standard deviations of that count (requests arrive like a
 * Poisson stream), clamped to `[min, max]`. Below target it makes clones, at most `concurrency` at
 * once (default: one core left for the requests); a failed refill backs off exponentially. A
 * surplus above target drains after `drainAfterMs` of idleness; above `max` at once. It knows the
 * pool only through {@link GovernedPool}, so its tests run on a fake pool and a fake clock.
 * @module
 */
import { errorMessage } from "../errors.ts";
import { type Clock, type ClockTimer, systemClock } from "./clock.ts";
import { DemandRate } from "./demand_rate.ts";

/** What the governor needs of the pool. */
export interface GovernedPool {
  /** Clones ready in the pool now; undefined while it cannot be filled (no fresh template). */
  ready(): number | undefined;
  /** Makes one pooled clone (rejects when it could not). */
  make(): Promise<void>;
  /** Destroys up to `count` pooled clones; resolves to how many went. */
  shrink(count: number): Promise<number>;
}

/** The fewest and most clones to pool. */
export interface PoolBounds {
  /** Clones kept pooled even without demand. */
  min: number;
  /** Clones pooled at most, whatever the demand. */
  max: number;
}

/** Options of {@link PoolGovernor}. */
export interface PoolGovernorOptions extends PoolBounds {
  /** Clones made at once (default: `navigator.hardwareConcurrency - 1`, at least 1). */
  concurrency?: number;
  /** Time source (default: the real one). */
  clock?: Clock;
  /** Half-life of the request rate's memory (default 10 s). */
  demandHalfLifeMs?: number;
  /** How long a surplus above target stays before it is drained (default 60 s). */
  drainAfterMs?: number;
  /** Assumed time of one refill until one was measured (default 1 s). */
  refillGuessMs?: number;
  /** Period of the re-evaluation that notices decay, claims by others and idle surplus (5 s). */
  tickMs?: number;
  /** Backoff after a failed refill: first delay and ceiling, ms (default 1 s, 30 s). */
  retryMs?: { initial: number; max: number };
  /** One line per target change, failed refill and drain. */
  log?: (line: string) => void;
  /** Called after every refill with its duration and whether it made a clone. */
  onRefill?: (seconds: number, ok: boolean) => void;
}

/** Expected requests below this count as no demand (the rate never decays to exactly 0). */
const IDLE_DEMAND = 0.01;

/**
 * The pool size for `ratePerS` requests per second when one refill takes `refillS` seconds: the
 * requests expected during one refill, `m = rate × refill`, plus two standard deviations of a
 * Poisson count (`2√m`), rounded up and clamped to the bounds.
 * @example
 * ```ts
 * targetFor(5, 0.4, { min: 1, max: 8 }); // 2 + 2√2 → 5
 * ```
 */
export function targetFor(ratePerS: number, refillS: number, bounds: PoolBounds): number {
  const m = ratePerS * refillS;
  const want = m < IDLE_DEMAND ? 0 : Math.ceil(m + 2 * Math.sqrt(m));
  return Math.min(bounds.max, Math.max(bounds.min, want));
}

/**
 * Sizes a pool to demand until closed. Call {@link PoolGovernor.noteDemand} when a request asks
 * for a VM, {@link PoolGovernor.kick} when the pool changed (a request claimed a clone, the
 * template became ready).
 * @example
 * ```ts
 * const governor = new PoolGovernor(pool, { min: 1, max: 8 });
 * governor.noteDemand(); // a request came in
 * governor.kick();       // it took a clone: refill
 * await governor.close();
 * ```
 */
export class PoolGovernor {
  readonly #pool: GovernedPool;
  readonly #clock: Clock;
  readonly #demand: DemandRate;
  readonly #opts: Required<Omit<PoolGovernorOptions, "min" | "max" | "onRefill">>;
  readonly #onRefill?: (seconds: number, ok: boolean) => void;
  readonly #work = new Set<Promise<void>>();
  #bounds: PoolBounds;
  #refillMs?: number;
  #making = 0;
  #shrinking = false;
  #failures = 0;
  #backoff?: ClockTimer;
  #tick?: ClockTimer;
  #surplusSince?: number;
  #lastTarget?: number;
  #closed = false;

  /** A governor of `pool` within `options.min`–`options.max`; starts filling at once. */
  constructor(pool: GovernedPool, options: PoolGovernorOptions) {
    this.#pool = pool;
    this.#bounds = checkedBounds(options);
    this.#clock = options.clock ?? systemClock;
    this.#onRefill = options.onRefill;
    this.#opts = {
      concurrency: Math.max(1, options.concurrency ?? (navigator.hardwareConcurrency || 2) - 1),
      clock: this.#clock,
      demandHalfLifeMs: options.demandHalfLifeMs ?? 10_000,
      drainAfterMs: options.drainAfterMs ?? 60_000,
      refillGuessMs: options.refillGuessMs ?? 1000,
      tickMs: options.tickMs ?? 5000,
      retryMs: options.retryMs ?? { initial: 1000, max: 30_000 },
      log: options.log ?? (() => {}),
    };
    this.#demand = new DemandRate(this.#opts.demandHalfLifeMs);
    this.#schedule();
    this.kick();
  }

  /** The pool size wanted now. */
  get target(): number {
    const refillS = (this.#refillMs ?? this.#opts.refillGuessMs) / 1000;
    return targetFor(this.#demand.perSecond(this.#clock.now()), refillS, this.#bounds);
  }

  /** The bounds in force. */
  get bounds(): PoolBounds {
    return { ...this.#bounds };
  }

  /** Clones being made now. */
  get making(): number {
    return this.#making;
  }

  /** Counts one request for a VM (it raises the demand) and re-evaluates. */
  noteDemand(): void {
    this.#demand.add(this.#clock.now());
    this.kick();
  }

  /** New bounds (a reloaded configuration); re-evaluates. */
  setBounds(bounds: PoolBounds): void {
    this.#bounds = checkedBounds(bounds);
    this.kick();
  }

  /**
   * Re-evaluates: starts refills up to the target within the concurrency, drains a surplus that
   * stayed long enough (or is above `max`). Does nothing once closed or while the pool cannot be
   * filled.
   */
  kick(): void {
    if (this.#closed) return;
    const ready = this.#pool.ready();
    if (ready === undefined) {
      this.#surplusSince = undefined;
      return;
    }
    const target = this.target;
    if (target !== this.#lastTarget) {
      const { min, max } = this.#bounds;
      const demand = this.#demand.perSecond(this.#clock.now()).toFixed(2);
      const refill = ((this.#refillMs ?? this.#opts.refillGuessMs) / 1000).toFixed(2);
      this.#opts.log(
        `pool: target ${target} (demand ${demand}/s × refill ${refill} s; bounds ${min}–${max}; ${ready} ready)`,
      );
      this.#lastTarget = target;
    }
    while (
      !this.#backoff && this.#making < this.#opts.concurrency && ready + this.#making < target
    ) {
      this.#track(this.#refill());
    }
    this.#drainSurplus(ready, target);
  }

  #drainSurplus(ready: number, target: number): void {
    if (ready <= target || this.#making > 0) {
      this.#surplusSince = undefined;
      return;
    }
    const now = this.#clock.now();
    this.#surplusSince ??= now;
    const idleLongEnough = now - this.#surplusSince >= this.#opts.drainAfterMs;
    if (this.#shrinking || !(idleLongEnough || ready > this.#bounds.max)) return;
    this.#shrinking = true;
    this.#surplusSince = undefined;
    this.#track((async () => {
      try {
        const gone = await this.#pool.shrink(ready - target);
        if (gone) this.#opts.log(`pool: drained ${gone} idle clone(s) (target ${target})`);
      } catch (err) {
        this.#opts.log(`pool: cannot drain idle clones: ${errorMessage(err)}`);
      } finally {
        this.#shrinking = false;
      }
    })());
  }

  async #refill(): Promise<void> {
    this.#making++;
    const started = this.#clock.now();
    let ok = false;
    try {
      await this.#pool.make();
      ok = true;
    } catch (err) {
      if (!this.#closed) this.#failed(err);
    } finally {
      this.#making--;
    }
    const ms = this.#clock.now() - started;
    if (ok) {
      this.#failures = 0;
      this.#refillMs = this.#refillMs === undefined ? ms : 0.7 * this.#refillMs + 0.3 * ms;
    }
    this.#onRefill?.(ms / 1000, ok);
    this.kick();
  }

  #failed(err: unknown): void {
    this.#failures++;
    const { initial, max } = this.#opts.retryMs;
    const delay = Math.min(initial * 2 ** (this.#failures - 1), max);
    this.#opts.log(
      `pool: refill failed (${this.#failures} in a row): ${errorMessage(err)}; retrying in ${
        (delay / 1000).toFixed(1)
      } s`,
    );
    this.#backoff?.cancel();
    this.#backoff = this.#clock.after(delay, () => {
      this.#backoff = undefined;
      this.kick();
    });
  }

  #track(work: Promise<void>): void {
    this.#work.add(work);
    void work.finally(() => this.#work.delete(work));
  }

  #schedule(): void {
    this.#tick = this.#clock.after(this.#opts.tickMs, () => {
      this.#schedule();
      this.kick();
    });
  }

  /** Target, bounds, demand, refill time, clones being made, failures in a row. */
  status(): Record<string, unknown> {
    return {
      target: this.target,
      min: this.#bounds.min,
      max: this.#bounds.max,
      making: this.#making,
      demandPerSecond: Number(this.#demand.perSecond(this.#clock.now()).toFixed(3)),
      refillSeconds: this.#refillMs === undefined
        ? null
        : Number((this.#refillMs / 1000).toFixed(3)),
      failuresInARow: this.#failures,
    };
  }

  /** Stops governing and waits for the refills and drains in progress. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#tick?.cancel();
    this.#backoff?.cancel();
    while (this.#work.size) await Promise.allSettled([...this.#work]);
  }
}

function checkedBounds({ min, max }: PoolBounds): PoolBounds {
  if (!(Number.isInteger(min) && Number.isInteger(max) && min >= 0 && max >= min)) {
    throw new RangeError(`pool bounds must be integers with 0 <= min <= max (got ${min}–${max})`);
  }
  return { min, max };
}
