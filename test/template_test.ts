/**
 * VM templating against real QEMU (TCG): auto-created template, unique clones, shared memory,
 * hot-add, stale detection, destroy with running clones, and kill -9 of `factory init`.
 */
import { readUntil } from "./_cli.ts";
import assert from "node:assert/strict";
import { UsageError } from "../lib/errors.ts";
import { DirectSource } from "../lib/factory/direct_source.ts";
import { VmFactory } from "../lib/factory/vm_factory.ts";
import { AgentClient } from "../lib/guest/agent_client.ts";
import { TemplateManager } from "../lib/template/template_manager.ts";
import { isMountPoint, mountCount } from "../lib/template/tmpfs_mount.ts";
import type { VmRecord } from "../lib/vm/vm_record.ts";
import { pssMiB } from "../lib/vm/vm_stats.ts";
import { qemuPidsWith, ROOT, vmEnv } from "./_vm_env.ts";

async function sh(vm: VmRecord, line: string): Promise<string> {
  const agent = await AgentClient.connect(vm.agentSocket, { timeoutMs: 20_000 });
  try {
    const res = await agent.exec({ shell: line }, { timeoutMs: 20_000 });
    assert.equal(res.exitCode, 0, new TextDecoder().decode(res.stderr));
    return new TextDecoder().decode(res.stdout).trim();
  } finally {
    agent.close();
  }
}

