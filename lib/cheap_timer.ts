/**
 * One-shot timeouts that are cheap on a cold start.
 * @module
 */

/**
 * Longest delay (ms) a timer takes: `setTimeout` and `AbortSignal.timeout` fire at once for more
 * (a signed 32-bit count of milliseconds, about 24.8 days). {@link cheapTimer} clamps to it.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** A pending timeout; `cancel` stops it. */
export interface CheapTimer {
  /** Stops the timer (idempotent). */
  cancel(): void;
}

/**
 * Calls `fn` after `ms` milliseconds unless cancelled. Built on `AbortSignal.timeout`: in Deno
 * 2.9 the first `setTimeout` of a process costs ~16 ms (measured; it sets up the Node-compatible
 * timers), which the `vm create` hot path must not pay. Like an unref'ed timer it does not keep
 * the process alive on its own: use it to bound pending I/O, not as a sleep. A delay beyond
 * {@link MAX_TIMER_MS} waits that long instead of firing at once.
 */
export function cheapTimer(ms: number, fn: () => void): CheapTimer {
  const signal = AbortSignal.timeout(Math.max(0, Math.min(ms, MAX_TIMER_MS)));
  const onAbort = () => fn();
  signal.addEventListener("abort", onAbort, { once: true });
  return { cancel: () => signal.removeEventListener("abort", onAbort) };
}

/** Settles like `promise`, or rejects with `error()` when it has not settled within `ms`. */
export function withTimeout<T>(promise: Promise<T>, ms: number, error: () => Error): Promise<T> {
  let timer: CheapTimer | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = cheapTimer(ms, () => reject(error()));
  });
  return Promise.race([promise, timeout]).finally(() => timer?.cancel());
}
