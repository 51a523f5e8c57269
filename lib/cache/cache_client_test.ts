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
