/**
 * A small pool of QEMU processes started ahead of time for the current template: each runs the
 * clone command line with `-incoming defer` (paused, nothing loaded, guest RAM not touched), so a
 * clone request skips QEMU's own start-up. Entries live in the state directory (`pool.json` in a
 * VM folder) so that any process can claim one; a claim is an exclusive file create.
 * @module
 */
import { buildQemuArgs } from "../qemu/qemu_command.ts";
import { isQemuAlive, startQemu, stopQemu } from "../qemu/qemu_process.ts";
import { writeFileAtomic } from "../vm/atomic_write.ts";
import { type VmPaths, vmPaths, type VmStore } from "../vm/vm_store.ts";
import { type BootPlan, qemuSpecFor } from "../factory/boot_plan.ts";
import type { FoundTemplate } from "./template_files.ts";

/** A pre-started clone process. */
export interface PoolEntry {
  /** Folder paths (the future VM's). */
  paths: VmPaths;
  /** Template the process was started for. */
  templateId: string;
  /** QEMU pid, when its pid file exists. */
  pid?: number;
}

/** A claimed, running, pre-started clone process. */
export interface ClaimedProcess {
  /** Folder paths. */
  paths: VmPaths;
  /** QEMU pid. */
  pid: number;
}

/** The QEMU spec of a clone of `template` (RAM mapped privately from the template's file). */
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

function readPid(pidFile: string): number | undefined {
  try {
    const pid = Number(Deno.readTextFileSync(pidFile).trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** The pool of pre-started clone processes of one state directory. */
export class ClonePool {
  /** A pool over the VM folders of `store`. */
  constructor(readonly store: VmStore) {}

  /** Unclaimed entries (of any template). */
  entries(): PoolEntry[] {
    const out: PoolEntry[] = [];
    let names: Deno.DirEntry[];
    try {
      names = [...Deno.readDirSync(this.store.vmsDir)];
    } catch {
      return out;
    }
    for (const { name, isDirectory } of names) {
      if (!isDirectory) continue;
      const dir = `${this.store.vmsDir}/${name}`;
      let meta: { templateId: string };
      try {
        meta = JSON.parse(Deno.readTextFileSync(`${dir}/pool.json`));
      } catch {
        continue;
      }
      const paths = vmPaths(dir, name);
      out.push({ paths, templateId: meta.templateId, pid: readPid(paths.pidFile) });
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

  /**
   * Claims a running process started for `templateId`; undefined when the pool has none. The
   * caller owns the process from then on (and its folder, which stops being a pool entry).
   */
  async claim(templateId: string): Promise<ClaimedProcess | undefined> {
    for (const entry of this.entries()) {
      if (entry.templateId !== templateId || !entry.pid) continue;
      if (!this.#claim(entry)) continue;
      if (!isQemuAlive(entry.pid, { expectArg: entry.paths.qmpSocket })) {
        await this.store.remove(entry.paths.dir);
        continue;
      }
      await Deno.remove(`${entry.paths.dir}/pool.json`);
      await Deno.remove(`${entry.paths.dir}/claimed`);
      return { paths: entry.paths, pid: entry.pid };
    }
    return undefined;
  }

  /** Starts processes until `size` unclaimed ones exist for `template`; returns how many started. */
  async topUp(plan: BootPlan, template: FoundTemplate, size: number): Promise<number> {
    const have = this.entries().filter((e) => e.templateId === template.manifest.id).length;
    const jobs: Promise<void>[] = [];
    for (let i = have; i < size; i++) {
      jobs.push((async () => {
        const paths = await this.store.allocate();
        await writeFileAtomic(
          `${paths.dir}/pool.json`,
          JSON.stringify({ templateId: template.manifest.id, createdAt: new Date().toISOString() }),
        );
        try {
          await startCloneProcess(plan, template, paths);
        } catch (err) {
          await this.store.remove(paths.dir);
          throw err;
        }
      })());
    }
    await Promise.all(jobs);
    return jobs.length;
  }

  /** Stops and removes unclaimed entries (all, or those not started for `keepTemplateId`). */
  async drain(keepTemplateId?: string): Promise<number> {
    let stopped = 0;
    for (const entry of this.entries()) {
      if (entry.templateId === keepTemplateId || !this.#claim(entry)) continue;
      if (entry.pid) {
        await stopQemu({ pid: entry.pid, qmpSocket: entry.paths.qmpSocket }, { graceMs: 500 });
      }
      await this.store.remove(entry.paths.dir);
      stopped++;
    }
    return stopped;
  }
}
