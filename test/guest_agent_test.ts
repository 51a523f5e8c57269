/**
 * Boots the built-in guest in a real QEMU (TCG) and exercises every agent operation, reconnects,
 * garbage on the wire and the idle CPU cost. QEMU is started from a hand-written argument array.
 */
import { DEFAULT_QEMU_PATH } from "../lib/config/builtin_default.ts";
import assert from "node:assert/strict";
import { AgentClient, waitForAgent } from "../lib/guest/agent_client.ts";
import { encodeFrame, FrameDecoder, Op, Reply } from "../lib/guest/agent_frame.ts";
import { buildGuest } from "../lib/guest/build_guest.ts";

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const VMGENID = "5d2a3c4e-6f70-4182-93a4-b5c6d7e8f901";

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
        ["-accel", "tcg", "-machine", "pc", "-nodefaults", "-no-user-config", "-display", "none"],
        ["-m", "256", "-kernel", image.kernel, "-initrd", image.initrd, "-append", image.append],
        ["-device", "virtio-serial-pci,id=vser0"],
        ["-chardev", `socket,id=agent0,path=${sock},server=on,wait=off`],
        ["-device", "virtserialport,bus=vser0.0,chardev=agent0,name=org.vmfactory.agent"],
        ["-device", `vmgenid,guid=${VMGENID}`, "-serial", `file:${dir}/serial.log`],
      ].flat(),
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

    await client.setHostname("clone-7");
    assert.equal(text((await client.exec(["hostname"])).stdout), "clone-7\n");
    for (const id of [crypto.randomUUID(), crypto.randomUUID()]) { // twice: the bind mount is replaced
      await client.setBootId(id);
      const seen = await client.exec(["cat", "/proc/sys/kernel/random/boot_id"]);
      assert.equal(text(seen.stdout), `${id}\n`);
      assert.equal((await client.info()).bootId, id);
    }
    await client.seedRng(crypto.getRandomValues(new Uint8Array(64)));
    await client.setClock(new Date("2031-02-03T04:05:06Z"));
    assert.equal(text((await client.exec(["date", "-u", "+%Y-%m-%d"])).stdout), "2031-02-03\n");
    await client.setClock();
    assert.ok(Math.abs((await client.info()).time.getTime() - Date.now()) < 5_000);
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
    assert.equal((await client.exec(["no-such-command"])).exitCode, 127);
    const limited = await client.exec({ shell: "head -c 100000 /dev/zero" }, { outputLimit: 1000 });
    assert.deepEqual([limited.stdout.length, limited.truncated], [1000, true]);
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

    // garbage, then a valid ping on the same connection
    const raw = await Deno.connect({ transport: "unix", path: sock });
    try {
      const garbage = crypto.getRandomValues(new Uint8Array(3000)).map((b) => (b === 0x56 ? 0 : b));
      await raw.write(garbage);
      await raw.write(encodeFrame(Op.ping, 4242, new Uint8Array([1, 2, 3])));
      const decoder = new FrameDecoder(), buf = new Uint8Array(4096);
      let answer;
      while (!answer) {
        const n = await raw.read(buf);
        assert.ok(n !== null, "agent closed the connection after garbage");
        answer = decoder.push(buf.subarray(0, n)).find((d) =>
          d.kind === "frame" && d.frame.id === 4242
        );
      }
      assert.ok(answer.kind === "frame" && answer.frame.type === Reply.result);
      assert.deepEqual([...answer.frame.payload], [1, 2, 3]);
    } finally {
      raw.close();
    }
    client = await waitForAgent(sock, { deadline: Date.now() + 5_000 });
    assert.equal((await client.exec({ shell: "echo still here" })).exitCode, 0);

    const initrdMiB = Deno.statSync(image.initrd).size / 1048576;
    console.log(
      `guest: build cold ${buildCold.toFixed(0)} ms, cached ${buildCached.toFixed(1)} ms, ` +
        `initrd ${initrdMiB.toFixed(2)} MiB; cold boot (spawn -> agent) ${bootMs.toFixed(0)} ms; ` +
        `ping p50 ${median(pings).toFixed(2)} ms; exec true p50 ${median(execs).toFixed(2)} ms; ` +
        `connect -> answer ${answers.map((a) => a.toFixed(2)).join("/")} ms; idle CPU ${
          idlePercent.toFixed(2)
        }%`,
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
