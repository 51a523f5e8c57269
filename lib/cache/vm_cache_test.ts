import assert from "node:assert/strict";
import type { SourceSupply, SourceVm, VmSource } from "../factory/vm_source.ts";
import type { AgentClient } from "../guest/agent_client.ts";
import type { PendingVm } from "../vm/vm_store.ts";
import { CacheClosedError, type CacheKeeper, VmCache } from "./vm_cache.ts";

/** A base source whose "boots" take `bootMs` and fail when `failNext` says so. */
class FakeSource implements VmSource {
  readonly kind = "fake";
  booted = 0;
  attempts = 0;
  failNext = 0;
  constructor(readonly bootMs = 5) {}
  prepare(): Promise<SourceSupply> {
    return Promise.resolve({
      shape: { cpus: 1, memoryMiB: 256, maxCpus: 1, maxMemoryMiB: 256 },
      acquire: () => this.boot(),
    });
  }
  async boot(): Promise<SourceVm> {
    this.attempts++;
    await new Promise((r) => setTimeout(r, this.bootMs));
    if (this.failNext > 0) {
      this.failNext--;
      throw new Error("injected boot failure");
    }
    const id = `vm${++this.booted}`;
    const dir = `/nonexistent/${id}`;
    const pending = {
      paths: { id, dir, qmpSocket: "", agentSocket: "", consoleLog: "", pidFile: "" },
      process: { pid: 1000 + this.booted, startTime: 1 },
      commit: () => Promise.resolve(),
      dispose: () => Promise.resolve(),
    };
    const ok = () => Promise.resolve();
    return {
      pending: pending as unknown as PendingVm,
      agent: { personalizeGuest: ok, close() {} } as unknown as AgentClient,
      size: { cpus: 1, memoryMiB: 256 },
      origin: "direct",
      accel: "tcg",
      sharesBoot: false,
    };
  }
}

function fakeKeeper() {
  const offered: string[] = [];
  const destroyed: string[] = [];
  const keeper: CacheKeeper = {
    offer: (r) => {
      offered.push(r.id);
      return Promise.resolve(r);
    },
    giveBack: () => Promise.resolve(true),
    destroy: (r) => {
      destroyed.push(r.id);
      return Promise.resolve();
    },
  };
  return { keeper, handed: offered, destroyed };
}

const until = async (cond: () => boolean, ms = 2000) => {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error("condition not reached");
    await new Promise((r) => setTimeout(r, 2));
  }
};

Deno.test("VmCache fills to size with bounded concurrency, hands out and refills", async () => {
  const base = new FakeSource();
  const { keeper, handed, destroyed } = fakeKeeper();
  const lines: string[] = [];
  const cache = new VmCache(base, { size: 3, concurrency: 2, keeper, log: (l) => lines.push(l) });
  await cache.filled;
  assert.equal(cache.cached().length, 3);
  assert.equal(base.attempts, 3);
  assert.match(lines.join("\n"), /cache: 1\/3 VMs ready .*\n.*2\/3.*\n.*3\/3/);

  const vm = await cache.take();
  assert.equal(vm.source, "cache");
  assert.ok(vm.timings.totalMs >= 0);
  assert.equal(cache.cached().length, 2);
  await until(() => cache.cached().length === 3);
  assert.equal(base.attempts, 4, "exactly one refill");
  assert.ok(lines.some((l) => /handed out VM vm1/.test(l)));
  assert.ok(lines.some((l) => /refilled with VM vm4/.test(l)));
  const status = await cache.status();
  assert.equal(status.handedOut, 1);

  await cache.close();
  assert.deepEqual(handed, ["vm1"]);
  assert.deepEqual(destroyed.sort(), ["vm2", "vm3", "vm4"], "cached ones destroyed, never vm1");
  await assert.rejects(cache.take(), CacheClosedError);
});

Deno.test("VmCache gives every VM to exactly one of many concurrent takers", async () => {
  const base = new FakeSource(1);
  const { keeper, handed, destroyed } = fakeKeeper();
  let booting = 0, maxBooting = 0;
  const boot = base.boot.bind(base);
  base.boot = async () => {
    maxBooting = Math.max(maxBooting, ++booting);
    try {
      return await boot();
    } finally {
      booting--;
    }
  };
  const cache = new VmCache(base, { size: 2, concurrency: 2, keeper });
  const got = await Promise.all(Array.from({ length: 40 }, () => cache.take()));
  const ids = got.map((r) => r.id);
  assert.equal(new Set(ids).size, 40);
  assert.ok(maxBooting <= 2, `at most 2 boots at a time (saw ${maxBooting})`);
  await cache.close();
  assert.equal(handed.length, 40);
  assert.ok(destroyed.every((id) => !ids.includes(id)), "no handed-out VM destroyed");
  assert.equal(destroyed.length + handed.length, base.booted, "no VM lost");
});

Deno.test("VmCache retries a failed refill with backoff and keeps serving", async () => {
  const base = new FakeSource();
  const { keeper } = fakeKeeper();
  const lines: string[] = [];
  const cache = new VmCache(base, {
    size: 2,
    concurrency: 1, // failures in a row, one at a time: the delays add up
    keeper,
    retryMs: { initial: 20, max: 100 },
    log: (l) => lines.push(l),
  });
  await cache.filled;
  base.failNext = 3;
  const first = await cache.take();
  assert.equal(first.id, "vm1");
  const second = await cache.take(); // the cache still serves what it has
  assert.equal(second.id, "vm2");
  const started = performance.now();
  const third = await cache.take(AbortSignal.timeout(2000)); // waits through 3 failures
  const waited = performance.now() - started;
  assert.equal(third.id, "vm3");
  const failures = lines.filter((l) => /boot failed .*injected boot failure; retrying in/.test(l));
  assert.equal(failures.length, 3);
  assert.match(failures[2], /3 in a row/);
  assert.ok(waited >= 20 + 40 + 80 - 10, `backoff doubled (${waited.toFixed(0)} ms)`);
  await until(() => cache.cached().length === 2);
  await cache.close();
});

Deno.test("VmCache take: aborts on its signal; a VM given back is served again", async () => {
  const base = new FakeSource(50);
  const { keeper, destroyed } = fakeKeeper();
  const cache = new VmCache(base, { size: 1, concurrency: 1, keeper });
  await assert.rejects(cache.take(AbortSignal.timeout(5)));
  const vm = await cache.take();
  cache.giveBack(vm, "client gone");
  await until(() => cache.cached().some((r) => r.id === vm.id));
  assert.equal((await cache.take()).id, vm.id);
  const waiting = assert.rejects(cache.take(), CacheClosedError);
  await cache.close();
  await waiting;
  assert.ok(!destroyed.includes(vm.id));
});
