/**
 * AgentClient's flow control, sessions and device calls against a scripted fake agent on a Unix
 * socket (no QEMU): streamed stdin within the agent's window, output credit returned only as the
 * callbacks finish, cancels when a call fails, and checked answers.
 */
import assert from "node:assert/strict";
import { AgentClient, OUTPUT_WINDOW } from "./agent_client.ts";
import { AgentError, type AgentErrorCode } from "./agent_error.ts";
import {
  encodeFrame,
  FLAG_NEW_SESSION,
  Op,
  Reply,
  type Request,
  RequestDecoder,
} from "./agent_frame.ts";
import { AckFlag, ExecFlag, FRAME_COST, STDIN_WINDOW, StdinFlag } from "./agent_payload.ts";

const EXIT_0 = new Uint8Array(10);
const text = (s: string) => new TextEncoder().encode(s);
const u32 = (bytes: Uint8Array, at: number) =>
  new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(at);
const ack = (bytes: number, flags = 0) => {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setUint32(0, bytes);
  new DataView(out.buffer).setUint32(4, flags);
  return out;
};

/** The fake's side of one connection: what came, and a way to answer. */
interface Peer {
  requests: Request[];
  send(type: number, id: number, payload?: Uint8Array): Promise<void>;
}

/** A fake agent calling `onRequest` for each request; use with `await using`. */
function fakeAgent(onRequest: (req: Request, peer: Peer) => void | Promise<void>) {
  const dir = Deno.makeTempDirSync({ prefix: "vmf-client-" });
  const path = `${dir}/agent.sock`;
  const listener = Deno.listen({ transport: "unix", path });
  const peers: Peer[] = [];
  const conns: Deno.UnixConn[] = [];
  (async () => {
    for await (const conn of listener) {
      conns.push(conn);
      const peer: Peer = {
        requests: [],
        send: async (type, id, payload) => {
          const bytes = encodeFrame(type, id, payload);
          for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
        },
      };
      peers.push(peer);
      (async () => {
        const decoder = new RequestDecoder(), buf = new Uint8Array(65536);
        for (let n; (n = await conn.read(buf)) !== null;) {
          for (const req of decoder.push(buf.subarray(0, n))) {
            peer.requests.push(req);
            Promise.resolve(onRequest(req, peer)).catch(() => {}); // the client hung up
          }
        }
      })().catch(() => {});
    }
  })().catch(() => {});
  return {
    peers,
    connect: (timeoutMs = 2_000) => AgentClient.connect(path, { timeoutMs }),
    [Symbol.asyncDispose]() {
      listener.close();
      for (const conn of conns) {
        try {
          conn.close();
        } catch {
          // closed by the client
        }
      }
      Deno.removeSync(dir, { recursive: true });
      return Promise.resolve();
    },
  };
}

async function rejectsWith(promise: Promise<unknown>, code: AgentErrorCode, pattern: RegExp) {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof AgentError, `not an AgentError: ${err}`);
    assert.equal(err.code, code, err.message);
    assert.match(err.message, pattern);
    return true;
  });
}

