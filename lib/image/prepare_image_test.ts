import assert from "node:assert/strict";
import { UsageError, VmfactoryError } from "../errors.ts";
import { systemProgram } from "../system_program.ts";
import {
  configJson,
  digestOf,
  dumpErofs,
  erofsMode,
  gnuTar,
  namesIn,
  rawTar,
  readErofs,
  run,
  writeDockerSave,
  writeOciLayout,
  writeTree,
} from "./_testing.ts";
import { prepareImage, type PrepareImageOptions } from "./prepare_image.ts";

const asRoot = Deno.uid() === 0;
const zstd = systemProgram("zstd");
const umoci = systemProgram("umoci");
const skopeo = systemProgram("skopeo");
if (!zstd) {
  console.error("prepare_image_test: skipping the zstd layer test: /usr/bin/zstd is missing");
}
if (!umoci) console.error("prepare_image_test: skipping the umoci test: /usr/bin/umoci is missing");
if (!skopeo) {
  console.error("prepare_image_test: skipping the skopeo part: /usr/bin/skopeo is missing");
}

/** A temp folder for one test, removed after it. */
async function withTemp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = Deno.makeTempDirSync({ prefix: "vmf-image-" });
  try {
    await fn(dir);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

function opts(dir: string, more: Partial<PrepareImageOptions> = {}): PrepareImageOptions {
  return { cacheDir: `${dir}/cache`, ...more };
}

async function rejectsUsage(promise: Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof UsageError, `a UsageError, not ${err}`);
    assert.equal(err.exitCode, 2);
    assert.match(err.message, /^Cannot use image /);
    assert.match(err.message, pattern);
    return true;
  });
}

/** The cache holds exactly the given entries: no temp folder, no lock file. */
function assertCacheHolds(dir: string, digests: string[]): void {
  assert.deepEqual(namesIn(`${dir}/cache`), digests.map((d) => d.replace(":", "-")).sort());
}

const BIG = Array.from({ length: 100_000 }, (_, i) => `${i}\n`).join("");
const SAMPLE = {
  "etc/hostname": "box\n",
  "etc/os-release": "NAME=test\n",
  "bin/tool": { data: "#!/bin/sh\necho tool\n", mode: 0o4755 },
  "bin/sh": { symlink: "/bin/busybox" },
  "usr/lib/libx.so.1": "ELF-ish\n",
  "usr/lib/libx.so": { symlink: "libx.so.1" },
  "var/empty": { dir: true, mode: 0o700 },
  "tmp": { dir: true, mode: 0o1777 },
  "usr/share/big": BIG, // read in pieces bigger than the writer's buffer, between small files
  "usr/share/z": "after big\n",
} as const;

/** Checks the image holds {@link SAMPLE}. */
async function assertSample(image: string): Promise<void> {
  const tree = await readErofs(image);
  assert.equal(tree.get("etc/hostname")?.text, "box\n");
  assert.equal(await erofsMode(image, "/bin/tool"), 0o4755);
  assert.equal(tree.get("bin/sh")?.type, "l");
  assert.equal(tree.get("bin/sh")?.text, "/bin/busybox");
  assert.equal(tree.get("usr/lib/libx.so")?.text, "libx.so.1");
  assert.equal(tree.get("var/empty")?.mode, 0o700);
  assert.equal(await erofsMode(image, "/tmp"), 0o1777);
  assert.equal(tree.get("usr/lib/libx.so.1")?.text, "ELF-ish\n");
  assert.ok(tree.get("usr/share/big")?.text === BIG, "the big file is intact");
  assert.equal(tree.get("usr/share/z")?.text, "after big\n");
}

