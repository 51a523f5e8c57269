/**
 * The typed, defaulted settings the factory uses, read from a {@link LoadedConfig}.
 * @module
 */
import type { Accel } from "../qemu/qemu_command.ts";
import { UsageError } from "../errors.ts";
import { DEFAULT_QEMU_PATH } from "./builtin_default.ts";
import {
  FACTORY_CHECKS,
  HYPERVISOR_CHECKS,
  type ValueCheck,
  VMFACTORY_CHECKS,
} from "./key_checks.ts";
import { ConfigError, type LoadedConfig } from "./load_config.ts";

/** What the factory needs to know, with Kata's defaults filled in. */
export interface Settings {
  hypervisorName: string;
  qemuPath: string;
  kernel?: string;
  initrd?: string;
  image?: string;
  kernelParams: string;
  machineType: string;
  memoryMiB: number;
  vcpus: number;
  maxVcpus: number;
  memorySlots: number;
  /** `shared_fs`; "none" when unset (the factory never sets up a shared filesystem). */
  sharedFs: string;
  enableTemplate: boolean;
  templatePath: string;
  vmCacheNumber: number;
  vmCacheEndpoint: string;
  accel: Accel | "auto";
  stateDir: string;
  /** "builtin": the tool supplies kernel + initrd; "config": the configured ones. */
  guest: "builtin" | "config";
  poolSize: number;
}

const ACCELS = ["kvm", "tcg", "auto"] as const;

/**
 * Reads the settings from `loaded`: the single `[hypervisor.<name>]` table (QEMU preferred when
 * several), factory keys from `[factory]` overridden by `[hypervisor.<name>.factory]`
 * (runtime-rs), `[vmfactory]`; `VMFACTORY_ACCEL` and `VMFACTORY_STATE_DIR` in `env` win.
 * Throws {@link ConfigError} (naming file and line) for a value of the wrong type or range.
 * @example
 * ```ts
 * const settings = settingsFrom(await loadConfig({}));
 * console.log(settings.stateDir, settings.enableTemplate);
 * ```
 */
export function settingsFrom(
  loaded: LoadedConfig,
  env: Record<string, string | undefined> = Deno.env.toObject(),
): Settings {
  const v = loaded.values;
  const hvTables = table(v, "hypervisor");
  const names = Object.keys(hvTables).filter((n) => isTable(hvTables[n]));
  const hypervisorName = names.includes("qemu") ? "qemu" : names[0] ?? "qemu";
  const hvPath = ["hypervisor", hypervisorName];
  const hv = table(hvTables, hypervisorName);
  const rsFactory = table(hv, "factory");
  const factory = { ...table(v, "factory"), ...rsFactory };
  const ours = table(v, "vmfactory");

  const read = <T>(
    t: Record<string, unknown>,
    path: string[],
    key: string,
    check: ValueCheck,
    fallback: T,
  ): T => {
    const value = t[key];
    if (value === undefined) return fallback;
    const problem = check(value);
    if (problem) {
      const at = loaded.origin([...path, key]);
      const where = at ? `${at.path}:${at.line}:${at.column}: ` : "";
      throw new ConfigError(`${where}${key} ${problem}`, at ? [at] : []);
    }
    return (typeof value === "bigint" ? Number(value) : value) as T;
  };
  const h = <T>(key: string, fallback: T) =>
    read(hv, hvPath, key, HYPERVISOR_CHECKS[key], fallback);
  const f = <T>(key: string, fallback: T) =>
    key in rsFactory
      ? read(rsFactory, [...hvPath, "factory"], key, FACTORY_CHECKS[key], fallback)
      : read(factory, ["factory"], key, FACTORY_CHECKS[key], fallback);
  const o = <T>(key: string, fallback: T) =>
    read(ours, ["vmfactory"], key, VMFACTORY_CHECKS[key], fallback);
  const optional = (key: string) => h<string>(key, "") || undefined;

  const cores = navigator.hardwareConcurrency || 1;
  const rawVcpus = h<number>("default_vcpus", 0);
  const vcpus = rawVcpus === 0 ? 1 : rawVcpus < 0 ? cores : Math.min(Math.ceil(rawVcpus), cores);
  const rawMax = h<number>("default_maxvcpus", 0);
  const kernel = optional("kernel");
  const initrd = optional("initrd");

  const envAccel = env.VMFACTORY_ACCEL;
  if (envAccel !== undefined && !(ACCELS as readonly string[]).includes(envAccel)) {
    throw new UsageError(
      "read VMFACTORY_ACCEL",
      `"${envAccel}" is not one of ${ACCELS.join(", ")}`,
    );
  }
  const envState = env.VMFACTORY_STATE_DIR;
  if (envState !== undefined && !envState.startsWith("/")) {
    throw new UsageError("read VMFACTORY_STATE_DIR", `"${envState}" is not an absolute path`);
  }

  return {
    hypervisorName,
    qemuPath: h("path", "") || DEFAULT_QEMU_PATH,
    kernel,
    initrd,
    image: optional("image"),
    kernelParams: h("kernel_params", ""),
    machineType: h("machine_type", "") || "q35",
    memoryMiB: h("default_memory", 2048),
    vcpus,
    maxVcpus: rawMax <= 0 || rawMax > cores ? Math.max(cores, vcpus) : Math.max(rawMax, vcpus),
    memorySlots: h("memory_slots", 0) || 10,
    sharedFs: h("shared_fs", "") || "none",
    enableTemplate: f("enable_template", false),
    templatePath: f("template_path", "/run/vc/vm/template"),
    vmCacheNumber: f("vm_cache_number", 0),
    vmCacheEndpoint: f("vm_cache_endpoint", "/var/run/kata-containers/cache.sock"),
    accel: (envAccel as Settings["accel"] | undefined) ?? o("accel", "auto"),
    stateDir: envState ?? o("state_dir", defaultStateDir(env)),
    guest: o("guest", kernel && initrd ? "config" : "builtin"),
    poolSize: o("pool_size", 2),
  };
}

/** `/run/vmfactory` as root, else `$XDG_RUNTIME_DIR/vmfactory`, else `/tmp/vmfactory-<uid>`. */
export function defaultStateDir(env: Record<string, string | undefined>): string {
  const uid = Deno.uid();
  if (uid === 0) return "/run/vmfactory";
  if (env.XDG_RUNTIME_DIR) return `${env.XDG_RUNTIME_DIR}/vmfactory`;
  return `/tmp/vmfactory-${uid ?? "user"}`;
}

function isTable(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

function table(v: Record<string, unknown>, key: string): Record<string, unknown> {
  const t = v[key];
  return isTable(t) ? t : {};
}
