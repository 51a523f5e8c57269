/**
 * No root needed: an unprivileged user with no special rights (no HOME, no XDG_RUNTIME_DIR, no
 * /dev/kvm) runs `factory init`, `vm create`, `vm exec`, `vm destroy` and `factory destroy` on the
 * built-in default. The template cannot be mounted at /run/vc/vm/template: it falls back to the
 * user's folder on /dev/shm with a one-line warning; the guest is built into the state directory.
 * Real QEMU under TCG.
 */
import assert from "node:assert/strict";
import { unprivileged, unprivilegedUnavailable } from "./_unprivileged.ts";

const STACK = /^\s+at .*:\d+:\d+\)?$/m;
const noUser = await unprivilegedUnavailable();
if (noUser) console.error(`non_root_test: skipped: ${noUser}`);

Deno.test({
  name: "non-root: factory init, vm create/exec/destroy, factory destroy on the defaults",
  ignore: noUser !== undefined,
}, async (t) => {
  await using user = await unprivileged();
  const stateDir = `${user.dir}/state`;
  const shm = `/dev/shm/vmfactory-${user.uid}`;
  const env = { VMFACTORY_STATE_DIR: stateDir };
  const run = async (args: string[], code = 0) => {
    const res = await user.cli(args, env);
    assert.equal(res.code, code, `${args.join(" ")}:\n${res.stderr}`);
    assert.doesNotMatch(res.stderr, STACK, `${args.join(" ")}: no stack trace`);
    return res;
  };

  let id = "";
  await t.step("vm create --json builds the template in the user's /dev/shm folder", async () => {
    const created = await run(["vm", "create", "--json"]);
    const warnings = created.stderr.split("\n").filter((l) => l.startsWith("warning:"));
    assert.equal(warnings.length, 1, created.stderr);
    assert.match(
      warnings[0],
      new RegExp(`cannot mount a tmpfs at /run/vc/vm/template .*; using ${shm}/template-`),
    );
    const record = JSON.parse(created.stdout);
    assert.equal(record.source, "template");
    id = record.id;
    for (const dir of [stateDir, shm]) {
      const info = Deno.lstatSync(dir);
      assert.equal(info.uid, user.uid, dir);
      assert.equal(info.mode! & 0o777, 0o700, `${dir} is created 0700`);
    }
  });

  await t.step("vm exec runs in it; factory init finds the template", async () => {
    await run(["vm", "exec", id, "--", "true"]);
    const failing = await run(["vm", "exec", id, "--", "false"], 1);
    assert.equal(failing.stdout, "");
    const init = await run(["factory", "init"]);
    assert.match(init.stderr, new RegExp(`template already initialized in ${shm}/template-`));
  });

  await t.step("vm destroy --all and factory destroy leave nothing", async () => {
    await run(["vm", "destroy", "--all"]);
    const destroyed = await run(["factory", "destroy"]);
    assert.match(destroyed.stderr, /template removed/);
    // the background pool refill `vm create` started may still be finishing
    for (let i = 0; i < 200 && user.processes().length > 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.deepEqual(user.processes(), [], "no process of the user is left");
    assert.deepEqual([...Deno.readDirSync(`${stateDir}/vms`)], [], "no VM folder is left");
    assert.throws(() => Deno.lstatSync(shm), Deno.errors.NotFound, "the /dev/shm folder is gone");
    const list = await run(["vm", "list", "--json"]);
    assert.deepEqual(JSON.parse(list.stdout).vms, []);
  });

  await t.step("root's state directory or an unwritable one is a clear error", async () => {
    for (const dir of ["/run/vmfactory-test-" + user.uid, "/root/vmfactory"]) {
      const res = await user.cli(["vm", "list"], { VMFACTORY_STATE_DIR: dir });
      assert.equal(res.code, 2, res.stderr);
      assert.match(res.stderr, /^vmfactory: Cannot use the state directory .*permission denied/);
      assert.match(res.stderr, /set VMFACTORY_STATE_DIR or \[vmfactory\] state_dir/);
      assert.doesNotMatch(res.stderr, STACK);
    }
  });
});
