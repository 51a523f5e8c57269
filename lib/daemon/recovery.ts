/**
 * Start-up recovery of a daemon: what a dead predecessor (or any dead process) left in the state
 * directory. The store's reap stops and removes the `building` and `cached` VMs of dead owners and
 * gives the `offered` ones of a dead VMCache server to their clients (`owned`); a daemon that
 * keeps the clone pool also destroys the pooled clones it finds (a stopping daemon destroys its
 * pool, so a crash ends the same way). VMs handed out (`owned`) are never touched.
 * @module
 */
import type { VmStore } from "../vm/vm_store.ts";
import type { DaemonLog } from "./daemon_log.ts";

/**
 * Reaps `store` and, with `drainPool`, destroys its pooled clones; logs what it removed.
 * @example
 * ```ts
 * await recoverStateDir(store, log, { drainPool: () => pool.drain() });
 * ```
 */
export async function recoverStateDir(
  store: VmStore,
  log: DaemonLog,
  options: { drainPool?: () => Promise<number> } = {},
): Promise<{ reaped: string[]; drained: number }> {
  const reaped = await store.reap();
  if (reaped.length) {
    log.info(
      `recovery: removed ${reaped.length} VM(s) that dead processes left building or cached: ${
        reaped.join(", ")
      }`,
    );
  }
  const drained = (await options.drainPool?.()) ?? 0;
  if (drained) log.info(`recovery: destroyed ${drained} pooled clone(s) of a previous daemon`);
  return { reaped, drained };
}
