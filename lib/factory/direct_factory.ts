/**
 * The "direct" factory: every VM is a cold boot of the configured guest.
 * @module
 */
import { VmfactoryError } from "../errors.ts";
import { type AgentClient, waitForAgent } from "../guest/agent_client.ts";
import { buildQemuArgs } from "../qemu/qemu_command.ts";
import { readLogTail, startQemu, stopQemu } from "../qemu/qemu_process.ts";
import { personalize } from "../vm/personalize.ts";
import { PhaseTimer, type VmRecord } from "../vm/vm_record.ts";
import { recordFor, type VmPaths, type VmStore } from "../vm/vm_store.ts";
import type { Settings } from "../config/settings.ts";
import {
  type BootPlan,
  type BootPlanHooks,
  qemuSpecFor,
  resolveBootPlan,
  type SpecOptions,
} from "./boot_plan.ts";
import type { FactoryStatus, VmFactory, VmRequest } from "./vm_factory.ts";

/** How long a cold boot may take before it is given up (TCG boots take seconds). */
export const BOOT_TIMEOUT_MS = 90_000;

/** A QEMU process booted from `plan` into `paths`, running and answering QMP. */
export async function spawnVm(plan: BootPlan, paths: VmPaths, opts: SpecOptions = {}) {
  const argv = buildQemuArgs(qemuSpecFor(plan, paths, opts));
  return await startQemu(argv, {
    logFile: `${paths.dir}/qemu.log`,
    pidFile: paths.pidFile,
    qmpSocket: paths.qmpSocket,
  });
}

/**
 * Waits until a booting VM's agent answers (up to {@link BOOT_TIMEOUT_MS}); on failure the error
 * carries the last lines of the guest console.
 */
export async function waitForBoot(paths: VmPaths, action: string): Promise<AgentClient> {
  try {
    return await waitForAgent(paths.agentSocket, { deadline: Date.now() + BOOT_TIMEOUT_MS });
  } catch (err) {
    const tail = await readLogTail(paths.consoleLog, 3);
    throw new VmfactoryError(
      action,
      `${(err as Error).message}${tail ? `; console: ${tail}` : ""}`,
    );
  }
}

/** A direct factory for `settings` (resolves the boot plan: may build the built-in guest). */
export async function directFactoryFor(
  settings: Settings,
  store: VmStore,
  hooks: BootPlanHooks = {},
): Promise<DirectFactory> {
  return new DirectFactory(await resolveBootPlan(settings, hooks), store);
}

/** Cold-boots VMs; `getVm` may be called concurrently. */
export class DirectFactory implements VmFactory {
  /** Always "direct". */
  readonly kind = "direct";

  /** A factory booting `plan` into folders of `store`. */
  constructor(readonly plan: BootPlan, readonly store: VmStore) {}

  /** Boots a VM with the requested shape and waits until its agent answers. */
  async getVm(request: VmRequest): Promise<VmRecord> {
    const timer = new PhaseTimer();
    const paths = await this.store.allocate();
    const cpus = request.cpus ?? this.plan.cpus;
    const memoryMiB = request.memoryMiB ?? this.plan.memoryMiB;
    let pid = 0;
    try {
      ({ pid } = await spawnVm(this.plan, paths, { cpus, memoryMiB }));
      timer.mark("spawnMs");
      const agent = await waitForBoot(paths, "boot a VM");
      timer.mark("bootMs");
      const hostname = request.hostname ?? `vm-${paths.id}`;
      try {
        await personalize(agent, { hostname, newBootId: false });
      } finally {
        agent.close();
      }
      timer.mark("personalizeMs");
      const record = recordFor(paths, {
        pid,
        source: "direct",
        cpus,
        memoryMiB,
        hostname,
        accel: this.plan.accel,
        timings: timer.done(),
      });
      await this.store.save(record);
      return record;
    } catch (err) {
      if (pid) await stopQemu({ pid, qmpSocket: paths.qmpSocket }, { graceMs: 500 });
      await this.store.remove(paths.dir);
      throw err;
    }
  }

  /** The plan this factory boots. */
  status(): Promise<FactoryStatus> {
    return Promise.resolve({ kind: this.kind, plan: this.plan });
  }

  /** Nothing to release. */
  close(): Promise<void> {
    return Promise.resolve();
  }
}
