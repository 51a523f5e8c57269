/**
 * QEMU command lines built from small typed parts into an argument array (never a shell string).
 *
 * One {@link QemuSpec} describes a VM; a template, its clones and a cold-booted VM differ only in
 * `memory.share`, `incoming` and `vmgenid`, so the device set (and the migration stream) matches.
 * Every QEMU runs confined: {@link sandboxArgs}.
 * @module
 */

/** A QEMU accelerator vmfactory runs guests with. */
export type Accel = "kvm" | "tcg";

/** Name of the virtio-serial port the guest agent listens on (`/dev/virtio-ports/<name>`). */
export const AGENT_PORT_NAME = "org.vmfactory.agent";

/**
 * Id of the empty CD drive (`scsi-cd` on a virtio-scsi controller) every VM with an agent has: a
 * workload's image goes in with `insertImage` (`device_hotplug.ts`), which the guest sees at once,
 * where a hot-plugged PCI disk takes it ~0.2 s under TCG to discover. Present from the template's
 * boot, so its drivers are bound and the migration stream carries it.
 */
export const IMAGE_CD_ID = "cd0";

/**
 * The NIC every VM with an agent has from boot: a virtio-net device on QEMU's network hub
 * {@link NIC_HUB_ID}, whose only port it is, so it reaches nothing. `--net` connects a backend (a
 * user-mode NAT or a tap) to the hub with `connectNic` (`device_hotplug.ts`) and the guest agent
 * gives the NIC the VM's own MAC (it starts as {@link BUILTIN_NIC_MAC}): no device for the guest
 * to discover, where a hot-plugged NIC takes it ~0.2 s under TCG.
 */
export const BUILTIN_NIC_ID = "nic0";
/** The built-in NIC's MAC until the agent sets the VM's own (the agent knows it too). */
export const BUILTIN_NIC_MAC = "02:00:00:00:00:00";
/** QEMU network hub number of the built-in NIC. */
export const NIC_HUB_ID = 0;

/** Guest RAM: anonymous memory, or a file mapping (`share: true` for a template, false for a clone). */
export type QemuMemory = { kind: "anonymous" } | { kind: "file"; path: string; share: boolean };

/** Everything that shapes a QEMU command line. Sizes are MiB. */
export interface QemuSpec {
  /** QEMU binary, e.g. `/usr/bin/qemu-system-x86_64`; it becomes `argv[0]`. */
  binary: string;
  /** Accelerator; pick it with `resolveAccel` from `accel.ts`. */
  accel: Accel;
  /**
   * TCG translation buffer in MiB (`-accel tcg,tb-size=N`); used only when `accel` is `"tcg"`.
   * Omitted = QEMU's default (1 GiB on a 64-bit host, split in regions per vCPU). Not part of
   * the migration stream, so a clone may differ from its template here.
   */
  tcgTbSizeMiB?: number;
  /** Machine type; default `pc`. */
  machine?: string;
  /** vCPUs at start. */
  cpus: number;
  /** vCPU ceiling for hotplug; default `cpus`. */
  maxCpus?: number;
  /** Guest RAM at start. */
  memoryMiB: number;
  /** RAM ceiling for DIMM hotplug; needs `slots`. */
  maxMemoryMiB?: number;
  /** DIMM slots for hotplug; needs `maxMemoryMiB`. */
  slots?: number;
  /** What backs the guest RAM. */
  memory: QemuMemory;
  /** Guest kernel; without it QEMU starts with no guest (tests, `-S`). */
  kernel?: string;
  /** Initrd; only with `kernel`. */
  initrd?: string;
  /** Kernel command line; only with `kernel`. */
  append?: string;
  /** QMP Unix socket path (QEMU listens, never waits for a client). */
  qmpSocket: string;
  /**
   * Unix socket of the guest agent's virtio-serial port; omitted = no agent port (and no CD
   * drive {@link IMAGE_CD_ID}).
   */
  agentSocket?: string;
  /**
   * Bytes of serial console (ttyS0) QEMU keeps, newest last, in a ring read with QMP
   * `ringbuf-read` on the chardev {@link CONSOLE_CHARDEV}; a power of two. Omitted = no serial port.
   */
  consoleRingBytes?: number;
  /** User QEMU switches to once started (`-runas`); only when the tool runs as root. */
  runAs?: string;
  /** VM name shown by QEMU (`-name`). */
  name?: string;
  /** `"auto"` or a GUID: adds a vmgenid device. */
  vmgenid?: string;
  /** `"defer"`: wait for `migrate-incoming` over QMP (clones). */
  incoming?: "defer";
  /** Start with the vCPUs stopped (`-S`). */
  paused?: boolean;
}

