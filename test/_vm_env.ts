/**
 * A throw-away vmfactory environment for tests that boot QEMU: its own config, state directory
 * and template path under one temp folder, and a cleanup that stops every QEMU started from it,
 * unmounts its tmpfs and deletes it, even when the test failed.
 * @module
 */
import { DEFAULT_QEMU_PATH } from "../lib/config/builtin_default.ts";
import { processesWhere, signalProcess } from "../lib/process_identity.ts";
import { mergeSources } from "../lib/config/load_config.ts";
import { type Settings, settingsFrom } from "../lib/config/settings.ts";
import { VmStore } from "../lib/vm/vm_store.ts";
import { unmountAll } from "../lib/template/tmpfs_mount.ts";
import { fallbackDir } from "../lib/template/template_files.ts";

/** Repo root, for running the CLI. */
export const ROOT = new URL("..", import.meta.url).pathname;

/** A test environment. */
export interface VmEnv {
  /** Temp folder holding everything. */
  dir: string;
  /** Path of the config file. */
  configPath: string;
  /** Settings read from it. */
  settings: Settings;
  /** VM store. */
  store: VmStore;
  /** Rewrites the config with other values and re-reads the settings. */
  reconfigure(overrides: Partial<ConfigValues>): Settings;
  /** Runs the CLI with `--config` of this environment appended. */
  cli(args: string[], opts?: { noConfig?: boolean }): Promise<CliResult>;
  /** Stops every QEMU of this environment, unmounts, deletes. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** Output of one CLI run. */
export interface CliResult {
  /** Exit code. */
  code: number;
  /** Standard output. */
  stdout: string;
  /** Standard error. */
  stderr: string;
}

/** Values the test config can vary. */
export interface ConfigValues {
  enableTemplate: boolean;
  memoryMiB: number;
  kernelParams: string;
  poolSize: number;
  vmCacheNumber: number;
}

function configText(dir: string, v: ConfigValues): string {
  return `[hypervisor.qemu]
path = "${DEFAULT_QEMU_PATH}"
default_memory = ${v.memoryMiB}
default_vcpus = 1
default_maxvcpus = 4
memory_slots = 4
machine_type = "pc"
shared_fs = "none"
kernel_params = "${v.kernelParams}"

[factory]
enable_template = ${v.enableTemplate}
template_path = "${dir}/template"
vm_cache_number = ${v.vmCacheNumber}
vm_cache_endpoint = "${dir}/cache.sock"

[vmfactory]
guest = "builtin"
accel = "tcg"
pool_size = ${v.poolSize}
state_dir = "${dir}/state"
`;
}

/** Guest builds are shared by every test environment (they are cached by content hash). */
const GUEST_CACHE = "/tmp/vmfactory-test-guest-cache";

/** PIDs of QEMU processes whose command line mentions `marker`. */
export function qemuPidsWith(marker: string): number[] {
  return qemusWith(marker).map((p) => p.pid);
}

function qemusWith(marker: string) {
  return processesWhere((argv) =>
    argv[0].includes("qemu-system") && argv.some((arg) => arg.includes(marker))
  );
}

/** Makes a test environment; use with `await using`. */
export async function vmEnv(initial: Partial<ConfigValues> = {}): Promise<VmEnv> {
  const dir = await Deno.makeTempDir({ prefix: "vmft-" });
  const configPath = `${dir}/configuration.toml`;
  let values: ConfigValues = {
    enableTemplate: true,
    memoryMiB: 256,
    kernelParams: "",
    poolSize: 0,
    vmCacheNumber: 0,
    ...initial,
  };
  await Deno.mkdir(`${dir}/state`, { recursive: true });
  // share the guest build cache between environments (guest builds take seconds)
  await Deno.mkdir(GUEST_CACHE, { recursive: true });
  await Deno.symlink(GUEST_CACHE, `${dir}/state/guest`);
  const read = () => {
    const text = configText(dir, values);
    Deno.writeTextFileSync(configPath, text);
    return settingsFrom(mergeSources([{ path: configPath, text }]), {});
  };
  const env: VmEnv = {
    dir,
    configPath,
    settings: read(),
    store: new VmStore(`${dir}/state`),
    reconfigure(overrides) {
      values = { ...values, ...overrides };
      return env.settings = read();
    },
    async cli(args, opts = {}) {
      const config = opts.noConfig ? [] : ["--config", configPath];
      const dashes = args.indexOf("--");
      const withConfig = dashes < 0
        ? [...args, ...config]
        : [...args.slice(0, dashes), ...config, ...args.slice(dashes)];
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", `${ROOT}cmd/main.ts`, ...withConfig],
        env: { NO_COLOR: "1", VMFACTORY_SOCKET: "" }, // never some daemon of the developer's
        stdout: "piped",
        stderr: "piped",
      }).output();
      const dec = new TextDecoder();
      return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
    },
    async [Symbol.asyncDispose]() {
      for (const p of qemusWith(dir)) signalProcess(p, "SIGKILL");
      for (let i = 0; i < 100 && qemuPidsWith(dir).length > 0; i++) {
        await new Promise((r) => setTimeout(r, 20));
      }
      await unmountAll(`${dir}/template`).catch(() => {});
      await Deno.remove(fallbackDir(`${dir}/template`), { recursive: true }).catch(() => {});
      await Deno.remove(dir, { recursive: true });
    },
  };
  return env;
}

/**
 * The QEMU arguments of a bare guest for agent tests: the built guest `image` under TCG with
 * 256 MiB and only the agent's virtio-serial port, its socket at `${dir}/agent.sock` (no
 * vmfactory driver in between). Add what a test needs (QMP, serial, devices).
 */
export function bareAgentVmArgs(
  image: { kernel: string; initrd: string; append: string },
  dir: string,
): string[] {
  return [
    ["-accel", "tcg", "-machine", "pc", "-nodefaults", "-no-user-config", "-display", "none"],
    ["-m", "256", "-kernel", image.kernel, "-initrd", image.initrd, "-append", image.append],
    ["-device", "virtio-serial-pci,id=vser0"],
    ["-chardev", `socket,id=agent0,path=${dir}/agent.sock,server=on,wait=off`],
    ["-device", "virtserialport,bus=vser0.0,chardev=agent0,name=org.vmfactory.agent"],
  ].flat();
}
