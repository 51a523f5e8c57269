import assert from "node:assert/strict";
import {
  AckFlag,
  CD_SERIAL,
  decodeConfiguredNet,
  decodeExit,
  decodeHotplugged,
  decodeInfo,
  decodeMountedImage,
  decodePersonalized,
  decodeStdinAck,
  encodeConfigureNet,
  encodeCredit,
  encodeExec,
  encodeMountImage,
  encodePersonalize,
  encodeStdin,
  encodeUnmountImage,
  ExecFlag,
  type ExecRequest,
  PayloadError,
  STDIN_WINDOW,
  StdinFlag,
} from "./agent_payload.ts";

const bytes = (text: string) => new TextEncoder().encode(text);
const INFO = "uptime_ms=12\nmem_total_kib=2\nmem_free_kib=1\nmem_available_kib=1\nboot_id=b\n" +
  "hostname=h\nkernel_release=6.1\ncpus_online=2\nvmgenid=\ntime_ns=1700000000123456789\n";

Deno.test("encodeExec lays out flags, timeout, limit, window, argv, env, cwd, user, root, stdin", () => {
  const out = encodeExec({ shell: "echo hi" }, {
    stdin: new Uint8Array([9]),
    timeoutMs: 1500,
    outputLimit: 100,
    outputWindow: 4096,
    env: ["A=1", "B="],
    cwd: "/w",
    user: "app:staff",
    root: "/r",
  });
  const fields = new FieldReader(out);
  assert.deepEqual(fields.u32s(5), [ExecFlag.shell | ExecFlag.env, 1500, 100, 4096, 1]);
  assert.equal(fields.text(), "echo hi");
  assert.equal(fields.u32s(1)[0], 2);
  assert.deepEqual([fields.text(), fields.text()], ["A=1", "B="]);
  assert.deepEqual([fields.text(), fields.text(), fields.text()], ["/w", "app:staff", "/r"]);
  assert.deepEqual([...fields.bytes()], [9]);
  assert.ok(fields.done());

  const plain = new FieldReader(encodeExec(["a", "bc"]));
  assert.deepEqual(plain.u32s(5), [0, 0, 0, 0, 2]);
  assert.deepEqual([plain.text(), plain.text()], ["a", "bc"]);
  assert.deepEqual(plain.u32s(1), [0]); // no environment: the agent's
  assert.deepEqual([plain.text(), plain.text(), plain.text(), plain.text()], ["", "", "", ""]);
  assert.ok(plain.done());
  // an empty environment is one: the flag says so
  assert.equal(new DataView(encodeExec(["x"], { env: [] }).buffer).getUint32(0), ExecFlag.env);
  const streamed = new DataView(encodeExec(["x"], { stdinStream: true }).buffer);
  assert.equal(streamed.getUint32(0), ExecFlag.stdinStream);

  for (
    const [command, opts] of [
      [[], {}],
      [["x"], { outputLimit: 2 ** 32 }],
      [["x"], { outputLimit: 1.5 }],
      [["x"], { outputWindow: -1 }],
      [["x"], { timeoutMs: -1 }],
      [["a\0b"], {}],
      [["x"], { env: ["NOEQUALS"] }],
      [["x"], { env: ["=v"] }],
      [["x"], { env: ["A=\0"] }],
      [["x"], { env: Array(4097).fill("A=1") }],
      [["x"], { cwd: "relative" }],
      [["x"], { root: "" }],
      [["x"], { cwd: "/" + "d".repeat(4095) }],
      [["x"], { user: "" }],
      [["x"], { user: "a:b:c" }],
      [["x"], { user: ":g" }],
      [["x"], { user: "u:" }],
      [["x"], { user: "with space" }],
      [["x"], { user: "x".repeat(256) }],
      [["x"], { stdin: new Uint8Array(STDIN_WINDOW + 1) }],
      [["x"], { stdin: new Uint8Array(1), stdinStream: true }],
    ] as [string[], ExecRequest][]
  ) {
    assert.throws(() => encodeExec(command, opts), PayloadError, JSON.stringify(opts).slice(0, 80));
  }
  assert.equal(
    encodeExec(["x"], { stdin: new Uint8Array(STDIN_WINDOW) }).length > STDIN_WINDOW,
    true,
  );
});

