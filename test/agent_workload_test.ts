/**
 * Boots the built-in guest in a real QEMU (TCG) and runs what a workload needs through the agent:
 * exec with env, cwd, user and root; a streamed stdin into sha256sum; output backpressure from a
 * stalled consumer; an erofs image and a NIC hot-plugged over QMP (from this test, by hand), then
 * mountImage, exec inside the image, configureNet and a download from the host. Prints timings
 * (exec latency with options vs plain, mount and network setup after hot-plug, stdin throughput);
 * asserts none. Every process and folder goes away even when it fails.
 */
import assert from "node:assert/strict";
import { DEFAULT_QEMU_PATH } from "../lib/config/builtin_default.ts";
import { type AgentClient, waitForAgent } from "../lib/guest/agent_client.ts";
import { AgentError } from "../lib/guest/agent_error.ts";
import { encodeRequest, FrameDecoder, Op, Reply } from "../lib/guest/agent_frame.ts";
import {
  encodeExec,
  encodeMountImage,
  encodeStdin,
  STDIN_WINDOW,
} from "../lib/guest/agent_payload.ts";
import { buildGuest } from "../lib/guest/build_guest.ts";
import { QmpClient } from "../lib/qemu/qmp_client.ts";
import { bareAgentVmArgs, vmEnv } from "./_vm_env.ts";

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const MIB = 1 << 20;
const SERIAL = "vmf-app-img";
const MAC = "52:54:00:12:34:56";
/** Applets the image's busybox provides. */
const APPLETS = [
  "sh",
  "id",
  "pwd",
  "env",
  "cat",
  "ls",
  "test",
  "touch",
  "dd",
  "wget",
  "grep",
  "true",
];

/** An image tree: busybox, users app (1000) and staff (50), a dangling resolv.conf link. */
function writeImageTree(tree: string): void {
  for (const d of ["bin", "etc", "home/app"]) Deno.mkdirSync(`${tree}/${d}`, { recursive: true });
  Deno.copyFileSync("/bin/busybox", `${tree}/bin/busybox`);
  for (const applet of APPLETS) Deno.symlinkSync("busybox", `${tree}/bin/${applet}`);
  Deno.writeTextFileSync(
    `${tree}/etc/passwd`,
    "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
  );
  Deno.writeTextFileSync(`${tree}/etc/group`, "root:x:0:\nstaff:x:50:app\napp:x:1000:\n");
  Deno.symlinkSync("../run/systemd/resolve/stub-resolv.conf", `${tree}/etc/resolv.conf`);
  Deno.chownSync(`${tree}/home/app`, 1000, 1000);
  Deno.writeTextFileSync(`${tree}/hello.txt`, "from the image\n");
}

/** Sends raw requests on a fresh connection and returns the first answer to `id`. */
async function rawCall(sock: string, id: number, requests: Uint8Array[]) {
  const conn = await Deno.connect({ transport: "unix", path: sock });
  try {
    for (const bytes of requests) {
      for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
    }
    const decoder = new FrameDecoder(), buf = new Uint8Array(4096);
    for (;;) {
      const n = await conn.read(buf);
      assert.ok(n !== null, "the agent closed the connection");
      for (const item of decoder.push(buf.subarray(0, n))) {
        if (item.kind === "frame" && item.frame.id === id) return item.frame;
      }
    }
  } finally {
    conn.close();
  }
}

/** Polls `check` until it holds; fails after 30 s. */
async function until(check: () => Promise<boolean>): Promise<void> {
  for (const end = Date.now() + 30_000; !(await check());) {
    assert.ok(Date.now() < end, `still not so after 30 s: ${check}`);
    await sleep(20);
  }
}

/** Runs `fn` `n` times and returns the median time in ms. */
async function timed(n: number, fn: () => Promise<unknown>): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await fn();
    times.push(performance.now() - t);
  }
  return median(times);
}

