/**
 * A guest that floods its serial console (real QEMU under TCG, a cold boot through the CLI): what
 * is kept stays within `[vmfactory] console_log_max`, no host file grows while it writes, and
 * `vm logs` prints the newest output; an unknown VM exits 2.
 */
import assert from "node:assert/strict";
import { vmEnv } from "./_vm_env.ts";

const MAX = 65_536;

/** Bytes of every file in `dir` (not below). */
function folderBytes(dir: string): number {
  let total = 0;
  for (const e of Deno.readDirSync(dir)) {
    if (e.isFile) total += Deno.statSync(`${dir}/${e.name}`).size;
  }
  return total;
}

Deno.test("console flood: the kept log stays under console_log_max; vm logs prints its tail", async () => {
  await using env = await vmEnv({ enableTemplate: false });
  Deno.mkdirSync(`${env.dir}/config.d`);
  Deno.writeTextFileSync(
    `${env.dir}/config.d/50-console.toml`,
    `[vmfactory]\nconsole_log_max = ${MAX}\n`,
  );
  const created = await env.cli(["vm", "create", "--json"]);
  assert.equal(created.code, 0, created.stderr);
  const vm = JSON.parse(created.stdout);

  const before = await env.cli(["vm", "logs", vm.id]);
  assert.equal(before.code, 0, before.stderr);
  const hostBefore = folderBytes(vm.dir);

  // 10 s of output as fast as the guest can write it (MB under TCG), killed by the timeout
  const t0 = performance.now();
  const flood = await env.cli([
    "vm",
    "exec",
    vm.id,
    "--timeout",
    "10",
    "--shell",
    "yes vmfactory-console-flood > /dev/ttyS0",
  ]);
  assert.ok(performance.now() - t0 >= 9_000, `the flood ran: ${flood.stderr}`);
  assert.match(flood.stderr, /killed after 10 s/);
  assert.ok(folderBytes(vm.dir) <= hostBefore, "no host file grew while the guest wrote");

  const logs = await env.cli(["vm", "logs", vm.id.slice(0, 6)]);
  assert.equal(logs.code, 0, logs.stderr);
  const bytes = new TextEncoder().encode(logs.stdout).length;
  assert.ok(bytes > MAX / 2 && bytes <= MAX, `vm logs printed ${bytes} bytes`);
  assert.match(logs.stdout, /(vmfactory-console-flood\r?\n){100}/);
  assert.ok(Deno.statSync(vm.consoleLog).size <= MAX, "console.log is cut to the newest bytes");
  const again = await env.cli(["vm", "logs", vm.id]);
  assert.equal(again.stdout.length, logs.stdout.length, "reading does not consume the log");

  const unknown = await env.cli(["vm", "logs", "nosuchvm"]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /Cannot find VM nosuchvm: no such VM/);
  assert.equal((await env.cli(["vm", "destroy", vm.id])).code, 0);
});
