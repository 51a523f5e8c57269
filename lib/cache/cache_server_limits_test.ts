/**
 * The cache server against hostile or broken clients, spoken to frame by frame: oversized bodies
 * and headers, too many connections, idle connections and unfinished requests, and clients that
 * reset their stream around the reply. A VM taken for a call ends up exactly once either handed
 * out (the client adopted it) or given back.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { endsStream, FrameType, grpcMessage, type H2Frame, RawH2 } from "./_raw_h2_testing.ts";
import { CacheClient } from "./cache_client.ts";
import { loadCacheGrpc } from "./cache_proto.ts";
import { MAX_REQUEST_BYTES, startCacheServer } from "./cache_server.ts";
import type { CacheVm, CacheVmSource } from "./cache_vm_source.ts";

const none = new Uint8Array();
const GET = "/cache.CacheService/GetBaseVM";
const STATUS = "/cache.CacheService/Status";

/**
 * The VM store as the server sees it (lib/vm/vm_store.ts): a take moves a VM cached → offered, a
 * giveBack offered → cached, a client's adopt offered → adopted; a move from the wrong state fails
 * (so a giveBack loses against an adopt that came first, and the other way round).
 */
class FakeStore implements CacheVmSource {
  readonly state = new Map<string, "cached" | "offered" | "adopted">();
  readonly cached: string[] = [];
  givenBack = 0;
  statusCalls = 0;
  #made = 0;

  constructor(readonly takeDelayMs = 0) {}

  async take(): Promise<CacheVm> {
    // ignores the abort: the VM may arrive after the client left, as a boot can
    if (this.takeDelayMs) await new Promise((r) => setTimeout(r, this.takeDelayMs));
    const id = this.cached.shift() ?? `vm-${++this.#made}`;
    this.state.set(id, "offered");
    return { id, hypervisor: new Uint8Array([1]), cpu: 1, memory: 256, pid: 1 };
  }

  status() {
    this.statusCalls++;
    return [];
  }

  config() {
    return { data: none, agentConfig: none };
  }

  giveBack(vm: CacheVm): void {
    if (this.state.get(vm.id) !== "offered") return; // adopted first: the store refuses
    this.state.set(vm.id, "cached");
    this.cached.push(vm.id);
    this.givenBack++;
  }

  adopt(id: string): boolean {
    if (this.state.get(id) !== "offered") return false;
    this.state.set(id, "adopted");
    return true;
  }

  offered(): string[] {
    return [...this.state].filter(([, s]) => s === "offered").map(([id]) => id);
  }
}

async function withServer(
  source: CacheVmSource,
  fn: (socketPath: string, lines: string[]) => Promise<void>,
  extra: { maxConnections?: number; idleTimeoutMs?: number } = {},
): Promise<void> {
  const dir = Deno.makeTempDirSync({ prefix: "vmf-cache-limits-" });
  const socketPath = `${dir}/cache.sock`;
  const lines: string[] = [];
  const server = await startCacheServer({
    socketPath,
    source,
    log: (l) => lines.push(l),
    ...extra,
  });
  try {
    await fn(socketPath, lines);
  } finally {
    await server.close();
    Deno.removeSync(dir, { recursive: true });
  }
}

/** Reads frames of stream `id` until `stop` says so or the stream ends; returns them. */
async function readUntil(h: RawH2, id: number, stop: (f: H2Frame) => boolean): Promise<H2Frame[]> {
  const seen: H2Frame[] = [];
  for (let f; (f = await h.nextOn(id));) {
    seen.push(f);
    if (stop(f) || endsStream(f) || f.type === FrameType.rstStream) break;
  }
  return seen;
}

function concat(frames: H2Frame[]): Uint8Array {
  const out = new Uint8Array(frames.reduce((n, f) => n + f.payload.length, 0));
  let at = 0;
  for (const f of frames) out.set(f.payload, (at += f.payload.length) - f.payload.length);
  return out;
}

async function until(what: string, ok: () => boolean, ms = 10_000): Promise<void> {
  for (const start = Date.now(); !ok(); await new Promise((r) => setTimeout(r, 10))) {
    assert.ok(Date.now() - start < ms, `still not ${what} after ${ms} ms`);
  }
}