Deno.test("a rootfs folder becomes an erofs image; the second prepare is a cache hit", async () => {
  await withTemp(async (dir) => {
    writeTree(`${dir}/root`, SAMPLE);
    Deno.linkSync(`${dir}/root/etc/hostname`, `${dir}/root/etc/hostname.link`);
    if (asRoot) Deno.chownSync(`${dir}/root/etc/os-release`, 1234, 5678);
    const phases: string[] = [];
    const first = await prepareImage(
      `${dir}/root`,
      opts(dir, { onProgress: (p) => phases.push(p.phase) }),
    );
    assert.equal(first.cached, false);
    assert.equal(first.format, "erofs");
    assert.deepEqual(first.config, {});
    assert.match(first.digest, /^sha256:[0-9a-f]{64}$/);
    assert.equal(first.sizeBytes, Deno.statSync(first.path).size);
    assert.deepEqual(phases, ["scan", "convert"]);
    await assertSample(first.path);
    assert.match(await dumpErofs(first.path, "/etc/hostname"), /Links: 2/);
    if (asRoot) {
      assert.match(await dumpErofs(first.path, "/etc/os-release"), /Uid: 1234\s+Gid: 5678/);
    }
    const second = await prepareImage(`${dir}/root`, opts(dir));
    assert.equal(second.cached, true);
    assert.equal(second.path, first.path);
    assertCacheHolds(dir, [first.digest]);
    Deno.writeTextFileSync(`${dir}/root/etc/hostname`, "changed\n");
    const third = await prepareImage(`${dir}/root`, opts(dir));
    assert.equal(third.cached, false, "a changed folder is converted again");
    assert.equal((await readErofs(third.path)).get("etc/hostname")?.text, "changed\n");
  });
});

Deno.test("a plain rootfs tar (made by GNU tar) keeps modes, owners, links and devices", async () => {
  await withTemp(async (dir) => {
    writeTree(`${dir}/root`, SAMPLE);
    Deno.linkSync(`${dir}/root/etc/hostname`, `${dir}/root/etc/hostname.link`);
    await run("/usr/bin/mkfifo", [`${dir}/root/fifo`]);
    if (asRoot) {
      await run("/usr/bin/mknod", [`${dir}/root/null`, "c", "1", "3"]);
      Deno.chownSync(`${dir}/root/etc/os-release`, 1234, 5678);
    }
    const tar = await gnuTar(`${dir}/root`, `${dir}/rootfs.tar`);
    const image = await prepareImage(`${dir}/rootfs.tar`, opts(dir));
    assert.equal(image.digest, await digestOf(tar), "a rootfs tar is keyed by its own digest");
    assert.deepEqual(image.config, {});
    await assertSample(image.path);
    const tree = await readErofs(image.path);
    assert.equal(tree.get("fifo")?.type, "p");
    assert.equal(tree.get("etc/hostname.link")?.text, "box\n");
    assert.match(await dumpErofs(image.path, "/etc/hostname.link"), /Links: 2/);
    if (asRoot) {
      assert.equal(tree.get("null")?.type, "c");
      assert.equal(tree.get("etc/os-release")?.uid, 1234);
      assert.equal(tree.get("etc/os-release")?.gid, 5678);
    }
    assert.equal((await prepareImage(`${dir}/rootfs.tar`, opts(dir))).cached, true);
    assertCacheHolds(dir, [image.digest]);
  });
});

