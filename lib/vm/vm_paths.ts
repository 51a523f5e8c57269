/** Where a VM's files live: every path derives from its folder, never from a record. @module */

/** File locations inside one VM's folder. */
export interface VmPaths {
  /** VM id (the folder name). */
  id: string;
  /** The folder. */
  dir: string;
  /** QMP socket. */
  qmpSocket: string;
  /** Agent socket. */
  agentSocket: string;
  /** Serial console log. */
  consoleLog: string;
  /** QEMU pid file. */
  pidFile: string;
  /**
   * QEMU's working folder (0711): files QEMU must open after it dropped to its own user (a
   * workload's image disk) are linked in here and named relative to it, so the VM folder and the
   * state directory stay 0700.
   */
  qemuDir: string;
}

/** Paths of a VM folder `dir` named `id`. */
export function vmPaths(dir: string, id: string): VmPaths {
  return {
    id,
    dir,
    qmpSocket: `${dir}/qmp.sock`,
    agentSocket: `${dir}/agent.sock`,
    consoleLog: `${dir}/console.log`,
    pidFile: `${dir}/qemu.pid`,
    qemuDir: `${dir}/qemu`,
  };
}

/** Makes a new short random id (the folder name of a VM). */
export function newVmId(): string {
  return crypto.randomUUID().replaceAll("-", "").slice(0, 10);
}
