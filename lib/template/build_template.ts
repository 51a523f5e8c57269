/**
 * Builds a template: boot the guest with its RAM in a shared file on tmpfs, wait for the agent,
 * let it settle, pause, save the device state with `x-ignore-shared` (RAM stays in the file), quit.
 * Atomic: files are made in a `.build-*` folder and moved into place; `manifest.json` is written
 * last, so a crash at any point leaves the old template or none, never a half one.
 *
 * The state goes out over a Unix socket this process listens on (a sandboxed QEMU cannot run
 * `exec:cat`). QEMU's working directory is the build's `save/` folder (mode 0711, this user's),
 * and the URI names the socket relative to it: a QEMU that switched user can
 * reach it, and nobody else can, since the build folder above it is 0700.
 * @module
 */
import { receiveMigration, saveToSocketUri } from "../qemu/migration_uri.ts";
import { pollUntil, sleep } from "../poll_until.ts";
import { VmfactoryError } from "../errors.ts";
import { buildQemuArgs } from "../qemu/qemu_command.ts";
import { type ProcessIdentity, signalProcess } from "../process_identity.ts";
import { connectQmp, readPidFile, startQemu, stopQemu } from "../qemu/qemu_process.ts";
import type { QmpClient } from "../qemu/qmp_client.ts";
import { vmPaths } from "../vm/vm_paths.ts";
import { type BootPlan, qemuSpecFor, shapeOf, startOptionsFor } from "../factory/boot_plan.ts";
import { waitForBoot } from "../factory/direct_source.ts";
import { PhaseTimer } from "../vm/vm_record.ts";
import { templateFiles, writeManifest } from "./template_files.ts";
import {
  fileIdentity,
  MANIFEST_FORMAT,
  type TemplateInputs,
  type TemplateManifest,
} from "./template_manifest.ts";

/** Longest a device-state save may take (it is ~0.4 MB; RAM stays in the shared file). */
const SAVE_TIMEOUT_MS = 30_000;

/** Pause after the agent first answers so that boot-time work in the guest finishes. */
const SETTLE_MS = 300;

/**
 * The socket the state arrives on, in QEMU's working directory (`save/sock`: shorter than
 * `agent.sock`, so the settings' socket-length check covers it).
 */
const SAVE_SOCKET = "sock";

/** What the template of `plan` must match (compared with a manifest by `templateDifferences`). */
export function templateInputs(plan: BootPlan): TemplateInputs {
  return {
    qemu: fileIdentity(plan.qemuPath),
    kernel: fileIdentity(plan.kernel),
    initrd: fileIdentity(plan.initrd),
    append: plan.append,
    accel: plan.accel,
    shape: shapeOf(plan),
  };
}

/**
 * The boot plan clones of a template use: everything comes from its manifest, except how much
 * serial console a clone keeps (not part of the template: `[vmfactory] console_log_max`).
 */
export function planFromManifest(m: TemplateManifest, consoleLogMax?: number): BootPlan {
  return {
    consoleLogMax,
    qemuPath: m.qemu.path,
    kernel: m.kernel.path,
    initrd: m.initrd.path,
    append: m.append,
    accel: m.accel,
    ...m.shape,
  };
}

/** Waits until QEMU reports the outgoing migration completed. */
async function waitSaved(qmp: QmpClient): Promise<void> {
  const saved = await pollUntil(async () => {
    const info = await qmp.execute<{ status?: string; "error-desc"?: string }>("query-migrate");
    if (info.status === "failed" || info.status === "cancelled") {
      throw new VmfactoryError("save the template state", info["error-desc"] ?? info.status);
    }
    return info.status === "completed" ? true : undefined;
  }, { timeoutMs: SAVE_TIMEOUT_MS, intervalMs: 2 });
  if (!saved) throw new VmfactoryError("save the template state", "migration hangs");
}

/**
 * Removes what an interrupted build left in `dir`: `.build-*` folders, after stopping a template
 * QEMU still running from one of them.
 */
export async function removeLeftovers(dir: string): Promise<number> {
  let removed = 0;
  for (const entry of [...Deno.readDirSync(dir)]) {
    if (!entry.name.startsWith(".build-")) continue;
    const build = `${dir}/${entry.name}`;
    const process = readPidFile(`${build}/qemu.pid`);
    if (process) await stopQemu({ process, qmpSocket: `${build}/qmp.sock` }, { graceMs: 300 });
    await Deno.remove(build, { recursive: true });
    removed++;
  }
  return removed;
}

