import assert from "node:assert/strict";
import { DEFAULT_QEMU_PATH } from "../config/builtin_default.ts";
import { buildQemuArgs, CONSOLE_CHARDEV } from "../qemu/qemu_command.ts";
import { connectQmp, startQemu, stopQemu } from "../qemu/qemu_process.ts";
import { consoleTail, readConsole } from "./console_log.ts";
import { vmPaths } from "./vm_paths.ts";

Deno.test("readConsole moves QEMU's ring into console.log, keeping the newest bytes", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmf-console-" });
  const paths = vmPaths(dir, "c1");
  const process = await startQemu(
    buildQemuArgs({
      binary: DEFAULT_QEMU_PATH,
      accel: "tcg",
      cpus: 1,
      memoryMiB: 32,
      memory: { kind: "anonymous" },
      qmpSocket: paths.qmpSocket,
      consoleRingBytes: 4096,
      paused: true,
    }),
    { logFile: `${dir}/qemu.log`, pidFile: paths.pidFile, qmpSocket: paths.qmpSocket },
  );
  try {
    // what the guest would write to ttyS0, injected from the host side of the same ring
    const write = async (data: string) => {
      const qmp = await connectQmp(paths.qmpSocket);
      await qmp.execute("ringbuf-write", { device: CONSOLE_CHARDEV, data });
      qmp.close();
    };
    const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
    assert.equal(text(await readConsole(paths, 5000)), "");

    await write("a".repeat(2999) + "\n");
    assert.equal(text(await readConsole(paths, 5000)), "a".repeat(2999) + "\n");
    await write("b".repeat(6000)); // more than the ring: QEMU keeps its newest 4096
    const kept = text(await readConsole(paths, 5000));
    assert.ok(kept === "a".repeat(903) + "\n" + "b".repeat(4096), `kept ${kept.length} bytes`);
    assert.equal(text(await readConsole(paths, 5000)), kept, "reading twice shows the same");
    assert.equal(Deno.statSync(paths.consoleLog).size, 5000);
    assert.equal(Deno.statSync(paths.consoleLog).mode! & 0o777, 0o600);

    await write("line one\nline two\n");
    assert.equal(await consoleTail(paths, 5000, 2), `${"b".repeat(4096)}line one; line two`);
    await stopQemu({ process, qmpSocket: paths.qmpSocket });
    const t0 = performance.now();
    assert.equal(text(await readConsole(paths, 5000)).slice(-18), "line one\nline two\n");
    assert.ok(performance.now() - t0 < 1000, "QEMU gone: the file, at once");
  } finally {
    await stopQemu({ process, qmpSocket: paths.qmpSocket });
    await Deno.remove(dir, { recursive: true });
  }
});
