import assert from "node:assert/strict";
import type { Settings } from "../config/settings.ts";
import { SourceUnfitError } from "../factory/vm_source.ts";
import type { FoundTemplate } from "../template/template_files.ts";
import type { TemplateManifest } from "../template/template_manifest.ts";
import { VmStore } from "../vm/vm_store.ts";
import { FakeClock, settle } from "./_fake_clock.ts";
import { type ManagedTemplate, TemplateSupervisor } from "./template_supervisor.ts";

const SHAPE = { machine: "pc", cpus: 1, maxCpus: 4, memoryMiB: 256, slots: 4, maxMemoryMiB: 1280 };

function found(id: string): FoundTemplate {
  const manifest = {
    id,
    createdAt: new Date().toISOString(),
    shape: SHAPE,
  } as unknown as TemplateManifest;
  return { files: { dir: `/t/${id}` } as FoundTemplate["files"], manifest };
}

/** A template manager whose builds the test finishes. */
class FakeManager implements ManagedTemplate {
  template?: FoundTemplate;
  differences: string[] = [];
  builds: PromiseWithResolvers<void>[] = [];
  forced: boolean[] = [];
  constructor(readonly signal: AbortSignal, readonly label: string) {}
  inspect() {
    return Promise.resolve({ template: this.template, differences: this.differences });
  }
  async init(opts: { force?: boolean } = {}) {
    this.forced.push(opts.force === true);
    const build = Promise.withResolvers<void>();
    this.builds.push(build);
    await build.promise;
    this.template = found(`${this.label}-${this.builds.length}`);
    this.differences = [];
    return {
      outcome: "built" as const,
      manifest: this.template.manifest,
      dir: this.template.files.dir,
    };
  }
}

async function withSupervisor(
  fn: (
    s: TemplateSupervisor,
    ctx: { managers: FakeManager[]; clock: FakeClock; lines: string[]; events: string[] },
  ) => Promise<void>,
  before: (m: FakeManager) => void = () => {},
) {
  const dir = await Deno.makeTempDir();
  const managers: FakeManager[] = [];
  const clock = new FakeClock();
  const lines: string[] = [];
  const events: string[] = [];
  const settings = { consoleLogMax: 4096, memoryMiB: 256 } as Settings;
  const supervisor = new TemplateSupervisor(settings, new VmStore(dir), {
    clock,
    log: (l) => lines.push(l),
    checkEveryMs: 10_000,
    retryMs: { initial: 5000, max: 60_000 },
    onReady: () => events.push("ready"),
    onBuild: (_s, ok) => events.push(ok ? "built" : "build failed"),
    manager: (_settings, signal) => {
      const m = new FakeManager(signal, `m${managers.length}`);
      if (managers.length === 0) before(m);
      managers.push(m);
      return m;
    },
  });
  try {
    await fn(supervisor, { managers, clock, lines, events });
  } finally {
    await supervisor.close();
    await Deno.remove(dir, { recursive: true });
  }
}

const unfit = (pattern: RegExp) => (err: unknown) => {
  assert.ok(err instanceof SourceUnfitError, String(err));
  assert.match(err.reason, pattern);
  return true;
};

Deno.test("a fresh template at start: ready at once, the source serves its shape", () =>
  withSupervisor(async (s, { events, managers }) => {
    s.start();
    const supply = await s.source().prepare({});
    assert.deepEqual(supply.shape, SHAPE);
    assert.equal(s.state, "ready");
    assert.deepEqual(events, ["ready"]);
    assert.deepEqual(managers[0].forced, [], "nothing built");
    assert.equal(s.stale, false);
    assert.equal(s.governedPool().ready(), 0);
    assert.equal(s.status().id, "fresh");
  }, (m) => m.template = found("fresh")));

Deno.test("no template: built in the background, requests unfit (cold boot) meanwhile", () =>
  withSupervisor(async (s, { managers, events, lines }) => {
    s.start();
    await assert.rejects(() => s.source().prepare({}), unfit(/no template yet; it is being built/));
    assert.equal(s.state, "building");
    assert.equal(s.governedPool().ready(), undefined, "the governor waits");
    await assert.rejects(() => s.governedPool().make(), SourceUnfitError);
    managers[0].builds[0].resolve();
    await settle();
    assert.equal(s.state, "ready");
    assert.deepEqual(events, ["built", "ready"]);
    assert.ok((await s.source().prepare({})).shape);
    assert.match(
      lines.join("\n"),
      /template: m0-1 ready \(built in 0\.0 s\); the pool switches to it/,
    );
  }));

Deno.test("a template turned stale is rebuilt (forced) in the background; a reload does the same", () =>
  withSupervisor(async (s, { managers, clock, events }) => {
    s.start();
    await s.source().prepare({});
    managers[0].differences = ["QEMU /usr/bin/qemu changed since the template was built"];
    await clock.advance(10_000); // the periodic check notices
    assert.equal(s.state, "building");
    assert.equal(s.stale, true);
    await assert.rejects(() => s.source().prepare({}), unfit(/the template is stale: QEMU/));
    managers[0].builds[0].resolve();
    await settle();
    assert.equal(s.state, "ready");
    assert.equal(s.stale, false);
    assert.deepEqual(managers[0].forced, [true]);

    s.reconfigure({ consoleLogMax: 4096, memoryMiB: 512 } as Settings);
    managers[1].template = managers[0].template;
    managers[1].differences = ["default_memory is 512, the template has 256"];
    await settle();
    assert.equal(s.state, "building");
    managers[1].builds[0].resolve();
    await settle();
    assert.equal(s.state, "ready");
    assert.equal(s.status().id, "m1-1");
    assert.deepEqual(events, ["ready", "built", "ready", "built", "ready"]);
  }, (m) => m.template = found("old")));

Deno.test("a failed build is retried after a backoff; close aborts the manager's work", () =>
  withSupervisor(async (s, { managers, clock, lines, events }) => {
    s.start();
    await settle();
    managers[0].builds[0].reject(new Error("QEMU lacks x-ignore-shared"));
    await settle();
    assert.equal(s.state, "failed");
    await assert.rejects(() => s.source().prepare({}), unfit(/could not be built: QEMU lacks/));
    assert.match(
      lines.join("\n"),
      /build failed \(1 in a row\): QEMU lacks x-ignore-shared; retrying in 5 s/,
    );
    await clock.advance(4000);
    assert.equal(managers[0].builds.length, 1, "not before the backoff");
    await clock.advance(6000);
    assert.equal(managers[0].builds.length, 2, "retried at the next check after it");
    assert.deepEqual(events, ["build failed"]);
    const closing = s.close();
    assert.ok(managers[0].signal.aborted);
    managers[0].builds[1].reject(new Error("aborted"));
    assert.equal(await closing, 0);
    assert.equal(clock.pending, 0, "no timer left");
  }));
