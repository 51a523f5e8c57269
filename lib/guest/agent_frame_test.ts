import assert from "node:assert/strict";
import {
  type Decoded,
  encodeFrame,
  encodeRequest,
  FLAG_NEW_SESSION,
  FRAME_VERSION,
  FrameDecoder,
  HEADER_SIZE,
  MAX_PAYLOAD,
  Op,
  Reply,
  RequestDecoder,
} from "./agent_frame.ts";

const frames = (items: Decoded[]) => items.map((d) => (d.kind === "frame" ? d.frame : d));

Deno.test("encodeFrame + FrameDecoder round trip", () => {
  const payload = new TextEncoder().encode("hello");
  const bytes = encodeFrame(Op.exec, 0xdeadbeef, payload);
  assert.equal(bytes.length, HEADER_SIZE + 5);
  assert.deepEqual([...bytes.subarray(0, 8)], [
    0x56,
    0x4d,
    0x46,
    0x41,
    FRAME_VERSION,
    Op.exec,
    0,
    0,
  ]);
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

Deno.test("FrameDecoder work and memory stay linear: a 1 MiB frame in 1-byte chunks", () => {
  const payload = new Uint8Array(MAX_PAYLOAD).map((_, i) => i % 253);
  const bytes = encodeFrame(Reply.stdout, 3, payload);
  const decoder = new FrameDecoder();
  const got: Decoded[] = [];
  // byte by byte: quadratic copying would take minutes (10^12 byte copies), linear takes ms
  for (let i = 0; i < bytes.length; i++) got.push(...decoder.push(bytes.subarray(i, i + 1)));
  assert.equal(got.length, 1);
  assert.ok(got[0].kind === "frame" && got[0].frame.payload.every((b, i) => b === payload[i]));
});

Deno.test("FrameDecoder skips megabytes of garbage holding partial magics", () => {
  const decoder = new FrameDecoder();
  const junk = new Uint8Array(4 << 20).map((_, i) => [0x56, 0x4d, 0x46, 7][i % 4]);
  assert.deepEqual(decoder.push(junk), []);
  const header = encodeFrame(Reply.result, 9).subarray(0, 10); // an unfinished header
  assert.deepEqual(decoder.push(header), []);
  assert.equal(decoder.skipped, junk.length);
  // the unfinished header ends up announcing 0x03040506 bytes: reported, skipped, then a frame
  const got = decoder.push(new Uint8Array([1, 2, 3, 4, 5, 6, ...encodeFrame(Reply.result, 10)]));
  assert.deepEqual(got.map((d) => [d.kind, d.kind === "frame" ? d.frame.id : d.id]), [
    ["oversize", 258],
    ["frame", 10],
  ]);
});

Deno.test("encodeRequest: COBS between two 0 bytes, decoded back in any split", () => {
  const payloads = [
    new Uint8Array(),
    new Uint8Array(1000), // all zeros
    new Uint8Array(1000).fill(7), // runs longer than 254
    new Uint8Array(70_000).map((_, i) => (i * 7919) % 251), // zeros and runs of every length
    new Uint8Array(254 - HEADER_SIZE).fill(1), // a frame ending exactly on a full run
  ];
  const wire = payloads.map((p, i) => encodeRequest(Op.exec, i, p));
  for (const w of wire) {
    assert.equal(w[0], 0);
    assert.equal(w[w.length - 1], 0);
    assert.equal(w.subarray(1, -1).indexOf(0), -1);
    assert.ok(w.length <= HEADER_SIZE + 3 + Math.ceil((w.length - 3) / 254) + w.length);
  }
  const all = new Uint8Array(wire.reduce((n, w) => n + w.length, 0));
  wire.reduce((at, w) => (all.set(w, at), at + w.length), 0);
  for (const step of [1, 7, 4096, all.length]) {
    const decoder = new RequestDecoder();
    const got = [];
    for (let i = 0; i < all.length; i += step) got.push(...decoder.push(all.subarray(i, i + step)));
    assert.deepEqual(got.map((f) => f.id), [0, 1, 2, 3, 4]);
    got.forEach((f, i) => assert.deepEqual(f.payload, payloads[i]));
  }
});

Deno.test("RequestDecoder: an unfinished request ends at the next request's 0", () => {
  const big = encodeRequest(Op.exec, 1, new Uint8Array(5000).fill(3));
  const ping = encodeRequest(Op.ping, 2);
  const decoder = new RequestDecoder();
  // a host left after half its request; the next host's ping must not be swallowed
  assert.deepEqual(decoder.push(big.subarray(0, 2500)), []);
  assert.deepEqual(decoder.push(ping).map((f) => [f.type, f.id]), [[Op.ping, 2]]);
  // a cut that lands on a run boundary still decodes, to a frame shorter than its header says
  const cut = encodeRequest(Op.exec, 3, new Uint8Array(600).fill(1)).subarray(0, 1 + 255);
  assert.deepEqual(decoder.push(new Uint8Array([...cut, ...ping])).map((f) => f.id), [2]);
});

Deno.test("RequestDecoder: the new-session flag comes through, other flags are refused", () => {
  const decoder = new RequestDecoder();
  const got = decoder.push(
    new Uint8Array([
      ...encodeRequest(Op.ping, 1, new Uint8Array(), FLAG_NEW_SESSION),
      ...encodeRequest(Op.ping, 2),
      ...encodeRequest(Op.ping, 3, new Uint8Array(), 2),
    ]),
  );
  assert.deepEqual(got.map((r) => [r.id, r.flags]), [[1, FLAG_NEW_SESSION], [2, 0]]);
});

Deno.test("RequestDecoder: a request split across reads of one reused buffer decodes whole", () => {
  const payload = new Uint8Array(100_000).map((_, i) => 1 + (i % 250));
  const wire = encodeRequest(Op.stdin, 9, payload);
  const decoder = new RequestDecoder(), buf = new Uint8Array(4096);
  const got = [];
  for (let at = 0; at < wire.length; at += buf.length) {
    const n = Math.min(buf.length, wire.length - at);
    buf.set(wire.subarray(at, at + n));
    got.push(...decoder.push(buf.subarray(0, n)));
    buf.fill(0xee); // the caller reuses its buffer
  }
  assert.equal(got.length, 1);
  assert.deepEqual(got[0].payload, payload);
});