/** What every QEMU of ours starts with: no defaults, no user config, no display, no reboot. */
export const HEADLESS_ARGS: readonly string[] = [
  "-nodefaults",
  "-no-user-config",
  "-display",
  "none",
  "-vga",
  "none",
  "-no-reboot",
];

/** Default of `[vmfactory] console_log_max`: 1 MiB of serial console kept per VM. */
export const DEFAULT_CONSOLE_LOG_MAX = 1024 * 1024;

/** Id of the chardev that keeps the serial console (a `ringbuf`). */
export const CONSOLE_CHARDEV = "console";

/**
 * QEMU's seccomp filter, on for every QEMU of ours: no obsolete system calls, no fork or exec
 * (so no `exec:` migration), no scheduler or resource changes, and no set*uid/set*gid. With
 * `runAs`, QEMU itself switches user after the filter is installed, so set*id stays allowed:
 * after `-runas` QEMU has no privilege left to gain (no root ids, no exec of set-uid programs).
 */
export function sandboxArgs(runAs?: string): string[] {
  const sandbox = opts([
    ["obsolete", "deny"],
    ["elevateprivileges", runAs ? "allow" : "deny"],
    ["spawn", "deny"],
    ["resourcecontrol", "deny"],
  ], "on");
  return ["-sandbox", sandbox, ...(runAs ? ["-runas", runAs] : [])];
}

/** The largest power of two that is at most `maxBytes` (a ring size for {@link QemuSpec}). */
export function consoleRingSize(maxBytes: number): number {
  return 2 ** Math.floor(Math.log2(Math.max(1, maxBytes)));
}

/** Option value with QEMU's escaping: a comma inside a value is written twice. */
function optValue(value: string): string {
  return value.replaceAll(",", ",,");
}

/** `[head,]key=value,...` from ordered pairs, skipping undefined values. */
function opts(pairs: [string, string | number | undefined][], head?: string): string {
  const body = pairs
    .filter((p): p is [string, string | number] => p[1] !== undefined)
    .map(([k, v]) => `${k}=${optValue(String(v))}`);
  return (head ? [head, ...body] : body).join(",");
}

function positiveInt(name: string, value: number | undefined): void {
  if (value !== undefined && !(Number.isInteger(value) && value > 0)) {
    throw new RangeError(`QemuSpec.${name} must be a positive integer, got ${value}`);
  }
}

function validate(spec: QemuSpec): void {
  positiveInt("cpus", spec.cpus);
  positiveInt("maxCpus", spec.maxCpus);
  positiveInt("memoryMiB", spec.memoryMiB);
  positiveInt("maxMemoryMiB", spec.maxMemoryMiB);
  positiveInt("slots", spec.slots);
  positiveInt("tcgTbSizeMiB", spec.tcgTbSizeMiB);
  if ((spec.maxCpus ?? spec.cpus) < spec.cpus) {
    throw new RangeError("QemuSpec.maxCpus must be at least cpus");
  }
  if ((spec.maxMemoryMiB === undefined) !== (spec.slots === undefined)) {
    throw new RangeError("QemuSpec.maxMemoryMiB and slots go together");
  }
  if (spec.maxMemoryMiB !== undefined && spec.maxMemoryMiB < spec.memoryMiB) {
    throw new RangeError("QemuSpec.maxMemoryMiB must be at least memoryMiB");
  }
  if (!spec.kernel && (spec.initrd || spec.append)) {
    throw new RangeError("QemuSpec.initrd and append need a kernel");
  }
  const ring = spec.consoleRingBytes;
  if (
    ring !== undefined && !(Number.isInteger(ring) && ring > 0 && consoleRingSize(ring) === ring)
  ) {
    throw new RangeError(`QemuSpec.consoleRingBytes must be a power of two, got ${ring}`);
  }
  if (spec.runAs !== undefined && !/^[a-z_][a-z0-9_.-]*$/i.test(spec.runAs)) {
    throw new RangeError(`QemuSpec.runAs must be a user name, got ${JSON.stringify(spec.runAs)}`);
  }
}

function machineArgs(spec: QemuSpec): string[] {
  const backend = spec.memory.kind === "file" ? "mem0" : undefined;
  return [
    "-machine",
    opts([["type", spec.machine ?? "pc"], ["memory-backend", backend]]),
    "-accel",
    spec.accel === "tcg" ? opts([["tb-size", spec.tcgTbSizeMiB]], "tcg") : spec.accel,
  ];
}