Deno.test("limits: clients that read the VM and reset before the trailers never leave it both handed out and cached", async () => {
  const { service } = await loadCacheGrpc();
  const store = new FakeStore();
  const CLIENTS = 20, CALLS = 16; // 320 calls, 20 connections at once, 4 streams each at a time
  let adopted = 0, refused = 0, complete = 0, cut = 0;
  await withServer(store, async (socketPath) => {
    await Promise.all(Array.from({ length: CLIENTS }, async (_, c) => {
      // one connection in four lets the server send 4 bytes of a reply before a WINDOW_UPDATE
      const windowed = c % 4 === 0;
      const h = await RawH2.connect(socketPath, windowed ? { initialWindow: 4 } : {});
      try {
        for (let round = 0; round < CALLS; round += 4) {
          await Promise.all([0, 1, 2, 3].map(async (k) => {
            const id = await h.request(GET);
            await h.emptyMessage(id);
            const resetEarly = (c + round + k) % 3 !== 0; // two in three reset after the data
            const frames = await readUntil(h, id, (f) => f.type === FrameType.data);
            if (windowed) {
              if (resetEarly) {
                await h.reset(id); // 4 bytes of the message: nothing to adopt
                cut++;
                return;
              }
              await h.windowUpdate(id, 65_535);
              frames.push(...await readUntil(h, id, () => false)); // the rest, the trailers
            } else if (!resetEarly) frames.push(...await readUntil(h, id, () => false));
            const payload = concat(frames.filter((f) => f.type === FrameType.data));
            assert.ok(
              payload.length > 5,
              `every call gets its reply: ${frames.map((f) => f.type)}`,
            );
            if (resetEarly) await h.reset(id);
            else complete++;
            const vm = service.GetBaseVM.responseDeserialize(Buffer.from(grpcMessage(payload)));
            // the client takes over what it read, as VmCacheFetchSource does; it may lose to a
            // giveBack, which the store then refuses to repeat
            if (store.adopt((vm as { id: string }).id)) adopted++;
            else if (resetEarly) refused++;
            else assert.fail("a reply delivered with its trailers was given back");
          }));
        }
      } finally {
        h.close();
      }
    }));
    await until("settled", () => store.offered().length === 0);
  });
  const states = [...store.state.values()];
  assert.equal(states.filter((s) => s === "adopted").length, adopted);
  assert.equal(adopted + refused + cut, CLIENTS * CALLS);
  assert.ok(complete > 0 && adopted > 0 && cut > 0 && store.givenBack >= cut);
  // a VM is adopted once or cached once: never both, never offered forever, never cached twice
  assert.deepEqual(states.filter((s) => s !== "adopted" && s !== "cached"), []);
  assert.equal(new Set(store.cached).size, store.cached.length);
  assert.deepEqual(
    [...store.state].filter(([, s]) => s === "cached").map(([id]) => id).sort(),
    [...store.cached].sort(),
  );
});

Deno.test("limits: a reply held back by flow control and then reset is given back", async () => {
  const store = new FakeStore();
  await withServer(store, async (socketPath) => {
    // a 4-byte window: the server sends 4 bytes of the message, then waits for a WINDOW_UPDATE
    const clients = await Promise.all(
      Array.from({ length: 10 }, () => RawH2.connect(socketPath, { initialWindow: 4 })),
    );
    try {
      await Promise.all(clients.map(async (h) => {
        const id = await h.request(GET);
        await h.emptyMessage(id);
        const part = await readUntil(h, id, (f) => f.type === FrameType.data);
        assert.equal(part.at(-1)?.payload.length, 4, "a partial message");
        await h.reset(id);
      }));
      await until("all given back", () => store.givenBack === 10);
    } finally {
      for (const h of clients) h.close();
    }
  });
  assert.deepEqual(store.offered(), []);
});

Deno.test("limits: clients that reset before the reply get their VMs given back, every one", async () => {
  const store = new FakeStore(60);
  await withServer(store, async (socketPath) => {
    await Promise.all(Array.from({ length: 10 }, async (_, c) => {
      const h = await RawH2.connect(socketPath);
      try {
        const ids = await Promise.all([0, 1, 2, 3, 4].map(async () => {
          const id = await h.request(GET);
          await h.emptyMessage(id);
          return id;
        }));
        await new Promise((r) => setTimeout(r, 10));
        for (const id of ids) await h.reset(id);
      } finally {
        // half the clients stay connected, half go away entirely
        if (c % 2 === 0) await new Promise((r) => setTimeout(r, 100));
        h.close();
      }
    }));
    await until("all given back", () => store.givenBack === 50);
  });
  assert.deepEqual(store.offered(), []);
  assert.equal(store.cached.length, store.state.size, "every VM is cached (given back), once");
});

