/**
 * A small pool of clones made ahead of time for the current template, so that a clone request
 * only has to make one of them unique. Each entry is a QEMU process started with the clone
 * command line (`-incoming defer`), loaded with the template state, resumed, and warmed once
 * through the agent (under TCG the first run of each guest code path costs tens of ms); then its
 * agent sleeps until a host connects (an idle entry uses ~1% of a core). Entries live in the
 * state directory (`pool.json` in a VM folder) so that any process can claim one; a claim is an
 * exclusive file create. The RNG seed, boot_id, clock and hostname are set at claim time.
 * @module
 */
import { AgentClient } from "../guest/agent_client.ts";
import { buildQemuArgs } from "../qemu/qemu_command.ts";
import { isQemuAlive, startQemu, stopQemu } from "../qemu/qemu_process.ts";
import { writeFileAtomic } from "../vm/atomic_write.ts";
import { PhaseTimer } from "../vm/vm_record.ts";
import { readJsonFile, readPidFile, type VmPaths, type VmStore } from "../vm/vm_store.ts";
import { type BootPlan, qemuSpecFor } from "../factory/boot_plan.ts";
import { personalize } from "../vm/personalize.ts";
import { resumeClone } from "./clone_vm.ts";
import type { FoundTemplate } from "./template_files.ts";

/** An entry still being prepared, or claimed but not taken, after this long was left by a crashed process. */
const STALE_PREPARE_MS = 60_000;

/** `pool.json`: what an entry was made for and whether it is ready. */
interface PoolMeta {
  templateId: string;
  ready: boolean;
  createdAt: string;
}

/** A pool entry as found on disk. */
export interface PoolEntry {
  /** Folder paths (the future VM's). */
  paths: VmPaths;
  /** Its `pool.json`. */
  meta: PoolMeta;
  /** QEMU pid, when its pid file exists. */
  pid?: number;
  /** When a process claimed it (ms since the epoch); undefined while unclaimed. */
  claimedAt?: number;
}

/** A claimed clone, resumed, with its agent connected. */
export interface ClaimedClone {
  /** Folder paths. */
  paths: VmPaths;
  /** QEMU pid. */
  pid: number;
  /** Connected agent client (the caller closes it). */
  agent: AgentClient;
}

/** The QEMU argv of a clone of `template` (RAM mapped privately from the template's file). */
export function cloneArgs(plan: BootPlan, template: FoundTemplate, paths: VmPaths): string[] {
  return buildQemuArgs(qemuSpecFor(plan, paths, {
    memory: { kind: "file", path: template.files.memory, share: false },
    incoming: "defer",
  }));
}

/** Starts a clone process (waiting only for QEMU's initialisation) in `paths`. */
export async function startCloneProcess(
  plan: BootPlan,
  template: FoundTemplate,
  paths: VmPaths,
): Promise<number> {
  const { pid } = await startQemu(cloneArgs(plan, template, paths), {
    logFile: `${paths.dir}/qemu.log`,
    pidFile: paths.pidFile,
  });
  return pid;
}

/** The pool of prepared clones of one state directory. */
export class ClonePool {
  /** A pool over the VM folders of `store`. */
  constructor(readonly store: VmStore) {}

  /** Unclaimed entries (of any template, ready or not). */
  entries(): PoolEntry[] {
    return this.#scan().filter((e) => e.claimedAt === undefined);
  }

