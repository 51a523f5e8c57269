/**
 * The QEMU driver against a real QEMU (TCG, no guest): start, QMP, events, stop, kill, detach,
 * and the template save / clone load recipe with paused machines.
 */
import assert from "node:assert/strict";
import { buildQemuArgs, type QemuSpec } from "../lib/qemu/qemu_command.ts";
import { QmpDisconnectedError, type QmpEvent } from "../lib/qemu/qmp_client.ts";
import { connectQmp, readPidFile, startQemu, stopQemu } from "../lib/qemu/qemu_process.ts";
import {
  identify,
  isAlive,
  processesWhere,
  type ProcessIdentity,
  signalProcess,
} from "../lib/process_identity.ts";
import { DEFAULT_QEMU_PATH } from "../lib/config/builtin_default.ts";
import { UsageError, VmfactoryError } from "../lib/errors.ts";

const QEMU = DEFAULT_QEMU_PATH;
const PREFIX = "vmf-qemu-test-";

/** A temp dir plus every QEMU started in it; `cleanup` kills them all and removes the dir. */
async function sandbox() {
  const dir = await Deno.makeTempDir({ prefix: PREFIX });
  const started: ProcessIdentity[] = [];
  let n = 0;
  return {
    dir,
    spec(extra: Partial<QemuSpec> = {}): QemuSpec {
      n++;
      return {
        binary: QEMU,
        accel: "tcg",
        cpus: 1,
        memoryMiB: 64,
        memory: { kind: "anonymous" },
        qmpSocket: `${dir}/qmp${n}.sock`,
        paused: true,
        ...extra,
      };
    },
    async start(spec: QemuSpec) {
      const process = await startQemu(buildQemuArgs(spec), {
        logFile: `${spec.qmpSocket}.log`,
        pidFile: `${spec.qmpSocket}.pid`,
        qmpSocket: spec.qmpSocket,
      });
      assert.deepEqual(readPidFile(`${spec.qmpSocket}.pid`), process);
      started.push(process);
      return process;
    },
    async cleanup() {
      for (const vm of started) signalProcess(vm, "SIGKILL");
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** Pids of live (not zombie) processes whose command line mentions `text`. */
function livePidsMentioning(text: string): number[] {
  return processesWhere((argv) => argv.some((arg) => arg.includes(text))).map((p) => p.pid);
}

Deno.test("start, query-status, STOP/RESUME events, quit", async () => {
  const box = await sandbox();
  try {
    const spec = box.spec();
    const pid = await box.start(spec);
    assert.ok(isAlive(pid));
    assert.ok(!isAlive({ ...pid, startTime: pid.startTime + 1 }), "a reused pid is not this VM");
    const qmp = await connectQmp(spec.qmpSocket);
    assert.equal(qmp.version.split(".")[0], "7");
    assert.deepEqual(await qmp.execute("query-status"), {
      status: "prelaunch",
      running: false,
      singlestep: false,
    });
    const events: string[] = [];
    qmp.on("*", (e: QmpEvent) => events.push(e.event));
    const resumed = new Promise((resolve) => qmp.on("RESUME", resolve));
    await qmp.execute("cont");
    await resumed;
    const stopped = new Promise((resolve) => qmp.on("STOP", resolve));
    await qmp.execute("stop");
    await stopped;
    assert.deepEqual(events, ["RESUME", "STOP"]);
    await stopQemu({ process: pid, qmpSocket: spec.qmpSocket, qmp });
    assert.ok(!isAlive(pid));
    await stopQemu({ process: pid, qmpSocket: spec.qmpSocket }); // idempotent
  } finally {
    await box.cleanup();
  }
});

Deno.test("kill -9 rejects every pending call; stopQemu falls back to signals", async () => {
  const box = await sandbox();
  try {
    const spec = box.spec();
    const pid = await box.start(spec);
    const qmp = await connectQmp(spec.qmpSocket);
    Deno.kill(pid.pid, "SIGKILL");
    const calls = ["query-status", "query-cpus-fast", "query-name"].map((c) => qmp.execute(c));
    for (const result of await Promise.allSettled(calls)) {
      assert.equal(result.status, "rejected");
      assert.ok(result.reason instanceof QmpDisconnectedError, String(result.reason));
    }
    await qmp.closed;

    // a QEMU whose QMP is held by another client is still stopped (by SIGTERM)
    const spec2 = box.spec();
    const pid2 = await box.start(spec2);
    const holder = await connectQmp(spec2.qmpSocket);
    try {
      await stopQemu({ process: pid2, qmpSocket: spec2.qmpSocket }, { graceMs: 300 });
      assert.ok(!isAlive(pid2));
    } finally {
      holder.close();
    }
  } finally {
    await box.cleanup();
  }
});

Deno.test("a failed start reports QEMU's stderr; a missing binary names the package", async () => {
  const box = await sandbox();
  try {
    const spec = box.spec();
    const opts = { logFile: `${box.dir}/bad.log`, pidFile: `${box.dir}/bad.pid` };
    const argv = [...buildQemuArgs(spec), "-no-such-option"];
    const error = await startQemu(argv, { ...opts, qmpSocket: spec.qmpSocket }).catch((e) => e);
    assert.ok(error instanceof VmfactoryError);
    assert.match(error.message, /^Cannot start QEMU: .*-no-such-option: invalid option$/);

    // fails after QEMU created its QMP socket: connectQmp reports it
    const late = box.spec({ memory: { kind: "file", path: `${box.dir}/nope/mem`, share: true } });
    const process = await startQemu(buildQemuArgs(late), opts);
    const error2 = await connectQmp(late.qmpSocket, { process, logFile: opts.logFile })
      .catch((e) => e);
    assert.match(error2.message, /^Cannot start QEMU: .*nope\/mem/);
    assert.ok(!isAlive(process));

    const error3 = await startQemu(["/nonexistent/qemu"], opts).catch((e) => e);
    assert.ok(error3 instanceof UsageError);
    assert.match(error3.message, /qemu-system-x86/);
  } finally {
    await box.cleanup();
  }
});

Deno.test("QEMU outlives the Deno process that started it, even on SIGINT", async () => {
  const box = await sandbox();
  let qemu: ProcessIdentity | undefined;
  const spec = box.spec();
  try {
    const script = `${box.dir}/starter.ts`;
    const lib = new URL("../lib/qemu/", import.meta.url).href;
    await Deno.writeTextFile(
      script,
      `import { buildQemuArgs } from "${lib}qemu_command.ts";
import { startQemu } from "${lib}qemu_process.ts";
const spec = ${JSON.stringify(spec)};
const { pid } = await startQemu(buildQemuArgs(spec), {
  logFile: spec.qmpSocket + ".log", pidFile: spec.qmpSocket + ".pid", qmpSocket: spec.qmpSocket });
console.log(pid);
await new Promise((resolve) => setTimeout(resolve, 60_000));
`,
    );
    const deno = new URL("../scripts/deno", import.meta.url).pathname;
    const child = new Deno.Command(deno, {
      args: ["run", "-A", "--no-lock", script],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let out = "";
    while (!out.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      out += value;
    }
    qemu = identify(Number(out.trim()));
    assert.ok(qemu, `starter printed ${JSON.stringify(out)}`);
    child.kill("SIGINT");
    await child.status;
    await reader.cancel();
    assert.ok(isAlive(qemu), "QEMU died with its starter");
    const qmp = await connectQmp(spec.qmpSocket);
    assert.equal((await qmp.execute<{ status: string }>("query-status")).status, "prelaunch");
    await stopQemu({ process: qemu, qmpSocket: spec.qmpSocket, qmp });
    assert.ok(!isAlive(qemu));
  } finally {
    if (qemu) signalProcess(qemu, "SIGKILL");
    await box.cleanup();
  }
});

async function waitFor<T>(probe: () => Promise<T | undefined>, what: string): Promise<T> {
  const deadline = performance.now() + 10_000;
  while (performance.now() < deadline) {
    const value = await probe();
    if (value !== undefined) return value;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  throw new Error(`timed out waiting for ${what}`);
}

Deno.test("template save and clone load (x-ignore-shared) with hotplug headroom", async () => {
  const box = await sandbox();
  try {
    const memory = `${box.dir}/memory`;
    const state = `${box.dir}/state`;
    await Deno.writeFile(memory, new Uint8Array());
    await Deno.truncate(memory, 64 * 1024 * 1024);
    const shape = { maxCpus: 2, maxMemoryMiB: 256, slots: 2, vmgenid: "auto" };
    const caps = { capabilities: [{ capability: "x-ignore-shared", state: true }] };

    const tplSpec = box.spec({ ...shape, memory: { kind: "file", path: memory, share: true } });
    const tplPid = await box.start(tplSpec);
    const tpl = await connectQmp(tplSpec.qmpSocket);
    await tpl.execute("migrate-set-capabilities", caps);
    await tpl.execute("migrate", { uri: `exec:cat > ${state}` });
    await waitFor(async () => {
      const { status } = await tpl.execute<{ status: string }>("query-migrate");
      assert.notEqual(status, "failed");
      return status === "completed" ? status : undefined;
    }, "template save");
    await stopQemu({ process: tplPid, qmpSocket: tplSpec.qmpSocket, qmp: tpl });
    const stateBytes = (await Deno.stat(state)).size;
    assert.ok(stateBytes < 8 * 1024 * 1024, `state is ${stateBytes} bytes: RAM was copied`);

    const cloneSpec = box.spec({
      ...shape,
      memory: { kind: "file", path: memory, share: false },
      incoming: "defer",
      paused: false,
    });
    const clonePid = await box.start(cloneSpec);
    const clone = await connectQmp(cloneSpec.qmpSocket);
    await clone.execute("migrate-set-capabilities", caps);
    await clone.execute("migrate-incoming", { uri: `exec:cat ${state}` });
    await waitFor(async () => {
      const { status } = await clone.execute<{ status: string }>("query-status");
      return status === "inmigrate" ? undefined : status;
    }, "clone load");
    await clone.execute("cont");
    assert.equal((await clone.execute<{ status: string }>("query-status")).status, "running");
    await clone.execute("object-add", {
      "qom-type": "memory-backend-ram",
      id: "hot1",
      size: 64 * 1024 * 1024,
    });
    await clone.execute("device_add", { driver: "pc-dimm", id: "dimm1", memdev: "hot1" });
    await stopQemu({ process: clonePid, qmpSocket: cloneSpec.qmpSocket, qmp: clone });
  } finally {
    await box.cleanup();
  }
});

Deno.test("no QEMU from these tests is left running", () => {
  assert.deepEqual(livePidsMentioning(PREFIX), []);
});
