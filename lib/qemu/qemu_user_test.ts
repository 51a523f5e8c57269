import assert from "node:assert/strict";
import { DEDICATED_QEMU_USER, FALLBACK_QEMU_USER, passwdHas, qemuRunAs } from "./qemu_user.ts";

Deno.test("QEMU switches user only when the tool is root: the dedicated user, else nobody", () => {
  const passwd = "root:x:0:0::/root:/bin/sh\nvmfactory-qemu:x:998:998::/:/usr/sbin/nologin\n";
  assert.ok(passwdHas(passwd, DEDICATED_QEMU_USER));
  assert.ok(!passwdHas(passwd, "vmfactory"));
  assert.ok(!passwdHas("# vmfactory-qemu:x\n", DEDICATED_QEMU_USER));
  const expected = Deno.uid() !== 0
    ? undefined
    : passwdHas(Deno.readTextFileSync("/etc/passwd"), DEDICATED_QEMU_USER)
    ? DEDICATED_QEMU_USER
    : FALLBACK_QEMU_USER;
  assert.equal(qemuRunAs(), expected);
});
