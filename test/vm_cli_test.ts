/**
 * `vm create|list|exec|destroy` through the CLI with cold boots (the direct factory), real QEMU
 * under TCG. Every test runs in its own environment, removed with all its QEMU processes.
 */
import assert from "node:assert/strict";
import { qemuPidsWith, vmEnv } from "./_vm_env.ts";

Deno.test("vm CLI: create → exec → list → destroy; VMs outlive the CLI; kill -9 shows dead", async (t) => {
  await using env = await vmEnv({ enableTemplate: false });

  // two concurrent creates, each a separate CLI process that exits when the VM is ready
  const created = await Promise.all([0, 1].map(() => env.cli(["vm", "create", "--json"])));
  for (const res of created) assert.equal(res.code, 0, res.stderr);
  const [a, b] = created.map((r) => JSON.parse(r.stdout));
  assert.equal(a.source, "direct");
  assert.notEqual(a.id, b.id);
  assert.ok(a.timings.totalMs > 0 && a.timings.phases.bootMs > 0);

  await t.step("the VMs outlive the processes that created them", () => {
    assert.deepEqual(qemuPidsWith(a.dir).length, 1);
    assert.deepEqual(qemuPidsWith(b.dir).length, 1);
  });

  await t.step("exec streams output and returns the exit code", async () => {
    const uname = await env.cli(["vm", "exec", a.id, "--", "uname", "-r"]);
    assert.equal(uname.code, 0, uname.stderr);
    assert.match(uname.stdout, /^\d+\.\d+\.\d+/);
    const meminfo = await env.cli(["vm", "exec", a.id, "--", "cat", "/proc/meminfo"]);
    assert.match(meminfo.stdout, /^MemTotal:/m);
    const failing = await env.cli([
      "vm",
      "exec",
      a.id.slice(0, 6),
      "--shell",
      "echo oops >&2; exit 3",
    ]);
    assert.equal(failing.code, 3);
    assert.match(failing.stderr, /oops/);
  });

  await t.step("bad input exits 2 with a clear message", async () => {
    const unknown = await env.cli(["vm", "exec", "nosuchvm", "--", "true"]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /Cannot find VM nosuchvm: no such VM/);
    assert.doesNotMatch(unknown.stderr, /at .*\.ts:\d+/, "no stack trace");
    const noCommand = await env.cli(["vm", "exec", a.id]);
    assert.equal(noCommand.code, 2);
    const bad = `${env.dir}/bad.toml`;
    await Deno.writeTextFile(
      bad,
      (await Deno.readTextFile(env.configPath))
        .replace("enable_template = false", "enable_template = true")
        .replace("vm_cache_number = 0", "vm_cache_number = 1"),
    );
    const rejected = await env.cli(["vm", "create", "--config", bad], { noConfig: true });
    assert.equal(rejected.code, 2);
    assert.match(rejected.stderr, /the linter rejects it:[\s\S]*template-cache-exclusive/);
  });

  await t.step("list reports a VM whose QEMU was killed -9 as dead", async () => {
    Deno.kill(b.pid, "SIGKILL");
    for (let i = 0; i < 100 && qemuPidsWith(b.dir).length; i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
    const list = JSON.parse((await env.cli(["vm", "list", "--json"])).stdout);
    const states = Object.fromEntries(
      list.vms.map((v: { id: string; state: string }) => [v.id, v.state]),
    );
    assert.deepEqual(states, { [a.id]: "running", [b.id]: "dead" });
    const text = await env.cli(["vm", "list"]);
    assert.match(text.stderr, /1 VM\(s\) are dead/);
  });

  await t.step("destroy --all stops and removes everything", async () => {
    const res = await env.cli(["vm", "destroy", "--all"]);
    assert.equal(res.code, 0, res.stderr);
    assert.deepEqual(qemuPidsWith(env.dir), []);
    assert.deepEqual([...Deno.readDirSync(env.store.vmsDir)], []);
    const again = await env.cli(["vm", "destroy", a.id]);
    assert.equal(again.code, 2, "a destroyed VM is unknown");
  });
});
