/**
 * What a template was built from. A template is valid only once `manifest.json` exists (it is
 * written last, atomically); a clone uses it only when every input still matches.
 * @module
 */
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

/** Everything a clone must match; written as `manifest.json` beside `memory` and `state`. */
export interface TemplateManifest {
  /** Manifest format version. */
  format: 1;
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
  accel: "kvm" | "tcg";
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
  /** Machine shape. */
  shape: MachineShape;
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
