/**
 * The agent client against a hostile guest: a fake agent on a Unix socket (no QEMU) that floods,
 * dribbles, lies about lengths, sends malformed payloads, answers ids nobody asked for, goes
 * silent or hangs up. The client's memory and time must stay bounded, and every failure must be
 * an AgentError with a clear code. Bounds here catch a hang or a leak, they are not timings.
 */
import assert from "node:assert/strict";
import { AgentClient, type ConnectOptions } from "../lib/guest/agent_client.ts";
import { AgentError, type AgentErrorCode } from "../lib/guest/agent_error.ts";
import {
  encodeFrame,
  type Frame,
  MAX_PAYLOAD,
  Op,
  Reply,
  RequestDecoder,
} from "../lib/guest/agent_frame.ts";

const MIB = 1 << 20;
const EXIT_0 = new Uint8Array(10);
const text = (s: string) => new TextEncoder().encode(s);
const INFO = "uptime_ms=12\nmem_total_kib=2\nmem_free_kib=1\nmem_available_kib=1\nboot_id=b\n" +
  "hostname=h\nkernel_release=6.1\ncpus_online=2\nvmgenid=\ntime_ns=1\n{not: json}\n\xff\n";

/** What the fake does with each request; `send` writes raw bytes to the client. */
type Script = (req: Frame, send: (bytes: Uint8Array) => Promise<void>) => void | Promise<void>;

/** A fake agent serving `script` on a Unix socket; use with `await using`. */
function fakeAgent(script: Script) {
  const dir = Deno.makeTempDirSync({ prefix: "vmf-hostile-" });
  const path = `${dir}/agent.sock`;
  const listener = Deno.listen({ transport: "unix", path });
  const conns = new Set<Deno.UnixConn>();
  const serve = async (conn: Deno.UnixConn) => {
    conns.add(conn);
    const send = async (bytes: Uint8Array) => {
      for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
    };
    const requests = new RequestDecoder(), buf = new Uint8Array(65536);
    try {
      for (let n; (n = await conn.read(buf)) !== null;) {
        for (const req of requests.push(buf.subarray(0, n))) {
          Promise.resolve(script(req, send)).catch(() => {}); // the client hung up
        }
      }
    } catch {
      // closed by the test
    }
  };
  (async () => {
    for await (const conn of listener) serve(conn);
  })().catch(() => {});
  return {
    path,
    connect: (opts: ConnectOptions = {}) => AgentClient.connect(path, { timeoutMs: 500, ...opts }),
    /** Hangs up on every client. */
    hangUp() {
      for (const conn of conns) {
        try {
          conn.close();
        } catch {
          // already closed
        }
      }
      conns.clear();
    },
    [Symbol.asyncDispose]() {
      listener.close();
      this.hangUp();
      Deno.removeSync(dir, { recursive: true });
      return Promise.resolve();
    },
  };
}

/** Asserts that `promise` rejects with an AgentError of `code` whose message matches `pattern`. */
async function rejectsWith(promise: Promise<unknown>, code: AgentErrorCode, pattern?: RegExp) {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof AgentError, `not an AgentError: ${err}`);
    assert.equal(err.code, code, err.message);
    assert.match(err.message, /^Cannot /);
    if (pattern) assert.match(err.message, pattern);
    return true;
  });
}

/** Runs `fn` and returns how much the resident set grew meanwhile (at its peak, sampled). */
async function rssGrowth(fn: () => Promise<void>): Promise<number> {
  const before = Deno.memoryUsage().rss;
  let peak = before;
  const sampler = setInterval(() => peak = Math.max(peak, Deno.memoryUsage().rss), 5);
  try {
    await fn();
  } finally {
    clearInterval(sampler);
  }
  return Math.max(peak, Deno.memoryUsage().rss) - before;
}

Deno.test("hostile agent: endless output is dropped beyond the limit and the call ends", async () => {
  const chunk = encodeFrame(Reply.stdout, 0, new Uint8Array(65536).fill(0x41));
  let sent = 0;
  await using fake = fakeAgent(async (req, send) => {
    if (req.type !== Op.exec) return;
    const frame = chunk.slice(); // this exec's id, then output forever
    new DataView(frame.buffer).setUint32(8, req.id);
    for (;;) {
      await send(frame);
      sent += frame.length;
    }
  });
  const agent = await fake.connect({ timeoutMs: 300 });
  try {
    const grew = await rssGrowth(() =>
      rejectsWith(
        agent.exec(["yes"], { timeoutMs: 200, outputLimit: 4 * MIB }),
        "timeout",
        /no answer within 500 ms/,
      )
    );
    assert.ok(sent > 8 * MIB, `the fake sent only ${sent} bytes`);
    console.log(`endless output: ${sent >> 20} MiB sent, memory grew by ${grew >> 20} MiB`);
    assert.ok(grew < 200 * MIB, `memory grew by ${grew >> 20} MiB while ${sent >> 20} MiB came`);
  } finally {
    agent.close();
  }
});

