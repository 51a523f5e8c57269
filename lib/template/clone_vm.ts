/**
 * One clone: a `-incoming defer` QEMU whose RAM maps the template's memory file privately, loaded
 * with the template's device state and resumed; ready once its agent answers.
 * @module
 */
import { loadFromFileUri } from "../qemu/migration_uri.ts";
import { pollUntil } from "../poll_until.ts";
import { VmfactoryError } from "../errors.ts";
import { type AgentClient, waitForAgent } from "../guest/agent_client.ts";
import type { ProcessIdentity } from "../process_identity.ts";
import { buildQemuArgs } from "../qemu/qemu_command.ts";
import { connectQmp, startQemu } from "../qemu/qemu_process.ts";
import type { QmpClient } from "../qemu/qmp_client.ts";
import { type BootPlan, qemuSpecFor } from "../factory/boot_plan.ts";
import type { PhaseTimer } from "../vm/vm_record.ts";
import type { VmPaths } from "../vm/vm_paths.ts";
import type { FoundTemplate } from "./template_files.ts";

/** How long a clone may take to load and answer before it is given up. */
export const CLONE_TIMEOUT_MS = 20_000;

/** The QEMU argv of a clone of `template` (RAM mapped privately from the template's file). */
export function cloneArgs(plan: BootPlan, template: FoundTemplate, paths: VmPaths): string[] {
  return buildQemuArgs(qemuSpecFor(plan, paths, {
    memory: { kind: "file", path: template.files.memory, share: false },
    incoming: "defer",
  }));
}

/** Starts a clone process in `paths` (waiting only for the spawn). */
export async function startCloneProcess(
  plan: BootPlan,
  template: FoundTemplate,
  paths: VmPaths,
): Promise<ProcessIdentity> {
  return await startQemu(cloneArgs(plan, template, paths), {
    logFile: `${paths.dir}/qemu.log`,
    pidFile: paths.pidFile,
  });
}

/** Loads the template state into the waiting QEMU behind `qmp` and resumes it. */
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

/**
 * Loads the template state into the waiting QEMU `process` (started with `-incoming defer` in
 * `paths`), resumes it and returns a connected client once the guest agent answers. May be
 * called once per `-incoming defer` process.
 */
export async function resumeClone(
  template: FoundTemplate,
  paths: VmPaths,
  process: ProcessIdentity,
  timer: PhaseTimer,
): Promise<AgentClient> {
  const qmp = await connectQmp(paths.qmpSocket, {
    process,
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
