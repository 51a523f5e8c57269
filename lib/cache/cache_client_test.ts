import assert from "node:assert/strict";
import { CacheClient, CacheServerNotRunningError } from "./cache_client.ts";
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
