/**
 * Hostile files and folders: a state directory, template folder or /dev/shm fallback that
 * another user owns, that is a symbolic link or that others may write is refused (exit 2, the
 * path and the problem named, no stack trace) before anything in it is read, deleted or
 * signalled; lock files and atomic writes never follow a link; only the tool's tmpfs is
 * resized or unmounted. No QEMU is booted.
 */
import assert from "node:assert/strict";
import { UsageError } from "../lib/errors.ts";
import { identify, isAlive } from "../lib/process_identity.ts";
import { fallbackDir } from "../lib/template/template_files.ts";
import {
  ensureTmpfs,
  isToolMount,
  mountCount,
  mountsAt,
  unmountAll,
} from "../lib/template/tmpfs_mount.ts";
import { writeFileAtomic } from "../lib/vm/atomic_write.ts";
import { withFileLock } from "../lib/vm/file_lock.ts";
import { runCli } from "./_cli.ts";
import { unprivileged, unprivilegedUnavailable } from "./_unprivileged.ts";

/** A uid that is neither root nor the test user: the attacker. */
const ATTACKER = 54321;
const isRoot = Deno.uid() === 0;
const STACK = /^\s+at .*:\d+:\d+\)?$/m;

function configText(dir: string): string {
  return `[hypervisor.qemu]
path = "/usr/bin/qemu-system-x86_64"
default_memory = 256
machine_type = "pc"
[factory]
enable_template = true
template_path = ${JSON.stringify(`${dir}/template`)}
[vmfactory]
accel = "tcg"
state_dir = ${JSON.stringify(`${dir}/state`)}
`;
}

/** A folder with a config naming `state` and `template` below it. */
async function withDir(fn: (dir: string, config: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "vmft-hostile-" });
  const config = `${dir}/configuration.toml`;
  Deno.writeTextFileSync(config, configText(dir));
  try {
    await fn(dir, config);
  } finally {
    await unmountAll(`${dir}/template`).catch(() => {});
    await run("/bin/umount", ["-l", `${dir}/template`]);
    await Deno.remove(dir, { recursive: true });
  }
}

async function run(cmd: string, args: string[]): Promise<boolean> {
  const out = await new Deno.Command(cmd, { args, stdout: "null", stderr: "null" }).output();
  return out.success;
}

/** Every file below `dir` with its content (or "<dir>"/"-> target"). */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (path: string) => {
    for (const e of Deno.readDirSync(path)) {
      const p = `${path}/${e.name}`;
      if (e.isSymlink) out[p] = `-> ${Deno.readLinkSync(p)}`;
      else if (e.isDirectory) {
        out[p] = "<dir>";
        walk(p);
      } else out[p] = Deno.readTextFileSync(p);
    }
  };
  walk(dir);
  return out;
}

/** Plants what a state directory holds: a VM folder whose pid file names `victim`. */
function plantVm(stateDir: string, victim: { pid: number; startTime: number }): void {
  const vm = `${stateDir}/vms/abcdef0123`;
  Deno.mkdirSync(vm, { recursive: true });
  const since = new Date(0).toISOString();
  Deno.writeTextFileSync(
    `${vm}/state.json`,
    JSON.stringify({ state: "building", owner: { pid: 999999, startTime: 1 }, since }),
  );
  Deno.writeTextFileSync(`${vm}/qemu.pid`, JSON.stringify(victim));
}

/** Plants a template: a manifest and a memory file an attacker wants run. */
function plantTemplate(dir: string): void {
  Deno.mkdirSync(dir, { recursive: true });
  Deno.writeTextFileSync(`${dir}/memory`, "attacker memory");
  Deno.writeTextFileSync(`${dir}/manifest.json`, "{}");
}

async function refused(config: string, args: string[], pattern: RegExp): Promise<void> {
  const res = await runCli([...args, "--config", config]);
  assert.equal(res.code, 2, `${args.join(" ")}: ${res.stderr}`);
  assert.match(res.stderr, pattern, args.join(" "));
  assert.doesNotMatch(res.stderr, STACK, "no stack trace");
}

const COMMANDS = [["vm", "list"], ["vm", "destroy", "--all"], ["factory", "destroy"], [
  "factory",
  "status",
]];