Deno.test("hostile agent: output beyond the limit is cut and the result says truncated", async () => {
  await using fake = fakeAgent(async (req, send) => {
    if (req.type !== Op.exec) return;
    const out = encodeFrame(Reply.stdout, req.id, new Uint8Array(65536).fill(0x42));
    const err = encodeFrame(Reply.stderr, req.id, new Uint8Array(1000).fill(0x43));
    for (let i = 0; i < 200; i++) await send(i % 10 ? out : err); // 12 MiB, far over the limit
    await send(encodeFrame(Reply.exit, req.id, EXIT_0)); // and it claims nothing was cut
  });
  const agent = await fake.connect();
  try {
    const seen: number[] = [];
    const res = await agent.exec(["x"], {
      outputLimit: MIB + 5,
      onStdout: (c) => seen.push(c.length),
    });
    assert.equal(res.truncated, true);
    assert.equal(res.stdout.length + res.stderr.length, MIB + 5);
    assert.equal(seen.reduce((a, b) => a + b, 0), res.stdout.length);
    const streamed = await agent.exec(["x"], { outputLimit: 3 * MIB, collect: false });
    assert.deepEqual([streamed.stdout.length, streamed.stderr.length, streamed.truncated], [
      0,
      0,
      true,
    ]);
  } finally {
    agent.close();
  }
});

Deno.test("hostile agent: answers one byte at a time still decode", async () => {
  await using fake = fakeAgent(async (req, send) => {
    const bytes = req.type === Op.exec
      ? new Uint8Array([
        ...encodeFrame(Reply.stdout, req.id, new Uint8Array(700).fill(0x44)),
        ...encodeFrame(Reply.exit, req.id, new Uint8Array([0, 0, 0, 7, 0, 0, 0, 0, 0, 0])),
      ])
      : encodeFrame(Reply.result, req.id, req.payload);
    for (const byte of bytes) {
      await send(new Uint8Array([byte]));
      await new Promise((r) => setTimeout(r, 0)); // one byte per read on the client side
    }
  });
  const agent = await fake.connect({ timeoutMs: 30_000 });
  try {
    const res = await agent.exec(["x"]);
    assert.deepEqual([res.exitCode, res.stdout.length], [7, 700]);
    assert.ok((await agent.ping()) >= 0);
  } finally {
    agent.close();
  }
});

Deno.test("hostile agent: lying headers fail the call they answer", async () => {
  let n = 0;
  await using fake = fakeAgent(async (req, send) => {
    const header = encodeFrame(Reply.result, req.id);
    const view = new DataView(header.buffer);
    if (n++ === 0) { // 4 GiB announced
      view.setUint32(12, 0xffffffff);
      await send(header);
    } else { // 1 MiB announced, 1 KiB sent, then nothing
      view.setUint32(12, MAX_PAYLOAD);
      await send(new Uint8Array([...header, ...new Uint8Array(1024)]));
    }
  });
  const agent = await fake.connect({ timeoutMs: 300 });
  try {
    await rejectsWith(agent.ping(), "protocol", /answer of 4294967295 bytes exceeds 1 MiB/);
    await rejectsWith(agent.info(), "timeout", /no answer within 300 ms/);
    await rejectsWith(agent.ping({ timeoutMs: 100 }), "timeout", /no answer within 100 ms/);
  } finally {
    agent.close();
  }
});

