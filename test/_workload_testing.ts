/**
 * Helpers of the workload tests (run_test.ts, vm_cp_test.ts): a tiny image tree (the host's
 * static busybox and its applets, users app and root), the CLI with stdin and signals, and
 * digests of files.
 * @module
 */
import { ROOT, type VmEnv } from "./_vm_env.ts";

/** Applets the test image's busybox answers to. */
const APPLETS = [
  "sh",
  "cat",
  "ls",
  "env",
  "id",
  "pwd",
  "echo",
  "md5sum",
  "httpd",
  "wget",
  "timeout",
  "sleep",
  "true",
];

/**
 * Writes a rootfs tree at `tree`: /bin/busybox (static, from the host) and its applets, an
 * /etc/passwd and /etc/group with root and app (1000, home /home/app), an /etc/os-release.
 */
export function writeImageTree(tree: string, osRelease = 'NAME="vmfactory test image"\n'): void {
  for (const d of ["bin", "etc", "home/app", "srv"]) {
    Deno.mkdirSync(`${tree}/${d}`, { recursive: true });
  }
  Deno.copyFileSync("/bin/busybox", `${tree}/bin/busybox`);
  Deno.chmodSync(`${tree}/bin/busybox`, 0o755);
  for (const applet of APPLETS) Deno.symlinkSync("busybox", `${tree}/bin/${applet}`);
  Deno.writeTextFileSync(
    `${tree}/etc/passwd`,
    "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
  );
  Deno.writeTextFileSync(`${tree}/etc/group`, "root:x:0:\napp:x:1000:\n");
  Deno.writeTextFileSync(`${tree}/etc/os-release`, osRelease);
  Deno.chownSync(`${tree}/home/app`, 1000, 1000);
}

/** The CLI of `env` (its config appended), started; stdin piped when `stdin` is set. */
export function spawnCli(
  env: VmEnv,
  args: string[],
  opts: { stdin?: boolean } = {},
): Deno.ChildProcess {
  const dashes = args.indexOf("--");
  const config = ["--config", env.configPath];
  const withConfig = dashes < 0
    ? [...args, ...config]
    : [...args.slice(0, dashes), ...config, ...args.slice(dashes)];
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}cmd/main.ts`, ...withConfig],
    env: { NO_COLOR: "1", VMFACTORY_SOCKET: "" },
    stdin: opts.stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** Runs the CLI with `input` on its stdin; its exit code and output. */
export async function cliWithStdin(
  env: VmEnv,
  args: string[],
  input: Uint8Array,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = spawnCli(env, args, { stdin: true });
  const writer = child.stdin.getWriter();
  await writer.write(input);
  await writer.close();
  const out = await child.output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** `md5sum` of bytes, as the guest's md5sum prints it. */
export async function md5(bytes: Uint8Array): Promise<string> {
  const child = new Deno.Command("/usr/bin/md5sum", { stdin: "piped", stdout: "piped" }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(bytes);
  await writer.close();
  return new TextDecoder().decode((await child.output()).stdout).split(" ")[0];
}

/** `n` random bytes (getRandomValues gives at most 64 KiB a call). */
export function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let at = 0; at < n; at += 65536) crypto.getRandomValues(out.subarray(at, at + 65536));
  return out;
}

/** A TCP port of 127.0.0.1 free right now. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}