Deno.test({
  name: "hostile state directory: another's, a link, or writable by others is refused",
  ignore: !isRoot,
}, async (t) => {
  const victimChild = new Deno.Command("/bin/sleep", { args: ["600"] }).spawn();
  const victim = identify(victimChild.pid)!;
  try {
    await t.step("another user's: nothing read, deleted or signalled", async () => {
      await withDir(async (dir, config) => {
        plantVm(`${dir}/state`, victim);
        await run("/bin/chown", ["-R", `${ATTACKER}:${ATTACKER}`, `${dir}/state`]);
        const before = snapshot(dir);
        for (const args of COMMANDS) {
          await refused(
            config,
            args,
            /Cannot use the state directory .*\/state: it belongs to uid 54321, not to you \(uid 0\)/,
          );
        }
        assert.deepEqual(snapshot(dir), before, "nothing deleted or changed");
        assert.ok(isAlive(victim), "the process the planted pid file names was not signalled");
      });
    });

    await t.step("a symbolic link", async () => {
      await withDir(async (dir, config) => {
        plantVm(`${dir}/elsewhere`, victim);
        Deno.symlinkSync(`${dir}/elsewhere`, `${dir}/state`);
        const before = snapshot(dir);
        for (const args of COMMANDS) {
          await refused(config, args, /state directory .*\/state: it is a symbolic link/);
        }
        assert.deepEqual(snapshot(dir), before);
        assert.ok(isAlive(victim));
      });
    });

    await t.step("group-writable, or below a folder others may write", async () => {
      await withDir(async (dir, config) => {
        Deno.mkdirSync(`${dir}/state`);
        Deno.chmodSync(`${dir}/state`, 0o770);
        await refused(config, ["vm", "list"], /it is writable by other users \(mode 0770\)/);
        Deno.chmodSync(`${dir}/state`, 0o700);
        Deno.chmodSync(dir, 0o777);
        await refused(config, ["vm", "list"], /is writable by other users and not sticky/);
        Deno.chmodSync(dir, 0o700);
        const ok = await runCli(["vm", "list", "--config", config]);
        assert.equal(ok.code, 0, ok.stderr);
      });
    });
  } finally {
    victimChild.kill("SIGKILL");
    await victimChild.status;
  }
});

Deno.test({
  name: "hostile template folder: a link or another's is refused, its files kept",
  ignore: !isRoot,
}, async (t) => {
  for (const kind of ["a symbolic link", "another user's", "writable by others"]) {
    await t.step(kind, async () => {
      await withDir(async (dir, config) => {
        if (kind === "a symbolic link") {
          plantTemplate(`${dir}/planted`);
          Deno.symlinkSync(`${dir}/planted`, `${dir}/template`);
        } else {
          plantTemplate(`${dir}/template`);
          if (kind === "another user's") {
            await run("/bin/chown", ["-R", `${ATTACKER}:${ATTACKER}`, `${dir}/template`]);
          } else Deno.chmodSync(`${dir}/template`, 0o777);
        }
        const before = snapshot(dir);
        const problem = {
          "a symbolic link": "it is a symbolic link",
          "another user's": "it belongs to uid 54321",
          "writable by others": "it is writable by other users",
        }[kind];
        for (const args of [["factory", "status"], ["factory", "destroy"]]) {
          await refused(config, args, new RegExp(`Cannot use the folder .*/template: ${problem}`));
        }
        await assert.rejects(ensureTmpfs(`${dir}/template`, 16), UsageError);
        assert.equal(mountCount(`${dir}/template`), 0, "nothing mounted on it");
        delete before[`${dir}/state`]; // the (private) state directory was made
        const after = snapshot(dir);
        for (const key of Object.keys(after)) if (key.startsWith(`${dir}/state`)) delete after[key];
        assert.deepEqual(after, before, "nothing deleted or changed");
      });
    });
  }
});

