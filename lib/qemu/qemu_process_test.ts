import assert from "node:assert/strict";
import {
  assertQemuInstalled,
  connectQmp,
  readLogTail,
  readPidFile,
  stopQemu,
} from "./qemu_process.ts";
import { QmpTimeoutError } from "./qmp_client.ts";
import { isAlive, selfIdentity } from "../process_identity.ts";
import { UsageError } from "../errors.ts";
import { GREETING } from "../../test/fake_qmp_server.ts";

Deno.test("stopQemu leaves a process alone that is not the VM's (another start time)", async () => {
  const me = selfIdentity();
  await stopQemu({
    process: { pid: me.pid, startTime: me.startTime + 1 },
    qmpSocket: "/nonexistent",
  });
  assert.ok(isAlive(me));
});

Deno.test("readPidFile accepts only a bounded, valid identity", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmf-pidfile-" });
  try {
    const cases: [string, unknown][] = [
      ['{"pid":123,"startTime":456}', { pid: 123, startTime: 456 }],
      ["123", undefined],
      ['{"pid":1,"startTime":5}', undefined],
      ['{"pid":"123","startTime":456}', undefined],
      ['{"pid":-3,"startTime":456}', undefined],
      ['{"pid":1.5,"startTime":456}', undefined],
      [`{"pid":123,"startTime":456,"x":"${"a".repeat(300)}"}`, undefined],
      ["not json", undefined],
    ];
    for (const [text, want] of cases) {
      await Deno.writeTextFile(`${dir}/qemu.pid`, text);
      assert.deepEqual(readPidFile(`${dir}/qemu.pid`), want, text);
    }
    assert.equal(readPidFile(`${dir}/missing`), undefined);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("assertQemuInstalled wants an absolute path: no PATH look-up", () => {
  assert.throws(
    () => assertQemuInstalled("qemu-system-x86_64"),
    /^UsageError: Cannot start QEMU: qemu-system-x86_64 is not an absolute path$/,
  );
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

Deno.test("connectQmp retries until the socket appears", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmf-qmpwait-" });
  const path = `${dir}/qmp.sock`;
  let listener: Deno.UnixListener | undefined;
  try {
    const late = (async () => {
      await new Promise((resolve) => setTimeout(resolve, 60));
      listener = Deno.listen({ transport: "unix", path });
      const conn = await listener.accept();
      const buffer = new Uint8Array(1024);
      await conn.write(new TextEncoder().encode(JSON.stringify(GREETING) + "\n"));
      const n = await conn.read(buffer);
      const cmd = JSON.parse(new TextDecoder().decode(buffer.subarray(0, n!)));
      await conn.write(new TextEncoder().encode(JSON.stringify({ return: {}, id: cmd.id }) + "\n"));
      return conn;
    })();
    const qmp = await connectQmp(path, { timeoutMs: 2000 });
    qmp.close();
    (await late).close();
  } finally {
    listener?.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("connectQmp fails fast when QEMU's pid is gone, with its log tail", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmf-qmpwait-" });
  try {
    await Deno.writeTextFile(`${dir}/log`, "qemu: first\nqemu: boom\n");
    const start = performance.now();
    const error = await connectQmp(`${dir}/none.sock`, {
      process: { pid: 2 ** 22 + 1, startTime: 1 }, // above pid_max: never a live process
      logFile: `${dir}/log`,
      timeoutMs: 5000,
    }).catch((e) => e);
    assert.equal(error.message, "Cannot start QEMU: qemu: first; qemu: boom");
    assert.ok(performance.now() - start < 4000); // failed fast, not at the deadline
    await assert.rejects(connectQmp(`${dir}/none.sock`, { timeoutMs: 30 }), QmpTimeoutError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