Deno.test("stdin chunks, credit and acknowledgements", () => {
  const chunk = encodeStdin(new Uint8Array([1, 2]), false);
  assert.deepEqual([...chunk], [0, 0, 0, 0, 1, 2]);
  assert.deepEqual([...encodeStdin(new Uint8Array(), true)], [0, 0, 0, StdinFlag.eof]);
  assert.deepEqual([...encodeCredit(0x01020304)], [1, 2, 3, 4]);
  assert.throws(() => encodeCredit(-1), PayloadError);
  assert.deepEqual(decodeStdinAck(new Uint8Array([0, 1, 0, 0, 0, 0, 0, 0])), {
    bytes: 65536,
    closed: false,
  });
  assert.deepEqual(decodeStdinAck(new Uint8Array([0, 0, 0, 0, 0, 0, 0, AckFlag.closed])), {
    bytes: 0,
    closed: true,
  });
  for (
    const bad of [new Uint8Array(7), new Uint8Array(9), new Uint8Array([0, 0, 0, 0, 0, 0, 0, 2])]
  ) {
    assert.throws(() => decodeStdinAck(bad), PayloadError);
  }
});

Deno.test("mountImage and unmountImage requests, and the answer", () => {
  const req = new FieldReader(
    encodeMountImage({ serial: "img-0", name: "app_1", writableBytes: 2 ** 33 + 5, waitMs: 5000 }),
  );
  assert.deepEqual(req.u32s(3), [5000, 2, 5]);
  assert.deepEqual([req.text(), req.text()], ["img-0", "app_1"]);
  assert.ok(req.done());
  const cd = new FieldReader(
    encodeMountImage({ serial: CD_SERIAL, name: "app", writableBytes: 1 << 20, waitMs: 0 }),
  );
  assert.deepEqual(cd.u32s(3), [0, 0, 1 << 20]);
  assert.deepEqual([cd.text(), cd.text()], ["cd", "app"]);
  const ok = { serial: "s", name: "n", writableBytes: 1 << 20, waitMs: 0 };
  for (
    const bad of [
      { ...ok, serial: "" },
      { ...ok, serial: "x".repeat(21) },
      { ...ok, serial: "a b" },
      { ...ok, name: "" },
      { ...ok, name: ".." },
      { ...ok, name: "a/b" },
      { ...ok, name: "x".repeat(65) },
      { ...ok, writableBytes: (1 << 20) - 1 },
      { ...ok, writableBytes: 2 ** 40 + 1 },
      { ...ok, writableBytes: 1.5 * 2 ** 20 + 0.5 },
      { ...ok, waitMs: -1 },
      { ...ok, waitMs: 600_001 },
    ]
  ) {
    assert.throws(() => encodeMountImage(bad), PayloadError, JSON.stringify(bad));
  }
  assert.equal(new TextDecoder().decode(encodeUnmountImage("app")), "app");
  assert.throws(() => encodeUnmountImage("../etc"), PayloadError);
  assert.deepEqual(decodeMountedImage(bytes("root=/run/vmf/app/root\ndevice=/dev/vdb\n")), {
    root: "/run/vmf/app/root",
    device: "/dev/vdb",
  });
  assert.deepEqual(decodeMountedImage(bytes("root=/run/vmf/app/root\ndevice=/dev/sr0\n")), {
    root: "/run/vmf/app/root",
    device: "/dev/sr0",
  });
  for (
    const bad of [
      "root=/etc\ndevice=/dev/vdb\n",
      "root=/run/vmf/../root\ndevice=/dev/vdb\n",
      "root=/run/vmf/app/root\ndevice=/dev/sda\n",
      "root=/run/vmf/app/root\ndevice=/dev/sr\n",
      "root=/run/vmf/app/root\ndevice=/dev/sr0/../vda\n",
      "root=/run/vmf/app/root\n",
    ]
  ) {
    assert.throws(() => decodeMountedImage(bytes(bad)), PayloadError, bad);
  }
});

