/**
 * Wire compatibility: a client built only from `lib/cache/cache.proto` (a plain grpc-js generic
 * client, as any Kata-style client would be) calls all four RPCs of the VMCache server.
 */

import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { startCacheServer } from "../lib/cache/cache_server.ts";

const PROTO = new URL("../lib/cache/cache.proto", import.meta.url).pathname;
type Call = (req: object, cb: (err: grpc.ServiceError | null, res: never) => void) => void;

Deno.test("a client generated from cache.proto calls Config, GetBaseVM, Status and Quit", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "vmf-grpc-wire-" });
  const socketPath = `${dir}/cache.sock`;
  const hypervisor = new TextEncoder().encode('{"qmp":"/run/q.sock"}');
  const server = await startCacheServer({
    socketPath,
    source: {
      take: () => Promise.resolve({ id: "vm-1", hypervisor, cpu: 2, memory: 512, pid: 4242 }),
      status: () => [{ pid: 4242, cpu: 2, memory: 512 }],
      config: () => ({ data: new Uint8Array([7]), agentConfig: new Uint8Array([8, 9]) }),
    },
  });
  const definition = protoLoader.loadSync(PROTO, { keepCase: true, longs: String });
  const pkg = grpc.loadPackageDefinition(definition) as unknown as {
    cache: { CacheService: grpc.ServiceClientConstructor };
  };
  const client = new pkg.cache.CacheService(
    `unix:${socketPath}`,
    grpc.credentials.createInsecure(),
  );
  const call = (name: string) =>
    new Promise<Record<string, unknown>>((resolve, reject) =>
      (client[name] as Call).call(client, {}, (err, res) => err ? reject(err) : resolve(res))
    );
  let quitCalled = false;
  server.onQuit(() => quitCalled = true);
  try {
    const config = await call("Config");
    assert.deepEqual([...config.Data as Uint8Array], [7]);
    assert.deepEqual([...config.AgentConfig as Uint8Array], [8, 9]);
    const vm = await call("GetBaseVM");
    assert.equal(vm.id, "vm-1");
    assert.equal(new TextDecoder().decode(vm.hypervisor as Uint8Array), '{"qmp":"/run/q.sock"}');
    assert.equal(vm.cpu, 2);
    assert.equal(vm.memory, 512);
    const status = await call("Status");
    assert.equal(status.pid, String(Deno.pid));
    assert.deepEqual(status.vmstatus, [{ pid: "4242", cpu: 2, memory: 512 }]);
    assert.deepEqual(await call("Quit"), {});
    await server.closed;
    assert.ok(quitCalled);
    assert.throws(() => Deno.statSync(socketPath), Deno.errors.NotFound);
  } finally {
    client.close();
    await server.close();
    Deno.removeSync(dir, { recursive: true });
  }
});
