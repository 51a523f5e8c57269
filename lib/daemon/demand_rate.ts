/**
 * The recent rate of events (VM requests per second) as an exponentially weighted moving average
 * in continuous time: each event adds `ln 2 / halfLife` and the sum decays by half every
 * `halfLife`, so a steady stream of λ events per second reads λ, and a pause fades away.
 * @module
 */

/**
 * An event rate that forgets with a half-life.
 * @example
 * ```ts
 * const rate = new DemandRate(30_000);
 * rate.add(performance.now());
 * console.log(rate.perSecond(performance.now())); // ~0.023 after one event
 * ```
 */
export class DemandRate {
  #value = 0; // events per ms, as of #at
  #at = 0;

  /** A rate that halves every `halfLifeMs` without events. */
  constructor(readonly halfLifeMs: number) {
    if (!(halfLifeMs > 0)) throw new RangeError("halfLifeMs must be > 0");
  }

  /** Counts one event at time `now` (ms). */
  add(now: number): void {
    this.#value = this.#decayed(now) + Math.LN2 / this.halfLifeMs;
    this.#at = Math.max(this.#at, now);
  }

  /** The rate at time `now`, in events per second. */
  perSecond(now: number): number {
    return this.#decayed(now) * 1000;
  }

  #decayed(now: number): number {
    const elapsed = Math.max(0, now - this.#at);
    return this.#value * 2 ** (-elapsed / this.halfLifeMs);
  }
}
