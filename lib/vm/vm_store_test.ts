import assert from "node:assert/strict";
import { isAlive } from "../process_identity.ts";
import { FakeProcesses } from "../../test/fake_processes.ts";
import { recordFor } from "./vm_record.ts";
import { FolderStateError, type PendingVm, VmStore } from "./vm_store.ts";

/** A store in a temp folder, and "QEMUs" that are `sleep` processes; all cleaned up. */
async function fixture() {
  const dir = await Deno.makeTempDir({ prefix: "vmf-store-" });
  const store = new VmStore(dir);
  const processes = new FakeProcesses();
  /** A folder moved to `state` holding a live fake QEMU. */
  const make = async (state: "pooled" | "cached" | "owned", templateId?: string) => {
    const pending = await store.allocate();
    pending.process = processes.spawn();
    await pending.commit(state, recordOf(pending), { templateId });
    return pending.paths;
  };
  return {
    store,
    spawn: () => processes.spawn(),
    spawnOther: () => processes.spawnOther(),
    make,
    async [Symbol.asyncDispose]() {
      await processes[Symbol.asyncDispose]();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

function recordOf(pending: PendingVm) {
  return recordFor(pending.paths, {
    pid: pending.process!.pid,
    startTime: pending.process!.startTime,
    source: "template",
    cpus: 1,
    memoryMiB: 256,
    hostname: `vm-${pending.paths.id}`,
    accel: "tcg",
    timings: { totalMs: 0, phases: {} },
  });
}

const states = (store: VmStore) =>
  store.folders().map((f) => f.status?.state).sort((a, b) => String(a).localeCompare(String(b)));

Deno.test("store: concurrent claims never share a pooled clone", async () => {
  await using f = await fixture();
  for (let i = 0; i < 3; i++) await f.make("pooled", "t1");
  await f.make("pooled", "t2");
  const claims = await Promise.all(Array.from({ length: 8 }, () => f.store.claim("t1")));
  const got = claims.filter((c) => c !== undefined);
  assert.equal(got.length, 3);
  assert.equal(new Set(got.map((c) => c.paths.id)).size, 3, "each clone to one claimer");
  assert.deepEqual(states(f.store), ["building", "building", "building", "pooled"]);
  for (const c of got) await c.dispose();
  assert.deepEqual(states(f.store), ["pooled"], "the other template's clone stays");
});

Deno.test("store: a claim whose process died drains it, never hands it out", async () => {
  await using f = await fixture();
  const dead = await f.make("pooled", "t1");
  const live = await f.make("pooled", "t1");
  const deadRecord = f.store.record(dead)!;
  Deno.kill(deadRecord.pid, "SIGKILL");
  while (isAlive({ pid: deadRecord.pid, startTime: deadRecord.startTime })) {
    await new Promise((r) => setTimeout(r, 5));
  }
  const first = await f.store.claim("t1");
  assert.equal(first?.paths.id, live.id);
  assert.equal(await f.store.claim("t1"), undefined);
  assert.throws(() => Deno.statSync(dead.dir), Deno.errors.NotFound, "drained");
  await first!.dispose();
});

Deno.test("store: a hand-out is never put back", async () => {
  await using f = await fixture();
  const owned = await f.make("owned");
  for (const to of ["pooled", "cached", "offered", "building"] as const) {
    await assert.rejects(
      f.store.move(owned, ["building", "pooled", "cached", "offered"], { state: to }),
      FolderStateError,
    );
  }
  assert.equal(await f.store.giveBack(owned.id), false);
  await assert.rejects(f.store.adopt(owned.id), FolderStateError);
  await assert.rejects(f.store.offer(owned.id), FolderStateError);
  assert.equal(await f.store.claim("t1"), undefined);
  assert.equal(await f.store.remove(owned.id, ["pooled", "cached"]), false);
  assert.deepEqual(await f.store.reap(), []);
  assert.deepEqual((await f.store.list()).map((e) => [e.record.id, e.alive]), [[owned.id, true]]);
  assert.equal(await f.store.remove(owned.id, ["owned"]), true);
  assert.deepEqual(f.store.folders(), []);
});

Deno.test("store: cached → offered → adopted → owned; a give-back loses to an adoption", async () => {
  await using f = await fixture();
  const cached = await f.make("cached");
  const offered = await f.store.offer(cached.id);
  assert.equal(f.store.status(cached)?.state, "offered");
  assert.equal(await f.store.giveBack(cached.id), true);
  await f.store.offer(cached.id);
  const adopted = await f.store.adopt(offered.id);
  assert.equal(await f.store.giveBack(cached.id), false, "the client took it first");
  await adopted.commit("owned", recordOf(adopted));
  assert.equal(f.store.status(cached)?.state, "owned");
  await assert.rejects(adopted.commit("owned", recordOf(adopted)), FolderStateError);
});

Deno.test("store: reap removes what dead owners left, makes a dead server's offers owned", async () => {
  await using f = await fixture();
  const cached = await f.make("cached");
  const offered = await f.make("cached");
  await f.store.offer(offered.id);
  const building = await f.store.allocate();
  building.process = f.spawn();
  Deno.writeTextFileSync(building.paths.pidFile, JSON.stringify(building.process)); // as startQemu does
  const liveOwner = await f.make("pooled", "t1");
  // pretend another process (now dead) owned them
  const ghost = { pid: 2 ** 22 + 1, startTime: 1 };
  for (
    const [paths, state] of [[cached, "cached"], [offered, "offered"], [
      building.paths,
      "building",
    ]] as const
  ) {
    await f.store.move(paths, [state], { state, owner: ghost });
  }
  const cachedRecord = f.store.record(cached)!;
  const reaped = await f.store.reap();
  assert.deepEqual(reaped.sort(), [cached.id, building.paths.id].sort());
  assert.equal(f.store.status(offered)?.state, "owned", "its client may hold it");
  assert.equal(f.store.status(liveOwner)?.state, "pooled");
  assert.ok(!isAlive({ pid: cachedRecord.pid, startTime: cachedRecord.startTime }), "stopped");
  assert.ok(!isAlive(building.process), "stopped");
  assert.throws(() => Deno.statSync(cached.dir), Deno.errors.NotFound);
});

Deno.test("store: an uncommitted pending VM stops its process and leaves nothing", async () => {
  await using f = await fixture();
  const process = f.spawn();
  {
    await using pending = await f.store.allocate();
    pending.process = process;
  }
  assert.ok(!isAlive(process));
  assert.deepEqual(f.store.folders(), []);
});

Deno.test("store: records read back are input; ids are folder names it made", async () => {
  await using f = await fixture();
  const paths = await f.make("owned");
  const good = JSON.parse(Deno.readTextFileSync(`${paths.dir}/record.json`));
  const bad = [
    { ...good, id: "other" },
    { ...good, dir: "/etc" },
    { ...good, qmpSocket: "/run/other.sock" },
    { ...good, pid: 1 },
    { ...good, startTime: "x" },
    { ...good, source: "evil" },
  ];
  for (const record of bad) {
    Deno.writeTextFileSync(`${paths.dir}/record.json`, JSON.stringify(record));
    assert.deepEqual(await f.store.list(), [], JSON.stringify(record));
  }
  Deno.writeTextFileSync(`${paths.dir}/record.json`, "x".repeat(70_000));
  assert.deepEqual(await f.store.list(), []);
  Deno.writeTextFileSync(`${paths.dir}/record.json`, JSON.stringify(good));
  assert.equal((await f.store.list()).length, 1);
  for (const id of ["../etc", "", "a/b", "ABCDEF0123"]) {
    assert.throws(() => f.store.pathsOf(id), /not a VM id/);
  }
});

Deno.test("store: a record naming another program (pid and start time forged) is never obeyed", async () => {
  await using f = await fixture();
  const paths = await f.make("owned");
  const victim = f.spawnOther(); // a process of someone else's, e.g. a plain sleep
  const record = JSON.parse(Deno.readTextFileSync(`${paths.dir}/record.json`));
  Deno.writeTextFileSync(
    `${paths.dir}/record.json`,
    JSON.stringify({ ...record, pid: victim.pid, startTime: victim.startTime }),
  );
  assert.ok(await f.store.remove(paths.id, ["owned"]));
  assert.ok(isAlive(victim), "the foreign process was not signalled");
  assert.deepEqual(f.store.folders(), []);
});

Deno.test("store: claims read the pool index; it loses stale entries, and reap restores lost ones", async () => {
  await using f = await fixture();
  const owned = await f.make("owned");
  const a = await f.make("pooled", "t1");
  const b = await f.make("pooled", "t1");
  const index = () => [...Deno.readDirSync(f.store.poolDir)].map((e) => e.name).sort();
  assert.deepEqual(index(), [a.id, b.id].sort(), "only the pooled folders are listed");
  Deno.writeFileSync(`${f.store.poolDir}/${owned.id}`, new Uint8Array()); // a stale entry
  Deno.removeSync(`${f.store.poolDir}/${b.id}`); // a lost one (a crash between two writes)
  const first = await f.store.claim("t1");
  assert.equal(first?.paths.id, a.id);
  assert.equal(await f.store.claim("t1"), undefined, "b is not listed");
  assert.deepEqual(index(), [], "the claimed and the stale entry are gone");
  await f.store.reap();
  assert.deepEqual(index(), [b.id]);
  assert.equal((await f.store.claim("t1"))?.paths.id, b.id);
  assert.equal(f.store.status(owned)?.state, "owned", "a stale entry never moves its folder");
  assert.equal(await f.store.remove(first!.paths.id, ["building"]), true);
  assert.deepEqual(index(), []);
});
