/**
 * Processes killed at every phase of a VM's life (real QEMU, TCG): a `vm create` killed -9 right
 * after its pool claim, a pool refill killed mid-prepare, a VMCache server killed -9 while a VM is
 * offered, and Ctrl-C of `factory init` mid-boot. Afterwards the documented clean-up (the next
 * refill, server start or `factory destroy`) leaves no orphaned QEMU and the pool at its size.
 */
import { readUntil, runScriptUntilLine } from "./_cli.ts";
import assert from "node:assert/strict";
import { CacheClient } from "../lib/cache/cache_client.ts";
import { parseHandOff } from "../lib/cache/vmcache_source.ts";
import { isAlive } from "../lib/process_identity.ts";
import { processOf, type VmStore } from "../lib/vm/vm_store.ts";
import { qemuPidsWith, ROOT, vmEnv } from "./_vm_env.ts";

const LIB = new URL("../lib/", import.meta.url).href;

/** Runs `code` in a Deno child until it prints a line, then kills it with SIGKILL. */
const killAfterLine = (code: string, dir: string) => runScriptUntilLine(code, dir, "SIGKILL");

const states = (store: VmStore) => store.folders().map((f) => f.status?.state ?? "none").sort();

Deno.test("kill -9 after a pool claim and mid-refill: the next refill reaps and refills", async () => {
  await using env = await vmEnv({ poolSize: 2 });
  const init = await env.cli(["factory", "init"]);
  assert.equal(init.code, 0, init.stderr);
  assert.deepEqual(states(env.store), ["pooled", "pooled"]);
  const templateId = env.store.folders()[0].status!.templateId!;
  const settings = JSON.stringify(env.settings);

  // a claimer killed right after its claim: the folder is `building`, its owner dead
  const claimed = await killAfterLine(
    `import { VmStore } from "${LIB}vm/vm_store.ts";
const pending = await new VmStore(${JSON.stringify(env.store.stateDir)}).claim("${templateId}");
console.log(pending?.paths.id);
await new Promise(() => {});`,
    env.dir,
  );
  // a refill killed mid-prepare: a clone spawned and resumed, not committed
  const preparing = await killAfterLine(
    `import { TemplateManager } from "${LIB}template/template_manager.ts";
import { TemplateSource } from "${LIB}template/template_source.ts";
import { VmStore } from "${LIB}vm/vm_store.ts";
import { PhaseTimer } from "${LIB}vm/vm_record.ts";
const settings = ${settings};
const manager = new TemplateManager(settings, new VmStore(settings.stateDir), { log: () => {} });
const supply = await new TemplateSource(manager, { pool: false }).prepare({});
const vm = await supply.acquire(supply.shape, new PhaseTimer());
console.log(vm.pending.paths.id);
await new Promise(() => {});`,
    env.dir,
  );
  const orphans = [claimed, preparing].map((id) => env.store.pathsOf(id));
  assert.deepEqual(orphans.map((p) => env.store.status(p)?.state), ["building", "building"]);
  const orphanQemus = orphans.map((p) => qemuPidsWith(p.dir)).flat();
  assert.equal(orphanQemus.length, 2, "both killed processes left a running QEMU");

  const refill = await env.cli(["factory", "refill"]);
  assert.equal(refill.code, 0, refill.stderr);
  assert.deepEqual(states(env.store), ["pooled", "pooled"], "the pool is back at its size");
  for (const p of orphans) assert.throws(() => Deno.statSync(p.dir), Deno.errors.NotFound);
  for (const pid of orphanQemus) {
    assert.ok(!qemuPidsWith(env.dir).includes(pid), `orphaned QEMU ${pid} was stopped`);
  }
  assert.equal(qemuPidsWith(env.dir).length, 2, "only the pool's QEMUs run");
  assert.equal((await env.cli(["factory", "destroy"])).code, 0);
  assert.deepEqual(qemuPidsWith(env.dir), []);
});

Deno.test("kill -9 of the VMCache server while a VM is offered: the VM is the client's", async () => {
  await using env = await vmEnv({ enableTemplate: false, vmCacheNumber: 1 });
  const server = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}cmd/main.ts`, "factory", "init", "--config", env.configPath],
    env: { NO_COLOR: "1" },
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const lines = server.stderr.pipeThrough(new TextDecoderStream()).getReader();
  try {
    await readUntil(lines, /1\/1 VMs ready/);
    // a client that got the reply but never took the VM over (it died, or is slow)
    const client = await CacheClient.connect(env.settings.vmCacheEndpoint, { timeoutMs: 60_000 });
    const offered = parseHandOff((await client.getBaseVM()).hypervisor);
    client.close();
    const paths = env.store.pathsOf(offered.id);
    assert.equal(env.store.status(paths)?.state, "offered");
    server.kill("SIGKILL");
    await server.status;

    const destroyed = await env.cli(["factory", "destroy"]); // no server: reaps what it owned
    assert.equal(destroyed.code, 0, destroyed.stderr);
    assert.equal(env.store.status(paths)?.state, "owned", "never lost, never destroyed");
    assert.ok(isAlive(processOf(offered)));
    const list = JSON.parse((await env.cli(["vm", "list", "--json"])).stdout);
    assert.deepEqual(list.vms.map((v: { id: string; state: string }) => [v.id, v.state]), [
      [offered.id, "running"],
    ]);
    assert.equal((await env.cli(["vm", "destroy", "--all"])).code, 0);
    assert.deepEqual(qemuPidsWith(env.dir), [], "the cache's other VMs were reaped too");
  } finally {
    try {
      server.kill("SIGKILL");
    } catch { /* exited */ }
    await server.status;
    await lines.cancel().catch(() => {});
  }
});

Deno.test("Ctrl-C of factory init mid-boot exits within seconds and leaves nothing", async () => {
  await using env = await vmEnv({ poolSize: 0 });
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}cmd/main.ts`, "factory", "init", "--config", env.configPath],
    env: { NO_COLOR: "1" },
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  await readUntil(reader, "boot the template VM");
  await new Promise((r) => setTimeout(r, 300)); // QEMU runs, the guest boots
  const interrupted = performance.now();
  child.kill("SIGINT");
  const bound = setTimeout(() => child.kill("SIGKILL"), 30_000); // catches the 90 s agent wait
  const status = await child.status;
  clearTimeout(bound);
  const took = performance.now() - interrupted;
  await reader.cancel().catch(() => {});
  assert.ok(took < 30_000, `exited ${took.toFixed(0)} ms after Ctrl-C`);
  assert.notEqual(status.code, 0);
  assert.deepEqual(qemuPidsWith(`${env.dir}/template`), [], "no template QEMU left");
  const leftovers = [...Deno.readDirSync(`${env.dir}/template`)].filter((e) =>
    e.name.startsWith(".build-")
  );
  assert.deepEqual(leftovers, [], "no build folder left");
});
