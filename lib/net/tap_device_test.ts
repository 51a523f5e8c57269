import assert from "node:assert/strict";
import { UsageError } from "../errors.ts";
import { assertTapUsable, tapDeviceProblem } from "./tap_device.ts";

/** A fake /sys/class/net with one interface `vmf0` having these attribute files. */
function fakeSysfs(files: Record<string, string>): string {
  const dir = Deno.makeTempDirSync();
  Deno.mkdirSync(`${dir}/vmf0`);
  for (const [name, text] of Object.entries(files)) {
    Deno.writeTextFileSync(`${dir}/vmf0/${name}`, text);
  }
  return dir;
}

const READY = { tun_flags: "0x5802\n", owner: "999\n", group: "-1\n", flags: "0x1003\n" };

Deno.test("tapDeviceProblem: a persistent tap owned by QEMU's user, up, is ready", () => {
  const dir = fakeSysfs(READY);
  try {
    assert.equal(tapDeviceProblem("vmf0", 999, dir), undefined);
    assertTapUsable("vmf0", 999, dir);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("tapDeviceProblem names what the operator must fix", () => {
  const table: [Record<string, string> | undefined, RegExp][] = [
    [undefined, /there is no tap device vmf0 \(ip tuntap add vmf0 mode tap user/],
    [{ ...READY, tun_flags: "0x5801" }, /vmf0 is a tun device, not a tap/],
    [{ ...READY, tun_flags: "0x5002" }, /not persistent/],
    [{ ...READY, owner: "-1" }, /no owner, so any local user may open it/],
    [{ ...READY, owner: "0" }, /not owned by QEMU's user, uid 999/],
    [{ ...READY, owner: "-1", group: "50" }, /not owned by QEMU's user/],
    [{ ...READY, flags: "0x1002" }, /vmf0 is down \(ip link set vmf0 up\)/],
  ];
  for (const [files, message] of table) {
    const dir = files ? fakeSysfs(files) : Deno.makeTempDirSync();
    try {
      assert.match(tapDeviceProblem("vmf0", 999, dir) ?? "", message);
      assert.throws(
        () => assertTapUsable("vmf0", 999, dir),
        (err: Error) =>
          err instanceof UsageError && err.message.startsWith("Cannot use the tap device vmf0: "),
      );
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  }
});

Deno.test("tapDeviceProblem on this host: lo is no tap", () => {
  assert.match(tapDeviceProblem("lo", 0) ?? "", /there is no tap device lo/);
});
