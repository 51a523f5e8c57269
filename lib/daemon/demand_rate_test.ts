import assert from "node:assert/strict";
import { DemandRate } from "./demand_rate.ts";

Deno.test("a steady stream reads its rate; a pause halves it every half-life", () => {
  const rate = new DemandRate(10_000);
  let t = 0;
  for (let i = 0; i < 2000; i++) rate.add(t += 250); // 4 per second for 500 s
  assert.ok(Math.abs(rate.perSecond(t) - 4) < 0.2, String(rate.perSecond(t)));
  const now = rate.perSecond(t);
  assert.ok(Math.abs(rate.perSecond(t + 10_000) - now / 2) < 1e-9);
  assert.ok(rate.perSecond(t + 300_000) < 1e-6, "fades away");
});

Deno.test("events out of order never raise the rate above what they add", () => {
  const rate = new DemandRate(1000);
  rate.add(5000);
  rate.add(4000); // late: counted at the newer time
  assert.ok(Math.abs(rate.perSecond(5000) - 2 * Math.LN2) < 1e-9);
  assert.throws(() => new DemandRate(0), RangeError);
});
