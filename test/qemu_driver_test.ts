/**
 * The QEMU driver against a real QEMU (TCG, no guest): start, QMP, events, stop, kill, detach,
 * the template save / clone load recipe with paused machines, and the confinement (seccomp, and
 * another user when the tests run as root).
 */
import { runScriptUntilLine } from "./_cli.ts";
import assert from "node:assert/strict";
import { buildQemuArgs, type QemuSpec } from "../lib/qemu/qemu_command.ts";
import { QmpDisconnectedError, type QmpEvent } from "../lib/qemu/qmp_client.ts";
import {
  connectQmp,
  FIRST_PASSED_FD,
  readPidFile,
  startQemu,
  type StartQemuOptions,
  stopQemu,
} from "../lib/qemu/qemu_process.ts";
import { loadFromFdUri, receiveMigration, saveToSocketUri } from "../lib/qemu/migration_uri.ts";
import { qemuRunAs } from "../lib/qemu/qemu_user.ts";
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
    async start(spec: QemuSpec, extra: Partial<StartQemuOptions> = {}) {
      const process = await startQemu(buildQemuArgs(spec), {
        logFile: `${spec.qmpSocket}.log`,
        pidFile: `${spec.qmpSocket}.pid`,
        qmpSocket: spec.qmpSocket,
        ...extra,
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
    const lib = new URL("../lib/qemu/", import.meta.url).href;
    const out = await runScriptUntilLine(
      `import { buildQemuArgs } from "${lib}qemu_command.ts";
import { startQemu } from "${lib}qemu_process.ts";
const spec = ${JSON.stringify(spec)};
const { pid } = await startQemu(buildQemuArgs(spec), {
  logFile: spec.qmpSocket + ".log", pidFile: spec.qmpSocket + ".pid", qmpSocket: spec.qmpSocket });
console.log(pid);
await new Promise((resolve) => setTimeout(resolve, 60_000));
`,
      box.dir,
      "SIGINT",
    );
    qemu = identify(Number(out));
    assert.ok(qemu, `starter printed ${JSON.stringify(out)}`);
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

Deno.test("template save (Unix socket) and clone load (fd 3) under the sandbox, as the QEMU user", async () => {
  const box = await sandbox();
  try {
    const memory = `${box.dir}/memory`;
    const state = `${box.dir}/state`;
    await Deno.writeFile(memory, new Uint8Array());
    await Deno.truncate(memory, 64 * 1024 * 1024);
    const runAs = qemuRunAs(); // "nobody" as root: the files stay root's, 0600, in a 0700 folder
    const shape = { maxCpus: 2, maxMemoryMiB: 256, slots: 2, vmgenid: "auto", runAs };
    const caps = { capabilities: [{ capability: "x-ignore-shared", state: true }] };

    // the save: QEMU connects to state.sock in its working directory, the only way in
    const saveDir = `${box.dir}/save`;
    Deno.mkdirSync(saveDir);
    Deno.chmodSync(saveDir, 0o711);
    const tplSpec = box.spec({ ...shape, memory: { kind: "file", path: memory, share: true } });
    const tplPid = await box.start(tplSpec, { cwd: saveDir });
    const tpl = await connectQmp(tplSpec.qmpSocket);
    await tpl.execute("migrate-set-capabilities", caps);
    const receiver = receiveMigration(`${saveDir}/state.sock`, state);
    await tpl.execute("migrate", { uri: saveToSocketUri("state.sock") });
    await waitFor(async () => {
      const { status } = await tpl.execute<{ status: string }>("query-migrate");
      assert.notEqual(status, "failed");
      return status === "completed" ? status : undefined;
    }, "template save");
    const stateBytes = await receiver.done;
    await stopQemu({ process: tplPid, qmpSocket: tplSpec.qmpSocket, qmp: tpl });
    assert.equal(Deno.statSync(state).size, stateBytes);
    assert.ok(stateBytes > 1000 && stateBytes < 8 * 1024 * 1024, `state is ${stateBytes} bytes`);

    const cloneSpec = box.spec({
      ...shape,
      memory: { kind: "file", path: memory, share: false },
      incoming: "defer",
      paused: false,
    });
    const clonePid = await box.start(cloneSpec, { passFiles: [state] });
    const clone = await connectQmp(cloneSpec.qmpSocket);
    await clone.execute("migrate-set-capabilities", caps);
    await clone.execute("migrate-incoming", { uri: loadFromFdUri(FIRST_PASSED_FD) });
    await waitFor(async () => {
      const { status } = await clone.execute<{ status: string }>("query-status");
      return status === "inmigrate" ? undefined : status;
    }, "clone load");
    await clone.execute("cont");
    assert.equal((await clone.execute<{ status: string }>("query-status")).status, "running");
    // hotplug after QEMU switched user: anonymous RAM and a vCPU
    await clone.execute("object-add", {
      "qom-type": "memory-backend-ram",
      id: "hot1",
      size: 64 * 1024 * 1024,
    });
    await clone.execute("device_add", { driver: "pc-dimm", id: "dimm1", memdev: "hot1" });
    const slots = await clone.execute<{ type: string; props: Record<string, number> }[]>(
      "query-hotpluggable-cpus",
    );
    const free = slots.find((s) => !("qom-path" in s))!;
    await clone.execute("device_add", { driver: free.type, id: "hcpu1", ...free.props });
    assert.equal((await clone.execute<unknown[]>("query-cpus-fast")).length, 2);
    await stopQemu({ process: clonePid, qmpSocket: cloneSpec.qmpSocket, qmp: clone });
  } finally {
    await box.cleanup();
  }
});

/** The `Uid:`, `Gid:` and `Groups:` lines of a process. */
function credentials(pid: number): string[] {
  return Deno.readTextFileSync(`/proc/${pid}/status`).split("\n")
    .filter((l) => /^(Uid|Gid|Groups):/.test(l)).map((l) => l.replace(/\s+/g, " ").trim());
}

Deno.test({
  name: "started as root, QEMU runs as the unprivileged user with no groups",
  ignore: Deno.uid() !== 0,
  fn: async () => {
    const box = await sandbox();
    try {
      const runAs = qemuRunAs()!;
      const spec = box.spec({ runAs });
      const process = await box.start(spec);
      const qmp = await connectQmp(spec.qmpSocket); // answers once QEMU has switched
      const entry = Deno.readTextFileSync("/etc/passwd").split("\n")
        .find((l) => l.startsWith(`${runAs}:`))!.split(":");
      const [uid, gid] = [entry[2], entry[3]];
      assert.deepEqual(credentials(process.pid), [
        `Uid: ${uid} ${uid} ${uid} ${uid}`,
        `Gid: ${gid} ${gid} ${gid} ${gid}`,
        `Groups: ${gid}`,
      ]);
      await stopQemu({ process, qmpSocket: spec.qmpSocket, qmp });
    } finally {
      await box.cleanup();
    }
  },
});

Deno.test("the sandbox refuses what QEMU must never do: exec: migration kills it", async () => {
  const box = await sandbox();
  try {
    const spec = box.spec();
    const process = await box.start(spec);
    const qmp = await connectQmp(spec.qmpSocket);
    const result = await qmp.execute("migrate", { uri: `exec:touch ${box.dir}/ran` })
      .then(() => "answered", (err) => String(err));
    await waitFor(() => Promise.resolve(isAlive(process) ? undefined : true), "QEMU killed");
    qmp.close();
    assert.throws(() => Deno.statSync(`${box.dir}/ran`), Deno.errors.NotFound, result);
    assert.match(Deno.readTextFileSync(`${spec.qmpSocket}.log`), /Bad system call|^$/);
  } finally {
    await box.cleanup();
  }
});

Deno.test("no QEMU from these tests is left running", () => {
  assert.deepEqual(livePidsMentioning(PREFIX), []);
});