Deno.test("long and non-UTF-8 names, user.* and (as root) security.capability xattrs are kept", async () => {
  await withTemp(async (dir) => {
    const long = `${"d".repeat(120)}/${"f".repeat(200)}`;
    const latin1 = "caf\xe9"; // the byte 0xe9 alone: not UTF-8
    const xattrs = new Map([
      ["user.vmf", new TextEncoder().encode("yes")],
      [
        "security.capability",
        new Uint8Array([1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
      ],
      ["trusted.overlay.opaque", new TextEncoder().encode("y")],
    ]);
    Deno.writeFileSync(
      `${dir}/x.tar`,
      rawTar([
        { name: long, data: "deep\n" },
        { name: latin1, data: "bytes\n" },
        { name: "ping", data: "x", mode: 0o755, xattrs },
        { name: "hard", type: "link", linkname: long },
      ]),
    );
    const image = await prepareImage(`${dir}/x.tar`, opts(dir));
    const tree = await readErofs(image.path);
    assert.equal(tree.get(long)?.text, "deep\n");
    assert.equal(tree.get("hard")?.text, "deep\n");
    assert.ok(tree.has("caf\ufffd"), [...tree.keys()].join(","));
    const raw = await new Deno.Command("/usr/bin/dump.erofs", {
      args: ["--ls", "--path=/", image.path],
    })
      .output();
    const listing = new TextDecoder("latin1").decode(raw.stdout);
    assert.ok(listing.includes("caf\xe9"), "the name's bytes are kept");
    // erofs inline xattrs: a 12-byte header, then per xattr 4 bytes + name suffix + value, to 4:
    // user.vmf 12, security.capability 36 (kept as root only), trusted.* never
    const size = asRoot ? 12 + 12 + 36 : 12 + 12;
    assert.match(await dumpErofs(image.path, "/ping"), new RegExp(`Xattr size: ${size}\\b`));
  });
});

Deno.test("docker save archives (before and since Docker 25): layers, whiteouts, run settings", async () => {
  await withTemp(async (dir) => {
    writeTree(`${dir}/l1`, {
      "etc/keep": "1\n",
      "etc/gone": "1\n",
      "opt/old/a": "1\n",
      "opt/old/b": "1\n",
      "srv/data/x": "1\n",
      "bin/sh": { symlink: "busybox" },
    });
    writeTree(`${dir}/l2`, {
      "etc/.wh.gone": "",
      "etc/new": "2\n",
      "opt/old/.wh..wh..opq": "",
      "opt/old/c": "2\n",
      ".wh.srv": "",
      "etc/keep": "2\n",
    });
    const layers = [
      { tar: await gnuTar(`${dir}/l1`, `${dir}/l1.tar`) },
      { tar: await gnuTar(`${dir}/l2`, `${dir}/l2.tar`) },
    ];
    writeTree(`${dir}/l3`, { "extra/x": "3\n" });
    const l3 = await gnuTar(`${dir}/l3`, `${dir}/l3.tar`);
    layers.push({ tar: l3 }, { tar: l3 }); // listed twice: a symbolic link in the older format
    const config = {
      Env: ["PATH=/usr/bin:/bin", "GREETING=hello world"],
      WorkingDir: "/srv/app",
      User: "1000:1000",
      Entrypoint: ["/bin/sh", "-c"],
      Cmd: ["echo hi"],
    };
    for (const oci of [false, true]) {
      const archive = `${dir}/img-${oci}.tar`;
      const id = await writeDockerSave(archive, { layers, config, oci });
      const cache = { cacheDir: `${dir}/cache-${oci}` };
      const image = await prepareImage(archive, cache);
      assert.equal(image.cached, false);
      assert.equal(image.digest, id, "keyed by docker's image id (the config digest)");
      assert.deepEqual(image.config, {
        env: ["PATH=/usr/bin:/bin", "GREETING=hello world"],
        workingDir: "/srv/app",
        user: "1000:1000",
        entrypoint: ["/bin/sh", "-c"],
        cmd: ["echo hi"],
      });
      const tree = await readErofs(image.path);
      assert.equal(tree.get("etc/keep")?.text, "2\n");
      assert.equal(tree.get("etc/new")?.text, "2\n");
      assert.equal(tree.has("etc/gone"), false);
      assert.equal(tree.has("etc/.wh.gone"), false);
      assert.deepEqual([...tree.keys()].filter((k) => k.startsWith("opt/old/")), ["opt/old/c"]);
      assert.equal(tree.has("srv"), false);
      assert.equal(tree.get("bin/sh")?.text, "busybox");
      assert.equal(tree.get("extra/x")?.text, "3\n");
      assert.equal((await prepareImage(archive, cache)).cached, true);
    }
  });
});

Deno.test("a hand-written OCI layout: tags, gzip and plain layers, a multi-arch index", async () => {
  await withTemp(async (dir) => {
    const l1 = rawTar([{ name: "etc/" }, { name: "etc/a", data: "a1\n" }, {
      name: "etc/b",
      data: "b1\n",
    }]);
    const l2 = rawTar([{ name: "etc/.wh.a", data: "" }, { name: "etc/c", data: "c2\n" }]);
    const layout = await writeOciLayout(`${dir}/oci`, {
      layers: [{ tar: l1 }, { tar: l2, compression: "none" }],
      config: { Env: ["A=1"], Cmd: ["/bin/true"] },
      tags: ["latest", "v1"],
      multiArch: true,
    });
    const image = await prepareImage(`oci:${dir}/oci`, opts(dir));
    assert.equal(image.digest, layout.manifest, "the amd64 manifest's digest");
    assert.deepEqual(image.config, { env: ["A=1"], cmd: ["/bin/true"] });
    const tree = await readErofs(image.path);
    assert.deepEqual([...tree.keys()], ["etc", "etc/b", "etc/c"]);
    const tagged = await prepareImage(`oci:${dir}/oci:v1`, opts(dir));
    assert.equal(tagged.cached, true);
    assert.equal(tagged.path, image.path);
  });
});

Deno.test({
  name: "a zstd layer is read through /usr/bin/zstd (skipped without zstd)",
  ignore: !zstd,
}, async () => {
  await withTemp(async (dir) => {
    const tar = rawTar([{ name: "z", data: "zstd\n" }]);
    await writeOciLayout(`${dir}/oci`, { layers: [{ tar, compression: "zstd" }] });
    const image = await prepareImage(`oci:${dir}/oci`, opts(dir));
    assert.equal((await readErofs(image.path)).get("z")?.text, "zstd\n");
  });
});

Deno.test({
  name:
    "an OCI layout made by umoci (init, new, insert, whiteout, config), copied by skopeo (skipped without umoci)",
  ignore: !umoci,
}, async () => {
  await withTemp(async (dir) => {
    writeTree(`${dir}/src`, { "bin/hi": "hello\n", "etc/old/x": "x\n", "etc/keep": "k\n" });
    const image = `${dir}/layout:1.0`;
    await run(umoci!, ["init", "--layout", `${dir}/layout`]);
    await run(umoci!, ["new", "--image", image]);
    await run(umoci!, ["insert", "--image", image, `${dir}/src`, "/"]);
    await run(umoci!, ["insert", "--image", image, "--whiteout", "/etc/old"]);
    await run(umoci!, [
      "config",
      "--image",
      image,
      "--config.env=FOO=bar",
      "--config.workingdir=/srv",
      "--config.user=1000:1000",
      "--config.entrypoint=/bin/sh",
      "--config.cmd=-c",
      "--config.cmd=echo hi",
    ]);
    const prepared = await prepareImage(`oci:${image}`, opts(dir));
    const { env, ...rest } = prepared.config;
    assert.ok(env?.includes("FOO=bar"), String(env));
    assert.deepEqual(rest, {
      workingDir: "/srv",
      user: "1000:1000",
      entrypoint: ["/bin/sh"],
      cmd: ["-c", "echo hi"],
    });
    const tree = await readErofs(prepared.path);
    assert.equal(tree.get("bin/hi")?.text, "hello\n");
    assert.equal(tree.get("etc/keep")?.text, "k\n");
    assert.equal(tree.has("etc/old"), false);
    if (skopeo) { // skopeo's docker-archive and a zstd re-compression of the same image
      await run(skopeo, ["copy", `oci:${image}`, `docker-archive:${dir}/saved.tar:test:1.0`]);
      const saved = await prepareImage(`${dir}/saved.tar`, opts(dir));
      assert.deepEqual(saved.config, prepared.config);
      assert.deepEqual(await readErofs(saved.path), tree);
      if (zstd) {
        const zstdLayout = `${dir}/zstd:z`;
        await run(skopeo, [
          "copy",
          "--dest-compress-format",
          "zstd",
          `oci:${image}`,
          `oci:${zstdLayout}`,
        ]);
        assert.deepEqual(
          await readErofs((await prepareImage(`oci:${zstdLayout}`, opts(dir))).path),
          tree,
        );
      }
    }
    // no tag given, no "latest": the layout's only image (as skopeo does)
    assert.equal((await prepareImage(`oci:${dir}/layout`, opts(dir))).path, prepared.path);
    await rejectsUsage(
      prepareImage(`oci:${dir}/layout:2.0`, opts(dir)),
      /no tag "2\.0" \(tags: "1\.0"\)/,
    );
  });
});

Deno.test("bad input: each case is a UsageError and leaves nothing in the cache", async () => {
  await withTemp(async (dir) => {
    await rejectsUsage(prepareImage(`${dir}/missing`, opts(dir)), /does not exist/);
    await rejectsUsage(prepareImage(`oci:${dir}/missing:v1`, opts(dir)), /does not exist/);
    Deno.mkdirSync(`${dir}/notoci`);
    await rejectsUsage(prepareImage(`oci:${dir}/notoci`, opts(dir)), /is not an OCI image layout/);

    const tar = rawTar([{ name: "a", data: "a\n" }]);
    const layout = await writeOciLayout(`${dir}/oci`, { layers: [{ tar }], tags: ["v1", "v2"] });
    await rejectsUsage(
      prepareImage(`oci:${dir}/oci:v3`, opts(dir)),
      /no tag "v3" \(tags: "v1", "v2"\)/,
    );
    await rejectsUsage(
      prepareImage(`oci:${dir}/oci`, opts(dir)),
      /no tag "latest" \(tags: "v1", "v2"\)/,
    );

    const blob = `${dir}/oci/blobs/sha256/${layout.layers[0].slice(7)}`;
    const bytes = Deno.readFileSync(blob);
    bytes[bytes.length - 9] ^= 0xff; // the gzip CRC: the tar still reads, the digest does not match
    Deno.writeFileSync(blob, bytes);
    await rejectsUsage(
      prepareImage(`oci:${dir}/oci:v1`, opts(dir)),
      /layer 1 .* has the digest sha256:[0-9a-f]{64}, not sha256:/,
    );
    bytes.fill(7, 20, 60); // the compressed data itself: unreadable, and the digest is what is said
    Deno.writeFileSync(blob, bytes);
    await rejectsUsage(prepareImage(`oci:${dir}/oci:v1`, opts(dir)), /has the digest/);

    const badGzip = new Uint8Array(300).fill(9);
    badGzip.set([0x1f, 0x8b, 8, 0]);
    await writeOciLayout(`${dir}/badgz`, { layers: [{ tar: badGzip, compression: "none" }] });
    await rejectsUsage(
      prepareImage(`oci:${dir}/badgz`, opts(dir)),
      /layer 1 \(sha256:.*\): cannot decompress it/,
    );
    Deno.writeFileSync(
      `${dir}/trunc.tar`,
      rawTar([{ name: "a", data: "x".repeat(2000) }]).subarray(0, 1000),
    );
    await rejectsUsage(
      prepareImage(`${dir}/trunc.tar`, opts(dir)),
      /: the tar archive is truncated$/,
    );

    await writeOciLayout(`${dir}/arm`, { layers: [{ tar }], arch: "arm64" });
    await rejectsUsage(
      prepareImage(`oci:${dir}/arm`, opts(dir)),
      /is for linux\/arm64, not linux\/amd64/,
    );
    const two = [{ Config: "a.json", RepoTags: ["a:1"], Layers: [] }, {
      Config: "b.json",
      RepoTags: null,
      Layers: [],
    }];
    Deno.writeFileSync(
      `${dir}/two.tar`,
      rawTar([{ name: "manifest.json", data: JSON.stringify(two) }]),
    );
    await rejectsUsage(
      prepareImage(`${dir}/two.tar`, opts(dir)),
      /holds 2 images \("a:1", "\(untagged\)"\); save one/,
    );

    Deno.writeFileSync(`${dir}/junk.tar`, new Uint8Array(4096).fill(65));
    await rejectsUsage(
      prepareImage(`${dir}/junk.tar`, opts(dir)),
      /neither a rootfs tar nor a docker save archive/,
    );
    Deno.writeFileSync(`${dir}/gz.tar`, new Uint8Array([0x1f, 0x8b, 8, 0, 0, 0]));
    await rejectsUsage(prepareImage(`${dir}/gz.tar`, opts(dir)), /compressed/);

    Deno.writeFileSync(`${dir}/big.tar`, rawTar([{ name: "big", data: "x".repeat(3 << 20) }]));
    await rejectsUsage(
      prepareImage(`${dir}/big.tar`, opts(dir, { maxBytes: 1 << 20 })),
      /more than 1 MiB, the size limit/,
    );
    writeTree(`${dir}/bigdir`, { "big": "x".repeat(3 << 20) });
    await rejectsUsage(
      prepareImage(`${dir}/bigdir`, opts(dir, { maxBytes: 1 << 20 })),
      /the size limit/,
    );

    const config = configJson({ WorkingDir: "relative" }, [await digestOf(tar)]);
    await writeOciLayout(`${dir}/oci2`, { layers: [{ tar }] });
    const index = JSON.parse(Deno.readTextFileSync(`${dir}/oci2/index.json`));
    const manifestPath = `${dir}/oci2/blobs/sha256/${index.manifests[0].digest.slice(7)}`;
    const manifest = JSON.parse(Deno.readTextFileSync(manifestPath));
    const configDigest = await digestOf(config);
    Deno.writeFileSync(`${dir}/oci2/blobs/sha256/${configDigest.slice(7)}`, config);
    manifest.config = { ...manifest.config, digest: configDigest, size: config.length };
    const manifestBytes = new TextEncoder().encode(JSON.stringify(manifest));
    const manifestDigest = await digestOf(manifestBytes);
    Deno.writeFileSync(`${dir}/oci2/blobs/sha256/${manifestDigest.slice(7)}`, manifestBytes);
    index.manifests[0] = {
      ...index.manifests[0],
      digest: manifestDigest,
      size: manifestBytes.length,
    };
    Deno.writeTextFileSync(`${dir}/oci2/index.json`, JSON.stringify(index));
    await rejectsUsage(
      prepareImage(`oci:${dir}/oci2`, opts(dir)),
      /WorkingDir is not an absolute path/,
    );

    assertCacheHolds(dir, []);
  });
});

Deno.test("hostile tars: .. refused, absolute names kept inside, no write through a symlink", async () => {
  await withTemp(async (dir) => {
    const target = `${dir}/outside`;
    Deno.mkdirSync(target);
    const cases: [string, Uint8Array, RegExp][] = [
      ["dotdot", rawTar([{ name: "a/../../escape", data: "x" }]), /has a "\.\." component/],
      [
        "symlink",
        rawTar([{ name: "link", type: "symlink", linkname: target }, {
          name: "link/owned",
          data: "x",
        }]),
        /lies below the symbolic link link/,
      ],
      [
        "relsymlink",
        rawTar([{ name: "up", type: "symlink", linkname: "../../.." }, {
          name: "up/tmp/owned",
          data: "x",
        }]),
        /lies below the symbolic link up/,
      ],
      [
        "hardlink",
        rawTar([{ name: "h", type: "link", linkname: "../../etc/passwd" }]),
        /has a "\.\." component/,
      ],
      [
        "hardlink-outside",
        rawTar([{ name: "h", type: "link", linkname: "/etc/passwd" }]),
        /names \/etc\/passwd, which is not in the image/,
      ],
      [
        "file-parent",
        rawTar([{ name: "f", data: "x" }, { name: "f/x", data: "y" }]),
        /lies below the file f/,
      ],
    ];
    for (const [name, bytes, pattern] of cases) {
      Deno.writeFileSync(`${dir}/${name}.tar`, bytes);
      await rejectsUsage(prepareImage(`${dir}/${name}.tar`, opts(dir)), pattern);
    }
    assert.deepEqual(namesIn(target), []);
    assertCacheHolds(dir, []);
    Deno.writeFileSync(
      `${dir}/abs.tar`,
      rawTar([{ name: `/${target.slice(1)}/abs`, data: "inside\n" }, {
        name: "/etc/passwd",
        data: "mine\n",
      }]),
    );
    const image = await prepareImage(`${dir}/abs.tar`, opts(dir));
    const tree = await readErofs(image.path);
    assert.equal(tree.get(`${target.slice(1)}/abs`)?.text, "inside\n");
    assert.equal(tree.get("etc/passwd")?.text, "mine\n");
    assert.deepEqual(namesIn(target), []);
    assert.notEqual(Deno.readTextFileSync("/etc/passwd"), "mine\n");
  });
});

Deno.test("concurrent prepares of one image: one converts, the others find it", async () => {
  await withTemp(async (dir) => {
    writeTree(`${dir}/root`, SAMPLE);
    await gnuTar(`${dir}/root`, `${dir}/rootfs.tar`);
    const results = await Promise.all(
      [1, 2, 3].map(() => prepareImage(`${dir}/rootfs.tar`, opts(dir))),
    );
    assert.deepEqual(results.map((r) => r.cached).sort(), [false, true, true]);
    assert.equal(new Set(results.map((r) => r.path)).size, 1);
    assertCacheHolds(dir, [results[0].digest]);
  });
});

Deno.test("an abort mid-conversion leaves nothing; a dead build's temp folder is removed later", async () => {
  await withTemp(async (dir) => {
    Deno.writeFileSync(`${dir}/x.tar`, rawTar([{ name: "big", data: "x".repeat(1 << 20) }]));
    const controller = new AbortController();
    const aborted = prepareImage(
      `${dir}/x.tar`,
      opts(dir, {
        signal: controller.signal,
        onProgress: (p) => p.phase === "unpack" && controller.abort(),
      }),
    );
    await assert.rejects(aborted, (err: unknown) => {
      assert.ok(err instanceof VmfactoryError && !(err instanceof UsageError));
      assert.match(err.message, /^Cannot use image .*: interrupted$/);
      return true;
    });
    assertCacheHolds(dir, []);
    const stale = `${dir}/cache/.tmp-999999999-1-0123abcd`;
    Deno.mkdirSync(`${stale}/rootfs/ro`, { recursive: true });
    Deno.chmodSync(`${stale}/rootfs/ro`, 0o555);
    const image = await prepareImage(`${dir}/x.tar`, opts(dir));
    assertCacheHolds(dir, [image.digest]);
  });
});

Deno.test("a build killed mid-way leaves a temp folder that the next build removes", async () => {
  await withTemp(async (dir) => {
    const files = Array.from(
      { length: 40 },
      (_, i) => ({ name: `f${i}`, data: `${i}`.repeat(1 << 19) }),
    );
    Deno.writeFileSync(`${dir}/x.tar`, rawTar(files));
    const module = new URL("./prepare_image.ts", import.meta.url).href;
    const code = `import { prepareImage } from ${JSON.stringify(module)};
      await prepareImage(${JSON.stringify(`${dir}/x.tar`)}, { cacheDir: ${
      JSON.stringify(`${dir}/cache`)
    } });`;
    const child = new Deno.Command(Deno.execPath(), {
      args: ["eval", code],
      stdout: "null",
      stderr: "null",
    }).spawn();
    const temps = () => namesIn(`${dir}/cache`).filter((n) => n.startsWith(".tmp-"));
    for (let i = 0; i < 3000 && !temps().length; i++) await new Promise((r) => setTimeout(r, 5));
    child.kill("SIGKILL");
    await child.status;
    assert.equal(temps().length, 1, "the killed build left its temp folder");
    const image = await prepareImage(`${dir}/x.tar`, opts(dir));
    assert.equal(image.cached, false);
    assertCacheHolds(dir, [image.digest]);
  });
});