/** Resolves once `check` holds (polled); fails after 10 s. */
async function until(check: () => boolean): Promise<void> {
  for (const end = Date.now() + 10_000; !check();) {
    assert.ok(Date.now() < end, `still not so after 10 s: ${check}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

Deno.test("agent client: the first request written starts a new session, no other", async () => {
  await using fake = fakeAgent((req, peer) => peer.send(Reply.result, req.id));
  for (let i = 0; i < 2; i++) {
    const agent = await fake.connect();
    try {
      await Promise.all([agent.ping(), agent.ping()]);
      await agent.ping();
    } finally {
      agent.close();
    }
  }
  assert.deepEqual(fake.peers.map((p) => p.requests.map((r) => r.flags)), [
    [FLAG_NEW_SESSION, 0, 0],
    [FLAG_NEW_SESSION, 0, 0],
  ]);
});

Deno.test("agent client: streamed stdin stays within the window, arrives whole, ends with EOF", async () => {
  const got: Uint8Array[] = [];
  let unacked = 0, most = 0, eof = false;
  await using fake = fakeAgent(async (req, peer) => {
    if (req.type === Op.exec) {
      assert.equal(u32(req.payload, 0), ExecFlag.stdinStream);
      return;
    }
    if (req.type !== Op.stdin) return;
    const data = req.payload.subarray(4);
    got.push(data);
    unacked += data.length;
    most = Math.max(most, unacked);
    if (u32(req.payload, 0) === StdinFlag.eof) {
      eof = true;
      await peer.send(Reply.stdinAck, req.id, ack(unacked));
      return peer.send(Reply.exit, req.id, EXIT_0);
    }
    if (unacked >= STDIN_WINDOW) { // a slow command: the window fills before anything is written
      await new Promise((r) => setTimeout(r, 5));
      const written = unacked;
      unacked = 0;
      await peer.send(Reply.stdinAck, req.id, ack(written));
    }
  });
  const data = crypto.getRandomValues(new Uint8Array(60_000));
  async function* source() {
    for (let i = 0; i < 40; i++) yield data.subarray(0, 1 + (i * 7919) % data.length);
  }
  const agent = await fake.connect();
  try {
    const res = await agent.exec(["sha256sum"], { stdin: source() });
    assert.equal(res.exitCode, 0);
  } finally {
    agent.close();
  }
  const sent: number[] = [];
  for await (const chunk of source()) sent.push(...chunk);
  const received = got.flatMap((c) => [...c]);
  assert.equal(received.length, sent.length);
  assert.ok(received.every((b, i) => b === sent[i]), "stdin arrived changed");
  assert.ok(eof);
  assert.equal(most, STDIN_WINDOW, "the client filled the window, and never overran it");
});

Deno.test("agent client: big bytes are streamed; text and small bytes go with the request", async () => {
  const seen: { request: Uint8Array; streamed: number }[] = [];
  await using fake = fakeAgent(async (req, peer) => {
    if (req.type === Op.exec) {
      seen.push({ request: req.payload, streamed: 0 });
      if (!(u32(req.payload, 0) & ExecFlag.stdinStream)) {
        await peer.send(Reply.exit, req.id, EXIT_0);
      }
    } else if (req.type === Op.stdin) {
      const data = req.payload.length - 4;
      seen[seen.length - 1].streamed += data;
      await peer.send(Reply.stdinAck, req.id, ack(data));
      if (u32(req.payload, 0) === StdinFlag.eof) await peer.send(Reply.exit, req.id, EXIT_0);
    }
  });
  const agent = await fake.connect();
  try {
    await agent.exec(["cat"], { stdin: "four" });
    await agent.exec(["cat"], { stdin: new Uint8Array(STDIN_WINDOW) });
    await agent.exec(["cat"], { stdin: new Uint8Array(3 * STDIN_WINDOW + 1) });
    await agent.exec(["cat"], { stdin: new Blob([new Uint8Array(100)]).stream() });
    await rejectsWith(
      agent.exec(["cat"], { stdin: 42 as unknown as string }),
      "request",
      /stdin must be bytes, text, a ReadableStream or an async iterable/,
    );
  } finally {
    agent.close();
  }
  const [four, window, big, stream] = seen;
  // the stdin field ends the request: (u32 length, bytes)
  assert.deepEqual([u32(four.request, 0), four.streamed], [0, 0]);
  assert.equal(new TextDecoder().decode(four.request.subarray(-8)), "\0\0\0\x04four");
  assert.equal(u32(window.request, window.request.length - STDIN_WINDOW - 4), STDIN_WINDOW);
  assert.equal(window.streamed, 0);
  for (const [s, n] of [[big, 3 * STDIN_WINDOW + 1], [stream, 100]] as const) {
    assert.equal(u32(s.request, 0), ExecFlag.stdinStream);
    assert.equal(u32(s.request, s.request.length - 4), 0);
    assert.equal(s.streamed, n);
  }
  assert.equal(seen.length, 4, "a bad stdin is refused before anything is sent");
});

Deno.test("agent client: a command that closes its stdin cancels the stream", async () => {
  let pulled = 0, finished = false;
  await using fake = fakeAgent(async (req, peer) => {
    if (req.type !== Op.stdin) return;
    await peer.send(Reply.stdinAck, req.id, ack(req.payload.length - 4, AckFlag.closed));
    await peer.send(Reply.exit, req.id, EXIT_0);
  });
  async function* endless() {
    try {
      for (;;) {
        pulled++;
        yield new Uint8Array(1000);
      }
    } finally {
      finished = true;
    }
  }
  const agent = await fake.connect();
  try {
    assert.equal((await agent.exec(["head", "-c", "10"], { stdin: endless() })).exitCode, 0);
    await until(() => finished);
    assert.ok(pulled < 1000, `${pulled} chunks pulled`);
  } finally {
    agent.close();
  }
});

Deno.test("agent client: a failing stdin stream fails the exec and cancels the command", async () => {
  await using fake = fakeAgent(() => {});
  const agent = await fake.connect();
  try {
    const broken = async function* () {
      yield new Uint8Array(10);
      throw new Error("disk on fire");
    };
    await rejectsWith(
      agent.exec(["cat"], { stdin: broken() }),
      "request",
      /the stdin stream failed: disk on fire/,
    );
    const peer = fake.peers[0];
    await until(() => peer.requests.some((r) => r.type === Op.cancel));
    const exec = peer.requests.find((r) => r.type === Op.exec)!;
    assert.deepEqual(peer.requests.filter((r) => r.type === Op.cancel).map((r) => r.id), [exec.id]);
  } finally {
    agent.close();
  }
});

/** Output a fake sends within the credit it gets: `total` bytes in 64 KiB frames. */
function creditedOutput(total: number) {
  const state = { sent: 0, credit: 0, mostOutstanding: 0, consumed: 0 };
  let resume = () => {};
  const flow = async (req: Request, peer: Peer) => {
    if (req.type === Op.credit) {
      state.credit += u32(req.payload, 0);
      state.consumed += u32(req.payload, 0);
      return resume();
    }
    if (req.type !== Op.exec) return;
    state.credit = u32(req.payload, 12);
    while (state.sent < total) {
      const n = Math.min(65536, total - state.sent);
      if (state.credit < n + FRAME_COST) {
        await new Promise<void>((r) => resume = r);
        continue;
      }
      state.credit -= n + FRAME_COST;
      state.sent += n;
      state.mostOutstanding = Math.max(state.mostOutstanding, u32(req.payload, 12) - state.credit);
      await peer.send(Reply.stdout, req.id, new Uint8Array(n).fill(0x61));
    }
    await peer.send(Reply.exit, req.id, EXIT_0);
  };
  return { state, flow };
}

Deno.test("agent client: a slow consumer gets output only as it returns credit; pings still answered", async () => {
  const total = 4 << 20;
  const { state, flow } = creditedOutput(total);
  await using fake = fakeAgent((req, peer) =>
    req.type === Op.ping ? peer.send(Reply.result, req.id) : flow(req, peer)
  );
  const agent = await fake.connect();
  try {
    let release = () => {};
    const gate = new Promise<void>((r) => release = r);
    let calls = 0;
    const running = agent.exec(["yes"], {
      collect: false,
      onStdout: () => ++calls === 1 ? gate : undefined,
    });
    await until(() => calls === 1);
    await new Promise((r) => setTimeout(r, 50)); // let whatever would come, come
    assert.equal(calls, 1, "the next chunk waits for the callback's promise");
    assert.ok(state.sent <= OUTPUT_WINDOW, `${state.sent} bytes sent to a stalled consumer`);
    assert.equal(state.consumed, 0, "no credit before the callback finished");
    assert.ok((await agent.ping()) >= 0, "the connection serves other calls meanwhile");
    release();
    const res = await running;
    assert.equal(res.exitCode, 0);
    assert.equal(calls, total / 65536);
    assert.ok(state.mostOutstanding <= OUTPUT_WINDOW);
  } finally {
    agent.close();
  }
});

Deno.test("agent client: output beyond the credit fails the exec and cancels the command", async () => {
  await using fake = fakeAgent(async (req, peer) => {
    if (req.type !== Op.exec) return;
    for (let i = 0; i < 32; i++) await peer.send(Reply.stdout, req.id, new Uint8Array(65536));
  });
  const agent = await fake.connect();
  try {
    await rejectsWith(
      agent.exec(["yes"], { onStdout: () => new Promise(() => {}) }), // never done
      "protocol",
      /the agent sent output beyond its credit/,
    );
    await until(() => fake.peers[0].requests.some((r) => r.type === Op.cancel));
    assert.ok(agent.connected, "the connection stays");
  } finally {
    agent.close();
  }
});

Deno.test("agent client: output still queued when an exec fails is not handed over", async () => {
  await using fake = fakeAgent(async (req, peer) => {
    if (req.type !== Op.exec) return;
    for (let i = 0; i < 4; i++) await peer.send(Reply.stdout, req.id, new Uint8Array(1000));
  }); // and no exit: the call times out
  const agent = await fake.connect(100);
  try {
    let release = () => {};
    const gate = new Promise<void>((r) => release = r);
    let calls = 0;
    await rejectsWith(
      agent.exec(["sleep", "1"], {
        timeoutMs: 1,
        onStdout: () => ++calls === 1 ? gate : undefined,
      }),
      "timeout",
      /no answer within 101 ms/,
    );
    release();
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(calls, 1);
    await until(() => fake.peers[0].requests.some((r) => r.type === Op.cancel));
  } finally {
    agent.close();
  }
});

Deno.test("agent client: a callback that throws or rejects fails the exec and kills the command", async () => {
  const { flow } = creditedOutput(1 << 20);
  await using fake = fakeAgent(flow);
  const agent = await fake.connect();
  try {
    await rejectsWith(
      agent.exec(["yes"], {
        onStdout: () => {
          throw new Error("full");
        },
      }),
      "request",
      /an output callback failed: full/,
    );
    await rejectsWith(
      agent.exec(["yes"], { onStdout: () => Promise.reject(new Error("later")) }),
      "request",
      /an output callback failed: later/,
    );
    const requests = fake.peers[0].requests;
    await until(() => requests.filter((r) => r.type === Op.cancel).length === 2);
    assert.deepEqual(
      requests.filter((r) => r.type === Op.cancel).map((r) => r.id),
      requests.filter((r) => r.type === Op.exec).map((r) => r.id),
    );
  } finally {
    agent.close();
  }
});

Deno.test("agent client: acknowledgements of stdin that was not sent are protocol errors", async () => {
  await using fake = fakeAgent(async (req, peer) => {
    if (req.type === Op.exec && u32(req.payload, 0) & ExecFlag.stdinStream) return;
    if (req.type === Op.exec) return peer.send(Reply.stdinAck, req.id, ack(1)); // none streamed
    if (req.type === Op.stdin) await peer.send(Reply.stdinAck, req.id, ack(5000)); // 10 sent
  });
  const agent = await fake.connect();
  try {
    await rejectsWith(
      agent.exec(["cat"], { stdin: "x" }),
      "protocol",
      /acknowledged 1 bytes of stdin, 0 were sent/,
    );
    await rejectsWith(
      agent.exec(["cat"], { stdin: new Blob([new Uint8Array(10)]).stream() }),
      "protocol",
      /acknowledged 5000 bytes of stdin, 10 were sent/,
    );
  } finally {
    agent.close();
  }
});

Deno.test("agent client: an exec the agent refuses is not cancelled, its error is kept", async () => {
  await using fake = fakeAgent((req, peer) =>
    req.type === Op.exec
      ? peer.send(Reply.error, req.id, text("exec: chdir /nope: No such file or directory"))
      : peer.send(Reply.result, req.id)
  );
  const agent = await fake.connect();
  try {
    await rejectsWith(
      agent.exec(["ls"], { cwd: "/nope", user: "app", env: ["A=1"], root: "/run/vmf/x/root" }),
      "remote",
      /the agent answered: exec: chdir \/nope: No such file or directory/,
    );
    await rejectsWith(agent.exec(["ls"], { cwd: "nope" }), "request", /need an absolute path/);
    await agent.ping(); // whatever the client sent before has arrived
    assert.deepEqual(fake.peers[0].requests.map((r) => r.type), [Op.exec, Op.ping]);
  } finally {
    agent.close();
  }
});

Deno.test("agent client: mountImage, unmountImage and configureNet wait as long as the guest may", async () => {
  const answers: Record<number, string> = {
    [Op.mountImage]: "root=/run/vmf/app/root\ndevice=/dev/vdb\n",
    [Op.configureNet]: "interface=eth1\n",
    [Op.unmountImage]: "",
  };
  await using fake = fakeAgent(async (req, peer) => {
    await new Promise((r) => setTimeout(r, 300)); // the device takes longer than the call's 200 ms
    await peer.send(Reply.result, req.id, text(answers[req.type]));
  });
  const agent = await fake.connect(200);
  try {
    assert.equal(
      await agent.mountImage("disk-1", "app", { waitMs: 1000, writableBytes: 8 << 20 }),
      "/run/vmf/app/root",
    );
    assert.equal(
      await agent.configureNet({ mac: "52:54:00:00:00:01", address: "10.0.2.15/24" }),
      "eth1",
    );
    await agent.unmountImage("app", { timeoutMs: 1000 });
    await rejectsWith(agent.unmountImage("app"), "timeout", /no answer within 200 ms/);
    await rejectsWith(agent.mountImage("disk-1", "other"), "protocol", /mounted \/run\/vmf\/app/);
    await rejectsWith(agent.mountImage("disk 1", "app"), "request", /disk serial "disk 1"/);
    await rejectsWith(agent.mountImage("d", "../x"), "request", /image name "..\/x"/);
    await rejectsWith(agent.configureNet({ mac: "x", address: "1.2.3.4/8" }), "request", /MAC "x"/);
    const [mount, , , , other] = fake.peers[0].requests;
    assert.equal(new TextDecoder().decode(mount.payload.subarray(-13)), "disk-1\0\0\0\x03app");
    assert.equal(u32(mount.payload, 0), 1000);
    assert.equal(u32(other.payload, 0), 5000, "the default wait");
  } finally {
    agent.close();
  }
});
