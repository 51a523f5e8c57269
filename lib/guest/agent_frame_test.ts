import assert from "node:assert/strict";
import {
  type Decoded,
  encodeFrame,
  FrameDecoder,
  HEADER_SIZE,
  MAX_PAYLOAD,
  Op,
  Reply,
} from "./agent_frame.ts";

const frames = (items: Decoded[]) => items.map((d) => (d.kind === "frame" ? d.frame : d));

Deno.test("encodeFrame + FrameDecoder round trip", () => {
  const payload = new TextEncoder().encode("hello");
  const bytes = encodeFrame(Op.exec, 0xdeadbeef, payload);
  assert.equal(bytes.length, HEADER_SIZE + 5);
  assert.deepEqual([...bytes.subarray(0, 8)], [0x56, 0x4d, 0x46, 0x41, 1, Op.exec, 0, 0]);
  assert.deepEqual(frames(new FrameDecoder().push(bytes)), [{
    type: Op.exec,
    id: 0xdeadbeef,
    payload,
  }]);
});

Deno.test("FrameDecoder reassembles frames split at every byte", () => {
  const a = encodeFrame(Reply.stdout, 1, new Uint8Array([1, 2, 3]));
  const b = encodeFrame(Reply.exit, 1, new Uint8Array(10));
  const all = new Uint8Array([...a, ...b]);
  const decoder = new FrameDecoder();
  const got: Decoded[] = [];
  for (const byte of all) got.push(...decoder.push(new Uint8Array([byte])));
  assert.deepEqual(frames(got).map((f) => "type" in f ? f.type : -1), [Reply.stdout, Reply.exit]);
  assert.equal(decoder.skipped, 0);
});

Deno.test("FrameDecoder skips garbage, including a partial magic, and resyncs", () => {
  const decoder = new FrameDecoder();
  const garbage = new Uint8Array([
    0x56,
    0x4d,
    0,
    0x56,
    0x4d,
    0x46,
    0x41,
    9,
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
  ]);
  const ping = encodeFrame(Op.ping, 7);
  const got = decoder.push(new Uint8Array([...garbage, ...ping.subarray(0, 3)]));
  assert.deepEqual(got, []);
  assert.deepEqual(frames(decoder.push(ping.subarray(3))), [{
    type: Op.ping,
    id: 7,
    payload: new Uint8Array(),
  }]);
  assert.equal(decoder.skipped, garbage.length);
});

Deno.test("FrameDecoder reports an oversized header and keeps going", () => {
  const header = encodeFrame(Reply.result, 5);
  new DataView(header.buffer).setUint32(12, MAX_PAYLOAD + 1);
  const got = new FrameDecoder().push(new Uint8Array([...header, ...encodeFrame(Reply.result, 6)]));
  assert.deepEqual(got.map((d) => d.kind), ["oversize", "frame"]);
  assert.deepEqual(got[0], {
    kind: "oversize",
    type: Reply.result,
    id: 5,
    length: MAX_PAYLOAD + 1,
  });
});

Deno.test("encodeFrame refuses a payload over 1 MiB", () => {
  assert.throws(() => encodeFrame(Op.exec, 1, new Uint8Array(MAX_PAYLOAD + 1)), RangeError);
});
