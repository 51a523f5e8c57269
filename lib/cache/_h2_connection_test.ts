import assert from "node:assert/strict";
import { encodeHeaderBlock, type HeaderField, HpackDecoder } from "./_hpack.ts";
import { H2Connection, H2ConnectionError, H2StreamError } from "./_h2_connection.ts";

const PREFACE = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA = 0, HEADERS = 1, RST = 3, SETTINGS = 4, PUSH = 5, PING = 6, GOAWAY = 7, CONT = 9;
const END_STREAM = 1, END_HEADERS = 4, PADDED = 8, PRIORITY = 0x20;

interface Frame {
  type: number;
  flags: number;
  id: number;
  payload: Uint8Array;
}

/** One accepted connection, spoken to frame by frame, as a test server scripts it. */
class Peer {
  #buf = new Uint8Array(0);
  constructor(readonly conn: Deno.Conn) {}

  async #fill(n: number): Promise<boolean> {
    const chunk = new Uint8Array(65_536);
    while (this.#buf.length < n) {
      const got = await this.conn.read(chunk).catch(() => null);
      if (got === null) return false;
      this.#buf = new Uint8Array([...this.#buf, ...chunk.subarray(0, got)]);
    }
    return true;
  }

  async preface(): Promise<string> {
    await this.#fill(PREFACE.length);
    const text = new TextDecoder().decode(this.#buf.subarray(0, PREFACE.length));
    this.#buf = this.#buf.slice(PREFACE.length);
    return text;
  }

  /** The next frame, or null once the client closed the connection. */
  async next(): Promise<Frame | null> {
    if (!(await this.#fill(9))) return null;
    const length = (this.#buf[0] << 16) | (this.#buf[1] << 8) | this.#buf[2];
    if (!(await this.#fill(9 + length))) return null;
    const b = this.#buf;
    const id = new DataView(b.buffer, b.byteOffset + 5, 4).getUint32(0) & 0x7fffffff;
    this.#buf = b.slice(9 + length);
    return { type: b[3], flags: b[4], id, payload: b.slice(9, 9 + length) };
  }

  /** Frames until one of `type` (or null at the end). */
  async until(type: number): Promise<Frame | null> {
    for (let f; (f = await this.next());) if (f.type === type) return f;
    return null;
  }

  async send(type: number, flags: number, id: number, payload: Uint8Array | number[] = []) {
    const p = Uint8Array.from(payload);
    const out = new Uint8Array(9 + p.length);
    new DataView(out.buffer).setUint32(0, p.length << 8);
    out[3] = type;
    out[4] = flags;
    new DataView(out.buffer).setUint32(5, id);
    out.set(p, 9);
    await this.conn.write(out);
  }
}

/** Runs `script` as the server of one connection, and `client` against it. */
async function withPeer(
  script: (peer: Peer) => Promise<void>,
  client: (h2: H2Connection) => Promise<void>,
): Promise<void> {
  const dir = Deno.makeTempDirSync({ prefix: "vmf-h2-" });
  const listener = Deno.listen({ transport: "unix", path: `${dir}/s.sock` });
  const served = listener.accept().then(async (conn) => {
    try {
      await script(new Peer(conn));
    } finally {
      conn.close();
    }
  });
  const h2 = await H2Connection.open(`${dir}/s.sock`);
  try {
    await client(h2);
    await served;
  } finally {
    h2.close();
    listener.close();
    Deno.removeSync(dir, { recursive: true });
  }
}

const REQUEST: HeaderField[] = [[":method", "POST"], [":path", "/x"]];
const u32 = (n: number) => [n >>> 24, (n >> 16) & 255, (n >> 8) & 255, n & 255];
const block = (fields: HeaderField[]) => [...encodeHeaderBlock(fields)];

Deno.test("h2: settings, a request in one write, a reply in pieces, trailers, PING", async () => {
  await withPeer(async (peer) => {
    assert.equal(await peer.preface(), PREFACE);
    const settings = (await peer.next())!;
    assert.deepEqual([settings.type, settings.flags], [SETTINGS, 0]);
    assert.deepEqual([...settings.payload.subarray(0, 6)], [0, 2, ...u32(0)], "push disabled");
    const headers = (await peer.until(HEADERS))!;
    assert.equal(headers.flags, END_HEADERS);
    assert.deepEqual(new HpackDecoder().decode(headers.payload), REQUEST);
    const data = (await peer.next())!;
    assert.deepEqual([data.type, data.flags, [...data.payload]], [DATA, END_STREAM, [7, 7]]);
    await peer.send(SETTINGS, 0, 0, [0, 3, ...u32(10)]);
    assert.equal((await peer.until(SETTINGS))!.flags, 1, "our SETTINGS acknowledged");
    await peer.send(PING, 0, 0, [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.deepEqual([...(await peer.until(PING))!.payload], [1, 2, 3, 4, 5, 6, 7, 8]);
    // response headers: padded, with priority, continued
    const fields = block([[":status", "200"], ["content-type", "application/grpc"]]);
    await peer.send(HEADERS, PADDED | PRIORITY, 1, [2, 0, 0, 0, 0, 9, ...fields.slice(0, 3), 0, 0]);
    await peer.send(CONT, END_HEADERS, 1, fields.slice(3));
    await peer.send(DATA, PADDED, 1, [3, 1, 2, 0, 0, 0]);
    await peer.send(DATA, 0, 1, [3]);
    await peer.send(HEADERS, END_HEADERS | END_STREAM, 1, block([["grpc-status", "0"]]));
  }, async (h2) => {
    const reply = await h2.request(REQUEST, new Uint8Array([7, 7]), { maxBody: 10 });
    assert.deepEqual(reply.headers, [[":status", "200"], ["content-type", "application/grpc"]]);
    assert.deepEqual([...reply.body], [1, 2, 3]);
    assert.deepEqual(reply.trailers, [["grpc-status", "0"]]);
    assert.ok(h2.usable);
  });
});

Deno.test("h2: a reset fails its call; GOAWAY refuses the later streams, ends reuse", async () => {
  await withPeer(async (peer) => {
    await peer.preface();
    const first = (await peer.until(HEADERS))!;
    await peer.send(RST, 0, first.id, u32(0xb));
    const second = (await peer.until(HEADERS))!;
    const third = (await peer.until(HEADERS))!;
    await peer.send(GOAWAY, 0, 0, [...u32(second.id), ...u32(0)]);
    await peer.send(HEADERS, END_HEADERS | END_STREAM, second.id, block([[":status", "200"]]));
    assert.ok(third.id > second.id);
  }, async (h2) => {
    await assert.rejects(
      h2.request(REQUEST, new Uint8Array(), { maxBody: 10 }),
      (err: Error) => err instanceof H2StreamError && err.code === 0xb,
    );
    const second = h2.request(REQUEST, new Uint8Array(), { maxBody: 10 });
    const third = h2.request(REQUEST, new Uint8Array(), { maxBody: 10 });
    await assert.rejects(third, (err: Error) => err instanceof H2StreamError && err.code === 0);
    assert.deepEqual((await second).headers, [[":status", "200"]]);
    assert.equal(h2.usable, false);
    await assert.rejects(h2.request(REQUEST, new Uint8Array(), { maxBody: 10 }), H2ConnectionError);
  });
});

Deno.test("h2: an aborted call and an oversized body reset their streams", async () => {
  const aborted = new AbortController();
  await withPeer(async (peer) => {
    await peer.preface();
    const first = (await peer.until(HEADERS))!;
    aborted.abort(new Error("deadline"));
    assert.deepEqual([...(await peer.until(RST))!.payload], u32(8), "CANCEL");
    await peer.send(HEADERS, END_HEADERS, first.id, block([[":status", "200"]])); // too late
    const second = (await peer.until(HEADERS))!;
    await peer.send(HEADERS, END_HEADERS, second.id, block([[":status", "200"]]));
    await peer.send(DATA, 0, second.id, new Array(11).fill(0));
    const reset = (await peer.until(RST))!;
    assert.equal(reset.id, second.id);
  }, async (h2) => {
    await assert.rejects(
      h2.request(REQUEST, new Uint8Array(), { maxBody: 10, signal: aborted.signal }),
      /deadline/,
    );
    await assert.rejects(h2.request(REQUEST, new Uint8Array(), { maxBody: 10 }), RangeError);
    assert.ok(h2.usable, "stream errors leave the connection up");
  });
});

Deno.test("h2: protocol errors and a closed socket fail every call in flight", async () => {
  const cases: [string, (peer: Peer, id: number) => Promise<void>][] = [
    ["oversized frame", (p, id) => p.send(DATA, 0, id, new Array(16_385).fill(0))],
    ["push", (p, id) => p.send(PUSH, END_HEADERS, id, [...u32(2), ...block([])])],
    ["interrupted block", async (p, id) => {
      await p.send(HEADERS, 0, id, block([[":status", "200"]]));
      await p.send(DATA, 0, id, [1]);
    }],
    ["bad hpack", (p, id) => p.send(HEADERS, END_HEADERS, id, [0x80])],
    ["closed", () => Promise.resolve()],
  ];
  for (const [name, misbehave] of cases) {
    await withPeer(async (peer) => {
      await peer.preface();
      const request = (await peer.until(HEADERS))!;
      await misbehave(peer, request.id);
    }, async (h2) => {
      const calls = [1, 2].map(() => h2.request(REQUEST, new Uint8Array(), { maxBody: 10 }));
      for (const call of calls) await assert.rejects(call, H2ConnectionError, name);
      assert.equal(h2.usable, false, name);
    });
  }
});
