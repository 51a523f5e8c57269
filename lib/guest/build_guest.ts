/**
 * Builds the built-in guest: the host's kernel plus an initrd with busybox, the virtio modules
 * and the guest agent. Cached by content hash under `<stateDir>/guest/<hash>/`.
 * @module
 */
import { systemProgram } from "../system_program.ts";
import { ensurePrivateDir } from "../private_dir.ts";
import { UsageError, VmfactoryError } from "../errors.ts";
import { sha256Hex } from "../sha256_hex.ts";
import { AGENT_SOURCE, AGENT_SOURCE_SHA256 } from "./agent_source.ts";
import type { CpioEntry } from "./cpio_writer.ts";
import { extractVmlinux, findHostKernel, kernelRelease } from "./host_kernel.ts";
import { AGENT_PATH, initScript } from "./init_script.ts";

/** Bump when the image layout changes, so cached images are rebuilt. */
const BUILDER_VERSION = 3;
const BUSYBOX = "/bin/busybox";
/**
 * virtio_console and the PCI transport (the console does not depend on it); the disk, network and
 * filesystems a workload's image and NIC need, all loaded at the template's boot so that no clone
 * pays for loading them: virtio_scsi and sr_mod (with scsi_mod, scsi_common and cdrom from
 * modules.dep) for the empty CD drive every VM has, where a clone's image goes in; virtio_blk for
 * disks hot-plugged later; virtio_net for a hot-plugged NIC.
 */
const GUEST_MODULES = [
  "virtio_pci",
  "virtio_console",
  "virtio_scsi",
  "sr_mod",
  "virtio_blk",
  "virtio_net",
  "crc32c_generic", // libcrc32c (erofs) needs a crc32c implementation: a soft dependency
  "erofs",
  "overlay",
];
/**
 * Loaded when the kernel has them (a kernel without them still boots the guest): vmgenid (Linux
 * 5.18+) reseeds the guest's CRNG as soon as a clone's VM generation ID differs from the
 * template's, before the host's seed arrives. Built in on Debian's kernels (nothing to load).
 */
const OPTIONAL_GUEST_MODULES = ["vmgenid"];
/** gcc flags for the guest agent (agent.c): static (the guest has no libc), small, warning-free. */
export const AGENT_CFLAGS: readonly string[] = [
  "-static",
  "-Os",
  "-s",
  "-Wall",
  "-Wextra",
  "-Werror",
];

/**
 * The kernel command line the guest is made for. Under TCG, `tsc=reliable no_timer_check`
 * (no TSC watchdog / timer check) and `cryptomgr.notests` (no crypto self-tests) cut the
 * kernel's part of a cold boot from ~2.2-4.0 s to ~1.6-1.9 s; i8042/8250 options and
 * `mitigations=off` made no measurable difference and were left out. `acpi=noirq` (virtio devices
 * use MSI-X, not ACPI's interrupt routing) cuts the time a hot-plugged disk or NIC takes to appear
 * in the guest under TCG from p50 562-657 ms to 144-194 ms. An idle clone wakes less without the
 * soft-lockup watchdog's timer (`nowatchdog`) and with the per-CPU memory statistics folded every
 * minute instead of every second (`sysctl.vm.stat_interval=60`; nothing here reads them): idle CPU
 * per clone 0.48% → 0.38% of a core (10 clones, 10 s). Without proactive compaction
 * (`sysctl.vm.compaction_proactiveness=0`; compaction on demand stays) kcompactd no longer wakes
 * every 500 ms: a guest trace showed its timeouts gone and a third fewer ticks, and idle CPU per
 * clone went 0.30–0.33% → 0.10–0.11% (same script, back to back).
 */
export const GUEST_APPEND =
  "console=ttyS0 quiet panic=-1 tsc=reliable no_timer_check cryptomgr.notests acpi=noirq " +
  "nowatchdog sysctl.vm.stat_interval=60 sysctl.vm.compaction_proactiveness=0";

