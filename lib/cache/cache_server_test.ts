import assert from "node:assert/strict";
import { UsageError } from "../errors.ts";
import { makeStaleSocket } from "./_testing.ts";
import { CacheCallError, CacheClient } from "./cache_client.ts";
import { parseGrpcTimeout, startCacheServer } from "./cache_server.ts";
import type { CacheVm, CacheVmSource } from "./cache_vm_source.ts";

const VM: CacheVm = {
  id: "vm-1",
  hypervisor: new Uint8Array([123, 125]),
  cpu: 1,
  memory: 128,
  pid: 7,
};

function fakeSource(take: CacheVmSource["take"]): CacheVmSource & { back: CacheVm[] } {
  const back: CacheVm[] = [];
  return {
    back,
    take,
    status: () => [{ pid: 7, cpu: 1, memory: 128 }],
    config: () => ({ data: new Uint8Array([1]), agentConfig: new Uint8Array([2]) }),
    giveBack: (vm) => void back.push(vm),
  };
}

/** Runs `fn` with a server on a socket in a fresh temp dir; stops and cleans everything after. */
async function withServer(
  source: CacheVmSource,
  fn: (socketPath: string, dir: string) => Promise<void>,
  extra: { takeTimeoutMs?: number } = {},
): Promise<void> {
  const dir = Deno.makeTempDirSync({ prefix: "vmf-cache-" });
  const socketPath = `${dir}/sub/cache.sock`;
  const server = await startCacheServer({ socketPath, source, ...extra });
  try {
    await fn(socketPath, dir);
  } finally {
    await server.close();
    Deno.removeSync(dir, { recursive: true });
  }
}

Deno.test("server: 0600 socket in a created 0700 folder; Status, Config and GetBaseVM", async () => {
  await withServer(fakeSource(() => Promise.resolve(VM)), async (socketPath, dir) => {
    assert.equal(Deno.statSync(socketPath).mode! & 0o777, 0o600);
    assert.equal(Deno.statSync(`${dir}/sub`).mode! & 0o777, 0o700);
    const client = await CacheClient.connect(socketPath, { timeoutMs: 5000 });
    try {
      assert.deepEqual(await client.status(), {
        pid: Deno.pid,
        vms: [{ pid: 7, cpu: 1, memory: 128 }],
      });
      const config = await client.config();
      assert.deepEqual([[...config.data], [...config.agentConfig]], [[1], [2]]);
      const vm = await client.getBaseVM();
      assert.deepEqual({ ...vm, hypervisor: [...vm.hypervisor] }, {
        id: "vm-1",
        hypervisor: [123, 125],
        cpu: 1,
        memory: 128,
        cpuDelta: 0,
      });
    } finally {
      client.close();
    }
  });
});