Deno.test("configureNet request and answer", () => {
  const req = new FieldReader(
    encodeConfigureNet({
      mac: "52:54:00:AB:cd:ef",
      address: "10.0.2.15/24",
      gateway: "10.0.2.2",
      dns: ["10.0.2.3", "1.1.1.1"],
      image: "app",
    }, 250),
  );
  assert.deepEqual(req.u32s(9), [
    250,
    0x525400ab,
    0xcdef0000,
    0x0a00020f,
    24,
    0x0a000202,
    2,
    0x0a000203,
    0x01010101,
  ]);
  assert.equal(req.text(), "app");
  assert.ok(req.done());
  const bare = new FieldReader(
    encodeConfigureNet({ mac: "02:00:00:00:00:01", address: "192.168.1.9/32" }, 0),
  );
  assert.deepEqual(bare.u32s(7), [0, 0x02000000, 0x00010000, 0xc0a80109, 32, 0, 0]);
  assert.equal(bare.text(), "");
  assert.ok(bare.done());
  const ok = { mac: "02:00:00:00:00:01", address: "10.0.0.2/8" };
  for (
    const bad of [
      { ...ok, mac: "02:00:00:00:00" },
      { ...ok, mac: "02-00-00-00-00-01" },
      { ...ok, address: "10.0.0.2" },
      { ...ok, address: "10.0.0.2/0" },
      { ...ok, address: "10.0.0.2/33" },
      { ...ok, address: "0.0.0.0/8" },
      { ...ok, address: "10.0.0.256/8" },
      { ...ok, address: "::1/64" },
      { ...ok, gateway: "gw" },
      { ...ok, dns: ["1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4"] },
      { ...ok, dns: ["dns.example"] },
      { ...ok, image: "a/b" },
    ]
  ) {
    assert.throws(() => encodeConfigureNet(bad, 0), PayloadError, JSON.stringify(bad));
  }
  assert.equal(decodeConfiguredNet(bytes("interface=eth0\n")), "eth0");
  for (const bad of ["interface=\n", "interface=a/b\n", "interface=0123456789abcdef\n", ""]) {
    assert.throws(() => decodeConfiguredNet(bytes(bad)), PayloadError, bad);
  }
});