/** A built guest; the files stay valid as long as the cache directory is not deleted. */
export interface GuestImage {
  /**
   * Kernel for `-kernel`: the host kernel's uncompressed ELF (booted through PVH, no in-guest
   * decompression), or a copy of the bzImage when its payload format is unknown. Always a copy,
   * so it keeps matching the modules in the initrd after the host kernel is upgraded.
   */
  kernel: string;
  /** Uncompressed newc initrd. */
  initrd: string;
  /** Content hash of every input; names the cache directory. */
  hash: string;
  /** The kernel's release, e.g. "6.1.0-56-amd64". */
  kernelVersion: string;
  /** Recommended kernel command line. */
  append: string;
}

/** Build steps reported to `onProgress`. */
export type BuildPhase = "compile agent" | "collect modules" | "write initrd";

/** Options of {@link buildGuest}. */
export interface BuildGuestOptions {
  /** vmfactory state directory; the image goes to `<stateDir>/guest/<hash>/`. */
  stateDir: string;
  /** Kernel image to use (default: the newest /boot/vmlinuz-*). */
  kernel?: string;
  /** Called as each build step starts (not called when the cache is hit). */
  onProgress?: (phase: BuildPhase, detail: string) => void;
}

/**
 * Returns the guest image for the current inputs, building it only when the kernel, its
 * modules.dep, busybox, the agent source or this builder changed. Safe to run concurrently:
 * each build writes a temporary directory and renames it into place.
 * Throws {@link UsageError} naming the Debian package when a prerequisite is missing.
 */
