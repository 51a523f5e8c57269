/**
 * One clone: a `-incoming defer` QEMU whose RAM maps the template's memory file privately, loaded
 * with the template's device state and resumed; ready once its agent answers. The state file is
 * opened by this process and inherited by QEMU as fd 3 (`migrate-incoming fd:3`): a sandboxed
 * QEMU runs no `cat`, and one that switched user need not be able to open the file.
 * @module
 */
import { loadFromFdUri } from "../qemu/migration_uri.ts";
import { pollUntil } from "../poll_until.ts";
import { VmfactoryError } from "../errors.ts";
import { type AgentClient, waitForAgent } from "../guest/agent_client.ts";
import type { ProcessIdentity } from "../process_identity.ts";
import { buildQemuArgs, type QemuSpec } from "../qemu/qemu_command.ts";
import { connectQmp, FIRST_PASSED_FD, startQemu } from "../qemu/qemu_process.ts";
import type { QmpClient } from "../qemu/qmp_client.ts";
import { type BootPlan, qemuSpecFor, startOptionsFor } from "../factory/boot_plan.ts";
import { quitReason } from "../factory/direct_source.ts";
import type { PhaseTimer } from "../vm/vm_record.ts";
import type { VmPaths } from "../vm/vm_paths.ts";
import type { FoundTemplate } from "./template_files.ts";

/** How long a clone may take to load and answer before it is given up. */
export const CLONE_TIMEOUT_MS = 20_000;

/** The QEMU spec of a clone of `template` (RAM mapped privately from the template's file). */
export function cloneSpec(plan: BootPlan, template: FoundTemplate, paths: VmPaths): QemuSpec {
  return qemuSpecFor(plan, paths, {
    memory: { kind: "file", path: template.files.memory, share: false },
    incoming: "defer",
  });
}

/**
 * Starts a clone process in `paths` (waiting only for the spawn), with the template's state file
 * as its fd 3 and in its cgroup.
 */
export async function startCloneProcess(
  plan: BootPlan,
  template: FoundTemplate,
  paths: VmPaths,
): Promise<ProcessIdentity> {
  const spec = cloneSpec(plan, template, paths);
  return await startQemu(buildQemuArgs(spec), {
    ...startOptionsFor(paths, spec),
    passFiles: [template.files.state],
  });
}

/**
 * Loads the state of `template` into the waiting QEMU behind `qmp` (from the fd it was started
 * with, see {@link startCloneProcess}) and resumes it.
 */
async function loadAndResume(
  qmp: QmpClient,
  template: FoundTemplate,
  timer: PhaseTimer,
): Promise<void> {
  const action = `load the state of template ${template.manifest.id}`;
  await qmp.execute("migrate-set-capabilities", {
    capabilities: [{ capability: "x-ignore-shared", state: true }],
  });
  await qmp.execute("migrate-incoming", { uri: loadFromFdUri(FIRST_PASSED_FD) });
  const loaded = await pollUntil(async () => {
    const { status } = await qmp.execute<{ status: string }>("query-status");
    if (status === "inmigrate") return undefined;
    if (status !== "paused" && status !== "postmigrate") {
      throw new VmfactoryError(action, `the clone is ${status}`);
    }
    return status;
  }, { timeoutMs: CLONE_TIMEOUT_MS, intervalMs: 1, maxIntervalMs: 8 });
  if (!loaded) {
    throw new VmfactoryError(action, "still loading after the deadline");
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
  const agent = await waitForAgent(paths.agentSocket, {
    deadline: Date.now() + CLONE_TIMEOUT_MS,
    giveUp: () => quitReason({ process }),
  });
  timer.mark("agentMs");
  return agent;
}