/** Reads back what the encoders lay out. */
class FieldReader {
  #view: DataView;
  #at = 0;
  constructor(readonly bytes_: Uint8Array) {
    this.#view = new DataView(bytes_.buffer, bytes_.byteOffset, bytes_.byteLength);
  }
  u32s(n: number): number[] {
    return Array.from({ length: n }, () => (this.#at += 4, this.#view.getUint32(this.#at - 4)));
  }
  bytes(): Uint8Array {
    const [length] = this.u32s(1);
    this.#at += length;
    return this.bytes_.subarray(this.#at - length, this.#at);
  }
  text(): string {
    return new TextDecoder().decode(this.bytes());
  }
  done(): boolean {
    return this.#at === this.bytes_.length;
  }
}

Deno.test("decodeExit maps a signal to 128 + n and refuses what cannot be", () => {
  assert.deepEqual(decodeExit(new Uint8Array([0, 0, 0, 3, 0, 0, 0, 0, 1, 0])), {
    exitCode: 3,
    truncated: true,
    timedOut: false,
  });
  assert.deepEqual(decodeExit(new Uint8Array([255, 255, 255, 255, 0, 0, 0, 9, 0, 1])), {
    exitCode: 137,
    signal: 9,
    truncated: false,
    timedOut: true,
  });
  for (
    const bad of [
      new Uint8Array(9),
      new Uint8Array(11),
      new Uint8Array([0, 0, 1, 0, 0, 0, 0, 0, 0, 0]), // status 256
      new Uint8Array([0, 0, 0, 0, 0, 0, 0, 9, 0, 0]), // a signal with a status
      new Uint8Array([255, 255, 255, 255, 0, 0, 1, 0, 0, 0]), // signal 256
    ]
  ) {
    assert.throws(() => decodeExit(bad), PayloadError);
  }
});

Deno.test("decodeInfo reads the lines and refuses missing or ill-typed keys", () => {
  const info = decodeInfo(bytes(INFO));
  assert.equal(info.memTotal, 2048);
  assert.equal(info.cpusOnline, 2);
  assert.equal(info.vmgenid, undefined);
  assert.equal(info.time.getTime(), 1700000000123);
  for (
    const bad of [
      "",
      INFO.replace("cpus_online=2", "cpus_online=two"),
      INFO.replace("time_ns=1700000000123456789", "time_ns=-5"),
      INFO.replace("time_ns=1700000000123456789", "time_ns=1e9"),
      INFO.replace("uptime_ms=12", "uptime_ms=99999999999999999999"),
      INFO.replace("hostname=h", `hostname=${"h".repeat(300)}`),
      INFO.replace("boot_id=b\n", ""),
    ]
  ) {
    assert.throws(() => decodeInfo(bytes(bad)), PayloadError, JSON.stringify(bad.slice(0, 50)));
  }
  assert.throws(() => decodeInfo(crypto.getRandomValues(new Uint8Array(999))), PayloadError);
});

Deno.test("encodePersonalize lays out the clock, seed, hostname and boot_id", () => {
  const seed = new Uint8Array([7, 8]);
  const bootId = "5d2a3c4e-6f70-4182-93a4-b5c6d7e8f901";
  const out = encodePersonalize({ seed, time: new Date(1), hostname: "ab", bootId });
  const v = new DataView(out.buffer);
  assert.equal(v.getBigUint64(0), 1_000_000n);
  assert.deepEqual([v.getUint32(8), out[12], out[13], v.getUint32(14)], [2, 7, 8, 2]);
  assert.equal(new TextDecoder().decode(out.subarray(18, 20)), "ab");
  assert.equal(v.getUint32(20), 36);
  assert.equal(new TextDecoder().decode(out.subarray(24)), bootId);
  const none = encodePersonalize({ seed, time: new Date(1), hostname: "ab" });
  assert.equal(none.length, 24);
  assert.equal(new DataView(none.buffer).getUint32(20), 0);
  const ok = { seed, time: new Date(), hostname: "h" };
  for (
    const bad of [
      { ...ok, seed: new Uint8Array() },
      { ...ok, seed: new Uint8Array(4097) },
      { ...ok, hostname: "" },
      { ...ok, hostname: "x".repeat(65) },
      { ...ok, hostname: "a\nb" },
      { ...ok, bootId: bootId.toUpperCase() },
      { ...ok, time: new Date(NaN) },
    ]
  ) {
    assert.throws(() => encodePersonalize(bad), PayloadError);
  }
});

Deno.test("decodePersonalized, decodeHotplugged", () => {
  assert.deepEqual(
    decodePersonalized(bytes("reseeded=1\ntime_ns=5\nhostname=h\nboot_id=b\n")),
    { reseeded: true, timeNs: 5n, hostname: "h", bootId: "b" },
  );
  assert.equal(
    decodePersonalized(bytes("reseeded=0\ntime_ns=5\nhostname=h\nboot_id=b\n")).reseeded,
    false,
  );
  assert.throws(
    () => decodePersonalized(bytes("time_ns=5\nhostname=h\nboot_id=b\n")),
    PayloadError,
  );
  assert.deepEqual(decodeHotplugged(new Uint8Array([0, 0, 0, 2, 0, 0, 0, 3])), {
    cpus: 2,
    memoryBlocks: 3,
  });
  assert.throws(() => decodeHotplugged(new Uint8Array(7)), PayloadError);
});
