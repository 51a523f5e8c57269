/**
 * The state directory's VM folders: one folder per VM holding its sockets, console log and
 * `record.json` (written atomically).
 * @module
 */
import { isQemuAlive } from "../qemu/qemu_process.ts";
import { UsageError } from "../errors.ts";
import { writeFileAtomic } from "./atomic_write.ts";
import type { VmRecord } from "./vm_record.ts";

/** File locations inside one VM's folder. */
export interface VmPaths {
  /** VM id (the folder name). */
  id: string;
  /** The folder. */
  dir: string;
  /** QMP socket. */
  qmpSocket: string;
  /** Agent socket. */
  agentSocket: string;
  /** Serial console log. */
  consoleLog: string;
  /** QEMU pid file. */
  pidFile: string;
}

/** A VM record and whether its QEMU process still runs. */
export interface VmEntry {
  /** The stored record. */
  record: VmRecord;
  /** True when the recorded pid is a QEMU process of this VM. */
  alive: boolean;
}

/** Paths of a VM folder `dir` named `id`. */
export function vmPaths(dir: string, id: string): VmPaths {
  return {
    id,
    dir,
    qmpSocket: `${dir}/qmp.sock`,
    agentSocket: `${dir}/agent.sock`,
    consoleLog: `${dir}/console.log`,
    pidFile: `${dir}/qemu.pid`,
  };
}

/** The JSON in `path`; undefined when the file is missing or not JSON (e.g. being replaced). */
export function readJsonFile<T>(path: string): T | undefined {
  try {
    return JSON.parse(Deno.readTextFileSync(path)) as T;
  } catch {
    return undefined;
  }
}

/** The pid in a QEMU pid file; undefined when the file is missing or not a pid. */
export function readPidFile(pidFile: string): number | undefined {
  try {
    const pid = Number(Deno.readTextFileSync(pidFile).trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** The record of a VM living in `paths`, created now. */
export function recordFor(
  paths: VmPaths,
  fields: Omit<VmRecord, "id" | "dir" | "qmpSocket" | "agentSocket" | "consoleLog" | "createdAt">,
): VmRecord {
  return {
    id: paths.id,
    ...fields,
    createdAt: new Date().toISOString(),
    dir: paths.dir,
    qmpSocket: paths.qmpSocket,
    agentSocket: paths.agentSocket,
    consoleLog: paths.consoleLog,
  };
}

/** Makes a new short random id. */
export function newVmId(): string {
  return crypto.randomUUID().replaceAll("-", "").slice(0, 10);
}

/** VM folders under `<stateDir>/vms`. */
export class VmStore {
  /** Folder holding one sub-folder per VM. */
  readonly vmsDir: string;

  /** A store rooted at `stateDir` (created on first use). */
  constructor(readonly stateDir: string) {
    this.vmsDir = `${stateDir}/vms`;
  }

  /** Creates an empty folder for a new VM and returns its paths. */
  async allocate(id: string = newVmId()): Promise<VmPaths> {
    await Deno.mkdir(this.vmsDir, { recursive: true, mode: 0o700 });
    const dir = `${this.vmsDir}/${id}`;
    await Deno.mkdir(dir, { mode: 0o700 });
    return vmPaths(dir, id);
  }

  /** Writes `record` into its folder atomically. */
  async save(record: VmRecord): Promise<void> {
    await writeFileAtomic(`${record.dir}/record.json`, JSON.stringify(record, null, 2) + "\n");
  }

  /** Every VM with a record, oldest first, reconciled with the live processes. */
  list(): Promise<VmEntry[]> {
    const entries: VmEntry[] = [];
    for (const { dir } of this.folders()) {
      const record = readJsonFile<VmRecord>(`${dir}/record.json`);
      if (record) {
        entries.push({ record, alive: isQemuAlive(record.pid, { expectArg: record.qmpSocket }) });
      }
    }
    return Promise.resolve(
      entries.sort((a, b) => a.record.createdAt.localeCompare(b.record.createdAt)),
    );
  }

  /**
   * Every VM folder, whatever it holds: a VM (`record.json`), a pool clone (`pool.json`), a VM
   * of a VMCache server (`cache.json`), or what a crashed creation left.
   */
  folders(): VmPaths[] {
    try {
      return [...Deno.readDirSync(this.vmsDir)]
        .filter((e) => e.isDirectory)
        .map((e) => vmPaths(`${this.vmsDir}/${e.name}`, e.name));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return [];
      throw err;
    }
  }

  /**
   * The VM whose id is `idOrPrefix` or starts with it.
   * @throws UsageError when no VM or more than one matches.
   */
  async find(idOrPrefix: string): Promise<VmEntry> {
    const all = await this.list();
    const exact = all.find((e) => e.record.id === idOrPrefix);
    if (exact) return exact;
    const matches = all.filter((e) => e.record.id.startsWith(idOrPrefix));
    if (matches.length === 1) return matches[0];
    if (matches.length > 1) {
      throw new UsageError(
        `find VM ${idOrPrefix}`,
        `the prefix matches ${matches.map((m) => m.record.id).join(", ")}`,
      );
    }
    throw new UsageError(`find VM ${idOrPrefix}`, "no such VM (`vmfactory vm list` shows them)");
  }

  /** Deletes a VM's folder (the caller stops QEMU first). */
  async remove(dir: string): Promise<void> {
    await Deno.remove(dir, { recursive: true }).catch((err) => {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    });
  }

  /**
   * Removes folders that a crashed `vm create` left (no record, not a pool entry nor a VMCache
   * server's VM (`cache.json`, reaped by `factory destroy` instead), older than
   * `minAgeMs`), stopping a QEMU that still runs from one. Returns how many were removed.
   */
  async removeIncomplete(minAgeMs = 120_000): Promise<number> {
    let removed = 0;
    for (const paths of this.folders()) {
      const has = (file: string) => {
        try {
          Deno.statSync(`${paths.dir}/${file}`);
          return true;
        } catch {
          return false;
        }
      };
      if (has("record.json") || has("pool.json") || has("cache.json")) continue;
      const age = Date.now() - (Deno.statSync(paths.dir).mtime?.getTime() ?? 0);
      if (age < minAgeMs) continue;
      const pid = readPidFile(paths.pidFile);
      if (pid && isQemuAlive(pid, { expectArg: paths.qmpSocket })) Deno.kill(pid, "SIGKILL");
      await this.remove(paths.dir);
      removed++;
    }
    return removed;
  }
}
