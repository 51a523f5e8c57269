import assert from "node:assert/strict";
import { VmfactoryError } from "../errors.ts";
import { SourceUnfitError, type VmSource } from "../factory/vm_source.ts";
import type { VmRecord } from "../vm/vm_record.ts";
import { createSource, ObservedVmFactory } from "./observed_factory.ts";

const failing = (err: Error): VmSource => ({ kind: "fake", prepare: () => Promise.reject(err) });

function observed(source: VmSource, strict = true) {
  const events: string[] = [];
  const factory = new ObservedVmFactory(source, { strict }, {
    started: () => events.push("started"),
    made: (from) => events.push(`made ${from}`),
    failed: (misuse) => events.push(misuse ? "refused" : "failed"),
    settled: () => events.push("settled"),
  });
  return { factory, events };
}

Deno.test("a failed boot and a refused request are told apart; every make settles", async () => {
  const boot = observed(failing(new VmfactoryError("boot the VM", "QEMU exited")));
  await assert.rejects(() => boot.factory.getVm(), /QEMU exited/);
  assert.deepEqual(boot.events, ["started", "failed", "settled"]);
  const refused = observed(failing(new SourceUnfitError("template", "the template is stale")));
  await assert.rejects(() => refused.factory.getVm(), SourceUnfitError);
  assert.deepEqual(refused.events, ["started", "refused", "settled"]);
});

Deno.test("createSource: a claimed clone is the pool, a spawned one the template", () => {
  const record = (source: VmRecord["source"], phases: Record<string, number>) =>
    ({ source, timings: { totalMs: 1, phases } }) as VmRecord;
  assert.equal(createSource(record("template", { claimMs: 2, personalizeMs: 9 })), "pool");
  assert.equal(createSource(record("template", { spawnMs: 10, qmpMs: 50 })), "template");
  assert.equal(createSource(record("cache", { fetchMs: 5 })), "cache");
  assert.equal(createSource(record("direct", { bootMs: 4000 })), "direct");
});
