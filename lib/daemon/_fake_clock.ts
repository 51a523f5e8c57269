/** A clock whose time moves only when a test says so. @module */
import type { Clock, ClockTimer } from "./clock.ts";

interface Pending {
  at: number;
  fn: () => void;
  cancelled: boolean;
}

/** A {@link Clock} for tests: `advance` moves time and fires the timers that fall due, in order. */
export class FakeClock implements Clock {
  #now = 0;
  #timers: Pending[] = [];

  /** Current fake time, ms. */
  now(): number {
    return this.#now;
  }

  /** Registers a timer due `ms` from now. */
  after(ms: number, fn: () => void): ClockTimer {
    const timer = { at: this.#now + Math.max(0, ms), fn, cancelled: false };
    this.#timers.push(timer);
    return { cancel: () => timer.cancelled = true };
  }

  /** Timers not fired nor cancelled. */
  get pending(): number {
    return this.#timers.filter((t) => !t.cancelled).length;
  }

  /**
   * Moves time forward by `ms`, firing due timers in order (and letting the promises they start
   * settle before the next one).
   */
  async advance(ms: number): Promise<void> {
    const end = this.#now + ms;
    for (;;) {
      await settle();
      const due = this.#timers.filter((t) =>
        !t.cancelled && t.at <= end
      ).sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      due.cancelled = true;
      this.#now = Math.max(this.#now, due.at);
      due.fn();
    }
    this.#now = end;
    this.#timers = this.#timers.filter((t) => !t.cancelled);
    await settle();
  }
}

/** Lets queued promise callbacks run (chains of up to 100 steps). */
export async function settle(): Promise<void> {
  for (let i = 0; i < 100; i++) await Promise.resolve();
}