  /** Every folder with a `pool.json`, claimed or not. */
  #scan(): PoolEntry[] {
    const out: PoolEntry[] = [];
    for (const paths of this.store.folders()) {
      const meta = readJsonFile<PoolMeta>(`${paths.dir}/pool.json`);
      if (!meta) continue; // not a pool entry
      let claimedAt: number | undefined;
      try {
        claimedAt = Deno.statSync(`${paths.dir}/claimed`).mtime?.getTime() ?? 0;
      } catch {
        // unclaimed
      }
      out.push({ paths, meta, pid: readPidFile(paths.pidFile), claimedAt });
    }
    return out;
  }

  /** Claims `entry` for this process; false when another process claimed it first. */
  #claim(entry: PoolEntry): boolean {
    try {
      Deno.openSync(`${entry.paths.dir}/claimed`, { createNew: true, write: true }).close();
      return true;
    } catch {
      return false;
    }
  }

  /** Stops a claimed entry's QEMU and removes its folder. */
  async #discard(entry: PoolEntry): Promise<void> {
    if (entry.pid) {
      await stopQemu({ pid: entry.pid, qmpSocket: entry.paths.qmpSocket }, { graceMs: 300 });
    }
    await this.store.remove(entry.paths.dir);
  }

  /**
   * Claims a ready clone of `templateId` and connects to its agent; undefined when the pool has
   * none. The caller owns the VM (and its folder, which stops being a pool entry).
   */
  async claim(templateId: string): Promise<ClaimedClone | undefined> {
    for (const entry of this.entries()) {
      if (entry.meta.templateId !== templateId || !entry.meta.ready || !entry.pid) continue;
      if (!this.#claim(entry)) continue;
      if (!isQemuAlive(entry.pid, { expectArg: entry.paths.qmpSocket })) {
        await this.#discard(entry);
        continue;
      }
      let agent: AgentClient;
      try {
        agent = await AgentClient.connect(entry.paths.agentSocket, { timeoutMs: 10_000 });
      } catch {
        await this.#discard(entry);
        continue;
      }
      await Deno.remove(`${entry.paths.dir}/pool.json`);
      await Deno.remove(`${entry.paths.dir}/claimed`);
      return { paths: entry.paths, pid: entry.pid, agent };
    }
    return undefined;
  }

  /** Makes one entry: start, load, resume, warm up through the agent, mark ready. */
  async #prepare(plan: BootPlan, template: FoundTemplate): Promise<void> {
    const paths = await this.store.allocate();
    const meta: PoolMeta = {
      templateId: template.manifest.id,
      ready: false,
      createdAt: new Date().toISOString(),
    };
    const metaPath = `${paths.dir}/pool.json`;
    await writeFileAtomic(metaPath, JSON.stringify(meta));
    let pid = 0;
    try {
      pid = await startCloneProcess(plan, template, paths);
      const agent = await resumeClone(template, paths, pid, new PhaseTimer());
      try {
        await personalize(agent, { hostname: `pool-${paths.id}`, newBootId: true });
        await agent.exec(["true"]);
      } finally {
        agent.close();
      }
      await writeFileAtomic(metaPath, JSON.stringify({ ...meta, ready: true }));
    } catch (err) {
      if (pid) await stopQemu({ pid, qmpSocket: paths.qmpSocket }, { graceMs: 300 });
      await this.store.remove(paths.dir);
      throw err;
    }
  }

  /**
   * Prepares entries until `size` exist for `template` (ready or being prepared), two at a time;
   * entries whose preparation was abandoned are removed. Returns how many were made.
   */
  async topUp(plan: BootPlan, template: FoundTemplate, size: number): Promise<number> {
    let have = 0;
    for (const entry of this.entries()) {
      if (entry.meta.templateId !== template.manifest.id) continue;
      const age = Date.now() - Date.parse(entry.meta.createdAt);
      if (!entry.meta.ready && age > STALE_PREPARE_MS && this.#claim(entry)) {
        await this.#discard(entry);
        continue;
      }
      have++;
    }
    let made = 0;
    while (have + made < size) {
      const batch = Math.min(2, size - have - made);
      await Promise.all(Array.from({ length: batch }, () => this.#prepare(plan, template)));
      made += batch;
    }
    return made;
  }

  /**
   * Stops and removes unclaimed entries (all, or those not made for `keepTemplateId`), and
   * entries whose claimer died before making them its VM (claimed long ago, still a pool entry).
   */
  async drain(keepTemplateId?: string): Promise<number> {
    let stopped = 0;
    for (const entry of this.#scan()) {
      if (entry.claimedAt !== undefined) {
        if (Date.now() - entry.claimedAt < STALE_PREPARE_MS) continue; // a claim in progress
      } else if (entry.meta.templateId === keepTemplateId || !this.#claim(entry)) continue;
      await this.#discard(entry);
      stopped++;
    }
    return stopped;
  }
}
