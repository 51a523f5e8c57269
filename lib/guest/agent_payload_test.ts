import assert from "node:assert/strict";
import {
  decodeExit,
  decodeHotplugged,
  decodeInfo,
  encodeClock,
  encodeExec,
} from "./agent_payload.ts";

Deno.test("encodeExec lays out flags, timeout, limit, argv and stdin", () => {
  const bytes = encodeExec({ shell: "echo hi" }, {
    stdin: new Uint8Array([9]),
    timeoutMs: 1500,
    outputLimit: 100,
  });
  const v = new DataView(bytes.buffer);
  assert.deepEqual([
    v.getUint32(0),
    v.getUint32(4),
    v.getUint32(8),
    v.getUint32(12),
    v.getUint32(16),
  ], [1, 1500, 100, 1, 7]);
  assert.equal(new TextDecoder().decode(bytes.subarray(20, 27)), "echo hi");
  assert.deepEqual([...bytes.subarray(27)], [0, 0, 0, 1, 9]);
  assert.equal(new DataView(encodeExec(["a", "bc"]).buffer).getUint32(0), 0);
  assert.throws(() => encodeExec([]), RangeError);
});

Deno.test("decodeExit maps a signal to 128 + n", () => {
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
});

Deno.test("decodeInfo, encodeClock, decodeHotplugged", () => {
  const info = decodeInfo(new TextEncoder().encode(
    "uptime_ms=12\nmem_total_kib=2\nmem_free_kib=1\nmem_available_kib=1\nboot_id=b\nhostname=h\n" +
      "kernel_release=6.1\ncpus_online=2\nvmgenid=\ntime_ns=1700000000123456789\n",
  ));
  assert.equal(info.memTotal, 2048);
  assert.equal(info.cpusOnline, 2);
  assert.equal(info.vmgenid, undefined);
  assert.equal(info.time.getTime(), 1700000000123);
  assert.deepEqual([...encodeClock(new Date(1))], [0, 0, 0, 0, 0, 0x0f, 0x42, 0x40]);
  assert.deepEqual(decodeHotplugged(new Uint8Array([0, 0, 0, 2, 0, 0, 0, 3])), {
    cpus: 2,
    memoryBlocks: 3,
  });
});
