import assert from "node:assert/strict";
import { ImageInputError } from "./_image_input_error.ts";
import { LayerTree } from "./_layer_tree.ts";
import type { TarEntry, TarEntryType } from "./_tar_reader.ts";

function entry(name: string, type: TarEntryType = "file", more: Partial<TarEntry> = {}): TarEntry {
  return {
    name,
    type,
    mode: 0o644,
    uid: 0,
    gid: 0,
    mtime: 0,
    size: type === "file" ? 1 : 0,
    linkname: "",
    devmajor: 0,
    devminor: 0,
    xattrs: new Map(),
    ...more,
  };
}

/** Applies `layers` (lists of names or entries) and returns the paths of the plan, with kinds. */
function apply(layers: (string | TarEntry)[][]): { paths: string[]; tree: LayerTree } {
  const tree = new LayerTree();
  layers.forEach((members, layer) =>
    members.forEach((m, i) => {
      const e = typeof m === "string" ? entry(m, m.endsWith("/") ? "dir" : "file") : m;
      tree.add(e, layer, i);
    })
  );
  const plan = tree.plan();
  const files = [...plan.files.values()].flatMap((f) =>
    f.paths.map((p) => `${p} (${f.inode.layer})`)
  );
  const others = plan.headers.map((
    h,
  ) => (h.type === "dir" ? `${h.name}/` : `${h.name} -> ${h.linkname}`));
  return { paths: [...others, ...files].sort(), tree };
}

Deno.test("a later layer replaces files, merges folders, and a file and a folder replace each other", () => {
  const { paths } = apply([
    ["etc/", "etc/a", "etc/b", "x/", "x/inner", "y"],
    ["etc/a", "x", "y/", "y/inner"],
  ]);
  assert.deepEqual(paths, ["./", "etc/", "etc/a (1)", "etc/b (0)", "x (1)", "y/", "y/inner (1)"]);
});

Deno.test("whiteouts delete lower layers' entries only; opaque folders empty of lower content", () => {
  const { paths } = apply([
    ["a/x", "a/y", "b/z", "c/old", "c/sub/deep", "d/keep"],
    [
      "a/.wh.x",
      ".wh.b",
      "c/.wh..wh..opq",
      "c/new",
      "c/sub/newdeep",
      "d/.wh.keep-not-there",
      "same",
      ".wh.same",
    ],
  ]);
  assert.deepEqual(paths, [
    "./",
    "a/",
    "a/y (0)",
    "c/",
    "c/new (1)",
    "c/sub/",
    "c/sub/newdeep (1)",
    "d/",
    "d/keep (0)",
    "same (1)",
  ]);
});

Deno.test("a whiteout of a folder re-made in the same layer keeps only that layer's content", () => {
  const { paths } = apply([["a/old"], ["a/", "a/new", ".wh.a"]]);
  assert.deepEqual(paths, ["./", "a/", "a/new (1)"]);
});

Deno.test("hard links share the inode; a link keeps the data when its target is replaced", () => {
  const tree = new LayerTree();
  tree.add(entry("bin/busybox", "file", { size: 10 }), 0, 0);
  tree.add(entry("bin/sh", "link", { linkname: "bin/busybox" }), 0, 1);
  tree.add(entry("bin/ls", "link", { linkname: "/bin/busybox" }), 0, 2);
  tree.add(entry("bin/busybox", "file", { size: 20 }), 1, 0);
  const files = [...tree.plan().files.entries()].map(([k, f]) => [k, f.paths, f.inode.size]).sort();
  assert.deepEqual(files, [["0:0", ["bin/ls", "bin/sh"], 10], ["1:0", ["bin/busybox"], 20]]);
});

Deno.test("hostile entries: .., below a link or a file, bad hard links are refused", () => {
  const refuse = (layers: TarEntry[][], pattern: RegExp) =>
    assert.throws(
      () => apply(layers),
      (err: unknown) => err instanceof ImageInputError && pattern.test(err.message),
    );
  refuse([[entry("../x")]], /"\.\." component/);
  refuse([[entry("a/../../x")]], /"\.\." component/);
  refuse(
    [[entry("l", "symlink", { linkname: "/" })], [entry("l/etc/passwd")]],
    /below the symbolic link l/,
  );
  refuse([[entry("f")], [entry("f/x")]], /below the file f/);
  refuse([[entry("h", "link", { linkname: "nowhere" })]], /not in the image before it/);
  refuse([[entry("d", "dir"), entry("h", "link", { linkname: "d" })]], /which is a folder/);
  refuse([[entry("h", "link", { linkname: "../../etc/shadow" })]], /"\.\." component/);
  refuse([[entry("", "file")]], /root is not a folder/);
  assert.deepEqual(apply([[entry("/abs/x"), entry("./rel//y")]]).paths, [
    "./",
    "abs/",
    "abs/x (0)",
    "rel/",
    "rel/y (0)",
  ]);
});

Deno.test("the root entry sets the root's metadata; the entry count is capped", () => {
  const tree = new LayerTree(3);
  tree.add(entry("./", "dir", { mode: 0o700, uid: 5 }), 0, 0);
  assert.deepEqual(
    [tree.plan().headers[0].name, tree.plan().headers[0].mode, tree.plan().headers[0].uid],
    [".", 0o700, 5],
  );
  tree.add(entry("a"), 0, 1);
  tree.add(entry("b"), 0, 2);
  assert.throws(() => tree.add(entry("c"), 0, 3), /more than 3 entries/);
  assert.throws(
    () => new LayerTree(3).add(entry("a/b/c/d"), 0, 0),
    /more than 3 entries/,
    "folders made count",
  );
  const xattrs = new Map([["user.x", new Uint8Array(60 << 10)]]);
  const many = new LayerTree();
  assert.throws(() => {
    for (let i = 0; i < 300; i++) many.add(entry(`f${i}`, "file", { xattrs }), 0, i);
  }, /more than 16 MiB of xattrs/);
});
