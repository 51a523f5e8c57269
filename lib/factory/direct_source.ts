/**
 * The direct source: every VM is a cold boot of the configured guest, at the requested size.
 * @module
 */
import type { Settings } from "../config/settings.ts";
import { VmfactoryError } from "../errors.ts";
import { type AgentClient, waitForAgent } from "../guest/agent_client.ts";
import { isAlive, type ProcessIdentity } from "../process_identity.ts";
import { buildQemuArgs, DEFAULT_CONSOLE_LOG_MAX } from "../qemu/qemu_command.ts";
import { startQemu } from "../qemu/qemu_process.ts";
import { consoleTail } from "../vm/console_log.ts";
import type { PhaseTimer } from "../vm/vm_record.ts";
import type { VmPaths } from "../vm/vm_paths.ts";
import type { VmStore } from "../vm/vm_store.ts";
import {
  type BootPlan,
  type BootPlanHooks,
  qemuSpecFor,
  resolveBootPlan,
  type SpecOptions,
  startOptionsFor,
} from "./boot_plan.ts";
import type { Size, SourceSupply, SourceVm, VmRequest, VmSource } from "./vm_source.ts";

/** How long a cold boot may take before it is given up (TCG boots take seconds). */
export const BOOT_TIMEOUT_MS = 90_000;

/** A QEMU process booted from `plan` into `paths`, running and answering QMP. */
async function spawnVm(
  plan: BootPlan,
  paths: VmPaths,
  opts: SpecOptions = {},
): Promise<ProcessIdentity> {
  const spec = qemuSpecFor(plan, paths, opts);
  return await startQemu(buildQemuArgs(spec), {
    ...startOptionsFor(paths, spec),
    qmpSocket: paths.qmpSocket,
  });
}

/**
 * Waits until a booting VM's agent answers (up to {@link BOOT_TIMEOUT_MS}); fails at once when
 * `watch.process` (its QEMU) exits or `watch.signal` aborts. On failure the error carries the last
 * lines of the guest console.
 */
export async function waitForBoot(
  paths: VmPaths,
  action: string,
  watch: { process?: ProcessIdentity; signal?: AbortSignal; consoleLogMax?: number } = {},
): Promise<AgentClient> {
  try {
    return await waitForAgent(paths.agentSocket, {
      deadline: Date.now() + BOOT_TIMEOUT_MS,
      giveUp: () => quitReason(watch),
    });
  } catch (err) {
    const tail = await consoleTail(paths, watch.consoleLogMax ?? DEFAULT_CONSOLE_LOG_MAX, 3);
    throw new VmfactoryError(
      action,
      `${(err as Error).message}${tail ? `; console: ${tail}` : ""}`,
      { cause: err },
    );
  }
}

/** Why waiting for a VM's agent is pointless: its QEMU exited, or the caller gave up. */
export function quitReason(watch: { process?: ProcessIdentity; signal?: AbortSignal }) {
  if (watch.signal?.aborted) return "interrupted";
  if (watch.process && !isAlive(watch.process)) return "QEMU exited";
  return undefined;
}

/**
 * A direct source for `settings` (resolves the boot plan: may build the built-in guest).
 * @example
 * ```ts
 * const factory = new VmFactory(await directSourceFor(settings, store));
 * const vm = await factory.getVm(); // a cold boot
 * ```
 */
export async function directSourceFor(
  settings: Settings,
  store: VmStore,
  hooks: BootPlanHooks = {},
): Promise<DirectSource> {
  return new DirectSource(await resolveBootPlan(settings, hooks), store);
}

/**
 * Cold-boots VMs of `plan` into folders of `store`.
 * @example
 * ```ts
 * const plan = await resolveBootPlan(settings);
 * const vm = await new VmFactory(new DirectSource(plan, store)).getVm({ cpus: 2 });
 * ```
 */
export class DirectSource implements VmSource {
  /** Always "direct". */
  readonly kind = "direct";

  /** A source booting `plan` into folders of `store`. */
  constructor(readonly plan: BootPlan, readonly store: VmStore) {}

  /** Boots at any size: the request's, else the plan's. */
  prepare(request: VmRequest): Promise<SourceSupply> {
    const cpus = request.cpus ?? this.plan.cpus;
    const memoryMiB = request.memoryMiB ?? this.plan.memoryMiB;
    return Promise.resolve({
      shape: {
        cpus,
        memoryMiB,
        maxCpus: Math.max(this.plan.maxCpus, cpus),
        maxMemoryMiB: Math.max(this.plan.maxMemoryMiB, memoryMiB),
      },
      acquire: (want, timer) => this.boot(want, timer),
    });
  }

  /** Boots a VM of `size` and waits until its agent answers. */
  async boot(size: Size, timer: PhaseTimer): Promise<SourceVm> {
    const pending = await this.store.allocate();
    try {
      pending.process = await spawnVm(this.plan, pending.paths, size);
      timer.mark("spawnMs");
      const agent = await waitForBoot(pending.paths, "boot a VM", {
        process: pending.process,
        consoleLogMax: this.plan.consoleLogMax,
      });
      timer.mark("bootMs");
      return { pending, agent, size, origin: "direct", accel: this.plan.accel, sharesBoot: false };
    } catch (err) {
      await pending.dispose();
      throw err;
    }
  }

  /** The plan this source boots. */
  status(): Promise<Record<string, unknown>> {
    return Promise.resolve({ plan: this.plan });
  }
}