Deno.test("hostile agent: malformed answers are AgentErrors, never a stray exception", async () => {
  const answers: Record<number, (id: number) => Uint8Array> = {
    [Op.info]: (id) =>
      // every key there, one of the wrong type, and noise
      encodeFrame(Reply.result, id, text(INFO.replace("mem_total_kib=2", "mem_total_kib=x"))),
    [Op.exec]: (id) => encodeFrame(Reply.exit, id, new Uint8Array(3)), // truncated
    [Op.personalize]: (id) =>
      encodeFrame(Reply.result, id, text("reseeded=0\ntime_ns=1\nhostname=h\nboot_id=b\n")),
    [Op.onlineHotplugged]: (id) =>
      encodeFrame(Reply.error, id, text("\x1b[31mred\x07" + "x".repeat(100_000))),
    [Op.ping]: (id) => encodeFrame(0x90, id), // an unknown answer type
  };
  await using fake = fakeAgent((req, send) => send(answers[req.type](req.id)));
  const agent = await fake.connect();
  try {
    await rejectsWith(
      agent.info(),
      "protocol",
      /malformed answer: mem_total_kib "x" is not an integer/,
    );
    await rejectsWith(agent.exec(["x"]), "protocol", /exit payload of 3 bytes/);
    await rejectsWith(
      agent.personalizeGuest({ seed: new Uint8Array(64), time: new Date(), hostname: "h" }),
      "protocol",
      /does not confirm that its RNG was reseeded/,
    );
    await assert.rejects(agent.onlineHotplugged(), (err) => {
      assert.ok(err instanceof AgentError && err.code === "remote");
      assert.match(err.message, /the agent answered: \?\[31mred\?x+\.\.\.$/);
      assert.ok(err.message.length < 500, `${err.message.length} characters`);
      return true;
    });
    await rejectsWith(agent.ping(), "protocol", /unexpected answer type 0x90/);
    assert.ok(agent.connected, "malformed answers fail their call, not the connection");
  } finally {
    agent.close();
  }
});

Deno.test("hostile agent: a stream of answers to unknown ids is dropped", async () => {
  await using fake = fakeAgent(async (req, send) => {
    const noise = new Uint8Array(200 * 1040);
    for (let i = 0; i < 200; i++) {
      noise.set(encodeFrame(Reply.stdout, req.id + 1 + i, new Uint8Array(1024)), i * 1040);
    }
    for (let i = 0; i < 100; i++) await send(noise); // 20 000 frames nobody waits for
    await send(encodeFrame(Reply.stdout, req.id, text("late"))); // output to a ping
  });
  const agent = await fake.connect({ timeoutMs: 20_000 });
  try {
    await rejectsWith(agent.ping(), "protocol", /unexpected answer type 0x81/);
  } finally {
    agent.close();
  }
});

Deno.test("hostile agent: every call has a deadline, and the calls in flight a cap", async () => {
  await using fake = fakeAgent(() => {}); // reads everything, answers nothing
  const agent = await fake.connect({ timeoutMs: 200, maxInFlight: 3 });
  try {
    const calls = [agent.ping(), agent.info(), agent.onlineHotplugged()];
    await rejectsWith(agent.ping(), "busy", /3 calls already wait/);
    for (const call of calls) await rejectsWith(call, "timeout", /no answer within 200 ms/);
    // a command without timeout has no deadline of its own: unanswered pings end it
    await rejectsWith(
      agent.exec(["sleep", "inf"], { timeoutMs: 0 }),
      "timeout",
      /sent nothing for 200 ms, not even a ping answer/,
    );
    assert.equal(agent.connected, false);
  } finally {
    agent.close();
  }
});

Deno.test("hostile agent: a command without timeout lives as long as pings are answered", async () => {
  let pings = 0, execId: number | undefined;
  await using fake = fakeAgent(async (req, send) => {
    if (req.type === Op.exec) return void (execId = req.id);
    await send(encodeFrame(Reply.result, req.id));
    // three watch periods later, the command ends
    if (++pings === 3 && execId !== undefined) await send(encodeFrame(Reply.exit, execId, EXIT_0));
  });
  const agent = await fake.connect({ timeoutMs: 100 });
  try {
    const res = await agent.exec(["sleep", "1"], { timeoutMs: 0 });
    assert.deepEqual([res.exitCode, pings], [0, 3]);
  } finally {
    agent.close();
  }
});

Deno.test("hostile agent: a hang-up fails every pending call", async () => {
  let got = 0;
  let all = () => {};
  await using fake = fakeAgent(() => {
    if (++got === 3) all();
  });
  const agent = await fake.connect({ timeoutMs: 30_000 });
  const calls = [agent.ping(), agent.info(), agent.exec(["x"], { timeoutMs: 0 })];
  await new Promise<void>((resolve) => all = resolve);
  fake.hangUp();
  for (const call of calls) await rejectsWith(call, "closed", /the agent closed the connection/);
  assert.equal(agent.connected, false);
  await rejectsWith(agent.ping(), "closed", /the connection is closed/);
});
