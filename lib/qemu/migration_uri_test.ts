import assert from "node:assert/strict";
import { loadFromFdUri, receiveMigration, saveToSocketUri } from "./migration_uri.ts";

Deno.test("migration URIs: an inherited fd number, a Unix socket path", () => {
  assert.equal(loadFromFdUri(3), "fd:3");
  assert.throws(() => loadFromFdUri(1), RangeError);
  assert.equal(saveToSocketUri("state.sock"), "unix:state.sock");
  assert.throws(() => saveToSocketUri("a,b"), RangeError);
});

Deno.test("receiveMigration writes one connection's stream to a new file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmf-mig-" });
  try {
    const receiver = receiveMigration(`${dir}/s.sock`, `${dir}/state`);
    assert.equal(Deno.statSync(`${dir}/s.sock`).mode! & 0o777, 0o666);
    const conn = await Deno.connect({ transport: "unix", path: `${dir}/s.sock` });
    const data = new Uint8Array(700_000).map((_, i) => i % 251);
    for (let at = 0; at < data.length;) at += await conn.write(data.subarray(at));
    conn.close();
    assert.equal(await receiver.done, data.length);
    assert.deepEqual(Deno.readFileSync(`${dir}/state`), data);
    assert.equal(Deno.statSync(`${dir}/state`).mode! & 0o777, 0o600);
    receiver.close(); // idempotent

    // nothing sent: closing rejects, and an existing file is never overwritten
    const idle = receiveMigration(`${dir}/t.sock`, `${dir}/state`);
    idle.close();
    await assert.rejects(idle.done, /^VmfactoryError: Cannot receive the migration stream/);
    const second = receiveMigration(`${dir}/u.sock`, `${dir}/state`);
    (await Deno.connect({ transport: "unix", path: `${dir}/u.sock` })).close();
    await assert.rejects(second.done, /Cannot receive the migration stream/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