Deno.test("server: replaces a stale socket, refuses a live server and a plain file", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "vmf-cache-" });
  const socketPath = `${dir}/cache.sock`;
  try {
    await makeStaleSocket(socketPath);
    const lines: string[] = [];
    const server = await startCacheServer({
      socketPath,
      source: fakeSource(() => Promise.resolve(VM)),
      log: (l) => lines.push(l),
    });
    try {
      assert.match(lines.join("\n"), /replacing stale socket/);
      await assert.rejects(
        startCacheServer({ socketPath, source: fakeSource(() => Promise.resolve(VM)) }),
        (err: Error) =>
          err instanceof UsageError &&
          err.message ===
            `Cannot start the VMCache server: another server is listening on ${socketPath} (pid ${Deno.pid})`,
      );
    } finally {
      await server.close();
    }
    assert.throws(() => Deno.statSync(socketPath), Deno.errors.NotFound);
    Deno.writeTextFileSync(socketPath, "not a socket");
    await assert.rejects(
      startCacheServer({ socketPath, source: fakeSource(() => Promise.resolve(VM)) }),
      UsageError,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("server: a take that outlasts its deadline fails with DEADLINE_EXCEEDED", async () => {
  const source = fakeSource((signal) =>
    new Promise((_, reject) => signal.addEventListener("abort", () => reject(signal.reason)))
  );
  await withServer(source, async (socketPath) => {
    const client = await CacheClient.connect(socketPath, { timeoutMs: 5000 });
    try {
      await assert.rejects(
        client.getBaseVM(),
        (err: Error) =>
          err instanceof CacheCallError && err.code === 4 &&
          err.message.endsWith(": no cached VM became ready within 100 ms"),
      );
    } finally {
      client.close();
    }
  }, { takeTimeoutMs: 100 });
});

Deno.test("server: a VM taken for a client that went away goes back through giveBack", async () => {
  const ready = Promise.withResolvers<void>();
  const source = fakeSource(async () => {
    await new Promise((r) => setTimeout(r, 300)); // ignores the abort: the VM arrives too late
    ready.resolve();
    return VM;
  });
  await withServer(source, async (socketPath) => {
    const client = await CacheClient.connect(socketPath, { timeoutMs: 5000 });
    try {
      await assert.rejects(
        client.getBaseVM(50),
        (err: Error) => err instanceof CacheCallError && err.code === 4,
      );
      await ready.promise;
      await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(source.back, [VM]);
    } finally {
      client.close();
    }
  });
});

Deno.test("server: close() fails a waiting call with UNAVAILABLE and removes the socket", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "vmf-cache-" });
  const socketPath = `${dir}/cache.sock`;
  const source = fakeSource((signal) =>
    new Promise((_, reject) => signal.addEventListener("abort", () => reject(signal.reason)))
  );
  const server = await startCacheServer({ socketPath, source });
  const client = await CacheClient.connect(socketPath, { timeoutMs: 5000 });
  try {
    const pending = assert.rejects(
      client.getBaseVM(),
      (err: Error) =>
        err instanceof CacheCallError && err.code === 14 && /stopping/.test(err.message),
    );
    await new Promise((r) => setTimeout(r, 50));
    await server.close();
    await server.closed;
    await pending;
    assert.throws(() => Deno.statSync(socketPath), Deno.errors.NotFound);
  } finally {
    client.close();
    await server.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("parseGrpcTimeout reads the grpc-timeout units", () => {
  assert.equal(parseGrpcTimeout("250m"), 250);
  assert.equal(parseGrpcTimeout("3S"), 3000);
  assert.equal(parseGrpcTimeout("2M"), 120_000);
  assert.equal(parseGrpcTimeout("1000u"), 1);
  assert.equal(parseGrpcTimeout(undefined), Infinity);
  assert.equal(parseGrpcTimeout("soon"), Infinity);
});

Deno.test("server: a child it starts holds none of its sockets, so a killed server's is stale", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "vmf-cache-" });
  const socketPath = `${dir}/cache.sock`;
  // The server runs in a subprocess so it can be killed -9; its take() starts a child (as the
  // VMCache starts QEMU) while the client's connection is open, and reports its pid as the VM id.
  const code = `
    import { startCacheServer } from ${JSON.stringify(import.meta.resolve("./cache_server.ts"))};
    const none = new Uint8Array();
    await startCacheServer({
      socketPath: ${JSON.stringify(socketPath)},
      source: {
        take() {
          const stdio = { stdin: "null", stdout: "null", stderr: "null" } as const;
          const { pid } = new Deno.Command("sleep", { args: ["30"], ...stdio }).spawn();
          return Promise.resolve({ id: String(pid), hypervisor: none, cpu: 1, memory: 1, pid });
        },
        status: () => [],
        config: () => ({ data: none, agentConfig: none }),
      },
    });`;
  const config = new URL("../../deno.json", import.meta.url).pathname;
  const server = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--config", config, code],
    stdin: "null",
    stdout: "null",
  }).spawn();
  let childPid: number | undefined;
  try {
    for (let i = 0; !exists(socketPath); i++) {
      assert.ok(i < 1000, "the server did not start");
      await new Promise((r) => setTimeout(r, 20));
    }
    const client = await CacheClient.connect(socketPath, { timeoutMs: 5000 });
    try {
      childPid = Number((await client.getBaseVM()).id);
    } finally {
      client.close();
    }
    const links = [...Deno.readDirSync(`/proc/${childPid}/fd`)]
      .map((e) => Deno.readLinkSync(`/proc/${childPid}/fd/${e.name}`));
    assert.deepEqual(links.filter((l) => l.startsWith("socket:")), [], `child fds: ${links}`);

    server.kill("SIGKILL");
    await server.status;
    assert.ok(exists(`/proc/${childPid}`), "the child still runs");
    await assert.rejects(
      Deno.connect({ transport: "unix", path: socketPath }),
      Deno.errors.ConnectionRefused,
    );
  } finally {
    try {
      server.kill("SIGKILL");
    } catch { /* already dead */ }
    await server.status;
    if (childPid) Deno.kill(childPid, "SIGKILL");
    Deno.removeSync(dir, { recursive: true });
  }
});

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}
