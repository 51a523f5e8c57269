import assert from "node:assert/strict";
import type { AgentClient } from "../guest/agent_client.ts";
import { isAlive, type ProcessIdentity } from "../process_identity.ts";
import { FakeProcesses } from "../../test/fake_processes.ts";
import { VmStore } from "../vm/vm_store.ts";
import { VmFactory } from "./vm_factory.ts";
import {
  type Size,
  type SourceShape,
  type SourceSupply,
  SourceUnfitError,
  type SourceVm,
  type VmRequest,
  type VmSource,
} from "./vm_source.ts";

/** An agent that records the calls personalization makes; `failOn` makes one of them throw. */
function fakeAgent(calls: string[], failOn?: string): AgentClient {
  const call = (name: string) => () => {
    calls.push(name);
    return name === failOn ? Promise.reject(new Error(`${name} failed`)) : Promise.resolve();
  };
  return {
    personalizeGuest: (p: { bootId?: string }) => {
      if (p.bootId) calls.push("newBootId");
      return call("personalizeGuest")();
    },
    exec: call("exec"),
    close: () => calls.push("close"),
  } as unknown as AgentClient;
}

const SHAPE: SourceShape = { cpus: 1, memoryMiB: 256, maxCpus: 2, maxMemoryMiB: 512 };

/** A source of "VMs" that are `sleep` processes in real store folders. */
class FakeSource implements VmSource {
  calls: string[] = [];
  processes: ProcessIdentity[] = [];
  unfit?: string;
  constructor(
    readonly kind: string,
    readonly store: VmStore,
    readonly fakes: FakeProcesses,
    readonly failOn?: string,
  ) {}
  prepare(request: VmRequest): Promise<SourceSupply> {
    if (this.unfit) return Promise.reject(new SourceUnfitError(this.kind, this.unfit));
    // like the real direct source, a cold boot comes in the size asked
    const cpus = this.kind === "direct" ? request.cpus ?? SHAPE.cpus : SHAPE.cpus;
    const shape = { ...SHAPE, cpus, maxCpus: Math.max(cpus, SHAPE.maxCpus) };
    return Promise.resolve({ shape, acquire: (want) => this.#acquire(want) });
  }
  async #acquire(size: Size): Promise<SourceVm> {
    const pending = await this.store.allocate();
    pending.process = this.fakes.spawn();
    this.processes.push(pending.process);
    return {
      pending,
      agent: fakeAgent(this.calls, this.failOn),
      size,
      origin: "template",
      accel: "tcg",
      templateId: "t1",
      sharesBoot: this.kind === "clone",
    };
  }
}

async function fixture() {
  const dir = await Deno.makeTempDir({ prefix: "vmf-factory-" });
  const fakes = new FakeProcesses();
  return {
    store: new VmStore(dir),
    fakes,
    async [Symbol.asyncDispose]() {
      await fakes[Symbol.asyncDispose]();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test("factory: personalizes once (boot_id for clones), commits the record owned", async () => {
  await using f = await fixture();
  const source = new FakeSource("clone", f.store, f.fakes);
  const factory = new VmFactory(source);
  const record = await factory.getVm({ hostname: "web-1" });
  assert.deepEqual(source.calls.sort(), ["close", "newBootId", "personalizeGuest"]);
  assert.equal(record.hostname, "web-1");
  assert.equal(record.templateId, "t1");
  assert.deepEqual({ pid: record.pid, startTime: record.startTime }, source.processes[0]);
  assert.ok(Object.hasOwn(record.timings.phases, "personalizeMs"));
  assert.deepEqual((await f.store.list()).map((e) => [e.record.id, e.alive]), [[record.id, true]]);
  assert.equal(f.store.status(f.store.pathsOf(record.id))?.state, "owned");
});

Deno.test("factory: a failed step stops the VM and leaves no folder", async () => {
  await using f = await fixture();
  const source = new FakeSource("clone", f.store, f.fakes, "personalizeGuest");
  await assert.rejects(new VmFactory(source).getVm(), /personalizeGuest failed/);
  assert.ok(!isAlive(source.processes[0]), "its QEMU is stopped");
  assert.deepEqual(f.store.folders(), []);
  assert.ok(source.calls.includes("close"), "the agent connection is closed");
});

Deno.test("factory: an unfit source falls back with the reason, or fails when strict", async () => {
  await using f = await fixture();
  const primary = new FakeSource("template", f.store, f.fakes);
  primary.unfit = "the template is stale: kernel changed";
  const direct = new FakeSource("direct", f.store, f.fakes);
  const lines: string[] = [];
  const factory = new VmFactory(primary, {
    fallback: () => Promise.resolve(direct),
    log: (l) => lines.push(l),
  });
  const record = await factory.getVm();
  assert.equal(direct.processes.length, 1);
  assert.deepEqual(lines, ["warning: the template is stale: kernel changed; cold-booting instead"]);
  assert.ok(!direct.calls.includes("newBootId"), "a cold boot keeps its own boot_id");

  const strict = new VmFactory(primary, { strict: true, fallback: () => Promise.resolve(direct) });
  await assert.rejects(strict.getVm(), (err) => {
    assert.ok(err instanceof SourceUnfitError);
    assert.equal(err.exitCode, 2);
    assert.match(err.message, /stale: kernel changed \(--strict\)$/);
    return true;
  });
  primary.unfit = undefined;
  const tooBig = await factory.getVm({ cpus: 4 }); // above the source's ceiling: cold boot
  assert.match(lines[1], /4 vCPUs asked, its VMs can hot-add up to 2; cold-booting instead/);
  assert.equal(direct.processes.length, 2);
  assert.equal(tooBig.cpus, 4, "booted at the size asked");
  assert.equal(primary.processes.length, 0);
  for (const r of [record, tooBig]) assert.ok(await f.store.remove(r.id, ["owned"]));
  assert.deepEqual(f.store.folders(), []);
});

Deno.test("factory: concurrent requests each get their own VM", async () => {
  await using f = await fixture();
  const factory = new VmFactory(new FakeSource("clone", f.store, f.fakes));
  const records = await Promise.all(Array.from({ length: 6 }, () => factory.getVm()));
  assert.equal(new Set(records.map((r) => r.id)).size, 6);
  assert.equal(new Set(records.map((r) => r.pid)).size, 6);
  assert.equal((await f.store.list()).length, 6);
});

Deno.test("factory: pooled VMs are made the same way and committed pooled", async () => {
  await using f = await fixture();
  const source = new FakeSource("clone", f.store, f.fakes);
  const record = await new VmFactory(source).make({}, { as: "pooled", warm: true });
  assert.ok(source.calls.includes("exec"), "warmed");
  const status = f.store.status(f.store.pathsOf(record.id));
  assert.equal(status?.state, "pooled");
  assert.equal(status?.templateId, "t1");
  assert.deepEqual(await f.store.list(), [], "a pooled VM is nobody's yet");
  const claimed = await f.store.claim("t1");
  assert.equal(claimed?.paths.id, record.id);
  await claimed!.dispose();
});
