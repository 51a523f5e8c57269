import assert from "node:assert/strict";
import {
  QmpClient,
  QmpDisconnectedError,
  QmpError,
  type QmpEvent,
  QmpTimeoutError,
} from "./qmp_client.ts";
import { type FakePeer, GREETING, startFakeQmp } from "../../test/fake_qmp_server.ts";

/** Runs `body` against a fake server running `script`; always stops the server. */
async function withFake(
  script: (peer: FakePeer) => Promise<void>,
  body: (path: string, done: Promise<void>) => Promise<void>,
): Promise<void> {
  const fake = await startFakeQmp(script);
  try {
    await body(fake.path, fake.done);
  } finally {
    await fake.stop();
  }
}

const event = (name: string, data?: Record<string, unknown>) => ({
  event: name,
  ...(data ? { data } : {}),
  timestamp: { seconds: 1, microseconds: 2 },
});

Deno.test("connect reads the greeting and negotiates capabilities", async () => {
  let capabilities = "";
  await withFake(async (peer) => {
    await peer.greet();
    const cmd = await peer.read();
    capabilities = cmd.execute;
    await peer.send({ return: {}, id: cmd.id });
    const status = await peer.read();
    await peer.send({ return: { status: "running", running: true }, id: status.id });
  }, async (path) => {
    const qmp = await QmpClient.connect(path);
    try {
      assert.equal(capabilities, "qmp_capabilities");
      assert.equal(qmp.version, "7.2.22");
      assert.deepEqual(qmp.greeting, GREETING.QMP);
      assert.deepEqual(await qmp.execute("query-status"), { status: "running", running: true });
    } finally {
      qmp.close();
    }
  });
});

Deno.test("replies out of order reach the right callers; arguments are sent", async () => {
  const seen: unknown[] = [];
  await withFake(async (peer) => {
    await peer.handshake();
    const a = await peer.read();
    const b = await peer.read();
    seen.push(a, b);
    await peer.send({ return: "b", id: b.id }, { return: "a", id: a.id });
  }, async (path) => {
    const qmp = await QmpClient.connect(path);
    try {
      const [a, b] = await Promise.all([
        qmp.execute("first", { x: 1 }),
        qmp.execute("second"),
      ]);
      assert.deepEqual([a, b], ["a", "b"]);
      assert.deepEqual(seen, [
        { execute: "first", arguments: { x: 1 }, id: 2 },
        { execute: "second", id: 3 },
      ]);
    } finally {
      qmp.close();
    }
  });
});

Deno.test("an error reply becomes a QmpError with QEMU's class and description", async () => {
  await withFake(async (peer) => {
    await peer.handshake();
    const cmd = await peer.read();
    await peer.send({ error: { class: "CommandNotFound", desc: "no such thing" }, id: cmd.id });
  }, async (path) => {
    const qmp = await QmpClient.connect(path);
    try {
      const error = await qmp.execute("frobnicate").catch((e) => e);
      assert.ok(error instanceof QmpError);
      assert.equal(error.errorClass, "CommandNotFound");
      assert.equal(error.desc, "no such thing");
      assert.equal(error.message, "Cannot frobnicate: no such thing");
    } finally {
      qmp.close();
    }
  });
});

Deno.test("events reach named and '*' listeners; unsubscribe works", async () => {
  const named: QmpEvent[] = [];
  const all: string[] = [];
  await withFake(async (peer) => {
    await peer.handshake();
    const go = await peer.read();
    await peer.send(event("STOP"), event("RESUME"), { return: {}, id: go.id });
    const sync = await peer.read();
    await peer.send(event("STOP", { n: 2 }), { return: {}, id: sync.id });
  }, async (path) => {
    const qmp = await QmpClient.connect(path);
    try {
      const off = qmp.on("STOP", (e) => named.push(e));
      qmp.on("*", (e) => all.push(e.event));
      qmp.on("RESUME", () => {
        throw new Error("a failing listener is ignored");
      });
      await qmp.execute("go");
      off();
      await qmp.execute("sync");
      assert.deepEqual(named, [event("STOP")]);
      assert.deepEqual(all, ["STOP", "RESUME", "STOP"]);
    } finally {
      qmp.close();
    }
  });
});

Deno.test("framing: split lines, several objects per chunk, garbage lines", async () => {
  await withFake(async (peer) => {
    const greeting = JSON.stringify(GREETING) + "\n";
    await peer.sendRaw(greeting.slice(0, 10));
    await new Promise((resolve) => setTimeout(resolve, 10));
    await peer.sendRaw(greeting.slice(10));
    const caps = await peer.read();
    await peer.send({ return: {}, id: caps.id });
    const a = await peer.read();
    const b = await peer.read();
    const line = JSON.stringify({ return: "é", id: a.id }) + "\n";
    await peer.sendRaw(`not json\n42\n\n${line.slice(0, 12)}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
    await peer.sendRaw(`${line.slice(12)}{"return": 2, "id": ${b.id}}\n`);
  }, async (path) => {
    const qmp = await QmpClient.connect(path);
    try {
      assert.deepEqual(await Promise.all([qmp.execute("a"), qmp.execute("b")]), ["é", 2]);
    } finally {
      qmp.close();
    }
  });
});

Deno.test("an abrupt close rejects every pending call and later calls", async () => {
  await withFake(async (peer) => {
    await peer.handshake();
    await peer.read();
    await peer.read();
    peer.close();
  }, async (path) => {
    const qmp = await QmpClient.connect(path);
    const results = await Promise.allSettled([qmp.execute("one"), qmp.execute("two")]);
    for (const result of results) {
      assert.equal(result.status, "rejected");
      assert.ok(result.reason instanceof QmpDisconnectedError);
    }
    assert.match((results[0] as PromiseRejectedResult).reason.message, /^Cannot one: QMP/);
    await qmp.closed;
    await assert.rejects(qmp.execute("three"), QmpDisconnectedError);
  });
});

Deno.test("a call without an answer times out; its late reply is ignored", async () => {
  await withFake(async (peer) => {
    await peer.handshake();
    const slow = await peer.read();
    const fast = await peer.read();
    await new Promise((resolve) => setTimeout(resolve, 80));
    await peer.send({ return: "late", id: slow.id }, { return: "ok", id: fast.id });
  }, async (path) => {
    const qmp = await QmpClient.connect(path);
    try {
      const slow = qmp.execute("slow", undefined, { timeoutMs: 30 });
      const fast = qmp.execute("fast");
      await assert.rejects(slow, QmpTimeoutError);
      assert.equal(await fast, "ok");
    } finally {
      qmp.close();
    }
  });
});

Deno.test("connect fails with QmpTimeoutError when no greeting comes", async () => {
  await withFake(async () => {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }, async (path) => {
    await assert.rejects(QmpClient.connect(path, { timeoutMs: 50 }), QmpTimeoutError);
  });
});

Deno.test("close() rejects pending calls", async () => {
  await withFake(async (peer) => {
    await peer.handshake();
    await peer.read().catch(() => {});
  }, async (path) => {
    const qmp = await QmpClient.connect(path);
    const pending = qmp.execute("never");
    qmp.close();
    await assert.rejects(pending, QmpDisconnectedError);
    qmp.close();
  });
});
