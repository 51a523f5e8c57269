import assert from "node:assert/strict";
import { connDuplex } from "./_conn_duplex.ts";

/** A scripted `Deno.Conn`: `reads` are served in order (then it waits), writes are recorded. */
class FakeConn {
  reads: (Uint8Array | null | Error)[] = [];
  readCalls = 0;
  written: number[] = [];
  /** Bytes accepted per write call (partial writes). */
  writeLimit = Infinity;
  /** Resolves a write when set; a write waits for it otherwise. */
  gate: PromiseWithResolvers<void> | undefined;
  writeError: Error | undefined;
  events: string[] = [];
  #pending: PromiseWithResolvers<number | null> | undefined;

  read(buffer: Uint8Array): Promise<number | null> {
    this.readCalls++;
    const next = this.reads.shift();
    if (next === undefined) {
      this.#pending = Promise.withResolvers();
      return this.#pending.promise;
    }
    if (next instanceof Error) return Promise.reject(next);
    if (next === null) return Promise.resolve(null);
    buffer.set(next);
    return Promise.resolve(next.length);
  }

  async write(bytes: Uint8Array): Promise<number> {
    await this.gate?.promise;
    if (this.writeError) throw this.writeError;
    const n = Math.min(bytes.length, this.writeLimit);
    this.written.push(...bytes.subarray(0, n));
    return n;
  }

  closeWrite(): Promise<void> {
    this.events.push("closeWrite");
    return Promise.resolve();
  }

  close(): void {
    this.events.push("close");
    this.#pending?.reject(new Deno.errors.BadResource("closed"));
  }
}

const tick = (ms = 10) => new Promise((r) => setTimeout(r, ms));
const wrap = (fake: FakeConn, options = {}) => connDuplex(fake as unknown as Deno.Conn, options);

Deno.test("connDuplex passes data through `incoming` and stops reading while nobody consumes", async () => {
  const fake = new FakeConn();
  const chunk = (i: number) => new Uint8Array(1000).fill(i % 250);
  fake.reads = Array.from({ length: 300 }, (_, i) => i % 10 === 5 ? Uint8Array.of(255) : chunk(i));
  // Like the GOAWAY filter: some chunks vanish entirely, others come out in pieces.
  const incoming = (c: Uint8Array) => c[0] === 255 ? [] : [c.subarray(0, 1), c.subarray(1)];
  const { duplex } = wrap(fake, { incoming });
  const got: number[] = [];
  duplex.on("data", (part: Uint8Array) => {
    got.push(...part);
    if (got.length === 3000) duplex.pause();
  });
  await tick();
  const callsWhilePaused = fake.readCalls;
  assert.ok(callsWhilePaused < 200, `read ${callsWhilePaused} times while paused`);
  await tick();
  assert.equal(fake.readCalls, callsWhilePaused);
  duplex.resume();
  await tick(50);
  const expected = Array.from({ length: 300 }, (_, i) => i % 10 === 5 ? [] : [...chunk(i)]);
  assert.deepEqual(got, expected.flat());
  assert.equal(fake.readCalls, 301);
  duplex.destroy();
});

Deno.test("connDuplex writes every byte in order and writesOk waits for the kernel", async () => {
  const fake = new FakeConn();
  fake.writeLimit = 4000; // partial writes
  fake.gate = Promise.withResolvers();
  const c = wrap(fake);
  const more = [
    c.duplex.write(new Uint8Array(100_000).fill(1)),
    c.duplex.write(Uint8Array.of(2, 3)),
  ];
  assert.equal(more[1], false, "a stalled connection pushes back on the writer");
  let ok: boolean | undefined;
  void c.writesOk().then((v) => ok = v);
  await tick();
  assert.equal(ok, undefined);
  fake.gate.resolve();
  await tick(50);
  assert.equal(ok, true);
  assert.equal(fake.written.length, 100_002);
  assert.deepEqual(fake.written.slice(99_998), [1, 1, 2, 3]);
  c.duplex.destroy();
  assert.ok(c.gone.aborted);
});

Deno.test("connDuplex: a failed write closes the connection and writesOk says false", async () => {
  const fake = new FakeConn();
  fake.writeError = new Deno.errors.BrokenPipe("peer gone");
  const c = wrap(fake);
  c.duplex.write(Uint8Array.of(1));
  assert.equal(await c.writesOk(), false);
  assert.ok(c.gone.aborted);
  assert.deepEqual(fake.events, ["close"]);
});

Deno.test("connDuplex: the end of incoming data ends the output, then closes the connection", async () => {
  const fake = new FakeConn();
  fake.reads = [Uint8Array.of(7), null];
  const c = wrap(fake);
  const got: number[] = [];
  c.duplex.on("data", (chunk: Uint8Array) => got.push(...chunk));
  await new Promise((r) => c.duplex.once("close", r));
  assert.deepEqual(got, [7]);
  assert.deepEqual(fake.events, ["closeWrite", "close"]);
  assert.ok(c.gone.aborted);
});

Deno.test("connDuplex: a read error (connection reset) closes it", async () => {
  const fake = new FakeConn();
  fake.reads = [new Deno.errors.ConnectionReset("reset")];
  const c = wrap(fake);
  c.duplex.resume();
  await new Promise((r) => c.duplex.once("close", r));
  assert.ok(c.gone.aborted);
  assert.deepEqual(fake.events, ["close"]);
});