Deno.test("template: clones are unique, share memory, hot-add, survive destroy", async (t) => {
  await using env = await vmEnv({ poolSize: 1 });
  const logs: string[] = [];
  const template = new TemplateManager(env.settings, env.store, { log: (l) => logs.push(l) });
  const factory = new VmFactory(template.source(), { log: (l) => logs.push(l) });

  const a = await factory.getVm({});
  assert.ok(logs.some((l) => l.includes("no template yet")), "first VM builds the template");
  assert.equal(a.source, "template");
  assert.equal((await template.init()).outcome, "exists", "init after auto-create is a no-op");
  assert.equal(mountCount(`${env.dir}/template`), 1, "exactly one tmpfs mount");
  const b = await factory.getVm({});

  await t.step("clones differ in RNG output, boot_id and hostname", async () => {
    const probe =
      "head -c 16 /dev/urandom | od -An -tx1; cat /proc/sys/kernel/random/boot_id; hostname";
    const [outA, outB] = [await sh(a, probe), await sh(b, probe)];
    const [rngA, bootA, hostA] = outA.split("\n");
    const [rngB, bootB, hostB] = outB.split("\n");
    assert.notEqual(rngA, rngB);
    assert.notEqual(bootA, bootB);
    assert.equal(hostA, a.hostname);
    assert.equal(hostB, b.hostname);
    assert.notEqual(hostA, hostB);
  });

  await t.step("concurrent requests never share a pool clone", async () => {
    await template.refill();
    const [x, y] = await Promise.all([factory.getVm({}), factory.getVm({})]);
    assert.notEqual(x.id, y.id);
    assert.notEqual(x.pid, y.pid);
    const claimed = [x, y].filter((vm) => "claimMs" in vm.timings.phases).length;
    assert.equal(claimed, 1, "one came from the pool (of 1), the other was spawned");
    for (const vm of [x, y]) {
      assert.equal(await sh(vm, "hostname"), vm.hostname);
      await env.cli(["vm", "destroy", vm.id]);
    }
  });

  await t.step("guest clock within 1 s of the host", async () => {
    const guest = Number(await sh(a, "date +%s"));
    assert.ok(
      Math.abs(guest - Date.now() / 1000) <= 1.5,
      `guest ${guest} host ${Date.now() / 1000}`,
    );
  });

  await t.step("hot-add of one vCPU and 128 MiB", async () => {
    const big = await factory.getVm({ cpus: 2, memoryMiB: 384 });
    assert.equal(big.cpus, 2);
    assert.equal(big.memoryMiB, 384);
    let online = "";
    for (let i = 0; i < 50 && online !== "2"; i++) {
      online = await sh(big, "grep -c ^processor /proc/cpuinfo");
      if (online !== "2") await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(online, "2");
    const memTotal = (vm: VmRecord) => sh(vm, "awk '/MemTotal/ {print $2}' /proc/meminfo");
    const [grown, base] = [Number(await memTotal(big)), Number(await memTotal(a))];
    assert.ok(grown >= base + 120 * 1024, `MemTotal ${grown} KiB after hot-add, ${base} before`);
  });

  await t.step("status reports a fresh template and its clones", async () => {
    const status = await template.status();
    assert.equal(status.present, true);
    assert.equal(status.fresh, true);
    assert.equal(status.clones, 3);
  });

  await t.step("stale template: differences named, --strict refuses", async () => {
    const stale = new TemplateManager(
      env.reconfigure({ kernelParams: "loglevel=3" }),
      env.store,
      { log: () => {} },
    );
    const { differences } = await stale.inspect();
    assert.ok(differences.some((d) => d.includes("kernel_params")), differences.join("; "));
    const strict = new VmFactory(stale.source(), { strict: true });
    await assert.rejects(strict.getVm({}), UsageError);
    await assert.rejects(strict.getVm({}), /stale: .*kernel_params.* \(--strict\)/);
    await assert.rejects(stale.init(), /stale/);
    env.reconfigure({ kernelParams: "" });
  });

  await t.step("destroy keeps running clones working and unmounts", async () => {
    const res = await template.destroy();
    assert.equal(res.removed, true);
    assert.equal(res.runningClones, 3);
    assert.equal(isMountPoint(`${env.dir}/template`), false);
    assert.equal(await sh(a, "echo alive"), "alive");
    assert.deepEqual((await template.destroy()).removed, false, "destroy is idempotent");
  });
});

Deno.test("template: 3 clones use a fraction of the memory of 3 cold VMs", async () => {
  await using env = await vmEnv({ poolSize: 0 });
  const template = new TemplateManager(env.settings, env.store, { log: () => {} });
  await template.init();
  const factory = new VmFactory(template.source(), { strict: true });
  const clones = [];
  for (let i = 0; i < 3; i++) clones.push(await factory.getVm({}));
  const direct = new VmFactory(new DirectSource(await template.plan(), env.store));
  const cold = await Promise.all([0, 1, 2].map(() => direct.getVm({})));
  const clonePss = pssMiB(clones.map((v) => v.pid));
  const coldPss = pssMiB(cold.map((v) => v.pid));
  console.log(`PSS: 3 clones ${clonePss.toFixed(0)} MiB, 3 cold VMs ${coldPss.toFixed(0)} MiB`);
  assert.ok(clonePss < coldPss * 0.3, `clones ${clonePss} MiB vs cold ${coldPss} MiB`);
});

Deno.test("template: kill -9 of factory init leaves nothing behind; concurrent inits take turns", async () => {
  await using env = await vmEnv({ poolSize: 0 });
  for (const killAfter of ["boot the template VM", "let the guest settle"]) {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${ROOT}cmd/main.ts`, "factory", "init", "--config", env.configPath],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
    await readUntil(reader, killAfter);
    await new Promise((r) => setTimeout(r, 200));
    child.kill("SIGKILL");
    await child.status;
    reader.releaseLock();
    await child.stderr.cancel().catch(() => {});
  }
  assert.ok(mountCount(`${env.dir}/template`) <= 1, "no stacked mounts");
  // two inits at once: one builds, the other waits for it and finds the template
  const both = await Promise.all([env.cli(["factory", "init"]), env.cli(["factory", "init"])]);
  for (const res of both) assert.equal(res.code, 0, res.stderr);
  assert.equal(both.filter((r) => /already initialized/.test(r.stderr)).length, 1);
  assert.equal(mountCount(`${env.dir}/template`), 1);
  assert.deepEqual(qemuPidsWith(`${env.dir}/template/.build`), [], "no template QEMU left");
  const vm = await env.cli(["vm", "create", "--json"]);
  assert.equal(vm.code, 0, vm.stderr);
  assert.equal(JSON.parse(vm.stdout).source, "template");
  const destroyed = await env.cli(["factory", "destroy"]);
  assert.equal(destroyed.code, 0, destroyed.stderr);
  assert.equal(isMountPoint(`${env.dir}/template`), false);
});
