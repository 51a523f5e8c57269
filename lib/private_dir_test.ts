import assert from "node:assert/strict";
import {
  ensurePrivateDir,
  existingPrivateDir,
  isSystemPath,
  normalizePath,
  PrivateDirError,
} from "./private_dir.ts";
import { UsageError } from "./errors.ts";

/** A uid that is neither root nor this process's. */
const OTHER_UID = 54321;
const isRoot = Deno.uid() === 0;

function modeOf(path: string): number {
  return Deno.lstatSync(path).mode! & 0o7777;
}

async function withTemp(fn: (dir: string) => void | Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "vmf-private-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function refuses(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof PrivateDirError, String(err));
    assert.ok(err instanceof UsageError && err.exitCode === 2);
    assert.match(err.message, /^Cannot use the /);
    assert.match(err.message, pattern);
    return true;
  });
}

Deno.test("ensurePrivateDir creates every missing folder 0700 and accepts its own", async () => {
  await withTemp((dir) => {
    const path = `${dir}/a b,c'd/e`;
    assert.equal(ensurePrivateDir(path), path);
    assert.equal(modeOf(`${dir}/a b,c'd`), 0o700);
    assert.equal(modeOf(path), 0o700);
    assert.equal(Deno.lstatSync(path).uid, Deno.uid());
    ensurePrivateDir(path); // idempotent
    Deno.chmodSync(path, 0o755); // readable by others is the user's choice
    assert.equal(existingPrivateDir(path), true);
    assert.equal(existingPrivateDir(`${dir}/missing/x`), false, "missing: false, nothing made");
    assert.throws(() => Deno.lstatSync(`${dir}/missing`), Deno.errors.NotFound);
  });
});

Deno.test("a symbolic link, a file or a folder writable by others is refused", async () => {
  await withTemp((dir) => {
    Deno.mkdirSync(`${dir}/real`, { mode: 0o700 });
    Deno.symlinkSync(`${dir}/real`, `${dir}/link`);
    refuses(() => ensurePrivateDir(`${dir}/link`, { what: "state directory" }), /symbolic link/);
    refuses(() => existingPrivateDir(`${dir}/link`), /state|symbolic link/);
    Deno.writeTextFileSync(`${dir}/file`, "");
    refuses(() => ensurePrivateDir(`${dir}/file`), /not a folder/);
    refuses(() => ensurePrivateDir(`${dir}/file/sub`), /file is not a folder/);
    for (const mode of [0o770, 0o707, 0o1777]) {
      Deno.chmodSync(`${dir}/real`, mode);
      refuses(() => ensurePrivateDir(`${dir}/real`), /writable by other users \(mode \d+\)/);
    }
  });
});

Deno.test("a folder above that others may write (not sticky) or that is another's is refused", {
  ignore: !isRoot,
}, async () => {
  await withTemp((dir) => {
    Deno.mkdirSync(`${dir}/open`, { mode: 0o700 });
    Deno.chmodSync(`${dir}/open`, 0o777);
    refuses(() => ensurePrivateDir(`${dir}/open/state`), /writable by other users and not sticky/);
    assert.throws(() => Deno.lstatSync(`${dir}/open/state`), Deno.errors.NotFound);
    Deno.chmodSync(`${dir}/open`, 0o1777); // like /tmp: others cannot rename what is ours
    ensurePrivateDir(`${dir}/open/state`);
    Deno.mkdirSync(`${dir}/theirs/x`, { recursive: true });
    Deno.chownSync(`${dir}/theirs`, OTHER_UID, OTHER_UID);
    refuses(
      () => ensurePrivateDir(`${dir}/theirs/x`),
      /belongs to uid 54321, neither root nor you/,
    );
  });
});

Deno.test("another user's folder is refused, even by root, and nothing in it is touched", {
  ignore: !isRoot,
}, async () => {
  await withTemp((dir) => {
    Deno.mkdirSync(`${dir}/state`, { mode: 0o700 });
    Deno.writeTextFileSync(`${dir}/state/planted`, "x");
    Deno.chownSync(`${dir}/state`, OTHER_UID, OTHER_UID);
    refuses(() => ensurePrivateDir(`${dir}/state`), /belongs to uid 54321, not to you \(uid 0\)/);
    refuses(() => existingPrivateDir(`${dir}/state`), /belongs to uid 54321/);
    refuses(() => ensurePrivateDir(`${dir}/state/sub`), /belongs to uid 54321/);
    assert.equal(Deno.readTextFileSync(`${dir}/state/planted`), "x");
  });
});

Deno.test("a symbolic link above is followed only when root's or ours, its target checked", {
  ignore: !isRoot,
}, async () => {
  await withTemp(async (dir) => {
    Deno.mkdirSync(`${dir}/target`, { mode: 0o700 });
    Deno.symlinkSync(`${dir}/target`, `${dir}/via`);
    ensurePrivateDir(`${dir}/via/state`);
    assert.equal(modeOf(`${dir}/target/state`), 0o700);
    Deno.chmodSync(`${dir}/target`, 0o777);
    refuses(() => ensurePrivateDir(`${dir}/via/state`), /target is writable by other users/);
    Deno.chmodSync(`${dir}/target`, 0o700);
    const chown = ["-h", `${OTHER_UID}:${OTHER_UID}`, `${dir}/via`]; // the link, not its target
    assert.ok((await new Deno.Command("/bin/chown", { args: chown }).output()).success);
    refuses(() => ensurePrivateDir(`${dir}/via/state`), /via belongs to uid 54321/);
  });
});

Deno.test("a relative path is refused", () => {
  refuses(() => ensurePrivateDir("state"), /not an absolute path/);
});

Deno.test("system folders are told exactly, not the folders below them", () => {
  for (const path of ["/", "/run", "/run/", "//dev/shm", "/tmp/.", "/var", "/home", "/etc"]) {
    assert.equal(isSystemPath(path), true, path);
  }
  for (const path of ["/run/vc/vm/template", "/dev/shm/x", "/tmp/vmfactory-0", "/runner"]) {
    assert.equal(isSystemPath(path), false, path);
  }
  assert.equal(normalizePath("/a//b/./c/"), "/a/b/c");
});
