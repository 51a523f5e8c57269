/**
 * Taking over a VM a cache offered: its folder moves `offered` → `building` (this process the
 * owner) and its agent is connected; the factory then makes it the caller's.
 * @module
 */
import { VmfactoryError } from "../errors.ts";
import type { SourceVm } from "../factory/vm_source.ts";
import { AgentClient } from "../guest/agent_client.ts";
import { isAlive } from "../process_identity.ts";
import type { VmRecord } from "../vm/vm_record.ts";
import { processOf, type VmStore } from "../vm/vm_store.ts";

/**
 * Adopts the offered VM `offered` (as the cache described it) in `store`; the folder's own record
 * must name the same QEMU. On failure the VM is stopped and its folder removed.
 */
export async function adoptOffered(store: VmStore, offered: VmRecord): Promise<SourceVm> {
  const pending = await store.adopt(offered.id);
  try {
    const own = pending.previous!;
    if (own.pid !== offered.pid || own.startTime !== offered.startTime) {
      throw new VmfactoryError("take over the cached VM", `VM ${offered.id} names another QEMU`);
    }
    if (!isAlive(processOf(own))) {
      throw new VmfactoryError("take over the cached VM", `its QEMU (pid ${own.pid}) is gone`);
    }
    const agent = await AgentClient.connect(pending.paths.agentSocket, { timeoutMs: 10_000 });
    return {
      pending,
      agent,
      size: { cpus: own.cpus, memoryMiB: own.memoryMiB },
      origin: "cache",
      accel: own.accel,
      sharesBoot: false,
    };
  } catch (err) {
    await pending.dispose();
    throw err;
  }
}