function cpuArgs(spec: QemuSpec): string[] {
  return ["-smp", opts([["cpus", spec.cpus], ["maxcpus", spec.maxCpus ?? spec.cpus]])];
}

/**
 * RAM. A file backend is attached with `-machine memory-backend=mem0`: checked on QEMU 7.2 with
 * `slots`/`maxmem` (DIMM hotplug works), and unlike `-numa node,memdev=` it adds no NUMA node.
 */
function memoryArgs(spec: QemuSpec): string[] {
  const size = `${spec.memoryMiB}M`;
  const maxmem = spec.maxMemoryMiB === undefined ? undefined : `${spec.maxMemoryMiB}M`;
  const args = ["-m", opts([["size", size], ["slots", spec.slots], ["maxmem", maxmem]])];
  if (spec.memory.kind === "file") {
    args.push(
      "-object",
      opts([
        ["id", "mem0"],
        ["size", size],
        ["mem-path", spec.memory.path],
        ["share", spec.memory.share ? "on" : "off"],
      ], "memory-backend-file"),
    );
  }
  return args;
}

function bootArgs(spec: QemuSpec): string[] {
  if (!spec.kernel) return [];
  const args = ["-kernel", spec.kernel];
  if (spec.initrd) args.push("-initrd", spec.initrd);
  if (spec.append) args.push("-append", spec.append);
  return args;
}

/** A listening Unix socket chardev that never blocks QEMU waiting for a client. */
function socketChardev(id: string, path: string): string[] {
  return [
    "-chardev",
    opts([["id", id], ["path", path], ["server", "on"], ["wait", "off"]], "socket"),
  ];
}

function qmpArgs(spec: QemuSpec): string[] {
  return [...socketChardev("qmp", spec.qmpSocket), "-mon", "chardev=qmp,mode=control"];
}

/** The serial console into a ring in QEMU's memory: bounded, never blocks the guest. */
function consoleArgs(spec: QemuSpec): string[] {
  if (!spec.consoleRingBytes) return [];
  return [
    "-chardev",
    opts([["id", CONSOLE_CHARDEV], ["size", spec.consoleRingBytes]], "ringbuf"),
    "-serial",
    `chardev:${CONSOLE_CHARDEV}`,
  ];
}

/** The agent's virtio-serial port, and the empty CD drive the agent mounts images from. */
function agentArgs(spec: QemuSpec): string[] {
  if (!spec.agentSocket) return [];
  return [
    "-device",
    "virtio-serial-pci,id=vser0",
    ...socketChardev("agent", spec.agentSocket),
    "-device",
    opts(
      [["bus", "vser0.0"], ["chardev", "agent"], ["name", AGENT_PORT_NAME]],
      "virtserialport",
    ),
    "-device",
    "virtio-scsi-pci,id=scsi0",
    "-device",
    opts([["bus", "scsi0.0"], ["id", IMAGE_CD_ID]], "scsi-cd"),
    "-netdev",
    opts([["id", `${BUILTIN_NIC_ID}-port`], ["hubid", NIC_HUB_ID]], "hubport"),
    "-device",
    opts(
      [["netdev", `${BUILTIN_NIC_ID}-port`], ["id", BUILTIN_NIC_ID], ["mac", BUILTIN_NIC_MAC], [
        "romfile",
        "",
      ]],
      "virtio-net-pci",
    ),
  ];
}

function optionalArgs(spec: QemuSpec): string[] {
  const args: string[] = [];
  if (spec.vmgenid) args.push("-device", opts([["guid", spec.vmgenid]], "vmgenid"));
  if (spec.name) args.push("-name", optValue(spec.name));
  if (spec.paused) args.push("-S");
  if (spec.incoming) args.push("-incoming", spec.incoming);
  return args;
}

/**
 * Full argv for a VM: `argv[0]` is `spec.binary`. Lean, headless and confined: no defaults, no
 * user config, no display, no network, no reboot (a guest reboot ends QEMU), the seccomp sandbox
 * and, with `runAs`, another user. Throws `RangeError` on a spec that QEMU would reject.
 */
export function buildQemuArgs(spec: QemuSpec): string[] {
  validate(spec);
  return [
    spec.binary,
    ...HEADLESS_ARGS,
    ...sandboxArgs(spec.runAs),
    ...machineArgs(spec),
    ...cpuArgs(spec),
    ...memoryArgs(spec),
    ...bootArgs(spec),
    ...qmpArgs(spec),
    ...consoleArgs(spec),
    ...agentArgs(spec),
    ...optionalArgs(spec),
  ];
}
