import assert from "node:assert/strict";
import { UsageError } from "../lib/errors.ts";
import { probeIgnoreShared, probeQemu } from "./probe_qemu.ts";

Deno.test("probeQemu: a binary that is not on this host is absent", async () => {
  assert.equal(await probeQemu("/nonexistent/qemu-system-x86_64"), "absent");
  assert.equal(await probeQemu("/"), "absent", "a folder is not a binary");
});

Deno.test("probeIgnoreShared: a missing binary is reported as missing, with its package", async () => {
  await assert.rejects(probeIgnoreShared("/nonexistent/qemu-system-x86_64"), (err) => {
    assert.ok(err instanceof UsageError);
    assert.equal(
      err.message,
      "Cannot probe QEMU: /nonexistent/qemu-system-x86_64 is not found " +
        "(the Debian package qemu-system-x86 provides /usr/bin/qemu-system-x86_64)",
    );
    return true;
  });
});

Deno.test("probeIgnoreShared: a binary that is no QEMU lacks the capability", async () => {
  assert.equal(await probeIgnoreShared("/bin/true"), false);
});