Deno.test({
  name: "mounts: only the tool's tmpfs is adopted, resized and unmounted; system folders refused",
  ignore: !isRoot,
}, async (t) => {
  await t.step("system folders are refused before anything is made", async () => {
    for (const path of ["/run", "/dev/shm", "/tmp/", "/"]) {
      await assert.rejects(ensureTmpfs(path, 16), /Cannot mount a tmpfs at .*: it is a system/);
    }
  });

  await t.step("a tmpfs of the wrong size is resized, never stacked", async () => {
    await withDir(async (dir) => {
      const path = `${dir}/template`;
      const first = await ensureTmpfs(path, 16);
      assert.deepEqual(first, { path, mounted: true });
      assert.equal(isToolMount(path), true);
      assert.equal(Deno.lstatSync(path).mode! & 0o777, 0o700);
      assert.equal(mountsAt(path)[0].sizeKiB, 16 * 1024);
      await ensureTmpfs(path, 24);
      assert.equal(mountCount(path), 1);
      assert.equal(mountsAt(path)[0].sizeKiB, 24 * 1024);
      await unmountAll(path);
      assert.equal(mountCount(path), 0);
    });
  });

  await t.step("another mount at the path is refused and left mounted", async () => {
    await withDir(async (dir, config) => {
      const path = `${dir}/template`;
      Deno.mkdirSync(path, { mode: 0o700 });
      assert.ok(await run("/bin/mount", ["-t", "tmpfs", "-o", "size=1M,mode=0700", "other", path]));
      await assert.rejects(ensureTmpfs(path, 16), /a tmpfs from "other" is mounted there/);
      await unmountAll(path);
      const res = await runCli(["factory", "destroy", "--config", config]);
      assert.equal(res.code, 0, res.stderr);
      assert.equal(mountCount(path), 1, "not the tool's: never unmounted");
      assert.equal(mountsAt(path)[0].source, "other");
    });
  });
});

Deno.test("lock files and atomic writes never follow a symbolic link", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmft-hostile-" });
  try {
    Deno.writeTextFileSync(`${dir}/victim`, "keep");
    Deno.symlinkSync(`${dir}/victim`, `${dir}/record.json`);
    await writeFileAtomic(`${dir}/record.json`, "new");
    assert.equal(Deno.readTextFileSync(`${dir}/victim`), "keep");
    assert.equal(Deno.lstatSync(`${dir}/record.json`).isFile, true, "the link itself replaced");

    Deno.symlinkSync(`${dir}/absent`, `${dir}/dangling.lock`);
    Deno.symlinkSync(`${dir}/victim`, `${dir}/victim.lock`);
    for (const lock of ["dangling.lock", "victim.lock"]) {
      await assert.rejects(
        withFileLock(`${dir}/${lock}`, () => Promise.resolve()),
        /Cannot lock .*: it is not a regular file/,
      );
    }
    assert.throws(() => Deno.lstatSync(`${dir}/absent`), Deno.errors.NotFound, "nothing created");
    assert.equal(Deno.readTextFileSync(`${dir}/victim`), "keep");
    assert.equal(await withFileLock(`${dir}/ok.lock`, () => Promise.resolve(7)), 7);
    assert.equal(await withFileLock(`${dir}/ok.lock`, () => Promise.resolve(8)), 8, "reused");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const noUser = await unprivilegedUnavailable();
if (noUser) console.error(`hostile_files_test: skipping the unprivileged part: ${noUser}`);

Deno.test({
  name: "hostile /dev/shm fallback: another user's or a link is refused, its files kept",
  ignore: noUser !== undefined,
}, async () => {
  await using user = await unprivileged();
  const shm = `/dev/shm/vmfactory-${user.uid}`;
  const state = { VMFACTORY_STATE_DIR: `${user.dir}/state` };
  // the built-in default's template path, /run/vc/vm/template, is not this user's: the fallback
  const fallback = fallbackDir("/run/vc/vm/template").replace(
    /vmfactory-\d+/,
    `vmfactory-${user.uid}`,
  );
  for (const kind of ["another user's", "a symbolic link"]) {
    await Deno.remove(shm, { recursive: true }).catch(() => {});
    const planted = `${user.dir}/planted`;
    if (kind === "another user's") {
      plantTemplate(fallback);
      await run("/bin/chown", ["-R", `${ATTACKER}:${ATTACKER}`, shm]);
    } else {
      plantTemplate(planted);
      await run("/bin/chown", ["-R", `${user.uid}:${user.gid}`, planted]);
      Deno.symlinkSync(planted, shm);
    }
    const before = snapshot(kind === "a symbolic link" ? planted : shm);
    for (const args of [["factory", "status"], ["factory", "destroy"]]) {
      const res = await user.cli(args, state);
      assert.equal(res.code, 2, `${kind}: ${args.join(" ")}: ${res.stderr}`);
      const problem = kind === "a symbolic link"
        ? "it is a symbolic link"
        : `it belongs to uid ${ATTACKER}, not to you \\(uid ${user.uid}\\)`;
      assert.match(res.stderr, new RegExp(`Cannot use the folder ${shm}: ${problem}`));
      assert.doesNotMatch(res.stderr, STACK);
    }
    assert.deepEqual(snapshot(kind === "a symbolic link" ? planted : shm), before);
  }
  await Deno.remove(shm, { recursive: true }).catch(() => {});
});