/** Hooks for progress by phase. */
export interface BuildHooks {
  /** Called as each phase starts. */
  onPhase?: (phase: string) => void;
  /** Aborts the build (Ctrl-C): the template QEMU is stopped and the build folder removed. */
  signal?: AbortSignal;
}

/**
 * Builds a template of `plan` into `dir` (a tmpfs) and publishes it. Call only when no complete
 * template is in `dir` (the caller removes a stale one first).
 */
export async function buildTemplate(
  plan: BootPlan,
  dir: string,
  hooks: BuildHooks = {},
): Promise<TemplateManifest> {
  const timer = new PhaseTimer();
  const id = crypto.randomUUID().slice(0, 8);
  const buildDir = `${dir}/.build-${id}`;
  await Deno.mkdir(buildDir, { mode: 0o700 });
  const paths = vmPaths(buildDir, `template-${id}`);
  const files = templateFiles(buildDir);
  let process: ProcessIdentity | undefined;
  const abort = () => {
    if (process) signalProcess(process, "SIGKILL");
  };
  hooks.signal?.addEventListener("abort", abort);
  try {
    hooks.onPhase?.("boot the template VM");
    await Deno.writeFile(files.memory, new Uint8Array());
    await Deno.truncate(files.memory, plan.memoryMiB * 1024 * 1024);
    const saveDir = `${buildDir}/save`;
    await Deno.mkdir(saveDir);
    await Deno.chmod(saveDir, 0o711); // not subject to the umask
    const spec = qemuSpecFor(plan, paths, {
      memory: { kind: "file", path: files.memory, share: true },
    });
    process = await startQemu(buildQemuArgs(spec), {
      ...startOptionsFor(paths, spec),
      qmpSocket: paths.qmpSocket,
      cwd: saveDir,
    });
    hooks.signal?.throwIfAborted();
    const agent = await waitForBoot(paths, "boot the template VM", {
      process,
      signal: hooks.signal,
      consoleLogMax: plan.consoleLogMax,
    });
    timer.mark("bootMs");
    hooks.onPhase?.("let the guest settle");
    await sleep(SETTLE_MS);
    // Disconnect the agent before saving: each clone's agent then sleeps until its host connects.
    agent.close();
    await sleep(50);
    timer.mark("settleMs");
    hooks.signal?.throwIfAborted();

    hooks.onPhase?.("save the device state");
    const qmp = await connectQmp(paths.qmpSocket, {
      process,
      logFile: `${buildDir}/qemu.log`,
      timeoutMs: 5000,
    });
    let version: string;
    try {
      version = qmp.version;
      await qmp.execute("stop");
      await qmp.execute("migrate-set-capabilities", {
        capabilities: [{ capability: "x-ignore-shared", state: true }],
      });
      const receiver = receiveMigration(`${saveDir}/${SAVE_SOCKET}`, files.state);
      try {
        await qmp.execute("migrate", { uri: saveToSocketUri(SAVE_SOCKET) });
        await waitSaved(qmp);
        await receiver.done;
      } finally {
        receiver.close();
      }
      timer.mark("saveMs");
    } finally {
      qmp.close();
    }
    await stopQemu({ process, qmpSocket: paths.qmpSocket }, { graceMs: 2000 });
    process = undefined;
    hooks.signal?.throwIfAborted();

    hooks.onPhase?.("publish");
    const final = templateFiles(dir);
    await Deno.rename(files.state, final.state);
    await Deno.rename(files.memory, final.memory);
    timer.mark("publishMs");
    const inputs = templateInputs(plan);
    const manifest: TemplateManifest = {
      format: MANIFEST_FORMAT,
      id,
      createdAt: new Date().toISOString(),
      ...inputs,
      qemu: { ...inputs.qemu, version },
      stateBytes: Deno.statSync(final.state).size,
      buildMs: timer.done().phases,
    };
    await writeManifest(dir, manifest);
    return manifest;
  } finally {
    hooks.signal?.removeEventListener("abort", abort);
    if (process) await stopQemu({ process, qmpSocket: paths.qmpSocket }, { graceMs: 300 });
    await Deno.remove(buildDir, { recursive: true }).catch(() => {});
  }
}
