/**
 * Choosing the accelerator: KVM only when it really runs a guest kernel, else TCG.
 *
 * Some hosts have a `/dev/kvm` that cannot run an ordinary kernel (the paravirtual `kvm_pvm`
 * module: the guest hangs right after "Probing EDD"). `auto` boots the guest kernel under KVM
 * and waits for its "Linux version" banner, printed once the kernel has been decompressed: a real
 * KVM prints it within a fraction of a second, TCG needs seconds, a broken KVM never does.
 * @module
 */
import { ensurePrivateDir } from "../private_dir.ts";
import { writeFileAtomic } from "../vm/atomic_write.ts";
import { UsageError } from "../errors.ts";
import { assertQemuInstalled } from "./qemu_process.ts";
import { type Accel, HEADLESS_ARGS, sandboxArgs } from "./qemu_command.ts";
import { qemuRunAs } from "./qemu_user.ts";

/** What {@link resolveAccel} decided, with a one-line notice when `auto` fell back to TCG. */
export interface AccelChoice {
  /** The accelerator to use. */
  accel: Accel;
  /** Why `auto` chose TCG, for the user. */
  notice?: string;
}

/** Options of {@link resolveAccel}. */
export interface ResolveAccelOptions {
  /** QEMU binary for the probe. */
  qemuBinary: string;
  /** Guest kernel for the probe. */
  kernel: string;
  /** How long `auto` waits for the kernel banner; default 1200 ms. */
  timeoutMs?: number;
}

/** Text the kernel prints first once decompressed (with `earlyprintk`). */
const KERNEL_BANNER = "Linux version";

/** Why `/dev/kvm` cannot be used, or undefined when it opens read-write. */
function kvmUnavailable(): string | undefined {
  try {
    Deno.openSync("/dev/kvm", { read: true, write: true }).close();
    return undefined;
  } catch (error) {
    return error instanceof Deno.errors.NotFound ? "no /dev/kvm" : `/dev/kvm: ${error}`;
  }
}

/**
 * Runs `argv` (a QEMU whose serial console is stdout) until its output contains `marker` or
 * `timeoutMs` passes; resolves whether the marker appeared. The process is always killed.
 */
export async function probeSerial(
  argv: string[],
  marker: string,
  timeoutMs: number,
): Promise<boolean> {
  const child = new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.getReader();
  const decoder = new TextDecoder();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<false>((resolve) =>
    timer = setTimeout(() => resolve(false), timeoutMs)
  );
  const watch = (async () => {
    let seen = "";
    while (true) {
      const { value, done } = await reader.read();
      if (done) return false;
      seen = (seen + decoder.decode(value, { stream: true })).slice(-4096);
      if (seen.includes(marker)) return true;
    }
  })();
  try {
    return await Promise.race([watch, timeout]);
  } finally {
    clearTimeout(timer);
    try {
      child.kill("SIGKILL");
    } catch {
      // already exited
    }
    await reader.cancel().catch(() => {});
    await watch.catch(() => false);
    await child.status;
  }
}

/**
 * QEMU arguments that boot `kernel` under `accel` with the serial console on stdout, confined
 * like every QEMU of ours.
 */
export function bannerProbeArgs(qemuBinary: string, kernel: string, accel: Accel): string[] {
  return [
    qemuBinary,
    ...HEADLESS_ARGS,
    ...sandboxArgs(qemuRunAs()),
    "-machine",
    "pc",
    "-accel",
    accel,
    "-m",
    "128M",
    "-kernel",
    kernel,
    "-append",
    "console=ttyS0 earlyprintk=ttyS0 nokaslr panic=-1",
    "-serial",
    "stdio",
  ];
}

/**
 * Picks the accelerator. `kvm` needs a usable `/dev/kvm` ({@link UsageError} otherwise); `tcg`
 * is always taken; `auto` takes KVM only when the kernel prints its banner under KVM within
 * `timeoutMs`, else TCG with a notice. Costs up to `timeoutMs`: see {@link cachedAccel}.
 */
export async function resolveAccel(
  mode: Accel | "auto",
  options: ResolveAccelOptions,
): Promise<AccelChoice> {
  if (mode === "tcg") return { accel: "tcg" };
  const unavailable = kvmUnavailable();
  if (mode === "kvm") {
    if (unavailable) throw new UsageError("use KVM", `${unavailable}; use accel "tcg" or "auto"`);
    return { accel: "kvm" };
  }
  if (unavailable) return { accel: "tcg", notice: `KVM unavailable (${unavailable}); using TCG` };
  assertQemuInstalled(options.qemuBinary);
  const timeoutMs = options.timeoutMs ?? 1200;
  const args = bannerProbeArgs(options.qemuBinary, options.kernel, "kvm");
  if (await probeSerial(args, KERNEL_BANNER, timeoutMs)) return { accel: "kvm" };
  const seconds = (timeoutMs / 1000).toFixed(1);
  return {
    accel: "tcg",
    notice: `KVM cannot run a guest here (no kernel banner within ${seconds} s); using TCG`,
  };
}

async function cacheKey(options: ResolveAccelOptions): Promise<string> {
  const mtime = async (path: string) => (await Deno.stat(path)).mtime?.getTime() ?? 0;
  const bootId = (await Deno.readTextFile("/proc/sys/kernel/random/boot_id")).trim();
  return JSON.stringify([
    options.qemuBinary,
    await mtime(options.qemuBinary),
    options.kernel,
    await mtime(options.kernel),
    bootId,
  ]);
}

/**
 * {@link resolveAccel} with its `auto` answer remembered in `<stateDir>/accel.json`, keyed by the
 * QEMU binary and kernel (path and mtime) and the host's boot id, so the probe runs once per boot.
 */
export async function cachedAccel(
  stateDir: string,
  mode: Accel | "auto",
  options: ResolveAccelOptions,
): Promise<AccelChoice> {
  if (mode !== "auto") return resolveAccel(mode, options);
  const file = `${stateDir}/accel.json`;
  const key = await cacheKey(options).catch(() => undefined);
  if (key) {
    try {
      const cached = JSON.parse(await Deno.readTextFile(file));
      if (cached.key === key) return cached.choice as AccelChoice;
    } catch {
      // no cache yet, or unreadable: probe
    }
  }
  const choice = await resolveAccel(mode, options);
  if (key) {
    ensurePrivateDir(stateDir, { what: "state directory" });
    await writeFileAtomic(file, JSON.stringify({ key, choice }) + "\n");
  }
  return choice;
}
