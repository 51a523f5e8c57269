/**
 * The VM folders of a VMCache server. A cached VM lives in `<stateDir>/vms/<id>/` like any VM,
 * but with `cache.json` (`{ serverPid, serverStart, socket, record? }`) instead of `record.json`:
 * `vm list` does not show it and no other command touches it. The marker is written when the
 * folder is made, before QEMU starts, so a server killed -9 mid-boot leaves nothing untracked.
 *
 * Hand-out: `record.json` is written (source "cache"), then `cache.json` removed; from then on
 * the VM is the client's, visible to `vm list`, and no server ever stops it. A folder that still
 * has `cache.json` belongs to the server named there; once that process is gone it is an orphan,
 * reaped by the next server or by `factory destroy` ({@link reapOrphans}).
 * @module
 */
import { stopQemu } from "../qemu/qemu_process.ts";
import { writeFileAtomic } from "../vm/atomic_write.ts";
import type { VmRecord } from "../vm/vm_record.ts";
import {
  newVmId,
  readJsonFile,
  readPidFile,
  type VmPaths,
  vmPaths,
  VmStore,
} from "../vm/vm_store.ts";

/** Name of the marker file of a cached VM's folder. */
export const CACHE_MARKER = "cache.json";

/** Content of `cache.json`. */
export interface CacheMarker {
  /** Pid of the server that owns the VM. */
  serverPid: number;
  /** That process's start time (clock ticks since boot, /proc/PID/stat field 22): pid-reuse guard. */
  serverStart: number;
  /** The server's socket. */
  socket: string;
  /** The VM's record once it booted (absent while booting). */
  record?: VmRecord;
}

/** A folder holding `cache.json`. */
export interface CachedFolder {
  /** Folder paths. */
  paths: VmPaths;
  /** The marker. */
  marker: CacheMarker;
}

/** Start time of process `pid` in clock ticks since boot; undefined when it does not run. */
export function processStartTime(pid: number): number | undefined {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (fields[0] === "Z" || fields[0] === "X") return undefined;
    return Number(fields[19]);
  } catch {
    return undefined;
  }
}

/** True while the server named in `marker` runs. */
export function serverAlive(marker: CacheMarker): boolean {
  return processStartTime(marker.serverPid) === marker.serverStart;
}

/** Every folder of `stateDir` holding a readable `cache.json`. */
export function cachedFolders(stateDir: string): CachedFolder[] {
  const out: CachedFolder[] = [];
  for (const paths of new VmStore(stateDir).folders()) {
    // no marker: not a cached VM (or its marker is being replaced)
    const marker = readJsonFile<CacheMarker>(`${paths.dir}/${CACHE_MARKER}`);
    if (marker) out.push({ paths, marker });
  }
  return out;
}

/** Stops the QEMU of a VM folder (if it runs) and removes the folder. */
async function discard(paths: VmPaths): Promise<void> {
  const pid = readPidFile(paths.pidFile);
  if (pid) await stopQemu({ pid, qmpSocket: paths.qmpSocket }, { graceMs: 300 });
  await Deno.remove(paths.dir, { recursive: true }).catch(() => {});
}

/**
 * Stops and removes the cached VMs whose server no longer runs (a server killed -9). Never touches
 * a folder without `cache.json` (handed-out VMs) or one of a live server. May be called any time.
 * Returns the reaped folders' ids.
 */
export async function reapOrphans(stateDir: string): Promise<string[]> {
  const orphans = cachedFolders(stateDir).filter((f) => !serverAlive(f.marker));
  await Promise.all(orphans.map((f) => discard(f.paths)));
  return orphans.map((f) => f.paths.id);
}

/**
 * The store a VMCache server's base factory writes into: `allocate` marks the folder with
 * `cache.json`, `save` keeps the record in the marker; {@link CacheStore.handOut} makes a VM the
 * client's. Used by one server process.
 */
export class CacheStore extends VmStore {
  readonly #marker: Omit<CacheMarker, "record">;

  /** The store of the server listening on `socket`, in `stateDir`. */
  constructor(stateDir: string, readonly socket: string) {
    super(stateDir);
    this.#marker = {
      serverPid: Deno.pid,
      serverStart: processStartTime(Deno.pid) ?? 0,
      socket,
    };
  }

  /** Creates a folder already marked as this server's. */
  override async allocate(id: string = newVmId()): Promise<VmPaths> {
    const paths = await super.allocate(id);
    await this.#writeMarker(paths.dir);
    return paths;
  }

  /** Keeps `record` in the marker (a cached VM has no `record.json`). */
  override async save(record: VmRecord): Promise<void> {
    await this.#writeMarker(record.dir, record);
  }

  /** Makes a cached VM the client's: writes `record.json` (source "cache"), removes the marker. */
  async handOut(record: VmRecord): Promise<VmRecord> {
    const handed: VmRecord = { ...record, source: "cache" };
    await super.save(handed);
    await Deno.remove(`${record.dir}/${CACHE_MARKER}`);
    return handed;
  }

  /** Undoes {@link CacheStore.handOut} for a VM whose client went away before the reply. */
  async reclaim(record: VmRecord): Promise<void> {
    await this.#writeMarker(record.dir, record);
    await Deno.remove(`${record.dir}/record.json`).catch(() => {});
  }

  /** Stops a cached VM and removes its folder. */
  async destroy(record: VmRecord): Promise<void> {
    await discard(vmPaths(record.dir, record.id));
  }

  /** Stops and removes every VM still marked as this server's (booting or cached). */
  async destroyOwn(): Promise<number> {
    const own = cachedFolders(this.stateDir).filter((f) =>
      f.marker.serverPid === this.#marker.serverPid &&
      f.marker.serverStart === this.#marker.serverStart
    );
    await Promise.all(own.map((f) => discard(f.paths)));
    return own.length;
  }

  async #writeMarker(dir: string, record?: VmRecord): Promise<void> {
    const marker: CacheMarker = { ...this.#marker, ...(record ? { record } : {}) };
    await writeFileAtomic(`${dir}/${CACHE_MARKER}`, JSON.stringify(marker, null, 2) + "\n");
  }
}