export async function buildGuest(opts: BuildGuestOptions): Promise<GuestImage> {
  const kernelPath = opts.kernel ?? findHostKernel();
  const kernelStat = statOr(kernelPath, "find the guest kernel", "linux-image-amd64");
  const release = kernelRelease(readHead(kernelPath, 65536), kernelPath);
  const modulesDir = `/lib/modules/${release}`;
  const depStat = statOr(
    `${modulesDir}/modules.dep`,
    "find the guest kernel modules",
    `linux-image-${release}`,
  );
  const busyboxStat = statOr(BUSYBOX, "find busybox for the guest", "busybox-static");
  const hash = await sha256Hex(
    JSON.stringify({
      builder: BUILDER_VERSION,
      kernel: [Deno.realPathSync(kernelPath), kernelStat.size, kernelStat.mtime?.getTime()],
      modulesDep: [depStat.size, depStat.mtime?.getTime()],
      modules: [...GUEST_MODULES, ...OPTIONAL_GUEST_MODULES],
      busybox: [busyboxStat.size, busyboxStat.mtime?.getTime()],
      agent: AGENT_SOURCE_SHA256,
      agentFlags: AGENT_CFLAGS,
      init: initScript(["MODULES"]),
      append: GUEST_APPEND,
    }),
    20,
  );
  const guestDir = `${opts.stateDir}/guest`;
  const dir = `${guestDir}/${hash}`;
  const image: GuestImage = {
    kernel: `${dir}/vmlinux`,
    initrd: `${dir}/initrd.img`,
    hash,
    kernelVersion: release,
    append: GUEST_APPEND,
  };
  if (exists(dir)) return image;

  await requireStaticBusybox();
  // only a build needs these: a cached guest does not load them
  const [{ writeCpio }, { availableModules, moduleName, resolveModules }] = await Promise.all([
    import("./cpio_writer.ts"),
    import("./module_deps.ts"),
  ]);
  ensurePrivateDir(opts.stateDir, { what: "state directory" });
  Deno.mkdirSync(guestDir, { recursive: true, mode: 0o700 });
  const tmp = Deno.makeTempDirSync({ dir: guestDir, prefix: ".build-" });
  try {
    opts.onProgress?.("compile agent", `gcc ${AGENT_CFLAGS.join(" ")}`);
    const agent = await compileAgent(tmp);

    const modulesDep = Deno.readTextFileSync(`${modulesDir}/modules.dep`);
    const builtin = readTextOr(`${modulesDir}/modules.builtin`);
    const modulePaths = resolveModules(modulesDep, [
      ...GUEST_MODULES,
      ...availableModules(modulesDep, OPTIONAL_GUEST_MODULES, builtin),
    ], builtin);
    const modules = modulePaths.map((p) => `${moduleName(p)}.ko`);
    opts.onProgress?.("collect modules", `${modules.join(" ")} from ${modulesDir}`);
    const entries: CpioEntry[] = [
      ...["bin", "dev", "etc", "lib", "lib/modules", "proc", "root", "run", "sbin", "sys", "usr"]
        .map((path) => ({ type: "dir" as const, path })),
      { type: "dir", path: "tmp", mode: 0o1777 },
      { type: "dir", path: "usr/bin" },
      { type: "dir", path: "usr/sbin" },
      { type: "chardev", path: "dev/console", major: 5, minor: 1 },
      {
        type: "file",
        path: "init",
        data: new TextEncoder().encode(initScript(modules)),
        mode: 0o755,
      },
      { type: "file", path: "bin/busybox", data: Deno.readFileSync(BUSYBOX), mode: 0o755 },
      ...(await busyboxApplets()).map((path) => ({
        type: "symlink" as const,
        path,
        target: "/bin/busybox",
      })),
      { type: "file", path: AGENT_PATH, data: agent, mode: 0o755 },
    ];
    for (const [i, path] of modulePaths.entries()) {
      entries.push({
        type: "file",
        path: `lib/modules/${modules[i]}`,
        data: await readModule(`${modulesDir}/${path}`),
      });
    }

    const initrd = writeCpio(entries);
    opts.onProgress?.(
      "write initrd",
      `${(initrd.length / 1048576).toFixed(1)} MiB, ${entries.length} entries`,
    );
    Deno.writeFileSync(`${tmp}/initrd.img`, initrd);
    const vmlinux = await extractVmlinux(Deno.readFileSync(kernelPath));
    if (vmlinux) Deno.writeFileSync(`${tmp}/vmlinux`, vmlinux);
    else Deno.copyFileSync(kernelPath, `${tmp}/vmlinux`);
    Deno.removeSync(`${tmp}/agent`);
    Deno.removeSync(`${tmp}/agent.c`);
    const manifest = {
      ...image,
      kernel: "vmlinux",
      initrd: "initrd.img",
      kernelSource: kernelPath,
      modules,
    };
    Deno.writeTextFileSync(`${tmp}/image.json`, JSON.stringify(manifest, null, 2) + "\n");
    try {
      Deno.renameSync(tmp, dir);
    } catch (error) {
      if (!exists(dir)) throw error; // else another build won the race: use its result
      Deno.removeSync(tmp, { recursive: true });
    }
    return image;
  } catch (error) {
    try {
      Deno.removeSync(tmp, { recursive: true });
    } catch {
      // already renamed or removed
    }
    throw error;
  }
}

