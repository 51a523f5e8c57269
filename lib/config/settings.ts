/**
 * The typed, defaulted settings the factory uses, read from a {@link LoadedConfig}.
 * @module
 */
import { type Accel, DEFAULT_CONSOLE_LOG_MAX } from "../qemu/qemu_command.ts";
import { UsageError } from "../errors.ts";
import { isSystemPath, normalizePath } from "../private_dir.ts";
import { newVmId, vmPaths } from "../vm/vm_paths.ts";
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
  /** `[vmfactory] pool_size`: the clone pool's fixed size on the CLI path (`vm create` refills). */
  poolSize: number;
  /** `[vmfactory] pool_min`: the fewest clones `serve` keeps pooled (default `pool_size`). */
  poolMin: number;
  /**
   * `[vmfactory] pool_max`: the most clones `serve` pools when demand asks for them (default
   * 4 × `pool_size`, at least `pool_min`).
   */
  poolMax: number;
  /** `[vmfactory] console_log_max`: bytes of serial console kept per VM. */
  consoleLogMax: number;
}

const ACCELS = ["kvm", "tcg", "auto"] as const;

/**
 * Reads the settings from `loaded`: the single `[hypervisor.<name>]` table (QEMU preferred when
 * several), factory keys from `[factory]` overridden by `[hypervisor.<name>.factory]`
 * (runtime-rs), `[vmfactory]`; `VMFACTORY_ACCEL` and `VMFACTORY_STATE_DIR` in `env` win.
 * Throws {@link ConfigError} (naming file and line) for a value of the wrong type or range, and
 * for a `state_dir` or `template_path` the tool cannot use ({@link pathProblem}).
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
  const f = <T>(key: string, fallback: T, extra?: ValueCheck) => {
    const check = both(FACTORY_CHECKS[key], extra);
    return key in rsFactory
      ? read(rsFactory, [...hvPath, "factory"], key, check, fallback)
      : read(factory, ["factory"], key, check, fallback);
  };
  const o = <T>(key: string, fallback: T, extra?: ValueCheck) =>
    read(ours, ["vmfactory"], key, both(VMFACTORY_CHECKS[key], extra), fallback);
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
  const envProblem = envState === undefined ? undefined : pathProblem(envState, "state_dir");
  if (envProblem) {
    throw new UsageError("read VMFACTORY_STATE_DIR", `${JSON.stringify(envState)} ${envProblem}`);
  }
  const stateDir = normalizePath(
    envState ?? o("state_dir", defaultStateDir(env), (v) => pathProblem(v, "state_dir")),
  );
  const defaultProblem = pathProblem(stateDir, "state_dir");
  if (defaultProblem) {
    throw new UsageError("use the default state directory", `${stateDir} ${defaultProblem}`);
  }
  const poolSize = o("pool_size", 2);
  const poolMin = o("pool_min", poolSize);
  const poolMax = o("pool_max", Math.max(poolMin, 4 * poolSize));
  if (poolMin > poolMax) {
    const at = loaded.origin(["vmfactory", "pool_max"]) ?? loaded.origin(["vmfactory", "pool_min"]);
    const where = at ? `${at.path}:${at.line}:${at.column}: ` : "";
    throw new ConfigError(
      `${where}pool_max (${poolMax}) must not be below pool_min (${poolMin})`,
      at ? [at] : [],
    );
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
    templatePath: normalizePath(
      f("template_path", "/run/vc/vm/template", (v) => pathProblem(v, "template_path")),
    ),
    vmCacheNumber: f("vm_cache_number", 0),
    vmCacheEndpoint: f(
      "vm_cache_endpoint",
      "/var/run/kata-containers/cache.sock",
      (v) => pathProblem(v, "vm_cache_endpoint"),
    ),
    accel: (envAccel as Settings["accel"] | undefined) ?? o("accel", "auto"),
    stateDir,
    guest: o("guest", kernel && initrd ? "config" : "builtin"),
    poolSize,
    poolMin,
    poolMax,
    consoleLogMax: o("console_log_max", DEFAULT_CONSOLE_LOG_MAX),
  };
}

/**
 * `/run/vmfactory` as root, else `$XDG_RUNTIME_DIR/vmfactory` (when absolute), else
 * `/tmp/vmfactory-<uid>`. Each is created 0700 and refused when another user made it first.
 */
export function defaultStateDir(env: Record<string, string | undefined>): string {
  const uid = Deno.uid();
  if (uid === 0) return "/run/vmfactory";
  if (env.XDG_RUNTIME_DIR?.startsWith("/")) return `${env.XDG_RUNTIME_DIR}/vmfactory`;
  return `/tmp/vmfactory-${uid ?? "user"}`;
}

/** Longest Unix socket path: `sun_path` holds 108 bytes with the terminating NUL. */
export const MAX_SOCKET_PATH_BYTES = 107;

/** The paths settings name, by key. */
export type PathKey = "state_dir" | "template_path" | "vm_cache_endpoint";

/**
 * The longest Unix socket path the tool makes for `key` = `path`: a VM's agent socket
 * (`<state_dir>/vms/<id>/agent.sock`), a template build's (`<template_path>/.build-<id>/…`),
 * or the VMCache endpoint and the temporary socket the server binds beside it (`.<16 hex>/s`).
 */
export function longestSocketPath(path: string, key: PathKey): string {
  if (key === "vm_cache_endpoint") {
    const beside = `${path.slice(0, path.lastIndexOf("/"))}/.${"0".repeat(16)}/s`;
    return beside.length > path.length ? beside : path;
  }
  const id = newVmId();
  if (key === "state_dir") return vmPaths(`${path}/vms/${id}`, id).agentSocket;
  return vmPaths(`${path}/.build-${id.slice(0, 8)}`, id).agentSocket;
}

/**
 * What makes `value` unusable as `key`, or undefined: not an absolute path, a control character
 * (a newline cannot be passed on safely), a `..` component, a system folder itself (`/`, `/run`,
 * `/tmp`, …; not a folder below one), or so long that a socket below it exceeds 107 bytes.
 */
export function pathProblem(value: unknown, key: PathKey): string | undefined {
  if (typeof value !== "string" || !value.startsWith("/")) return "must be an absolute path";
  // deno-lint-ignore no-control-regex
  if (/[\x00-\x1f\x7f]/.test(value)) return "must not contain control characters (a newline)";
  if (value.split("/").includes("..")) return "must not contain `..`";
  if (key !== "vm_cache_endpoint" && isSystemPath(value)) {
    return "must not be a system folder itself (use a folder of its own below it)";
  }
  const socket = longestSocketPath(normalizePath(value), key);
  const bytes = new TextEncoder().encode(socket).length;
  if (bytes > MAX_SOCKET_PATH_BYTES) {
    return `is too long: the socket ${socket} would be ${bytes} bytes, more than the ` +
      `${MAX_SOCKET_PATH_BYTES} a Unix socket path may have`;
  }
  return undefined;
}

function both(a: ValueCheck, b?: ValueCheck): ValueCheck {
  return b ? (v) => a(v) ?? b(v) : a;
}

function isTable(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

function table(v: Record<string, unknown>, key: string): Record<string, unknown> {
  const t = v[key];
  return isTable(t) ? t : {};
}
