import assert from "node:assert/strict";
import { assertQemuInstalled, isQemuAlive, readLogTail, stopQemu } from "./qemu_process.ts";
import { UsageError } from "../errors.ts";

Deno.test("isQemuAlive checks the pid and guards against pid reuse", () => {
  assert.ok(isQemuAlive(Deno.pid));
  assert.ok(isQemuAlive(Deno.pid, { expectArg: "test" }));
  assert.ok(!isQemuAlive(Deno.pid, { expectArg: "/run/vmf/not-this-vm/qmp.sock" }));
  assert.ok(!isQemuAlive(2 ** 22 + 1));
});

Deno.test("stopQemu leaves a pid alone that is not the VM", async () => {
  await stopQemu({ pid: Deno.pid, qmpSocket: "/run/vmf/not-this-vm/qmp.sock" });
  assert.ok(isQemuAlive(Deno.pid));
});

Deno.test("assertQemuInstalled names the Debian package", () => {
  assert.throws(() => assertQemuInstalled("/nonexistent/qemu-system-x86_64"), (error) => {
    assert.ok(error instanceof UsageError);
    assert.match(
      error.message,
      /^Cannot start QEMU: .* install the Debian package qemu-system-x86$/,
    );
    return true;
  });
});

Deno.test("readLogTail returns the last lines of a log, or nothing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmf-logtail-" });
  try {
    const lines = Array.from({ length: 2000 }, (_, i) => `line ${i}`).join("\n");
    await Deno.writeTextFile(`${dir}/log`, lines + "\n\n");
    assert.equal(await readLogTail(`${dir}/log`, 2), "line 1998; line 1999");
    assert.equal(await readLogTail(`${dir}/missing`), "");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