Deno.test("agent workloads: exec options, streamed stdin, backpressure, hot-plugged image and NIC", async () => {
  await using env = await vmEnv();
  const dir = env.dir, sock = `${dir}/agent.sock`;
  const image = await buildGuest({ stateDir: `${dir}/state` });
  writeImageTree(`${dir}/tree`);
  const mkfs = await new Deno.Command("/usr/bin/mkfs.erofs", {
    args: ["-T0", `${dir}/app.img`, `${dir}/tree`],
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.ok(mkfs.success, `mkfs.erofs failed: ${text(mkfs.stderr)}`);

  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response("hello from the host\n"),
  );
  const qemu = new Deno.Command(DEFAULT_QEMU_PATH, {
    args: [
      ...bareAgentVmArgs(image, dir),
      "-qmp",
      `unix:${dir}/qmp.sock,server=on,wait=off`,
      "-serial",
      `file:${dir}/serial.log`,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let client: AgentClient | undefined, qmp: QmpClient | undefined, ok = false;
  try {
    client = await waitForAgent(sock, { deadline: Date.now() + 60_000 });
    const agent = client;
    qmp = await QmpClient.connect(`${dir}/qmp.sock`);
    const out = async (cmd: string[] | { shell: string }, opts = {}) => {
      const res = await agent.exec(cmd, opts);
      assert.equal(res.exitCode, 0, `${JSON.stringify(cmd)}: ${text(res.stderr)}`);
      return text(res.stdout);
    };
    const fails = (cmd: string[], opts: object, pattern: RegExp) =>
      assert.rejects(agent.exec(cmd, opts), (err) => {
        assert.ok(err instanceof AgentError && err.code === "remote", String(err));
        assert.match(err.message, pattern);
        return true;
      });

    // exec options in the guest's own root
    assert.equal(await out(["env"], { env: ["A=1", "PATH=/usr/bin"] }), "A=1\nPATH=/usr/bin\n");
    assert.equal(await out(["/usr/bin/env"], { env: [] }), "");
    assert.equal(await out(["pwd"], { cwd: "/proc" }), "/proc\n");
    assert.match(
      await out({ shell: "id -u; id -g; grep Groups /proc/self/status" }, { user: "65534:65534" }),
      /^65534\n65534\nGroups:\s*\n$/,
    );
    await fails(["true"], { user: "nobody" }, /read \/etc\/passwd for user nobody: No such file/);
    await fails(["true"], { cwd: "/nope" }, /exec: chdir \/nope: No such file or directory/);
    await fails(["no-such-program"], {}, /exec: cannot run no-such-program: No such file/);
    await fails(["true"], { root: "/nonexistent" }, /exec: chroot \/nonexistent: No such file/);
    assert.equal((await agent.exec({ shell: "exit 3" })).exitCode, 3, "a failure is a result");

    // 20 MiB of stdin streamed into sha256sum
    const data = new Uint8Array(20 * MIB);
    for (let at = 0; at < data.length; at += 65536) {
      crypto.getRandomValues(data.subarray(at, at + 65536));
    }
    const sum = Array.from(
      new Uint8Array(await crypto.subtle.digest("SHA-256", data)),
      (b) => b.toString(16).padStart(2, "0"),
    ).join("");
    let t = performance.now();
    const hashed = await out(["sha256sum"], {
      stdin: new Blob([data]).stream(),
      timeoutMs: 300_000,
    });
    const stdinMs = performance.now() - t;
    assert.equal(hashed, `${sum}  -\n`);
    t = performance.now(); // side by side: the transport alone, and the hashing alone
    await out({ shell: "cat >/dev/null" }, { stdin: new Blob([data]).stream() });
    const catMs = performance.now() - t;
    t = performance.now();
    await out({ shell: "dd if=/dev/zero bs=1048576 count=20 2>/dev/null | sha256sum" });
    const localMs = performance.now() - t;
    // a command that reads 5 bytes and exits: the rest of a stream is not sent
    let pulled = 0;
    const endless = async function* () {
      for (;;) yield (pulled++, data.subarray(0, 65536));
    };
    assert.equal(await out({ shell: "head -c 5 | wc -c" }, { stdin: endless() }), "5\n");
    assert.ok(pulled < 64, `${pulled} chunks of 64 KiB pulled for 5 bytes`);

    // a stalled consumer stalls its command, not the agent
    const BIG = 8 * MIB;
    let release = () => {};
    const gate = new Promise<void>((r) => release = r);
    let streamed = 0, first = true;
    const producer = agent.exec(
      { shell: `dd if=/dev/zero bs=65536 count=${BIG / 65536} 2>/dev/null; touch /tmp/produced` },
      {
        collect: false,
        timeoutMs: 120_000,
        onStdout: (chunk) => {
          streamed += chunk.length;
          if (first) return (first = false, gate);
        },
      },
    );
    await sleep(1500);
    const rtt = await agent.ping();
    assert.equal(
      await out({ shell: "test -e /tmp/produced && echo done || echo blocked" }),
      "blocked\n",
    );
    assert.ok(streamed <= MIB, `${streamed} bytes reached a stalled consumer`);
    release();
    assert.equal((await producer).exitCode, 0);
    assert.equal(streamed, BIG);
    assert.equal(await out(["ls", "/tmp/produced"]), "/tmp/produced\n");

    // an erofs image hot-plugged, mounted with an overlay
    await assert.rejects(
      agent.mountImage("not-there", "x", { waitMs: 200 }),
      /no disk with serial not-there appeared within 200 ms/,
    );
    await qmp.execute("blockdev-add", {
      "node-name": "img0",
      driver: "raw",
      "read-only": true,
      file: { driver: "file", filename: `${dir}/app.img` },
    });
    await qmp.execute("device_add", {
      driver: "virtio-blk-pci",
      drive: "img0",
      id: "vd-img0",
      serial: SERIAL,
    });
    t = performance.now();
    const root = await agent.mountImage(SERIAL, "app", { writableBytes: 8 * MIB });
    const mountMs = performance.now() - t;
    assert.equal(root, "/run/vmf/app/root");
    await assert.rejects(agent.mountImage(SERIAL, "app"), /an image named app is mounted already/);
    const inImage = { root, env: ["PATH=/bin", "HOME=/home/app"] };
    const app = { ...inImage, user: "app", cwd: "/home/app" };
    assert.match(
      await out({ shell: "id; pwd; echo $HOME" }, app),
      /^uid=1000\(app\) gid=1000\(app\).*\n\/home\/app\n\/home\/app\n$/,
    );
    assert.match(await out({ shell: "grep Groups /proc/self/status" }, app), /^Groups:\s*\n$/);
    assert.equal(
      await out({ shell: "id -u; id -g" }, { ...inImage, user: "app:staff" }),
      "1000\n50\n",
    );
    assert.equal(
      await out({ shell: "id -u; id -g" }, { ...inImage, user: "1000:50" }),
      "1000\n50\n",
    );
    assert.equal(
      await out({ shell: "id -u; id -g" }, { ...inImage, user: "1000" }),
      "1000\n1000\n",
    );
    assert.equal(await out({ shell: "id -u; id -g" }, { ...inImage, user: "4242" }), "4242\n0\n");
    await fails(["true"], { ...inImage, user: "bob" }, /no such user in \/etc\/passwd: bob/);
    await fails(
      ["true"],
      { ...inImage, user: "app:wheel" },
      /no such group in \/etc\/group: wheel/,
    );
    assert.equal(await out(["cat", "/hello.txt"], inImage), "from the image\n");
    assert.equal(
      await out({
        shell:
          "test -f /etc/resolv.conf && test ! -L /etc/resolv.conf && echo x >/etc/resolv.conf && " +
          "grep -q localhost /etc/hosts && test -c /dev/null && test -d /sys/class && " +
          "test -e /proc/self/status && echo ok",
      }, inImage),
      "ok\n",
    );
    assert.equal(await out({ shell: "touch /tmp/mine && ls /tmp" }, app), "mine\n");
    const full = await agent.exec({ shell: "dd if=/dev/zero of=/big bs=1M count=16" }, inImage);
    assert.notEqual(full.exitCode, 0, "the writable layer is capped");
    assert.match(text(full.stderr), /No space left on device/);

    // a NIC hot-plugged, configured, used
    await qmp.execute("netdev_add", { type: "user", id: "net0" });
    await qmp.execute("device_add", {
      driver: "virtio-net-pci",
      netdev: "net0",
      mac: MAC,
      id: "hpnic0",
    });
    t = performance.now();
    const ifname = await agent.configureNet({
      mac: MAC,
      address: "10.0.2.15/24",
      gateway: "10.0.2.2",
      dns: ["10.0.2.3"],
      image: "app",
    });
    const netMs = performance.now() - t;
    assert.match(ifname, /^eth\d$/);
    assert.equal(await out(["cat", "/etc/resolv.conf"]), "nameserver 10.0.2.3\n");
    assert.equal(await out(["cat", "/etc/resolv.conf"], inImage), "nameserver 10.0.2.3\n");
    const url = `http://10.0.2.2:${server.addr.port}/`;
    assert.equal(await out(["wget", "-q", "-O", "-", url]), "hello from the host\n");
    assert.equal(await out(["wget", "-q", "-O", "-", url], app), "hello from the host\n");

    // exec latency: plain, with env + cwd + user, and as a user of the image (reads its passwd)
    const plainMs = await timed(9, () => agent.exec(["true"]));
    const optionsMs = await timed(
      9,
      () => agent.exec(["true"], { env: ["PATH=/bin", "A=1"], cwd: "/tmp", user: "65534:65534" }),
    );
    const imageMs = await timed(9, () => agent.exec(["true"], app));

    await agent.unmountImage("app");
    assert.equal(await out(["ls", "/run/vmf"]), "");
    await assert.rejects(agent.unmountImage("app"), /unmountImage: find the image: No such file/);

    // a client that leaves a command reading its stream: the next client's session kills it
    const forever = new ReadableStream<Uint8Array>({ pull: () => new Promise(() => {}) });
    const left = agent.exec(["cat"], { stdin: forever, timeoutMs: 0 }).catch((e) => e);
    await until(async () => (await out({ shell: "pidof cat || true" })) !== "");
    agent.close();
    assert.equal((await left as AgentError).code, "closed");
    client = await waitForAgent(sock, { deadline: Date.now() + 10_000 });
    const next = client;
    await until(async () =>
      text((await next.exec({ shell: "pidof cat || echo gone" })).stdout) === "gone\n"
    );
    next.close();

    // the agent's own checks of what a client would refuse to send
    const encode = (s: string) => new TextEncoder().encode(s);
    const mount = encodeMountImage({ serial: "x", name: "ab", writableBytes: MIB, waitMs: 0 });
    mount.set(encode(".."), mount.length - 2);
    const exec = encodeExec(["true"], { user: "abcde" });
    exec.set(encode("a:b:c"), exec.length - 8 - 5); // then root and stdin: (u32 0) each
    const overrun = [ // a stream beyond the window the agent keeps: the command is killed
      encodeRequest(Op.exec, 73, encodeExec(["cat"], { stdinStream: true })),
      encodeRequest(Op.stdin, 73, encodeStdin(new Uint8Array(STDIN_WINDOW + 1), false)),
    ];
    for (
      const [id, requests, answer] of [
        [71, [encodeRequest(Op.mountImage, 71, mount)], "mountImage: malformed request"],
        [72, [encodeRequest(Op.exec, 72, exec)], "exec: malformed request"],
        [73, overrun, "exec: stdin beyond its window"],
      ] as const
    ) {
      const frame = await rawCall(sock, id, [...requests]);
      assert.deepEqual([frame.type, text(frame.payload)], [Reply.error, answer]);
    }
    client = await waitForAgent(sock, { deadline: Date.now() + 10_000 });
    assert.equal(text((await client.exec(["echo", "still here"])).stdout), "still here\n");

    const rate = (ms: number) => `${(20 / (ms / 1000)).toFixed(1)} MiB/s`;
    const f = (ms: number) => ms.toFixed(1);
    console.log(
      [
        `agent workloads (TCG): exec true p50 ${f(plainMs)} ms plain,`,
        `${f(optionsMs)} ms with env+cwd+user,`,
        `${f(imageMs)} ms in the image as app;`,
        `mountImage ${f(mountMs)} ms, configureNet ${f(netMs)} ms after device_add;`,
        `20 MiB of stdin into sha256sum ${f(stdinMs)} ms (${rate(stdinMs)}),`,
        `into cat >/dev/null ${f(catMs)} ms (${rate(catMs)});`,
        `sha256sum of 20 MiB made in the guest ${f(localMs)} ms;`,
        `ping while a consumer stalls ${f(rtt)} ms`,
      ].join(" "),
    );
    ok = true;
  } finally {
    client?.close();
    qmp?.close();
    try {
      qemu.kill("SIGKILL");
    } catch {
      // already exited
    }
    const { stderr } = await qemu.output();
    await server.shutdown();
    if (!ok) {
      console.error(`qemu stderr: ${text(stderr)}`);
      try {
        console.error(`serial log: ${Deno.readTextFileSync(`${dir}/serial.log`).slice(-3000)}`);
      } catch {
        // no log
      }
    }
  }
});
