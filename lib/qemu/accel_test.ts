import { DEFAULT_QEMU_PATH } from "../config/builtin_default.ts";
import assert from "node:assert/strict";
import { bannerProbeArgs, cachedAccel, probeSerial, resolveAccel } from "./accel.ts";
import { UsageError } from "../errors.ts";

const qemuBinary = DEFAULT_QEMU_PATH;
const kernel = [...Deno.readDirSync("/boot")].map((e) => `/boot/${e.name}`)
  .find((p) => p.startsWith("/boot/vmlinuz-")) ?? "/boot/vmlinuz";

function kvmOpens(): boolean {
  try {
    Deno.openSync("/dev/kvm", { read: true, write: true }).close();
    return true;
  } catch {
    return false;
  }
}

Deno.test("tcg is taken as asked", async () => {
  assert.deepEqual(await resolveAccel("tcg", { qemuBinary, kernel }), { accel: "tcg" });
});

Deno.test("auto picks TCG here quickly, with a notice", async () => {
  const start = performance.now();
  const choice = await resolveAccel("auto", { qemuBinary, kernel });
  const ms = performance.now() - start;
  console.log(`auto -> ${choice.accel} in ${ms.toFixed(0)} ms: ${choice.notice}`);
  // the dev hosts have no /dev/kvm, or one that cannot run a guest: both mean TCG
  if (choice.accel === "tcg") assert.match(choice.notice ?? "", /using TCG$/);
  assert.ok(ms < 5000, `auto took ${ms} ms (it must time out, not hang)`);
});

Deno.test("kvm without a usable /dev/kvm is a usage error", {
  ignore: kvmOpens(),
}, async () => {
  await assert.rejects(resolveAccel("kvm", { qemuBinary, kernel }), UsageError);
});

Deno.test("probeSerial sees a marker on the serial console and always kills QEMU", async () => {
  // Under TCG the decompressor prints "Probing EDD" after ~0.6 s; the banner takes seconds.
  const args = bannerProbeArgs(qemuBinary, kernel, "tcg");
  assert.equal(await probeSerial(args, "Probing EDD", 8000), true);
  const start = performance.now();
  assert.equal(await probeSerial(args, "never printed", 300), false);
  assert.ok(performance.now() - start < 5000, "the probe timed out");
  const left = new Deno.Command("pgrep", { args: ["-f", "nokaslr panic=-1"] }).outputSync();
  assert.equal(new TextDecoder().decode(left.stdout), "");
});

Deno.test("cachedAccel stores the auto answer and reuses it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmf-accel-" });
  try {
    const first = await cachedAccel(dir, "auto", { qemuBinary, kernel });
    const stored = JSON.parse(await Deno.readTextFile(`${dir}/accel.json`));
    assert.deepEqual(stored.choice, first);
    stored.choice = { accel: "tcg", notice: "from cache" };
    await Deno.writeTextFile(`${dir}/accel.json`, JSON.stringify(stored));
    assert.deepEqual(await cachedAccel(dir, "auto", { qemuBinary, kernel }), stored.choice);
    stored.key = "stale";
    await Deno.writeTextFile(`${dir}/accel.json`, JSON.stringify(stored));
    assert.deepEqual(await cachedAccel(dir, "auto", { qemuBinary, kernel }), first);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
