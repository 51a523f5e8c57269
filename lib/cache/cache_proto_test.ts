import assert from "node:assert/strict";
import { CACHE_PROTO, loadCacheGrpc } from "./cache_proto.ts";

Deno.test("CACHE_PROTO equals cache.proto byte for byte", () => {
  const file = Deno.readTextFileSync(new URL("./cache.proto", import.meta.url));
  assert.equal(CACHE_PROTO, file);
});

Deno.test("loadCacheGrpc builds the four Kata methods once", async () => {
  const first = await loadCacheGrpc();
  assert.equal(await loadCacheGrpc(), first);
  const paths = Object.values(first.service).map((m) => m.path).sort();
  assert.deepEqual(paths, [
    "/cache.CacheService/Config",
    "/cache.CacheService/GetBaseVM",
    "/cache.CacheService/Quit",
    "/cache.CacheService/Status",
  ]);
});
