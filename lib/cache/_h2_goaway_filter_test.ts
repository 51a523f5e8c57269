import assert from "node:assert/strict";
import { GoawayFilter } from "./_h2_goaway_filter.ts";

const PREFACE = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
const frame = (type: number, payload: number[]) => [
  0,
  0,
  payload.length,
  type,
  0,
  0,
  0,
  0,
  1,
  ...payload,
];

Deno.test("GoawayFilter drops GOAWAY frames and keeps the rest, at any chunking", () => {
  const settings = frame(0x4, []);
  const headers = frame(0x1, [1, 2, 3]);
  const goaway = frame(0x7, [0, 0, 0, 9, 0, 0, 0, 0]);
  const data = frame(0x0, [4, 5]);
  const input = Uint8Array.from([...PREFACE, ...settings, ...headers, ...goaway, ...data]);
  const expected = [...PREFACE, ...settings, ...headers, ...data];
  for (const size of [1, 2, 5, 9, 10, 17, 64, input.length]) {
    const filter = new GoawayFilter();
    const out: number[] = [];
    for (let at = 0; at < input.length; at += size) {
      for (const part of filter.push(input.subarray(at, at + size))) out.push(...part);
    }
    assert.deepEqual(out, expected, `chunk size ${size}`);
  }
});
