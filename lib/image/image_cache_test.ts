import assert from "node:assert/strict";
import { entryDir, imageCacheEntries, pruneImageCache } from "./image_cache.ts";
import { prepareImage } from "./prepare_image.ts";
import { namesIn, rawTar } from "./_testing.ts";

async function withCache(fn: (dir: string, cache: string) => Promise<void>) {
  const dir = Deno.makeTempDirSync({ prefix: "vmf-cache-" });
  try {
    await fn(dir, `${dir}/cache`);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

async function image(dir: string, cache: string, name: string) {
  Deno.writeFileSync(`${dir}/${name}.tar`, rawTar([{ name, data: `${name}\n` }]));
  return await prepareImage(`${dir}/${name}.tar`, { cacheDir: cache });
}

Deno.test("lists the cache's images, most recently used first; prune keeps what it is told", async () => {
  await withCache(async (dir, cache) => {
    assert.deepEqual(imageCacheEntries(cache), [], "no cache folder yet");
    const a = await image(dir, cache, "a");
    const b = await image(dir, cache, "b");
    Deno.utimeSync(entryDir(cache, a.digest), new Date(1000), new Date(1000));
    const listed = imageCacheEntries(cache);
    assert.deepEqual(listed.map((e) => [e.digest, e.path, e.ref, e.sizeBytes]), [
      [b.digest, b.path, `${dir}/b.tar`, b.sizeBytes],
      [a.digest, a.path, `${dir}/a.tar`, a.sizeBytes],
    ]);
    await image(dir, cache, "a"); // a hit marks it used
    assert.equal(imageCacheEntries(cache)[0].digest, a.digest);
    Deno.mkdirSync(`${cache}/.tmp-999999999-1-0123abcd`);
    const removed = await pruneImageCache(cache, { keep: [a.digest] });
    assert.deepEqual(removed.map((e) => e.digest), [b.digest]);
    assert.deepEqual(namesIn(cache), [a.digest.replace(":", "-")]);
    assert.deepEqual((await pruneImageCache(cache)).map((e) => e.digest), [a.digest]);
    assert.deepEqual(namesIn(cache), []);
  });
});

Deno.test("an entry that does not check out is not listed and is rebuilt", async () => {
  await withCache(async (dir, cache) => {
    const a = await image(dir, cache, "a");
    const meta = `${entryDir(cache, a.digest)}/image.json`;
    const good = Deno.readTextFileSync(meta);
    for (
      const bad of [
        "{",
        JSON.stringify({ ...JSON.parse(good), sizeBytes: 1 }),
        JSON.stringify({ ...JSON.parse(good), digest: `sha256:${"0".repeat(64)}` }),
      ]
    ) {
      Deno.writeTextFileSync(meta, bad);
      assert.deepEqual(imageCacheEntries(cache), []);
      const again = await image(dir, cache, "a");
      assert.equal(again.cached, false);
      assert.equal(again.path, a.path);
    }
    Deno.removeSync(entryDir(cache, a.digest), { recursive: true });
    Deno.mkdirSync(`${dir}/elsewhere`);
    Deno.symlinkSync(`${dir}/elsewhere`, entryDir(cache, a.digest));
    assert.deepEqual(imageCacheEntries(cache), [], "a symbolic link is no entry");
    assert.deepEqual((await pruneImageCache(cache)).length, 0);
    assert.deepEqual(namesIn(cache), []);
    assert.deepEqual(namesIn(`${dir}/elsewhere`), [], "a link is removed, not followed");
  });
});
