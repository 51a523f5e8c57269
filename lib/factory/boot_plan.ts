/**
 * What every VM of a configuration boots with: QEMU binary, kernel, initrd, command line,
 * accelerator and machine shape, resolved once from the settings; and the QEMU spec and start
 * options of one VM of it (confined: sandboxed, another user when the tool is root, its cgroup).
 * @module
 */
import { ensurePrivateDir } from "../private_dir.ts";
import type { Settings } from "../config/settings.ts";
import { UsageError } from "../errors.ts";
import { buildGuest, type BuildPhase, GUEST_APPEND } from "../guest/build_guest.ts";
import { cachedAccel } from "../qemu/accel.ts";
import {
  type Accel,
  consoleRingSize,
  DEFAULT_CONSOLE_LOG_MAX,
  type QemuMemory,
  type QemuSpec,
} from "../qemu/qemu_command.ts";
import { assertQemuInstalled, type StartQemuOptions } from "../qemu/qemu_process.ts";
import { qemuRunAs } from "../qemu/qemu_user.ts";
import type { VmPaths } from "../vm/vm_paths.ts";

/** The machine shape of a VM: what a template and every clone of it share. */
export interface MachineShape {
  /** QEMU machine type. */
  machine: string;
  /** Boot vCPUs. */
  cpus: number;
  /** vCPU hotplug ceiling. */
  maxCpus: number;
  /** Boot memory, MiB. */
  memoryMiB: number;
  /** Memory hotplug slots. */
  slots: number;
  /** Memory hotplug ceiling, MiB. */
  maxMemoryMiB: number;
}

/** Everything a VM of this configuration boots with. */
export interface BootPlan extends MachineShape {
  /** QEMU binary. */
  qemuPath: string;
  /** Guest kernel. */
  kernel: string;
  /** Guest initrd. */
  initrd: string;
  /** Kernel command line. */
  append: string;
  /** Accelerator. */
  accel: Accel;
  /** Bytes of serial console kept per VM; default {@link DEFAULT_CONSOLE_LOG_MAX}. */
  consoleLogMax?: number;
}

/** The machine shape part of `plan`. */
export function shapeOf(plan: MachineShape): MachineShape {
  const { machine, cpus, maxCpus, memoryMiB, slots, maxMemoryMiB } = plan;
  return { machine, cpus, maxCpus, memoryMiB, slots, maxMemoryMiB };
}

/** Memory each hotplug slot may add; sizes the `maxmem` ceiling. */
const SLOT_MIB = 1024;

/** The machine shape `settings` configure. */
export function shapeFromSettings(settings: Settings): MachineShape {
  return {
    machine: settings.machineType,
    cpus: settings.vcpus,
    maxCpus: Math.max(settings.maxVcpus, settings.vcpus),
    memoryMiB: settings.memoryMiB,
    slots: settings.memorySlots,
    maxMemoryMiB: settings.memoryMiB + settings.memorySlots * SLOT_MIB,
  };
}

/** Hooks for long work while resolving a plan. */
export interface BootPlanHooks {
  /** Guest build steps (only when the built-in guest is not cached yet). */
  onProgress?: (phase: BuildPhase, detail: string) => void;
  /** One-line notices (e.g. "KVM cannot run a guest here; using TCG"). */
  onNotice?: (message: string) => void;
}

function requireFile(path: string, what: string, pkg: string): string {
  try {
    if (Deno.statSync(path).isFile) return path;
  } catch {
    // reported below
  }
  throw new UsageError(`boot a VM`, `${what} ${path} does not exist (${pkg})`);
}

/**
 * Resolves the boot plan: builds (or finds cached) the built-in guest when `settings.guest` is
 * "builtin", checks the configured kernel/initrd otherwise, and picks the accelerator.
 */
