/**
 * Growing a running VM: hot-add vCPUs and memory DIMMs over QMP, then online them in the guest.
 * @module
 */
import { VmfactoryError } from "../errors.ts";
import type { AgentClient } from "../guest/agent_client.ts";
import { pollUntil } from "../poll_until.ts";
import { QmpClient } from "../qemu/qmp_client.ts";
import type { Size } from "./vm_source.ts";

/** How long onlining hot-added resources may take. */
const ONLINE_TIMEOUT_MS = 20_000;
/** Memory hotplug granularity on x86 (one Linux memory block). */
const DIMM_ALIGN_MIB = 128;
const MIB = 1024 * 1024;

/**
 * Hot-adds vCPUs up to `want.cpus` and memory up to `want.memoryMiB` to the QEMU serving
 * `qmpSocket`; returns the size reached. May be called on a running VM.
 */
export async function hotAdd(qmpSocket: string, have: Size, want: Size): Promise<Size> {
  const qmp = await QmpClient.connect(qmpSocket, { timeoutMs: 5000 });
  try {
    let cpus = have.cpus;
    if (want.cpus > cpus) {
      const slots = await qmp.execute<
        { type: string; props: Record<string, number>; "qom-path"?: string }[]
      >("query-hotpluggable-cpus");
      const free = slots.filter((s) => !s["qom-path"]).reverse();
      if (free.length < want.cpus - cpus) {
        throw new VmfactoryError(
          `hot-add ${want.cpus - cpus} vCPUs`,
          `only ${free.length} free vCPU slots (raise default_maxvcpus)`,
        );
      }
      for (const slot of free.slice(0, want.cpus - cpus)) {
        await qmp.execute("device_add", { driver: slot.type, id: `hcpu${cpus}`, ...slot.props });
        cpus++;
      }
    }
    let memoryMiB = have.memoryMiB;
    if (want.memoryMiB > memoryMiB) {
      const add = Math.ceil((want.memoryMiB - memoryMiB) / DIMM_ALIGN_MIB) * DIMM_ALIGN_MIB;
      const id = `hmem${Date.now().toString(36)}`;
      await qmp.execute("object-add", { "qom-type": "memory-backend-ram", id, size: add * MIB });
      await qmp.execute("device_add", { driver: "pc-dimm", id: `dimm-${id}`, memdev: id });
      memoryMiB += add;
    }
    return { cpus, memoryMiB };
  } finally {
    qmp.close();
  }
}

/**
 * Onlines hot-added vCPUs and memory blocks in the guest, retrying while the guest still handles
 * the ACPI hotplug events, until `cpus` are online and MemTotal grew by about `addedMiB`
 * (the kernel keeps ~10% of a new block for its own structures) over `memTotalBefore` bytes.
 */
export async function onlineHotAdded(
  agent: AgentClient,
  cpus: number,
  memTotalBefore: number,
  addedMiB: number,
): Promise<void> {
  const memTotal = memTotalBefore + addedMiB * 0.9 * MIB;
  let last = { cpusOnline: 0, memTotal: 0 };
  const done = await pollUntil(async () => {
    await agent.onlineHotplugged();
    last = await agent.info();
    return last.cpusOnline >= cpus && last.memTotal >= memTotal ? true : undefined;
  }, { timeoutMs: ONLINE_TIMEOUT_MS, intervalMs: 20 });
  if (!done) {
    throw new VmfactoryError(
      "online hot-added resources",
      `${last.cpusOnline}/${cpus} vCPUs online, MemTotal ${last.memTotal} of ${memTotal} bytes`,
    );
  }
}
