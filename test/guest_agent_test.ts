/**
 * Boots the built-in guest in a real QEMU (TCG) and exercises every agent operation, reconnects
 * (after a client that left mid-request too), garbage on the wire, 300 MB of output with the
 * host's memory bounded, and the idle CPU cost. QEMU is started from a hand-written argument array.
 */
import { DEFAULT_QEMU_PATH } from "../lib/config/builtin_default.ts";
import assert from "node:assert/strict";
import {
  AgentClient,
  DEFAULT_OUTPUT_LIMIT,
  type ExecResult,
  waitForAgent,
} from "../lib/guest/agent_client.ts";
import { AgentError } from "../lib/guest/agent_error.ts";
import { encodeRequest, FrameDecoder, Op, Reply } from "../lib/guest/agent_frame.ts";
import { encodeExec, encodePersonalize } from "../lib/guest/agent_payload.ts";
import { buildGuest } from "../lib/guest/build_guest.ts";
import { bareAgentVmArgs } from "./_vm_env.ts";
import { availableModules } from "../lib/guest/module_deps.ts";

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const VMGENID = "5d2a3c4e-6f70-4182-93a4-b5c6d7e8f901";
const MIB = 1 << 20;

/** Runs `fn`; returns its result and how much this process's resident set grew at the peak. */
async function withRss<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const before = Deno.memoryUsage().rss;
  let peak = before;
  const sampler = setInterval(() => peak = Math.max(peak, Deno.memoryUsage().rss), 10);
  try {
    const result = await fn();
    return [result, Math.max(peak, Deno.memoryUsage().rss) - before];
  } finally {
    clearInterval(sampler);
  }
}

/** Sends raw bytes on a fresh connection, then reads until the answer to `id` (or gives up). */
async function rawCall(sock: string, bytes: Uint8Array, id: number) {
  const raw = await Deno.connect({ transport: "unix", path: sock });
  try {
    await raw.write(bytes);
    const decoder = new FrameDecoder(), buf = new Uint8Array(4096);
    for (;;) {
      const n = await raw.read(buf);
      assert.ok(n !== null, "the agent closed the connection");
      const answer = decoder.push(buf.subarray(0, n)).find((d) =>
        d.kind === "frame" && d.frame.id === id
      );
      if (answer?.kind === "frame") return answer.frame;
    }
  } finally {
    raw.close();
  }
}

/** utime + stime of a process, in seconds. */
function cpuSeconds(pid: number): number {
  const fields = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // USER_HZ is 100 on Linux
}

