/**
 * Waiting: a plain sleep, and polling a condition until it holds or a deadline passes.
 * @module
 */

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}

/** Options of {@link pollUntil}. */
export interface PollOptions {
  /** Give up after this long. */
  timeoutMs: number;
  /** Pause between probes (default 5 ms); doubled after each probe up to `maxIntervalMs`. */
  intervalMs?: number;
  /** Ceiling of the pause (default `intervalMs`: no back-off). */
  maxIntervalMs?: number;
}

/**
 * Calls `probe` until it returns something other than `undefined` and resolves with that; resolves
 * with `undefined` when `timeoutMs` passes first. An error thrown by `probe` ends the wait.
 */
export async function pollUntil<T>(
  probe: () => T | undefined | Promise<T | undefined>,
  options: PollOptions,
): Promise<T | undefined> {
  const deadline = performance.now() + options.timeoutMs;
  let interval = options.intervalMs ?? 5;
  const ceiling = options.maxIntervalMs ?? interval;
  while (true) {
    const value = await probe();
    if (value !== undefined) return value;
    if (performance.now() >= deadline) return undefined;
    await sleep(Math.min(interval, deadline - performance.now()));
    interval = Math.min(interval * 2, ceiling);
  }
}
