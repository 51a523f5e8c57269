/**
 * One clone: load the template's device state into a `-incoming defer` QEMU whose RAM maps the
 * template's memory file privately, resume it, hot-add what the request needs beyond the
 * template's shape, and make the guest unique.
 * @module
 */
import { loadFromFileUri } from "../qemu/migration_uri.ts";
import { pollUntil } from "../poll_until.ts";
import { VmfactoryError } from "../errors.ts";
import { type AgentClient, waitForAgent } from "../guest/agent_client.ts";
import type { QmpClient } from "../qemu/qmp_client.ts";
import { waitForQmpSocket } from "../qemu/qmp_client.ts";
import { personalize } from "../vm/personalize.ts";
import type { PhaseTimer } from "../vm/vm_record.ts";
import type { VmPaths } from "../vm/vm_store.ts";
import type { FoundTemplate } from "./template_files.ts";

/** How long a clone may take to load and answer before it is given up. */
export const CLONE_TIMEOUT_MS = 20_000;

/** Memory hotplug granularity on x86 (one Linux memory block). */
const DIMM_ALIGN_MIB = 128;
const MIB = 1024 * 1024;

/** Loads the template state into the waiting QEMU at `paths` and resumes it. */
export async function loadAndResume(
  qmp: QmpClient,
  template: FoundTemplate,
  timer: PhaseTimer,
): Promise<void> {
  await qmp.execute("migrate-set-capabilities", {
    capabilities: [{ capability: "x-ignore-shared", state: true }],
  });
  await qmp.execute("migrate-incoming", { uri: loadFromFileUri(template.files.state) });
  const loaded = await pollUntil(async () => {
    const { status } = await qmp.execute<{ status: string }>("query-status");
    if (status === "inmigrate") return undefined;
    if (status !== "paused" && status !== "postmigrate") {
      throw new VmfactoryError("load the template state", `the clone is ${status}`);
    }
    return status;
  }, { timeoutMs: CLONE_TIMEOUT_MS, intervalMs: 1, maxIntervalMs: 8 });
  if (!loaded) {
    throw new VmfactoryError("load the template state", "still loading after the deadline");
  }
  timer.mark("loadMs");
  await qmp.execute("cont");
  timer.mark("contMs");
}

/** Hot-adds vCPUs up to `cpus` and memory up to `memoryMiB`; returns the shape reached. */
export async function hotAdd(
  qmp: QmpClient,
  have: { cpus: number; memoryMiB: number },
  want: { cpus: number; memoryMiB: number },
): Promise<{ cpus: number; memoryMiB: number }> {
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
    await qmp.execute("object-add", {
      "qom-type": "memory-backend-ram",
      id,
      size: add * 1024 * 1024,
    });
    await qmp.execute("device_add", { driver: "pc-dimm", id: `dimm-${id}`, memdev: id });
    memoryMiB += add;
  }
  return { cpus, memoryMiB };
}

/**
 * Onlines hot-added vCPUs and memory blocks in the guest, retrying while the guest is still
 * handling the ACPI hotplug events, until `cpus` are online and MemTotal reaches `memTotal`.
 */
async function onlineHotAdded(
  agent: AgentClient,
  cpus: number,
  memTotal: number,
): Promise<void> {
  let last = { cpusOnline: 0, memTotal: 0 };
  const done = await pollUntil(async () => {
    await agent.onlineHotplugged();
    last = await agent.info();
    return last.cpusOnline >= cpus && last.memTotal >= memTotal ? true : undefined;
  }, { timeoutMs: CLONE_TIMEOUT_MS, intervalMs: 20 });
  if (!done) {
    throw new VmfactoryError(
      "online hot-added resources",
      `${last.cpusOnline}/${cpus} vCPUs online, MemTotal ${last.memTotal} of ${memTotal} bytes`,
    );
  }
}

/** Result of {@link finishClone}. */
export interface CloneResult {
  /** vCPUs online. */
  cpus: number;
  /** Memory in MiB. */
  memoryMiB: number;
}

/**
 * Loads the template state into the waiting QEMU (`pid`, started with `-incoming defer` in
 * `paths`), resumes it and returns a connected client once the guest agent answers. May be
 * called once per `-incoming defer` process.
 */
export async function resumeClone(
  template: FoundTemplate,
  paths: VmPaths,
  pid: number,
  timer: PhaseTimer,
): Promise<AgentClient> {
  const qmp = await waitForQmpSocket(paths.qmpSocket, {
    pid,
    logFile: `${paths.dir}/qemu.log`,
    timeoutMs: CLONE_TIMEOUT_MS,
  });
  try {
    timer.mark("qmpMs");
    await loadAndResume(qmp, template, timer);
  } finally {
    qmp.close();
  }
  const agent = await waitForAgent(paths.agentSocket, { deadline: Date.now() + CLONE_TIMEOUT_MS });
  timer.mark("agentMs");
  return agent;
}

/**
 * Makes a resumed clone the caller's VM: hot-adds what `want` needs beyond the template's shape
 * (and onlines it), then sets a new boot_id, RNG seed, the host clock and the hostname.
 */
export async function finishClone(
  template: FoundTemplate,
  paths: VmPaths,
  agent: AgentClient,
  want: { cpus: number; memoryMiB: number; hostname: string },
  timer: PhaseTimer,
): Promise<CloneResult> {
  const base = template.manifest.shape;
  let shape = { cpus: base.cpus, memoryMiB: base.memoryMiB };
  const growing = want.cpus > shape.cpus || want.memoryMiB > shape.memoryMiB;
  let target = 0;
  if (growing) {
    const before = (await agent.info()).memTotal;
    const qmp = await waitForQmpSocket(paths.qmpSocket, { timeoutMs: CLONE_TIMEOUT_MS });
    try {
      shape = await hotAdd(qmp, shape, want);
    } finally {
      qmp.close();
    }
    target = before + (shape.memoryMiB - base.memoryMiB) * 0.9 * MIB;
  }
  await Promise.all([
    personalize(agent, { hostname: want.hostname, newBootId: true }),
    growing ? onlineHotAdded(agent, shape.cpus, target) : undefined,
  ]);
  timer.mark(growing ? "personalizeAndHotplugMs" : "personalizeMs");
  return shape;
}