Deno.test("limits: a body over 64 KiB is refused with RESOURCE_EXHAUSTED and the server stays up", async () => {
  const { grpc } = await loadCacheGrpc();
  const store = new FakeStore();
  await withServer(store, async (socketPath) => {
    const client = new grpc.Client(`unix:${socketPath}`, grpc.credentials.createInsecure());
    try {
      const code = await new Promise<number>((resolve) =>
        client.makeUnaryRequest(
          STATUS,
          () => Buffer.alloc(MAX_REQUEST_BYTES + 1),
          (b: Buffer) => b,
          {},
          (err) => resolve(err?.code ?? 0),
        )
      );
      assert.equal(code, grpc.status.RESOURCE_EXHAUSTED);
    } finally {
      client.close();
    }
    // a raw client pushing 8 MiB is cut off long before it is done, on every stream at once
    const h = await RawH2.connect(socketPath);
    try {
      const results = await Promise.all([0, 1, 2, 3].map(async () => {
        const id = await h.request(STATUS);
        const body = new Uint8Array(8 << 20);
        new DataView(body.buffer).setUint32(1, body.length - 5);
        return await h.data(id, body);
      }));
      assert.deepEqual(results, [false, false, false, false], "the server ended every stream");
    } finally {
      h.close();
    }
    assert.equal(store.statusCalls, 0);
    const ok = await CacheClient.connect(socketPath, { timeoutMs: 5000 });
    try {
      assert.deepEqual((await ok.status()).vms, []);
    } finally {
      ok.close();
    }
  });
});

Deno.test("limits: a header list over 16 KiB is answered without calling the method", async () => {
  const store = new FakeStore();
  await withServer(store, async (socketPath) => {
    const h = await RawH2.connect(socketPath);
    try {
      const id = await h.request(STATUS, [["x-pad", "a".repeat(20_000)]]);
      await h.emptyMessage(id);
      const frames = await readUntil(h, id, () => false);
      assert.ok(frames.some(endsStream) || frames.some((f) => f.type === FrameType.rstStream));
      assert.ok(!frames.some((f) => f.type === FrameType.data), "no reply message");
      // the same request with small headers is served on the same connection
      const small = await h.request(STATUS, [["x-pad", "a"]]);
      await h.emptyMessage(small);
      assert.ok((await readUntil(h, small, () => false)).some((f) => f.type === FrameType.data));
    } finally {
      h.close();
    }
    assert.equal(store.statusCalls, 1);
  });
});

Deno.test("limits: connections beyond the cap are closed at once; a freed slot serves again", async () => {
  await withServer(new FakeStore(), async (socketPath, lines) => {
    const open = await Promise.all([0, 1, 2].map(() => RawH2.connect(socketPath)));
    try {
      for (const h of open) assert.equal((await h.next())?.type, FrameType.settings);
      const extra = await RawH2.connect(socketPath);
      assert.equal(await extra.next(), null, "closed without a frame");
      extra.close();
      assert.match(lines.join("\n"), /refusing connections: 3 are open/);
      open.shift()!.close();
      await new Promise((r) => setTimeout(r, 100));
      const again = await RawH2.connect(socketPath);
      open.push(again);
      assert.equal((await again.next())?.type, FrameType.settings);
    } finally {
      for (const h of open) h.close();
    }
  }, { maxConnections: 3 });
});

Deno.test("limits: an idle connection is closed; an unfinished request is reset; a waiting call is not cut", async () => {
  await withServer(new FakeStore(400), async (socketPath) => {
    const idle = await RawH2.connect(socketPath);
    const unfinished = await RawH2.connect(socketPath);
    const waiting = await RawH2.connect(socketPath);
    try {
      const half = await unfinished.request(STATUS);
      await unfinished.data(half, new Uint8Array(3), false); // the body never ends
      const call = await waiting.request(GET);
      await waiting.emptyMessage(call);
      await idle.closedByPeer(); // after ~150 ms
      const reset = await readUntil(unfinished, half, () => false);
      assert.equal(reset.at(-1)?.type, FrameType.rstStream);
      // the take lasts longer than the idle limit: the call still gets its VM
      const reply = await readUntil(waiting, call, () => false);
      assert.ok(reply.some((f) => f.type === FrameType.data));
    } finally {
      for (const h of [idle, unfinished, waiting]) h.close();
    }
  }, { idleTimeoutMs: 150 });
});
