import assert from "node:assert/strict";
import { CacheCallError, CacheClient, CacheServerNotRunningError } from "./cache_client.ts";
import { startCacheServer } from "./cache_server.ts";
import { makeStaleSocket } from "./_testing.ts";

const NOT_RUNNING = (socketPath: string) =>
  `Cannot reach the VMCache server at ${socketPath}: not running (start it with \`vmfactory factory init\`)`;

Deno.test("client: a missing socket means the server is not running (exit code 2)", async () => {
  const socketPath = "/nonexistent/vmfactory/cache.sock";
  await assert.rejects(
    CacheClient.connect(socketPath, { timeoutMs: 1000 }),
    (err: Error) =>
      err instanceof CacheServerNotRunningError && err.exitCode === 2 &&
      err.message === NOT_RUNNING(socketPath),
  );
});

Deno.test("client: a stale socket (nothing listening) means the server is not running", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "vmf-cache-" });
  const socketPath = `${dir}/cache.sock`;
  try {
    await makeStaleSocket(socketPath);
    await assert.rejects(
      CacheClient.connect(socketPath, { timeoutMs: 1000 }),
      (err: Error) =>
        err instanceof CacheServerNotRunningError && err.message === NOT_RUNNING(socketPath),
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("client: close() fails a waiting call with CANCELLED; the server gets the VM back", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "vmf-cache-" });
  const socketPath = `${dir}/cache.sock`;
  const vm = { id: "vm-1", hypervisor: new Uint8Array([1]), cpu: 1, memory: 1, pid: 1 };
  const back: string[] = [];
  const taking = Promise.withResolvers<void>();
  const server = await startCacheServer({
    socketPath,
    source: {
      async take() {
        taking.resolve();
        await new Promise((r) => setTimeout(r, 100)); // ignores the abort: arrives too late
        return vm;
      },
      status: () => [],
      config: () => ({ data: new Uint8Array(), agentConfig: new Uint8Array() }),
      giveBack: (v) => void back.push(v.id),
    },
  });
  const client = await CacheClient.connect(socketPath, { timeoutMs: 5000 });
  try {
    const pending = client.getBaseVM();
    await taking.promise;
    client.close();
    await assert.rejects(
      pending,
      (err: Error) => err instanceof CacheCallError && err.code === 1 && /closed/.test(err.message),
    );
    await assert.rejects(client.status(), (err: Error) => err instanceof CacheCallError);
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(back, ["vm-1"]);
  } finally {
    client.close();
    await server.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("client: a server gone after connect means not running; replies decode exactly", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "vmf-cache-" });
  const socketPath = `${dir}/cache.sock`;
  const hypervisor = new TextEncoder().encode('{"qmp":"/run/q.sock"}');
  const server = await startCacheServer({
    socketPath,
    source: {
      take: () => Promise.resolve({ id: "vm-é", hypervisor, cpu: 3, memory: 70_000, pid: 9 }),
      status: () => [{ pid: 9, cpu: 3, memory: 70_000 }, { pid: 10, cpu: 0, memory: 0 }],
      config: () => ({ data: new Uint8Array(), agentConfig: new Uint8Array([0, 255]) }),
    },
  });
  const client = await CacheClient.connect(socketPath, { timeoutMs: 5000 });
  try {
    const vm = await client.getBaseVM();
    assert.deepEqual({ ...vm, hypervisor: new TextDecoder().decode(vm.hypervisor) }, {
      id: "vm-é",
      hypervisor: '{"qmp":"/run/q.sock"}',
      cpu: 3,
      memory: 70_000,
      cpuDelta: 0,
    });
    assert.deepEqual((await client.status()).vms, [
      { pid: 9, cpu: 3, memory: 70_000 },
      { pid: 10, cpu: 0, memory: 0 },
    ]);
    const config = await client.config();
    assert.deepEqual([[...config.data], [...config.agentConfig]], [[], [0, 255]]);
    await server.close();
    const other = await CacheClient.connect(socketPath).catch((err) => err);
    assert.ok(other instanceof CacheServerNotRunningError);
    await assert.rejects(
      client.getBaseVM(),
      (err: Error) => err instanceof CacheServerNotRunningError && err.exitCode === 2,
    );
  } finally {
    client.close();
    await server.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("client: a grpc-js server's replies, errors in trailers and trailers-only", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "vmf-cache-" });
  const socketPath = `${dir}/cache.sock`;
  // a plain grpc-js server built from cache.proto, in a child process (killed at the end)
  const code = `
    import { loadCacheGrpc } from ${JSON.stringify(import.meta.resolve("./cache_proto.ts"))};
    const { grpc, service } = await loadCacheGrpc();
    const server = new grpc.Server();
    server.addService(service, {
      GetBaseVM: (_call, done) => done(null, {
        id: "vm-ü", hypervisor: new TextEncoder().encode("{}"), cpu: 3, memory: 70000, cpuDelta: 2,
      }),
      Status: (call, done) => { // headers first, then the error in the trailers
        call.sendMetadata(new grpc.Metadata());
        setTimeout(() => done({ code: 9, details: "not now: é" }), 10);
      },
      Config: (_call, done) => done({ code: 5, details: "none" }),
      Quit: (_call, done) => done(null, {}),
    });
    server.bindAsync("unix:${socketPath}", grpc.ServerCredentials.createInsecure(), (err) => {
      if (err) throw err;
      console.log("ready");
    });`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    cwd: new URL("../..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  let client: CacheClient | undefined;
  try {
    const reader = child.stdout.getReader();
    assert.match(new TextDecoder().decode((await reader.read()).value), /ready/);
    reader.releaseLock();
    client = await CacheClient.connect(socketPath, { timeoutMs: 5000 });
    const vm = await client.getBaseVM();
    assert.deepEqual({ ...vm, hypervisor: [...vm.hypervisor] }, {
      id: "vm-ü",
      hypervisor: [123, 125],
      cpu: 3,
      memory: 70_000,
      cpuDelta: 2,
    });
    await assert.rejects(
      client.status(),
      (err: Error) =>
        err instanceof CacheCallError && err.code === 9 && /not now: é$/.test(err.message),
    );
    await assert.rejects(
      client.config(),
      (err: Error) => err instanceof CacheCallError && err.code === 5 && /none$/.test(err.message),
    );
    await client.quit();
    child.kill("SIGKILL");
    await child.status;
    await assert.rejects(client.getBaseVM(), CacheServerNotRunningError);
  } finally {
    client?.close();
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
    await child.stdout.cancel().catch(() => {});
    await child.status;
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("client: calls share a connection; one the server closed when idle is reopened", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "vmf-cache-" });
  const socketPath = `${dir}/cache.sock`;
  const server = await startCacheServer({
    socketPath,
    idleTimeoutMs: 50,
    log: () => {},
    source: {
      take: () =>
        Promise.resolve({ id: "vm-1", hypervisor: new Uint8Array(), cpu: 1, memory: 1, pid: 1 }),
      status: () => [{ pid: 2, cpu: 0, memory: 0 }],
      config: () => ({ data: new Uint8Array(), agentConfig: new Uint8Array() }),
    },
  });
  const client = await CacheClient.connect(socketPath, { timeoutMs: 5000 });
  try {
    const [a, b, vm] = await Promise.all([client.status(), client.status(), client.getBaseVM()]);
    assert.deepEqual([a.vms.length, b.vms.length, vm.id], [1, 1, "vm-1"]);
    await new Promise((r) => setTimeout(r, 200)); // the server closes the idle connection
    assert.equal((await client.getBaseVM()).id, "vm-1", "on a new connection");
  } finally {
    client.close();
    await server.close();
    Deno.removeSync(dir, { recursive: true });
  }
});