export async function resolveBootPlan(
  settings: Settings,
  hooks: BootPlanHooks = {},
): Promise<BootPlan> {
  ensurePrivateDir(settings.stateDir, { what: "state directory" });
  assertQemuInstalled(settings.qemuPath);
  let kernel: string, initrd: string, append: string;
  if (settings.guest === "builtin") {
    const guest = await buildGuest({ stateDir: settings.stateDir, onProgress: hooks.onProgress });
    ({ kernel, initrd } = guest);
    append = [GUEST_APPEND, settings.kernelParams].filter(Boolean).join(" ");
  } else {
    kernel = requireFile(settings.kernel ?? "", "kernel", "set [hypervisor.qemu] kernel");
    initrd = requireFile(settings.initrd ?? "", "initrd", "set [hypervisor.qemu] initrd");
    append = ["console=ttyS0", settings.kernelParams].filter(Boolean).join(" ");
  }
  const { accel, notice } = await cachedAccel(settings.stateDir, settings.accel, {
    qemuBinary: settings.qemuPath,
    kernel,
  });
  if (notice) hooks.onNotice?.(notice);
  return {
    qemuPath: settings.qemuPath,
    kernel,
    initrd,
    append,
    accel,
    consoleLogMax: settings.consoleLogMax,
    ...shapeFromSettings(settings),
  };
}

/**
 * TCG translation buffer of every VM of ours under TCG, MiB. QEMU's default (1 GiB, in 8 regions
 * per vCPU of the ceiling) leaves the first pages of many regions touched: measured 2026-12-01 on
 * idle clones, 8–64 MiB each cut about 1 MiB of anonymous memory per clone with no change in the
 * spawned-clone time; 64 keeps the most room for guest workloads before a translation flush.
 */
export const TCG_TB_SIZE_MIB = 64;

/** Options that tell VMs of one plan apart. */
export interface SpecOptions {
  /** Guest RAM backing (default anonymous). */
  memory?: QemuMemory;
  /** Wait for an incoming migration (clones). */
  incoming?: "defer";
  /** Boot vCPUs (default the plan's). */
  cpus?: number;
  /** Boot memory in MiB (default the plan's). */
  memoryMiB?: number;
}

/** The QEMU spec of one VM of `plan` living in `paths`. */
export function qemuSpecFor(plan: BootPlan, paths: VmPaths, opts: SpecOptions = {}): QemuSpec {
  const cpus = opts.cpus ?? plan.cpus;
  const memoryMiB = opts.memoryMiB ?? plan.memoryMiB;
  return {
    binary: plan.qemuPath,
    accel: plan.accel,
    tcgTbSizeMiB: plan.accel === "tcg" ? TCG_TB_SIZE_MIB : undefined,
    machine: plan.machine,
    cpus,
    maxCpus: Math.max(plan.maxCpus, cpus),
    memoryMiB,
    slots: plan.slots,
    maxMemoryMiB: Math.max(plan.maxMemoryMiB, memoryMiB),
    memory: opts.memory ?? { kind: "anonymous" },
    kernel: plan.kernel,
    initrd: plan.initrd,
    append: plan.append,
    qmpSocket: paths.qmpSocket,
    agentSocket: paths.agentSocket,
    consoleRingBytes: consoleRingSize(plan.consoleLogMax ?? DEFAULT_CONSOLE_LOG_MAX),
    runAs: qemuRunAs(),
    name: `vmf-${paths.id}`,
    vmgenid: crypto.randomUUID(),
    incoming: opts.incoming,
  };
}

/**
 * The `startQemu` options of the VM `spec` in `paths`: its log and pid files, and its cgroup
 * (named by the VM id, sized by the vCPU and memory ceilings, applied where the host allows).
 */
export function startOptionsFor(paths: VmPaths, spec: QemuSpec): StartQemuOptions {
  return {
    logFile: `${paths.dir}/qemu.log`,
    pidFile: paths.pidFile,
    cwd: paths.qemuDir,
    cgroup: {
      name: paths.id,
      cpus: spec.maxCpus ?? spec.cpus,
      memoryMiB: spec.maxMemoryMiB ?? spec.memoryMiB,
    },
  };
}
