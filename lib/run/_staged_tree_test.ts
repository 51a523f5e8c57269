import assert from "node:assert/strict";
import {
  checkStagedTree,
  linkStaysInside,
  placeTree,
  RefusedArchiveError,
} from "./_staged_tree.ts";

Deno.test("linkStaysInside: relative targets that do not climb above the top", () => {
  assert.equal(linkStaysInside(0, "lib.so.1"), true);
  assert.equal(linkStaysInside(0, "./a/b"), true);
  assert.equal(linkStaysInside(1, "../b"), true);
  assert.equal(linkStaysInside(1, "a/../../b"), true);
  assert.equal(linkStaysInside(0, "../b"), false);
  assert.equal(linkStaysInside(0, "a/../../b"), false);
  assert.equal(linkStaysInside(2, "/etc/passwd"), false);
  assert.equal(linkStaysInside(2, ""), false);
});

Deno.test("checkStagedTree refuses links out, devices and FIFOs, clears set-id bits", async () => {
  const dir = await Deno.makeTempDir();
  try {
    Deno.mkdirSync(`${dir}/ok/sub`, { recursive: true });
    Deno.writeTextFileSync(`${dir}/ok/sub/run`, "x");
    Deno.chmodSync(`${dir}/ok/sub/run`, 0o4755);
    Deno.symlinkSync("../sub/run", `${dir}/ok/sub/link`);
    assert.equal(checkStagedTree(`${dir}/ok`, "copy"), 3);
    assert.equal(Deno.statSync(`${dir}/ok/sub/run`).mode! & 0o7777, 0o755);

    Deno.mkdirSync(`${dir}/out/a`, { recursive: true });
    Deno.symlinkSync("../../x", `${dir}/out/a/up`);
    assert.throws(
      () => checkStagedTree(`${dir}/out`, "copy"),
      (err) =>
        err instanceof RefusedArchiveError &&
        err.message === `Cannot copy: the guest's archive holds "a/up" -> "../../x", ` +
            "a symbolic link that points outside the destination (refused)",
    );
    Deno.mkdirSync(`${dir}/abs`);
    Deno.symlinkSync("/etc", `${dir}/abs/etc`);
    assert.throws(() => checkStagedTree(`${dir}/abs`, "copy"), /"etc" -> "\/etc"/);

    Deno.mkdirSync(`${dir}/fifo`);
    const mkfifo = await new Deno.Command("/usr/bin/mkfifo", { args: [`${dir}/fifo/p`] }).output();
    assert.ok(mkfifo.success);
    assert.throws(() => checkStagedTree(`${dir}/fifo`, "copy"), /"p", neither a file/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("placeTree renames, merges folders, replaces files, refuses folder/file swaps", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const write = (path: string, text: string) => {
      Deno.mkdirSync(`${dir}/${path}`.replace(/\/[^/]+$/, ""), { recursive: true });
      Deno.writeTextFileSync(`${dir}/${path}`, text);
    };
    write("stage/d/new.txt", "new");
    write("stage/d/same.txt", "staged");
    write("dst/d/same.txt", "old");
    write("dst/d/kept.txt", "kept");
    Deno.chmodSync(`${dir}/dst/d`, 0o750);
    Deno.symlinkSync("/etc/hostname", `${dir}/dst/d/link`);
    write("stage/d/link", "replaces the link, not its target");
    placeTree(`${dir}/stage/d`, `${dir}/dst/d`, "copy");
    const read = (p: string) => Deno.readTextFileSync(`${dir}/dst/d/${p}`);
    assert.deepEqual([read("new.txt"), read("same.txt"), read("kept.txt")], [
      "new",
      "staged",
      "kept",
    ]);
    assert.equal(Deno.lstatSync(`${dir}/dst/d/link`).isFile, true);
    assert.equal(Deno.statSync(`${dir}/dst/d`).mode! & 0o777, 0o750, "the existing folder's mode");

    write("stage/f", "file");
    placeTree(`${dir}/stage/f`, `${dir}/dst/fresh`, "copy");
    assert.equal(Deno.readTextFileSync(`${dir}/dst/fresh`), "file");

    write("stage/x", "file");
    assert.throws(() => placeTree(`${dir}/stage/x`, `${dir}/dst/d`, "copy"), /replace the folder/);
    Deno.mkdirSync(`${dir}/stage/y`);
    assert.throws(() => placeTree(`${dir}/stage/y`, `${dir}/dst/fresh`, "copy"), /with a folder/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
