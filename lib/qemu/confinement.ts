/** How this host confines QEMU, in one object for `factory status`. @module */
import { type CgroupSupport, cgroupSupport } from "./cgroup.ts";
import { sandboxArgs } from "./qemu_command.ts";
import { qemuRunAs } from "./qemu_user.ts";

/** How every QEMU of the tool runs here. */
export interface Confinement {
  /** The `-sandbox` option value (seccomp) every QEMU starts with. */
  sandbox: string;
  /** The user QEMU runs as: the one it switches to as root, else the tool's. */
  user: string;
  /** Per-VM cgroup limits: whether they are enforced, and why (not). */
  limits: CgroupSupport;
}

/** The confinement of QEMU on this host (prepares the cgroup parent once per process). */
export function confinement(): Confinement {
  const runAs = qemuRunAs();
  return {
    sandbox: sandboxArgs(runAs)[1],
    user: runAs ?? `the tool's own (uid ${Deno.uid()})`,
    limits: cgroupSupport(),
  };
}
