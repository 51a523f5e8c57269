import assert from "node:assert/strict";
import { cheapTimer, MAX_TIMER_MS, withTimeout } from "./cheap_timer.ts";

Deno.test("a timer longer than a 32-bit millisecond count waits instead of firing at once", async () => {
  let fired = false;
  const timer = cheapTimer(2 ** 31 + 5, () => fired = true);
  await new Promise((r) => setTimeout(r, 50));
  timer.cancel();
  assert.equal(fired, false);
  assert.equal(MAX_TIMER_MS, 2 ** 31 - 1);
  await assert.rejects(
    withTimeout(new Promise(() => {}), 5, () => new Error("late")),
    /late/,
  );
});
