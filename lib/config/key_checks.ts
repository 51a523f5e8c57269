/**
 * Value checks for the keys vmfactory reads, shared by the `invalid-value` lint rule and
 * {@link settingsFrom}. A check returns what is wrong ("must be …") or `undefined`.
 * @module
 */

/** Returns a problem description for a bad value, `undefined` for a good one. */
export type ValueCheck = (value: unknown) => string | undefined;

/** Every `shared_fs` value Kata (Go runtime and runtime-rs) accepts; "" means its default. */
export const SHARED_FS_VALUES = [
  "virtio-fs",
  "virtio-fs-nydus",
  "virtio-9p",
  "inline-virtio-fs",
  "none",
] as const;

/** Kata ignores `default_memory` below this (MiB) and silently uses 2048 MiB instead. */
export const MIN_MEMORY_MIB = 256;
/** Largest `default_memory` (MiB) the linter considers sensible: 1 TiB. */
export const MAX_MEMORY_MIB = 1024 * 1024;
/** Most memory slots QEMU accepts (`-m slots=`; its ACPI tables describe at most 256). */
export const MAX_MEMORY_SLOTS = 256;
/** Most VMs vmfactory keeps booted at once: `vm_cache_number`, `pool_size`, `pool_min`, `pool_max`. */
export const MAX_KEPT_VMS = 1024;
/** Largest unsigned 32-bit value: Kata reads `default_maxvcpus` into a uint32. */
export const MAX_UINT32 = 2 ** 32 - 1;

const isInt = (v: unknown): boolean =>
  typeof v === "bigint" || (typeof v === "number" && Number.isInteger(v));

const bool: ValueCheck = (v) => typeof v === "boolean" ? undefined : "must be true or false";
const str: ValueCheck = (v) => typeof v === "string" ? undefined : "must be a string";
const finite: ValueCheck = (v) =>
  typeof v === "bigint" || (typeof v === "number" && Number.isFinite(v))
    ? undefined
    : "must be a finite number";
/** An integer from 0 to `max`. */
const upTo = (max: number, why = ""): ValueCheck => (v) =>
  isInt(v) && Number(v) >= 0 && Number(v) <= max
    ? undefined
    : `must be an integer from 0 to ${max}${why}`;
const absPath: ValueCheck = (v) =>
  typeof v === "string" && v.startsWith("/") ? undefined : "must be an absolute path";
const oneOf = (values: readonly string[]): ValueCheck => (v) =>
  typeof v === "string" && values.includes(v)
    ? undefined
    : `must be one of ${values.map((s) => `"${s}"`).join(", ")}`;

const memory: ValueCheck = (v) => {
  if (!isInt(v) || Number(v) <= 0) return "must be a positive integer (MiB)";
  if (Number(v) < MIN_MEMORY_MIB) {
    return `must be at least ${MIN_MEMORY_MIB} MiB (Kata silently uses 2048 MiB for smaller values)`;
  }
  if (Number(v) > MAX_MEMORY_MIB) return `must be at most ${MAX_MEMORY_MIB} MiB (1 TiB)`;
  return undefined;
};

/** Checks for the `[hypervisor.<name>]` keys vmfactory reads. */
export const HYPERVISOR_CHECKS: Readonly<Record<string, ValueCheck>> = {
  path: str,
  kernel: str,
  initrd: str,
  image: str,
  kernel_params: str,
  machine_type: str,
  default_memory: memory,
  default_vcpus: finite,
  default_maxvcpus: upTo(MAX_UINT32),
  memory_slots: upTo(MAX_MEMORY_SLOTS, " (QEMU's limit)"),
  shared_fs: (v) => v === "" ? undefined : oneOf(SHARED_FS_VALUES)(v),
  confidential_guest: bool,
};

/** Checks for the factory keys (`[factory]`, or `[hypervisor.<name>.factory]` in runtime-rs). */
export const FACTORY_CHECKS: Readonly<Record<string, ValueCheck>> = {
  enable_template: bool,
  template_path: absPath,
  vm_cache_number: upTo(MAX_KEPT_VMS),
  vm_cache_endpoint: absPath,
};

/** vmfactory's own `[vmfactory]` keys (`lint` is a table of rule severities). */
export const VMFACTORY_CHECKS: Readonly<Record<string, ValueCheck>> = {
  accel: oneOf(["auto", "kvm", "tcg"]),
  state_dir: absPath,
  guest: oneOf(["builtin", "config"]),
  pool_size: upTo(MAX_KEPT_VMS),
  pool_min: upTo(MAX_KEPT_VMS),
  pool_max: upTo(MAX_KEPT_VMS),
  console_log_max: (v) =>
    (typeof v === "bigint" || (typeof v === "number" && Number.isInteger(v))) &&
      Number(v) >= 4096 && Number(v) <= 64 * 1024 * 1024
      ? undefined
      : "must be an integer from 4096 to 67108864 (bytes of serial console kept per VM)",
};

/** Check for a `[vmfactory.lint]` value. */
export const LINT_SEVERITY_CHECK: ValueCheck = oneOf(["off", "info", "warning", "error"]);
