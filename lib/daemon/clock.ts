/**
 * Time for the daemon's long-running parts (the pool governor, the template supervisor), behind
 * an interface so their tests run on a fake clock.
 * @module
 */

/** A cancellable timer. */
export interface ClockTimer {
  /** Stops the timer (idempotent). */
  cancel(): void;
}

/** Milliseconds and timers. */
export interface Clock {
  /** Milliseconds on a monotonic scale. */
  now(): number;
  /** Calls `fn` once after `ms` milliseconds unless cancelled. */
  after(ms: number, fn: () => void): ClockTimer;
}

/**
 * The real clock: `performance.now()` and `setTimeout`.
 * @example
 * ```ts
 * const timer = systemClock.after(1000, () => console.log("a second later"));
 * timer.cancel();
 * ```
 */
export const systemClock: Clock = {
  now: () => performance.now(),
  after(ms, fn) {
    const id = setTimeout(fn, ms);
    return { cancel: () => clearTimeout(id) };
  },
};
