import assert from "node:assert/strict";
import { cpuTicks, pssMiB, quantile } from "./vm_stats.ts";

Deno.test("quantile picks the sample at rank floor(q × n)", () => {
  const xs = [5, 1, 4, 2, 3];
  assert.equal(quantile(xs, 0), 1);
  assert.equal(quantile(xs, 0.5), 3);
  assert.equal(quantile(xs, 0.95), 5);
  assert.equal(quantile(xs, 1), 5);
  assert.deepEqual(xs, [5, 1, 4, 2, 3]); // not sorted in place
});

Deno.test("pssMiB and cpuTicks read this process", () => {
  assert.ok(pssMiB([Deno.pid]) > 1);
  assert.ok(cpuTicks(Deno.pid) >= 0);
  assert.equal(cpuTicks(2 ** 30), 0);
});
