/**
 * A state directory and template path with a space, a comma and both quotes work end to end
 * through the CLI (real QEMU under TCG, a real tmpfs): `vm create`, `vm exec`, `vm destroy`,
 * `factory destroy`, and no QEMU is left. A newline, or a path too long for its sockets, is
 * refused up front.
 */
import assert from "node:assert/strict";
import { processesWhere, signalProcess } from "../lib/process_identity.ts";
import { isToolMount, mountCount, unmountAll } from "../lib/template/tmpfs_mount.ts";
import { runCli } from "./_cli.ts";

const STACK = /^\s+at .*:\d+:\d+\)?$/m;
const ODD = `a b,c'd"e`;

function config(root: string, stateDir: string): string {
  return `[hypervisor.qemu]
path = "/usr/bin/qemu-system-x86_64"
default_memory = 256
default_vcpus = 1
default_maxvcpus = 2
memory_slots = 2
machine_type = "pc"
shared_fs = "none"
[factory]
enable_template = true
template_path = ${JSON.stringify(`${root}/template ${ODD}`)}
[vmfactory]
guest = "builtin"
accel = "tcg"
pool_size = 1
state_dir = ${JSON.stringify(stateDir)}
`;
}

function qemusWith(marker: string) {
  return processesWhere((argv) =>
    argv[0].includes("qemu-system") && argv.some((a) => a.includes(marker))
  );
}

Deno.test("odd paths: spaces, commas and quotes in state_dir and template_path work", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "vmft-odd-" });
  const root = `${dir}/${ODD}`;
  const template = `${root}/template ${ODD}`;
  const configPath = `${root}/configuration ${ODD}.toml`;
  Deno.mkdirSync(root, { mode: 0o700 });
  Deno.writeTextFileSync(configPath, config(root, `${root}/state ${ODD}`));
  const cli = async (args: string[], code = 0) => {
    const dashes = args.indexOf("--");
    const full = dashes < 0
      ? [...args, "--config", configPath]
      : [...args.slice(0, dashes), "--config", configPath, ...args.slice(dashes)];
    const res = await runCli(full);
    assert.equal(res.code, code, `${args.join(" ")}:\n${res.stderr}`);
    assert.doesNotMatch(res.stderr, STACK);
    return res;
  };
  try {
    let id = "";
    await t.step("vm create --json builds the template on a tmpfs and clones it", async () => {
      const created = await cli(["vm", "create", "--json"]);
      const record = JSON.parse(created.stdout);
      assert.equal(record.source, "template");
      assert.ok(record.agentSocket.includes(ODD), record.agentSocket);
      id = record.id;
      assert.equal(mountCount(template), 1, "one tmpfs, found again in mountinfo");
      assert.equal(isToolMount(template), true);
      assert.equal(qemusWith(record.dir.replaceAll(",", ",,")).length, 1, "its QEMU runs");
    });

    await t.step("vm exec runs in it", async () => {
      const res = await cli(["vm", "exec", id, "--", "echo", ODD]);
      assert.equal(res.stdout, `${ODD}\n`);
      const list = await cli(["vm", "list", "--json"]);
      assert.deepEqual(JSON.parse(list.stdout).vms.map((v: { id: string }) => v.id), [id]);
    });

    await t.step("vm destroy and factory destroy leave no QEMU and no mount", async () => {
      await cli(["vm", "destroy", id]);
      await cli(["factory", "destroy"]);
      // the background pool refill `vm create` started may still be finishing
      for (let i = 0; i < 200 && qemusWith(dir).length > 0; i++) {
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.deepEqual(qemusWith(dir), [], "no QEMU left");
      assert.equal(mountCount(template), 0);
      assert.deepEqual([...Deno.readDirSync(`${root}/state ${ODD}/vms`)], []);
    });

    await t.step("a newline or a path too long for a socket is refused up front", async () => {
      for (
        const [stateDir, problem] of [
          [`${root}/new\nline`, /state_dir must not contain control characters/],
          [`${root}/${"x".repeat(100)}`, /state_dir is too long: the socket .* would be \d+ bytes/],
        ] as const
      ) {
        Deno.writeTextFileSync(configPath, config(root, stateDir));
        const res = await cli(["vm", "list"], 2);
        assert.match(res.stderr, problem);
      }
    });
  } finally {
    for (const p of qemusWith(dir)) signalProcess(p, "SIGKILL");
    await unmountAll(template).catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
});
