import assert from "node:assert/strict";
import { UsageError } from "../errors.ts";
import { type PathKind, planCopy, readCopyPath } from "./_copy_plan.ts";

Deno.test("readCopyPath resolves names and reads docker cp's `/.` and trailing `/`", () => {
  assert.deepEqual(readCopyPath("src/.", "/home/me"), {
    path: "/home/me/src",
    contents: true,
    folder: true,
  });
  assert.deepEqual(readCopyPath(".", "/home/me"), {
    path: "/home/me",
    contents: true,
    folder: true,
  });
  assert.deepEqual(readCopyPath("/a//b/../c/", "/x"), {
    path: "/a/c",
    contents: false,
    folder: true,
  });
  assert.deepEqual(readCopyPath("/../../etc", "/x"), {
    path: "/etc",
    contents: false,
    folder: false,
  });
  assert.deepEqual(readCopyPath("/", "/x"), { path: "/", contents: false, folder: true });
});

const plan = (
  src: string,
  kind: "folder" | "file",
  dst: string,
  dstKind: PathKind,
  parent = true,
) =>
  planCopy("copy", { at: readCopyPath(src, "/h"), kind }, {
    at: readCopyPath(dst, "/g"),
    kind: dstKind,
    parentIsFolder: parent,
  });

Deno.test("planCopy follows docker cp: files", () => {
  // into an existing folder: keeps its name
  assert.deepEqual(plan("a.txt", "file", "/srv", "folder"), {
    into: "/srv",
    how: "entry",
    name: "a.txt",
  });
  // onto a file: replaces it; to a new name: takes it
  assert.deepEqual(plan("a.txt", "file", "/srv/b", "file"), {
    into: "/srv",
    how: "entry",
    name: "b",
  });
  assert.deepEqual(plan("a.txt", "file", "/srv/new", "missing"), {
    into: "/srv",
    how: "entry",
    name: "new",
  });
  assert.throws(() => plan("a.txt", "file", "/srv/new/", "missing"), /folder \/srv\/new does not/);
  assert.throws(() => plan("a.txt", "file", "/no/new", "missing", false), /folder \/no does not/);
  assert.throws(() => plan("a.txt", "file", "/srv/b/", "file"), /\/srv\/b is not a folder/);
  assert.throws(() => plan("a.txt/", "file", "/srv", "folder"), /\/h\/a.txt is not a folder/);
});

Deno.test("planCopy follows docker cp: folders and their content", () => {
  // into an existing folder: a folder of its name there; to a new name: becomes it
  assert.deepEqual(plan("dir", "folder", "/srv", "folder"), {
    into: "/srv",
    how: "entry",
    name: "dir",
  });
  assert.deepEqual(plan("dir", "folder", "/srv/new", "missing"), {
    into: "/srv",
    how: "entry",
    name: "new",
  });
  // `/.`: the content, merged into an existing folder, or a new folder made of it
  assert.deepEqual(plan("dir/.", "folder", "/srv", "folder"), {
    into: "/srv",
    how: "contents",
    name: "",
  });
  assert.deepEqual(plan("dir/.", "folder", "/srv/new", "missing"), {
    into: "/srv",
    how: "entry",
    name: "new",
  });
  assert.throws(
    () => plan("dir", "folder", "/srv/f", "file"),
    (err) =>
      err instanceof UsageError && /cannot copy a folder onto the file \/srv\/f/.test(err.message),
  );
  assert.throws(() => plan("/", "folder", "/srv", "folder"), /root's content/);
  assert.deepEqual(plan("/.", "folder", "/srv", "folder").how, "contents");
});
