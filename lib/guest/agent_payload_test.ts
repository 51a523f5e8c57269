import assert from "node:assert/strict";
import {
  decodeExit,
  decodeHotplugged,
  decodeInfo,
  decodePersonalized,
  encodeExec,
  encodePersonalize,
  PayloadError,
} from "./agent_payload.ts";

const bytes = (text: string) => new TextEncoder().encode(text);
const INFO = "uptime_ms=12\nmem_total_kib=2\nmem_free_kib=1\nmem_available_kib=1\nboot_id=b\n" +
  "hostname=h\nkernel_release=6.1\ncpus_online=2\nvmgenid=\ntime_ns=1700000000123456789\n";

Deno.test("encodeExec lays out flags, timeout, limit, argv and stdin", () => {
  const out = encodeExec({ shell: "echo hi" }, {
    stdin: new Uint8Array([9]),
    timeoutMs: 1500,
    outputLimit: 100,
  });
  const v = new DataView(out.buffer);
  assert.deepEqual([
    v.getUint32(0),
    v.getUint32(4),
    v.getUint32(8),
    v.getUint32(12),
    v.getUint32(16),
  ], [1, 1500, 100, 1, 7]);
  assert.equal(new TextDecoder().decode(out.subarray(20, 27)), "echo hi");
  assert.deepEqual([...out.subarray(27)], [0, 0, 0, 1, 9]);
  assert.equal(new DataView(encodeExec(["a", "bc"]).buffer).getUint32(0), 0);
  assert.throws(() => encodeExec([]), PayloadError);
  assert.throws(() => encodeExec(["x"], { outputLimit: 2 ** 32 }), PayloadError);
  assert.throws(() => encodeExec(["x"], { outputLimit: 1.5 }), PayloadError);
  assert.throws(() => encodeExec(["x"], { timeoutMs: -1 }), PayloadError);
});

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
