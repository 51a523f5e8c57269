/**
 * What a template was built from. A template is valid only once `manifest.json` exists (it is
 * written last, atomically); a clone uses it only when every input still matches.
 * @module
 */
import type { Accel } from "../qemu/qemu_command.ts";
import type { MachineShape } from "../factory/boot_plan.ts";

/** Identity of an input file: a change in size or modification time marks the template stale. */
export interface FileIdentity {
  /** Absolute path. */
  path: string;
  /** Size in bytes. */
  size: number;
  /** Modification time, ms since the epoch. */
  mtimeMs: number;
}

/** The manifest format this version writes and reads; a manifest of another is not used. */
export const MANIFEST_FORMAT = 1;

/** Everything a clone must match; written as `manifest.json` beside `memory` and `state`. */
export interface TemplateManifest {
  /** Manifest format version ({@link MANIFEST_FORMAT}). */
  format: typeof MANIFEST_FORMAT;
  /** Random id of this template build. */
  id: string;
  /** ISO creation time. */
  createdAt: string;
  /** QEMU binary and its version string. */
  qemu: FileIdentity & { version: string };
  /** Guest kernel. */
  kernel: FileIdentity;
  /** Guest initrd. */
  initrd: FileIdentity;
  /** Kernel command line. */
  append: string;
  /** Accelerator the template ran with (clones must use the same). */
  accel: Accel;
  /** Machine shape. */
  shape: MachineShape;
  /** Size of the saved device state in bytes. */
  stateBytes: number;
  /** Milliseconds the template took to build, by phase. */
  buildMs: Record<string, number>;
}

/** The inputs a template is compared against (everything in the manifest but the build facts). */
export interface TemplateInputs {
  /** QEMU binary (its version is recorded for display; size and mtime decide). */
  qemu: FileIdentity;
  /** Guest kernel. */
  kernel: FileIdentity;
  /** Guest initrd. */
  initrd: FileIdentity;
  /** Kernel command line. */
  append: string;
  /** Accelerator (a template built under KVM cannot be restored under TCG, and vice versa). */
  accel: Accel;
  /** Machine shape. */
  shape: MachineShape;
}

/** What a field of a manifest must be: a JSON type, one of some strings, or a nested object. */
type FieldSpec = "string" | "number" | "numbers" | readonly string[] | { [key: string]: FieldSpec };

const FILE_SPEC = { path: "string", size: "number", mtimeMs: "number" } satisfies Record<
  keyof FileIdentity,
  FieldSpec
>;

const MANIFEST_SPEC = {
  format: "number",
  id: "string",
  createdAt: "string",
  qemu: { ...FILE_SPEC, version: "string" },
  kernel: FILE_SPEC,
  initrd: FILE_SPEC,
  append: "string",
  accel: ["kvm", "tcg"],
  shape: {
    machine: "string",
    cpus: "number",
    maxCpus: "number",
    memoryMiB: "number",
    slots: "number",
    maxMemoryMiB: "number",
  } satisfies Record<keyof MachineShape, FieldSpec>,
  stateBytes: "number",
  buildMs: "numbers",
} satisfies Record<keyof TemplateManifest, FieldSpec>;

/** The JSON type of `value`, in words. */
function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value === "object" ? "an object" : `a ${typeof value}`;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The first way `value` at `path` fails `spec`, or undefined. */
function fieldProblem(value: unknown, spec: FieldSpec, path: string): string | undefined {
  if (value === undefined) return `${path} is missing`;
  if (spec === "number" && typeof value === "number") {
    return Number.isFinite(value) ? undefined : `${path} is ${value}, not a finite number`;
  }
  if (spec === "string" || spec === "number") {
    const ok = spec === "string" ? typeof value === "string" : typeof value === "number";
    return ok ? undefined : `${path} is ${typeName(value)}, not a ${spec}`;
  }
  if (spec === "numbers") {
    if (isObject(value) && Object.values(value).every((v) => Number.isFinite(v))) return undefined;
    return `${path} is not an object of numbers`;
  }
  if (Array.isArray(spec)) {
    return typeof value === "string" && spec.includes(value)
      ? undefined
      : `${path} is ${JSON.stringify(value)}, not ${spec.join(" or ")}`;
  }
  if (!isObject(value)) return `${path} is ${typeName(value)}, not an object`;
  for (const [key, inner] of Object.entries(spec)) {
    const problem = fieldProblem(value[key], inner, path ? `${path}.${key}` : key);
    if (problem) return problem;
  }
  return undefined;
}

/**
 * Why `value` (a parsed `manifest.json`, read back from disk) is not a manifest this version can
 * use, or undefined when it is one: another format, or a field that is missing or of the wrong
 * type.
 */
export function manifestProblem(value: unknown): string | undefined {
  if (!isObject(value)) return `it is ${typeName(value)}, not an object`;
  if (value.format !== MANIFEST_FORMAT) {
    return `its format is ${
      JSON.stringify(value.format) ?? "missing"
    }, this vmfactory reads format ${MANIFEST_FORMAT}`;
  }
  return fieldProblem(value, MANIFEST_SPEC, "");
}

/** Reads a file's identity. */
export function fileIdentity(path: string): FileIdentity {
  const st = Deno.statSync(path);
  return { path, size: st.size, mtimeMs: st.mtime?.getTime() ?? 0 };
}

/**
 * Lists, in words, every difference between what a template was built from and what is asked
 * now; empty when the template may be used.
 */
export function templateDifferences(built: TemplateInputs, wanted: TemplateInputs): string[] {
  const out: string[] = [];
  const file = (what: string, a: FileIdentity, b: FileIdentity) => {
    if (a.path !== b.path) out.push(`${what} is ${b.path}, the template used ${a.path}`);
    else if (a.size !== b.size || a.mtimeMs !== b.mtimeMs) {
      out.push(`${what} ${b.path} changed since the template was built`);
    }
  };
  file("QEMU", built.qemu, wanted.qemu);
  file("kernel", built.kernel, wanted.kernel);
  file("initrd", built.initrd, wanted.initrd);
  if (built.append !== wanted.append) {
    out.push(`kernel_params give "${wanted.append}", the template used "${built.append}"`);
  }
  if (built.accel !== wanted.accel) {
    out.push(`the accelerator is ${wanted.accel}, the template ran with ${built.accel}`);
  }
  const names: Record<keyof MachineShape, string> = {
    machine: "machine_type",
    cpus: "default_vcpus",
    maxCpus: "default_maxvcpus",
    memoryMiB: "default_memory",
    slots: "memory_slots",
    maxMemoryMiB: "maximum memory",
  };
  for (const key of Object.keys(names) as (keyof MachineShape)[]) {
    if (built.shape[key] !== wanted.shape[key]) {
      out.push(`${names[key]} is ${wanted.shape[key]}, the template has ${built.shape[key]}`);
    }
  }
  return out;
}