Deno.test("guest agent: boot, every operation, reconnect, garbage, idle cost", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "vmf-guest-test-" });
  const sock = `${dir}/agent.sock`;
  let qemu: Deno.ChildProcess | undefined;
  let client: AgentClient | undefined;
  let ok = false;
  try {
    let t = performance.now();
    const image = await buildGuest({ stateDir: `${dir}/state` });
    const buildCold = performance.now() - t;
    t = performance.now();
    assert.deepEqual(await buildGuest({ stateDir: `${dir}/state` }), image);
    const buildCached = performance.now() - t;

    const spawned = performance.now();
    qemu = new Deno.Command(DEFAULT_QEMU_PATH, {
      args: [
        ...bareAgentVmArgs(image, dir),
        "-device",
        `vmgenid,guid=${VMGENID}`,
        "-serial",
        `file:${dir}/serial.log`,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    client = await waitForAgent(sock, { deadline: Date.now() + 45_000 });
    const bootMs = performance.now() - spawned;

    const uname = await client.exec(["uname", "-r"]);
    assert.equal(uname.exitCode, 0);
    assert.equal(text(uname.stdout).trim(), image.kernelVersion);
    const meminfo = await client.exec({ shell: "cat /proc/meminfo" });
    assert.match(text(meminfo.stdout), /^MemTotal:\s+\d+ kB$/m);

    const info = await client.info();
    assert.equal(info.kernelRelease, image.kernelVersion);
    assert.equal(info.hostname, "vmf-guest");
    assert.equal(info.cpusOnline, 1);
    assert.equal(info.vmgenid, VMGENID);
    assert.ok(info.memTotal > 150 << 20 && info.memFree > 0, `memory ${info.memTotal}`);
    assert.match(info.bootId, /^[0-9a-f-]{36}$/);

    // personalize: one round trip; the answer confirms the CRNG reseed and reads back the rest
    const seed = () => crypto.getRandomValues(new Uint8Array(64));
    for (const id of [crypto.randomUUID(), crypto.randomUUID()]) { // twice: the bind mount is replaced
      const time = new Date("2031-02-03T04:05:06Z");
      const done = await client.personalizeGuest({
        seed: seed(),
        time,
        hostname: "clone-7",
        bootId: id,
      });
      assert.deepEqual([done.reseeded, done.hostname, done.bootId], [true, "clone-7", id]);
      assert.ok(done.timeNs >= BigInt(time.getTime()) * 1_000_000n);
      const seen = await client.exec(["cat", "/proc/sys/kernel/random/boot_id"]);
      assert.equal(text(seen.stdout), `${id}\n`);
      assert.equal((await client.info()).bootId, id);
    }
    assert.equal(text((await client.exec(["hostname"])).stdout), "clone-7\n");
    assert.equal(text((await client.exec(["date", "-u", "+%Y-%m-%d"])).stdout), "2031-02-03\n");
    const kept = await client.personalizeGuest({ seed: seed(), time: new Date(), hostname: "c8" });
    assert.equal(
      kept.bootId,
      (await client.info()).bootId,
      "no boot_id asked: the guest keeps its own",
    );
    assert.ok(Math.abs((await client.info()).time.getTime() - Date.now()) < 5_000);
    // a bad field is refused before any step runs: the hostname stays
    const badBootId = encodePersonalize({ seed: seed(), time: new Date(), hostname: "never" });
    const withBad = new Uint8Array([
      ...badBootId.subarray(0, badBootId.length - 4),
      0,
      0,
      0,
      3,
      0x41,
      0x42,
      0x43,
    ]);
    client.close(); // QEMU serves one connection at a time
    const refused = await rawCall(sock, encodeRequest(Op.personalize, 77, withBad), 77);
    assert.equal(refused.type, Reply.error);
    assert.equal(text(refused.payload), "personalize: malformed request");
    client = await waitForAgent(sock, { deadline: Date.now() + 10_000 });
    assert.equal((await client.info()).hostname, "c8");
    // vmgenid: the driver that reseeds the CRNG when a clone's generation ID changes is bound
    const modulesDir = `/lib/modules/${image.kernelVersion}`;
    const hasVmgenid = availableModules(
      Deno.readTextFileSync(`${modulesDir}/modules.dep`),
      ["vmgenid"],
      Deno.readTextFileSync(`${modulesDir}/modules.builtin`),
    ).length > 0;
    if (hasVmgenid) {
      const bound = await client.exec({ shell: "ls /sys/bus/acpi/drivers/vmgenid" });
      assert.match(text(bound.stdout), /QEMUVGID:00/, "the vmgenid driver is not bound");
    }
    assert.deepEqual(await client.onlineHotplugged(), { cpus: 0, memoryBlocks: 0 });

    const chunks: string[] = [];
    const piped = await client.exec(["cat"], {
      stdin: "from the host",
      onStdout: (c) => chunks.push(text(c)),
    });
    assert.equal(text(piped.stdout), "from the host");
    assert.equal(chunks.join(""), "from the host");
    const failing = await client.exec({ shell: "echo oops >&2; exit 3" });
    assert.deepEqual([failing.exitCode, text(failing.stderr), failing.truncated], [
      3,
      "oops\n",
      false,
    ]);
    await assert.rejects(client.exec(["no-such-command"]), (err: unknown) => {
      assert.ok(err instanceof AgentError);
      assert.match(err.message, /cannot run no-such-command: No such file/);
      assert.equal(err.exitCode, 127, "the CLI exits as a shell would");
      return true;
    });
    const limited = await client.exec({ shell: "head -c 100000 /dev/zero" }, { outputLimit: 1000 });
    assert.deepEqual([limited.stdout.length, limited.truncated], [1000, true]);
    await assert.rejects(client.exec(["true"], { outputLimit: -1 }), AgentError);

    // 300 MB of output: streamed to a callback that drops it, then gathered up to the default cap
    const BIG = 300_000_000;
    const dd = { shell: `dd if=/dev/zero bs=1000000 count=${BIG / 1e6} 2>/dev/null` }; // busybox head -c: 4 MB/s
    let streamed = 0;
    t = performance.now();
    const [all, streamGrowth] = await withRss(() =>
      client!.exec(dd, {
        outputLimit: BIG + 1,
        collect: false,
        timeoutMs: 600_000,
        onStdout: (chunk) => streamed += chunk.length,
      })
    );
    const streamMs = performance.now() - t;
    assert.deepEqual([streamed, all.stdout.length, all.truncated, all.exitCode], [
      BIG,
      0,
      false,
      0,
    ]);
    const [capped, gatherGrowth]: [ExecResult, number] = await withRss(() =>
      client!.exec(dd, { timeoutMs: 600_000 })
    );
    assert.deepEqual([capped.stdout.length, capped.truncated], [DEFAULT_OUTPUT_LIMIT, true]);
    assert.ok(
      streamGrowth < 100 * MIB,
      `streaming 300 MB grew the host by ${streamGrowth >> 20} MiB`,
    );
    assert.ok(
      gatherGrowth < 3 * DEFAULT_OUTPUT_LIMIT + 100 * MIB,
      `gathering 300 MB grew the host by ${gatherGrowth >> 20} MiB`,
    );
    const killed = await client.exec({ shell: "sleep 30 & sleep 30" }, { timeoutMs: 300 });
    assert.deepEqual([killed.timedOut, killed.signal, killed.exitCode], [true, 9, 137]);
    const [, , slow] = await Promise.all([
      client.ping(),
      client.info(),
      client.exec({ shell: "sleep 0.2; echo done" }),
      client.ping(),
    ]);
    assert.equal(text(slow.stdout), "done\n");

    const pings: number[] = [], execs: number[] = [];
    for (let i = 0; i < 7; i++) {
      pings.push(await client.ping());
      t = performance.now();
      await client.exec(["true"]);
      execs.push(performance.now() - t);
    }
    client.close();

    // idle: nobody connected, the agent must sleep
    await sleep(300);
    const cpu0 = cpuSeconds(qemu.pid), wall0 = performance.now();
    await sleep(3_000);
    const idlePercent = (cpuSeconds(qemu.pid) - cpu0) / ((performance.now() - wall0) / 1000) * 100;

    const answers: number[] = [];
    for (let i = 0; i < 3; i++) {
      t = performance.now();
      client = await AgentClient.connect(sock, { timeoutMs: 5_000 });
      await client.ping();
      answers.push(performance.now() - t);
      client.close();
      await sleep(100);
    }

    // garbage (zeros included), then a valid ping on the same connection
    const garbage = crypto.getRandomValues(new Uint8Array(3000));
    const ping = encodeRequest(Op.ping, 4242, new Uint8Array([1, 2, 3]));
    const echoed = await rawCall(sock, new Uint8Array([...garbage, ...ping]), 4242);
    assert.equal(echoed.type, Reply.result);
    assert.deepEqual([...echoed.payload], [1, 2, 3]);
    client = await waitForAgent(sock, { deadline: Date.now() + 5_000 });
    assert.equal((await client.exec({ shell: "echo still here" })).exitCode, 0);
    client.close();

    // a host that leaves mid-request: the next client is answered, at once or a little later
    const resync: number[] = [];
    for (const pause of [0, 0, 0, 300]) {
      const big = encodeRequest(
        Op.exec,
        99,
        encodeExec(["cat"], { stdin: new Uint8Array(200_000).fill(7) }),
      );
      const quitter = await Deno.connect({ transport: "unix", path: sock });
      await quitter.write(big.subarray(0, big.length >> 1));
      await sleep(50); // the agent reads the half
      quitter.close();
      if (pause) await sleep(pause);
      t = performance.now();
      client = await waitForAgent(sock, { deadline: Date.now() + 10_000 });
      const answered = await client.exec({ shell: "echo resynced" }, { timeoutMs: 10_000 });
      assert.equal(text(answered.stdout), "resynced\n");
      resync.push(performance.now() - t);
      client.close();
    }
    client = await waitForAgent(sock, { deadline: Date.now() + 5_000 });

    const initrdMiB = Deno.statSync(image.initrd).size / 1048576;
    console.log(
      `guest: build cold ${buildCold.toFixed(0)} ms, cached ${buildCached.toFixed(1)} ms, ` +
        `initrd ${initrdMiB.toFixed(2)} MiB; cold boot (spawn -> agent) ${bootMs.toFixed(0)} ms; ` +
        `ping p50 ${median(pings).toFixed(2)} ms; exec true p50 ${median(execs).toFixed(2)} ms; ` +
        `connect -> answer ${answers.map((a) => a.toFixed(2)).join("/")} ms; idle CPU ${
          idlePercent.toFixed(2)
        }%; 300 MB streamed in ${streamMs.toFixed(0)} ms (host +${streamGrowth >> 20} MiB), ` +
        `gathered to 64 MiB (host +${gatherGrowth >> 20} MiB); resync after a quitter ${
          resync.map((r) => r.toFixed(1)).join("/")
        } ms`,
    );
    assert.ok(idlePercent <= 3, `idle QEMU used ${idlePercent.toFixed(2)}% of a core`);
    ok = true;
  } finally {
    client?.close();
    if (qemu) {
      try {
        qemu.kill("SIGKILL");
      } catch {
        // already exited
      }
      const { stderr } = await qemu.output();
      if (!ok) {
        console.error(`qemu stderr: ${text(stderr)}`);
        try {
          console.error(`serial log: ${Deno.readTextFileSync(`${dir}/serial.log`).slice(-3000)}`);
        } catch {
          // no log
        }
      }
    }
    Deno.removeSync(dir, { recursive: true });
  }
});
