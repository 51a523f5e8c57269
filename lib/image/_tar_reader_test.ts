import assert from "node:assert/strict";
import { ImageInputError } from "./_image_input_error.ts";
import { type TarEntry, TarReader } from "./_tar_reader.ts";
import { binaryString } from "./_tar_names.ts";
import { concat, gnuTar, rawTar, run, writeTree } from "./_testing.ts";

type Read = TarEntry & { data?: string };

async function readAll(bytes: Uint8Array, chunk = 700): Promise<Read[]> {
  let offset = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(c) {
      if (offset >= bytes.length) return c.close();
      c.enqueue(bytes.slice(offset, offset += chunk)); // odd chunks: headers span them
    },
  });
  const tar = new TarReader(stream);
  const out: Read[] = [];
  for (let e; (e = await tar.next());) {
    const read: Read = { ...e };
    if (e.type === "file") {
      const parts: Uint8Array[] = [];
      await tar.data((p) => void parts.push(p.slice()));
      read.data = binaryString(concat(parts));
    }
    out.push(read);
  }
  return out;
}

async function rejectsInput(promise: Promise<unknown>, pattern: RegExp) {
  await assert.rejects(
    promise,
    (err: unknown) => err instanceof ImageInputError && pattern.test(err.message),
  );
}

async function withTemp(fn: (dir: string) => Promise<void>) {
  const dir = Deno.makeTempDirSync({ prefix: "vmf-tar-" });
  try {
    await fn(dir);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

for (const format of ["gnu", "posix", "ustar"]) {
  Deno.test(`reads GNU tar's ${format} format: long names, links, modes, data`, async () => {
    await withTemp(async (dir) => {
      const long = `${"a".repeat(90)}/${"b".repeat(60)}`;
      writeTree(`${dir}/t`, {
        [`${long}/file`]: "long\n",
        "x/run": { data: "#!/bin/sh\n", mode: 0o4755 },
        "x/link": { symlink: format === "ustar" ? "run" : "t".repeat(150) },
      });
      Deno.linkSync(`${dir}/t/x/run`, `${dir}/t/x/hard`);
      const bytes = await gnuTar(`${dir}/t`, `${dir}/t.tar`, [
        `--format=${format}`,
        "--mtime=@1700000000",
      ]);
      const entries = await readAll(bytes);
      const byName = new Map(
        entries.map((e) => [e.name.replace(/^\.\//, "").replace(/\/$/, ""), e]),
      );
      assert.equal(byName.get(`${long}/file`)?.data, "long\n");
      assert.equal(byName.get(long)?.type, "dir");
      assert.equal(byName.get("x/run")?.mode, 0o4755);
      assert.equal(byName.get("x/run")?.mtime, 1700000000);
      assert.equal(byName.get("x/link")?.type, "symlink");
      assert.equal(byName.get("x/link")?.linkname, format === "ustar" ? "run" : "t".repeat(150));
      const hard = byName.get("x/hard") ?? byName.get("x/run");
      const link = entries.find((e) => e.type === "link");
      assert.ok(link && hard, "one of the two names is a hard link");
      assert.equal(link.size, 0);
    });
  });
}

Deno.test("reads a uid beyond 8 octal digits (GNU base-256) and a pax uid", async () => {
  await withTemp(async (dir) => {
    writeTree(`${dir}/t`, { f: "x" });
    const gnu = await gnuTar(`${dir}/t`, `${dir}/g.tar`, [
      "--format=gnu",
      "--owner=:3000000",
      "--group=:4000000",
    ]);
    const f = (await readAll(gnu)).find((e) => e.name === "./f")!;
    assert.equal(f.uid, 3000000);
    assert.equal(f.gid, 4000000);
    const pax = await gnuTar(`${dir}/t`, `${dir}/p.tar`, ["--format=posix", "--owner=:3000000"]);
    assert.equal((await readAll(pax)).find((e) => e.name === "./f")!.uid, 3000000);
  });
});

Deno.test("keeps names as bytes and reads pax xattrs", async () => {
  const xattrs = new Map([["user.a", new Uint8Array([0, 1, 255])]]);
  const bytes = rawTar([{ name: "caf\xe9/\u00ff", data: "x", xattrs }]);
  const [e] = await readAll(bytes);
  assert.equal(e.name, "caf\xe9/\xff");
  assert.deepEqual(e.xattrs.get("user.a"), new Uint8Array([0, 1, 255]));
});

Deno.test("an archive that stops right after the last data (umoci 0.4 layers) ends there", async () => {
  const full = rawTar([{ name: "a", data: "12" }], false);
  const cut = full.subarray(0, 512 + 2);
  assert.deepEqual((await readAll(cut)).map((e) => e.data), ["12"]);
});

Deno.test("refuses a bad checksum, truncated data, sparse files, unknown types", async () => {
  const good = rawTar([{ name: "a", data: "hello" }]);
  const bad = good.slice();
  bad[10] ^= 1;
  await rejectsInput(readAll(bad), /bad checksum/);
  await rejectsInput(readAll(good.subarray(0, 514)), /truncated/);
  await rejectsInput(readAll(good.subarray(0, 300)), /truncated/);
  const odd = rawTar([{ name: "a", data: "x" }]);
  odd[156] = "Z".charCodeAt(0);
  let sum = 0;
  odd.fill(0x20, 148, 156);
  for (let i = 0; i < 512; i++) sum += odd[i];
  odd.set(new TextEncoder().encode(sum.toString(8).padStart(6, "0") + "\0 "), 148);
  await rejectsInput(readAll(odd), /unknown type "Z"/);
  await withTemp(async (dir) => {
    await run("/usr/bin/truncate", ["-s", "1M", `${dir}/sparse`]);
    Deno.writeTextFileSync(`${dir}/sparse`, "data", { append: true });
    for (const format of ["gnu", "posix"]) {
      await run("/usr/bin/tar", [
        "-c",
        "-S",
        `--format=${format}`,
        "-f",
        `${dir}/s.tar`,
        "-C",
        dir,
        "sparse",
      ]);
      await rejectsInput(readAll(Deno.readFileSync(`${dir}/s.tar`)), /sparse file, not supported/);
    }
  });
});

Deno.test("reads an archive from a file, seeking over data, with data offsets", async () => {
  await withTemp(async (dir) => {
    const bytes = rawTar([{ name: "a", data: "x".repeat(5000) }, { name: "b", data: "bee" }]);
    Deno.writeFileSync(`${dir}/t.tar`, bytes);
    using file = Deno.openSync(`${dir}/t.tar`);
    const tar = new TarReader({ file, size: bytes.length });
    const seen: [string, number][] = [];
    for (let e; (e = await tar.next());) seen.push([e.name, tar.dataOffset]);
    assert.deepEqual(seen, [["a", 512], ["b", 512 + 5120 + 512]]);
    assert.equal(new TextDecoder().decode(bytes.subarray(seen[1][1], seen[1][1] + 3)), "bee");
  });
});
