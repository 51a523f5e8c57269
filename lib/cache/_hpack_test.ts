import assert from "node:assert/strict";
import { encodeHeaderBlock, HpackDecoder, HpackError } from "./_hpack.ts";

const hex = (s: string) =>
  Uint8Array.from(s.replace(/\s+/g, "").match(/../g)!, (h) => parseInt(h, 16));

Deno.test("hpack: RFC 7541 C.4, Huffman-coded requests sharing the dynamic table", () => {
  const d = new HpackDecoder();
  const first: [string, string][] = [
    [":method", "GET"],
    [":scheme", "http"],
    [":path", "/"],
    [":authority", "www.example.com"],
  ];
  assert.deepEqual(d.decode(hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff")), first);
  assert.equal(d.tableSize, 57);
  assert.deepEqual(d.decode(hex("8286 84be 5886 a8eb 1064 9cbf")), [
    ...first,
    ["cache-control", "no-cache"],
  ]);
  assert.deepEqual(d.decode(hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf")), [
    [":method", "GET"],
    [":scheme", "https"],
    [":path", "/index.html"],
    [":authority", "www.example.com"],
    ["custom-key", "custom-value"],
  ]);
  assert.equal(d.tableSize, 164);
});

Deno.test("hpack: RFC 7541 C.6, responses in a 256-byte table (evictions)", () => {
  const d = new HpackDecoder(256);
  assert.deepEqual(
    d.decode(hex(
      "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 " +
        "2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
    )),
    [
      [":status", "302"],
      ["cache-control", "private"],
      ["date", "Mon, 21 Oct 2013 20:13:21 GMT"],
      ["location", "https://www.example.com"],
    ],
  );
  assert.equal(d.tableSize, 222);
  assert.deepEqual(d.decode(hex("4883 640e ffc1 c0bf")), [
    [":status", "307"],
    ["cache-control", "private"],
    ["date", "Mon, 21 Oct 2013 20:13:21 GMT"],
    ["location", "https://www.example.com"],
  ]);
  assert.equal(d.tableSize, 222);
});

Deno.test("hpack: the encoder's literals decode back, long ones too", () => {
  const fields: [string, string][] = [
    [":path", "/cache.CacheService/GetBaseVM"],
    ["grpc-timeout", "60000m"],
    ["x-long", "v".repeat(300)],
  ];
  assert.deepEqual(new HpackDecoder().decode(encodeHeaderBlock(fields)), fields);
});

Deno.test("hpack: malformed blocks are errors, never partial results", () => {
  const bad = [
    "80", // index 0
    "be", // dynamic entry 62 in an empty table
    "41", // truncated: a name index without its value
    "0f", // truncated integer
    "ff ff ff ff ff 0f", // integer too large
    "00 01 61 82 1f ff", // Huffman padding longer than 7 bits ("a", then 11 one bits)
    "00 81 18", // padding that is not all ones ("a", then 000)
    "00 84 ff ff ff ff", // EOS inside the string
    "82 3f e1 1f", // a table size update after a field
    "3f e2 1f", // a table size update over the limit (4096)
  ];
  for (const block of bad) {
    assert.throws(() => new HpackDecoder().decode(hex(block)), HpackError, block);
  }
});

Deno.test("hpack: a small block naming a large entry many times is refused", () => {
  const d = new HpackDecoder(4096, 1000);
  const entry = encodeHeaderBlock([["x", "v".repeat(400)]]);
  entry[0] = 0x40; // with incremental indexing: the entry becomes index 62
  assert.equal(d.decode(entry).length, 1);
  assert.deepEqual(d.decode(Uint8Array.of(0xbe)), [["x", "v".repeat(400)]]);
  assert.throws(() => d.decode(Uint8Array.of(0xbe, 0xbe, 0xbe)), /over 1000 bytes/);
});
