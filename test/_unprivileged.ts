/**
 * Running the CLI as an unprivileged user, for the tests that must not be root: a system user
 * `vmftest` (made with `useradd` when missing), the CLI bundled into one file it may read (the
 * root-owned Deno cache is not readable to it), a work folder it owns, and a clean environment
 * (no HOME, no XDG_RUNTIME_DIR). Its processes are found by uid and killed on cleanup.
 * @module
 */
import { identify, signalProcess } from "../lib/process_identity.ts";
import type { CliResult } from "./_cli.ts";

/** Repo root. */
const ROOT = new URL("..", import.meta.url).pathname;
/** The unprivileged test user. */
export const TEST_USER = "vmftest";

/** An unprivileged user with a work folder of its own. */
export interface Unprivileged {
  /** Its uid. */
  uid: number;
  /** Its gid. */
  gid: number;
  /** A folder it owns (0700), removed on cleanup. */
  dir: string;
  /** Runs `vmfactory ARGS...` as the user, with `env` added to PATH, DENO_DIR and NO_COLOR. */
  cli(args: string[], env?: Record<string, string>): Promise<CliResult>;
  /** Pids of the user's processes still running. */
  processes(): number[];
  /** Kills the user's processes, removes its work folder and /dev/shm folder. */
  [Symbol.asyncDispose](): Promise<void>;
}

async function output(cmd: string, args: string[]): Promise<{ ok: boolean; text: string }> {
  try {
    const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
    const dec = new TextDecoder();
    return { ok: out.success, text: (dec.decode(out.stdout) + dec.decode(out.stderr)).trim() };
  } catch (err) {
    return { ok: false, text: String(err) };
  }
}

function uidOf(pid: number): number | undefined {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    return Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]);
  } catch {
    return undefined;
  }
}

/**
 * Why the unprivileged tests cannot run here (not root, no useradd/setpriv), or undefined.
 * Creates the user when missing.
 */
export async function unprivilegedUnavailable(): Promise<string | undefined> {
  if (Deno.uid() !== 0) return "the tests must start as root to switch to an unprivileged user";
  if (!(await output("/usr/bin/setpriv", ["--version"])).ok) return "no /usr/bin/setpriv";
  if ((await output("/usr/bin/id", ["-u", TEST_USER])).ok) return undefined;
  const useradd = ["/usr/sbin/useradd", "/sbin/useradd"].find((p) => {
    try {
      return Deno.statSync(p).isFile;
    } catch {
      return false;
    }
  });
  if (!useradd) return "useradd is not available to create the user vmftest";
  const made = await output(useradd, ["--system", "--no-create-home", TEST_USER]);
  // a concurrent test may have made it meanwhile
  if (!made.ok && !(await output("/usr/bin/id", ["-u", TEST_USER])).ok) {
    return `useradd ${TEST_USER} failed: ${made.text}`;
  }
  return undefined;
}

/** Sets up the user (call {@link unprivilegedUnavailable} first); use with `await using`. */
export async function unprivileged(): Promise<Unprivileged> {
  const uid = Number((await output("/usr/bin/id", ["-u", TEST_USER])).text);
  const gid = Number((await output("/usr/bin/id", ["-g", TEST_USER])).text);
  const dir = await Deno.makeTempDir({ prefix: "vmft-user-" });
  const bundle = `${dir}/vmfactory.js`;
  const built = await output(Deno.execPath(), [
    "bundle",
    "--quiet",
    "--platform=deno",
    "-o",
    bundle,
    `${ROOT}cmd/main.ts`,
  ]);
  if (!built.ok) {
    await Deno.remove(dir, { recursive: true });
    throw new Error(`deno bundle failed: ${built.text}`);
  }
  Deno.mkdirSync(`${dir}/deno`);
  // the Deno binary may live under a folder the user cannot enter (a private clone): a copy
  const deno = `${dir}/deno-bin`;
  Deno.copyFileSync(Deno.execPath(), deno);
  Deno.chmodSync(deno, 0o755);
  for (const path of [dir, bundle, `${dir}/deno`]) Deno.chownSync(path, uid, gid);
  const shm = `/dev/shm/vmfactory-${uid}`;
  const mine = () =>
    [...Deno.readDirSync("/proc")].map((e) => Number(e.name)).filter((pid) =>
      Number.isInteger(pid) && uidOf(pid) === uid
    );
  return {
    uid,
    gid,
    dir,
    async cli(args, env = {}) {
      const out = await new Deno.Command("/usr/bin/setpriv", {
        args: [
          `--reuid=${uid}`,
          `--regid=${gid}`,
          "--clear-groups",
          "--",
          deno,
          "run",
          "-A",
          bundle,
          ...args,
        ],
        cwd: dir,
        clearEnv: true,
        env: {
          PATH: "/usr/local/bin:/usr/bin:/bin",
          DENO_DIR: `${dir}/deno`,
          DENO_NO_UPDATE_CHECK: "1",
          NO_COLOR: "1",
          ...env,
        },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const dec = new TextDecoder();
      return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
    },
    processes: mine,
    async [Symbol.asyncDispose]() {
      for (const pid of mine()) {
        const p = identify(pid);
        if (p) signalProcess(p, "SIGKILL");
      }
      for (let i = 0; i < 100 && mine().length > 0; i++) {
        await new Promise((r) => setTimeout(r, 20));
      }
      await Deno.remove(shm, { recursive: true }).catch(() => {});
      await Deno.remove(dir, { recursive: true });
    },
  };
}
