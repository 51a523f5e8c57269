import assert from "node:assert/strict";
import { FakeClock, settle } from "./_fake_clock.ts";
import { type GovernedPool, PoolGovernor, targetFor } from "./pool_governor.ts";

/** A pool whose clones take `makeMs` of fake time; `fail` makes the next makes reject. */
class FakePool implements GovernedPool {
  size = 0;
  available = true;
  fail = 0;
  made = 0;
  shrunk = 0;
  concurrent = 0;
  maxConcurrent = 0;
  constructor(readonly clock: FakeClock, readonly makeMs = 400) {}
  ready() {
    return this.available ? this.size : undefined;
  }
  make() {
    this.concurrent++;
    this.maxConcurrent = Math.max(this.maxConcurrent, this.concurrent);
    return new Promise<void>((resolve, reject) => {
      this.clock.after(this.makeMs, () => {
        this.concurrent--;
        if (this.fail > 0) {
          this.fail--;
          return reject(new Error("QEMU exited"));
        }
        this.size++;
        this.made++;
        resolve();
      });
    });
  }
  shrink(count: number) {
    const gone = Math.min(count, this.size);
    this.size -= gone;
    this.shrunk += gone;
    return Promise.resolve(gone);
  }
  /** A request claims a clone, as the daemon's factory does. */
  claim(governor: PoolGovernor) {
    governor.noteDemand();
    if (this.size > 0) this.size--;
    governor.kick();
  }
}

Deno.test("targetFor: demand during one refill plus two standard deviations, within the bounds", () => {
  const bounds = { min: 1, max: 8 };
  assert.equal(targetFor(0, 0.4, bounds), 1, "no demand: min");
  assert.equal(targetFor(0.001, 0.4, { min: 0, max: 8 }), 0, "a trickle counts as none");
  assert.equal(targetFor(1, 0.5, bounds), 2); // 0.5 + 2·0.71 = 1.9
  assert.equal(targetFor(5, 0.4, bounds), 5); // 2 + 2·1.41 = 4.8
  assert.equal(targetFor(100, 1, bounds), 8, "clamped to max");
  assert.equal(targetFor(100, 1, { min: 0, max: 0 }), 0, "pool off");
});

Deno.test("fills to min, never more refills at once than the concurrency", async () => {
  const clock = new FakeClock();
  const pool = new FakePool(clock);
  const lines: string[] = [];
  const refills: [number, boolean][] = [];
  const governor = new PoolGovernor(pool, {
    min: 3,
    max: 8,
    concurrency: 2,
    clock,
    log: (l) => lines.push(l),
    onRefill: (s, ok) => refills.push([s, ok]),
  });
  assert.equal(governor.making, 2);
  await clock.advance(400);
  assert.equal(pool.size, 2);
  await clock.advance(400);
  assert.equal(pool.size, 3);
  await clock.advance(10_000);
  assert.equal(pool.size, 3, "stays at min without demand");
  assert.equal(pool.maxConcurrent, 2);
  assert.deepEqual(refills, [[0.4, true], [0.4, true], [0.4, true]]);
  assert.match(
    lines[0],
    /pool: target 3 \(demand 0\.00\/s × refill 1\.00 s; bounds 3–8; 0 ready\)/,
  );
  assert.deepEqual(governor.status(), {
    target: 3,
    min: 3,
    max: 8,
    making: 0,
    demandPerSecond: 0,
    refillSeconds: 0.4,
    failuresInARow: 0,
  });
  await governor.close();
});

Deno.test("a burst of demand raises the target up to max; idle surplus drains later, not at once", async () => {
  const clock = new FakeClock();
  const pool = new FakePool(clock, 1000);
  const governor = new PoolGovernor(pool, {
    min: 1,
    max: 6,
    concurrency: 1,
    clock,
    demandHalfLifeMs: 5000,
    drainAfterMs: 60_000,
  });
  await clock.advance(1000);
  assert.equal(pool.size, 1);
  for (let i = 0; i < 100; i++) { // 10 requests a second for 10 s
    pool.claim(governor);
    await clock.advance(100);
  }
  assert.equal(governor.target, 6, `demand ${JSON.stringify(governor.status())}`);
  await clock.advance(10_000);
  assert.equal(pool.size, 6, "filled up to the raised target");
  // no more requests: the demand fades, the target falls back to min, the surplus waits
  await clock.advance(30_000);
  assert.ok(governor.target < 6);
  assert.equal(pool.shrunk, 0, "not drained while the surplus is young");
  await clock.advance(300_000);
  assert.equal(governor.target, 1);
  assert.equal(pool.size, 1, "idle surplus drained");
  assert.equal(pool.shrunk, 5);
  assert.equal(pool.maxConcurrent, 1);
  await governor.close();
});

Deno.test("lower bounds drain what is above max at once; higher ones fill", async () => {
  const clock = new FakeClock();
  const pool = new FakePool(clock, 100);
  const governor = new PoolGovernor(pool, { min: 4, max: 4, concurrency: 4, clock });
  await clock.advance(100);
  assert.equal(pool.size, 4);
  governor.setBounds({ min: 1, max: 2 });
  await settle();
  assert.equal(pool.size, 1, "above max: drained to the target without waiting");
  governor.setBounds({ min: 3, max: 5 });
  await clock.advance(100);
  assert.equal(pool.size, 3);
  assert.throws(() => governor.setBounds({ min: 3, max: 2 }), RangeError);
  await governor.close();
});

Deno.test("a failing refill backs off exponentially, then recovers", async () => {
  const clock = new FakeClock();
  const pool = new FakePool(clock, 100);
  pool.fail = 3;
  const lines: string[] = [];
  const governor = new PoolGovernor(pool, {
    min: 1,
    max: 1,
    concurrency: 1,
    clock,
    log: (l) => lines.push(l),
    tickMs: 100_000,
  });
  await clock.advance(100); // fails: retry in 1 s
  await clock.advance(1000 + 100); // fails: retry in 2 s
  await clock.advance(1000);
  assert.equal(pool.fail, 1, "no retry before the backoff ends");
  await clock.advance(1000 + 100); // fails: retry in 4 s
  await clock.advance(4000 + 100);
  assert.equal(pool.size, 1);
  const failures = lines.filter((l) => /refill failed/.test(l));
  assert.deepEqual(failures.map((l) => l.match(/retrying in (\S+) s/)![1]), ["1.0", "2.0", "4.0"]);
  assert.match(failures[0], /refill failed \(1 in a row\): QEMU exited/);
  assert.equal(governor.status().failuresInARow, 0);
  await governor.close();
});

Deno.test("nothing is made while the pool cannot be filled; a kick starts it; close waits", async () => {
  const clock = new FakeClock();
  const pool = new FakePool(clock, 500);
  pool.available = false;
  const governor = new PoolGovernor(pool, { min: 2, max: 2, concurrency: 2, clock });
  await clock.advance(20_000);
  assert.equal(pool.made, 0);
  pool.available = true;
  governor.kick();
  assert.equal(governor.making, 2);
  const closed = governor.close();
  let done = false;
  void closed.then(() => done = true);
  await settle();
  assert.equal(done, false, "close waits for the refills in progress");
  await clock.advance(500);
  await closed;
  assert.equal(pool.made, 2);
  governor.kick();
  await clock.advance(20_000);
  assert.equal(pool.made, 2, "no refill after close");
  assert.equal(clock.pending, 0, "no timer left");
});