async function compileAgent(dir: string): Promise<Uint8Array> {
  Deno.writeTextFileSync(`${dir}/agent.c`, AGENT_SOURCE);
  let result: Deno.CommandOutput;
  try {
    result = await new Deno.Command(systemProgram("gcc") ?? "/usr/bin/gcc", {
      args: [...AGENT_CFLAGS, "-o", `${dir}/agent`, `${dir}/agent.c`],
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new UsageError(
        "compile the guest agent",
        "gcc is not installed (install the Debian packages gcc and libc6-dev)",
      );
    }
    throw error;
  }
  if (!result.success) {
    const stderr = new TextDecoder().decode(result.stderr).trim();
    if (/cannot find -lc|stdio\.h: No such file/.test(stderr)) {
      throw new UsageError(
        "compile the guest agent",
        `no static C library (install the Debian package libc6-dev): ${stderr}`,
      );
    }
    throw new VmfactoryError("compile the guest agent", `gcc failed: ${stderr}`);
  }
  return Deno.readFileSync(`${dir}/agent`);
}

/** Applet paths ("bin/sh", "sbin/insmod", ...) as busybox lists them. */
async function busyboxApplets(): Promise<string[]> {
  const out = await new Deno.Command(BUSYBOX, {
    args: ["--list-full"],
    stdout: "piped",
    stderr: "null",
  }).output();
  return new TextDecoder().decode(out.stdout).split("\n")
    .map((line) => line.trim())
    .filter((path) => /^(usr\/)?s?bin\/[^/]+$/.test(path) && path !== "bin/busybox")
    .sort();
}

/** The guest has no libc: a dynamically linked /bin/busybox (Debian package busybox) will not run. */
async function requireStaticBusybox(): Promise<void> {
  const elf = await readHead(BUSYBOX, 4096);
  const view = new DataView(elf.buffer, elf.byteOffset, elf.byteLength);
  const ok = elf.length >= 64 && view.getUint32(0) === 0x7f454c46 && elf[4] === 2;
  const phoff = ok ? Number(view.getBigUint64(0x20, true)) : 0;
  const phentsize = ok ? view.getUint16(0x36, true) : 0,
    phnum = ok ? view.getUint16(0x38, true) : 0;
  let interp = false;
  for (let i = 0; i < phnum && phoff + (i + 1) * phentsize <= elf.length; i++) {
    if (view.getUint32(phoff + i * phentsize, true) === 3) interp = true; // PT_INTERP
  }
  if (!ok || interp) {
    throw new UsageError(
      "use busybox in the guest",
      `${BUSYBOX} is not a static 64-bit binary (install the Debian package busybox-static)`,
    );
  }
}

/** Reads a module file, decompressing .ko.gz/.ko.xz/.ko.zst on the host (busybox insmod may not). */
async function readModule(path: string): Promise<Uint8Array> {
  if (path.endsWith(".gz")) {
    const { gunzipSync } = await import("node:zlib"); // rare: loaded only when needed
    return gunzipSync(Deno.readFileSync(path));
  }
  const tool = path.endsWith(".xz")
    ? ["xz", "xz-utils"]
    : path.endsWith(".zst")
    ? ["zstd", "zstd"]
    : null;
  if (!tool) return Deno.readFileSync(path);
  try {
    const out = await new Deno.Command(systemProgram(tool[0]) ?? `/usr/bin/${tool[0]}`, {
      args: ["-dc", path],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) {
      throw new VmfactoryError("decompress a kernel module", `${tool[0]} -dc ${path} failed`);
    }
    return out.stdout;
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    throw new UsageError(
      "decompress a kernel module",
      `${path} needs ${tool[0]} (install the Debian package ${tool[1]})`,
    );
  }
}

/** The first `length` bytes of `path`, read synchronously (every `vm create` reads them). */
function readHead(path: string, length: number): Uint8Array {
  try {
    using file = Deno.openSync(path);
    const buf = new Uint8Array(length);
    let n = 0;
    for (let r; n < length && (r = file.readSync(buf.subarray(n))) !== null && r > 0;) n += r;
    return buf.subarray(0, n);
  } catch (cause) {
    if (!(cause instanceof Deno.errors.PermissionDenied)) throw cause;
    throw new UsageError(
      `read ${path}`,
      "permission denied (set [hypervisor.qemu] kernel to a kernel this user can read)",
      { cause },
    );
  }
}

function statOr(path: string, action: string, debianPackage: string): Deno.FileInfo {
  try {
    return Deno.statSync(path);
  } catch {
    throw new UsageError(
      action,
      `${path} is missing (install the Debian package ${debianPackage})`,
    );
  }
}

function readTextOr(path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return "";
  }
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}
