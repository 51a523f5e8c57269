import assert from "node:assert/strict";
import { pollUntil } from "./poll_until.ts";

Deno.test("pollUntil: returns the first defined value, undefined at the deadline, rethrows", async () => {
  let calls = 0;
  assert.equal(
    await pollUntil(() => ++calls === 3 ? "ready" : undefined, { timeoutMs: 1000, intervalMs: 1 }),
    "ready",
  );
  assert.equal(calls, 3);
  assert.equal(
    await pollUntil(() => undefined, { timeoutMs: 20, intervalMs: 2, maxIntervalMs: 8 }),
    undefined,
  );
  await assert.rejects(
    pollUntil(() => {
      throw new Error("boom");
    }, { timeoutMs: 1000 }),
    /boom/,
  );
});
