/**
 * The state directory's VM folders, and the one state machine every folder moves through.
 *
 * Each VM lives in `<stateDir>/vms/<id>/`: its sockets, console log, QEMU pid file, `state.json`
 * (the folder's state) and, once it has one, `record.json`. A folder changes state only through
 * this module, under the folder's lock (`.lock`, an flock that dies with its holder), so two
 * processes never move one folder at once.
 *
 * | state    | the folder holds                                  | owner                     |
 * | -------- | ------------------------------------------------- | ------------------------- |
 * | building | a VM being made, claimed or adopted                | the process doing it      |
 * | pooled   | a ready clone of `templateId`, for any process     | none                      |
 * | cached   | a ready VM kept by a VMCache server                | the server                |
 * | offered  | a cached VM sent to a client, not yet taken over   | the server                |
 * | owned    | the user's VM: `vm list` shows it                  | none                      |
 *
 * | from     | to       | by                                                                |
 * | -------- | -------- | ----------------------------------------------------------------- |
 * | (none)   | building | {@link VmStore.allocate}                                          |
 * | building | pooled, cached, owned | {@link PendingVm.commit}, by the owner               |
 * | building | removed  | the owner disposing its {@link PendingVm} uncommitted; `reap` once the owner died |
 * | pooled   | building | {@link VmStore.claim} (the claimer becomes the owner)             |
 * | pooled   | removed  | {@link VmStore.remove} (pool drain)                               |
 * | cached   | offered  | {@link VmStore.offer}, by the server                              |
 * | cached   | removed  | {@link VmStore.remove} by the server; `reap` once the server died |
 * | offered  | cached   | {@link VmStore.giveBack}, by the server (the reply was lost)      |
 * | offered  | building | {@link VmStore.adopt}, by the client (it becomes the owner)       |
 * | offered  | owned    | `reap` once the server died (the client may hold the VM)          |
 * | owned    | removed  | {@link VmStore.remove} (`vm destroy`)                             |
 *
 * `<stateDir>/pool/` indexes the pooled folders: an empty file named after each, made when a folder
 * becomes `pooled` and removed when it leaves, so a claim reads the pooled folders' state only, not
 * every running VM's. The index is a hint: a claim re-reads the folder's state under its lock,
 * drops entries whose folder is not pooled, and `reap` re-creates missing ones.
 *
 * Nothing leaves `owned` but removal: a VM handed out is never put back. Everything read back
 * (`state.json`, `record.json`, pid files) is input: bounded, validated, and a record whose id,
 * folder or sockets do not match its folder is ignored. A process is signalled only when its pid
 * and start time are the ones recorded.
 * @module
 */
import { UsageError, VmfactoryError } from "../errors.ts";
import { ensurePrivateDir } from "../private_dir.ts";
import { isAlive, parseIdentity, type ProcessIdentity, selfIdentity } from "../process_identity.ts";
import { readPidFile, stopQemu } from "../qemu/qemu_process.ts";
import { writeFileAtomic } from "./atomic_write.ts";
import { withFileLock } from "./file_lock.ts";
import { parseRecord, type VmRecord } from "./vm_record.ts";
import { newVmId, type VmPaths, vmPaths } from "./vm_paths.ts";

/** A folder's state; see the module doc for the table. */
export type FolderState = "building" | "pooled" | "cached" | "offered" | "owned";

const STATES: readonly FolderState[] = ["building", "pooled", "cached", "offered", "owned"];

/** `state.json`. */
export interface FolderStatus {
  /** The state. */
  state: FolderState;
  /** The process the folder belongs to (building, cached, offered). */
  owner?: ProcessIdentity;
  /** The template a pooled clone was made from. */
  templateId?: string;
  /** ISO time of the last transition. */
  since: string;
}

/** A VM folder as found on disk. */
export interface VmFolder {
  /** Its paths. */
  paths: VmPaths;
  /** Its state; undefined when `state.json` is missing or invalid. */
  status?: FolderStatus;
  /** Its record, when it has a valid one. */
  record?: VmRecord;
}

/** A VM record and whether its QEMU process still runs. */
export interface VmEntry {
  /** The stored record. */
  record: VmRecord;
  /** True while the recorded QEMU (pid + start time) runs. */
  alive: boolean;
}

/** Folder names the store makes: short lowercase hex. */
const ID_PATTERN = /^[0-9a-f]{6,32}$/;
const TEMPLATE_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
/** Larger `state.json`/`record.json` files are not read (they are written by us, and small). */
const MAX_FILE_BYTES = 64 * 1024;
/** A folder without a state this long after it was made was left by a crash between two calls. */
const ORPHAN_MS = 60_000;

/** Makes a new short random id. */
/** The JSON in `path` (at most 64 KiB); undefined when missing, too big or not JSON. */
function readJsonFile(path: string): unknown {
  try {
    const bytes = Deno.readFileSync(path);
    if (bytes.length > MAX_FILE_BYTES) return undefined;
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return undefined;
  }
}

function parseStatus(value: unknown): FolderStatus | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const v = value as Record<string, unknown>;
  if (!STATES.includes(v.state as FolderState) || typeof v.since !== "string") return undefined;
  const status: FolderStatus = { state: v.state as FolderState, since: v.since };
  if (v.owner !== undefined) {
    const owner = parseIdentity(v.owner);
    if (!owner) return undefined;
    status.owner = owner;
  }
  if (v.templateId !== undefined) {
    if (typeof v.templateId !== "string" || !TEMPLATE_ID_PATTERN.test(v.templateId)) {
      return undefined;
    }
    status.templateId = v.templateId;
  }
  return status;
}

/** The error of a transition the table does not allow, or of a folder that vanished. */
export class FolderStateError extends VmfactoryError {
  /** "Cannot <action>: VM <id> is <state>". */
  constructor(action: string, id: string, state: string) {
    super(action, `VM ${id} is ${state}`);
  }
}

/**
 * A VM folder this process is building (allocated, claimed or adopted). Unless committed, disposing
 * it stops its QEMU and removes the folder: use `await using`, or call {@link PendingVm.dispose}.
 * @example
 * ```ts
 * await using pending = await store.allocate();
 * pending.process = await startQemu(argv, { logFile, pidFile: pending.paths.pidFile });
 * // ... boot it; unless committed, leaving the block stops QEMU and removes the folder
 * await pending.commit("owned", record);
 * ```
 */
export class PendingVm implements AsyncDisposable {
  #done = false;
  /** The VM's QEMU once it runs (set by whoever starts or finds it). */
  process?: ProcessIdentity;

  /** A pending VM in `paths` of `store` (made by the store). */
  constructor(
    readonly store: VmStore,
    readonly paths: VmPaths,
    /** The record the VM had before (claimed or adopted VMs). */
    readonly previous?: VmRecord,
  ) {
    if (previous) this.process = { pid: previous.pid, startTime: previous.startTime };
  }

  /** True once committed or disposed. */
  get settled(): boolean {
    return this.#done;
  }

  /**
   * Writes `record` and moves the folder to `state` (building → pooled, cached or owned). A cached
   * VM stays this process's; pooled and owned ones belong to nobody. May be called once.
   */
  async commit(
    state: "pooled" | "cached" | "owned",
    record: VmRecord,
    extra: { templateId?: string } = {},
  ): Promise<void> {
    if (this.#done) throw new FolderStateError(`commit VM ${this.paths.id}`, this.paths.id, "done");
    await writeFileAtomic(`${this.paths.dir}/record.json`, JSON.stringify(record, null, 2) + "\n");
    await this.store.move(this.paths, ["building"], {
      state,
      ...(state === "cached" ? { owner: selfIdentity() } : {}),
      ...(extra.templateId ? { templateId: extra.templateId } : {}),
    }, { owner: selfIdentity() });
    this.#done = true;
  }

  /** Unless committed: stops the VM's QEMU and removes its folder. Idempotent. */
  async dispose(): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    const process = this.process ?? readPidFile(this.paths.pidFile);
    if (process) await stopQemu({ process, qmpSocket: this.paths.qmpSocket }, { graceMs: 300 });
    await removeFolder(this.paths.dir);
  }

  /** Same as {@link PendingVm.dispose}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }
}

async function removeFolder(dir: string): Promise<void> {
  await Deno.remove(dir, { recursive: true }).catch((err) => {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  });
}

/**
 * VM folders under `<stateDir>/vms`; every state change of a folder goes through here.
 * @example
 * ```ts
 * const store = new VmStore("/run/vmfactory");
 * for (const { record, alive } of await store.list()) console.log(record.id, alive);
 * await store.remove((await store.find("3fa9")).record.id, ["owned"]);
 * ```
 */
export class VmStore {
  /** Folder holding one sub-folder per VM. */
  readonly vmsDir: string;
  /** Index of the pooled folders: an empty file per folder, named by its id. */
  readonly poolDir: string;
  #private = false;
  #poolPrivate = false;

  /** A store rooted at `stateDir` (created on first use). */
  constructor(readonly stateDir: string) {
    this.vmsDir = `${stateDir}/vms`;
    this.poolDir = `${stateDir}/pool`;
  }

  /** The paths of the folder of VM `id` (a folder name the store makes; else a UsageError). */
  pathsOf(id: string): VmPaths {
    if (!ID_PATTERN.test(id)) throw new UsageError(`find VM ${JSON.stringify(id)}`, "not a VM id");
    return vmPaths(`${this.vmsDir}/${id}`, id);
  }

  /**
   * Creates a folder for a new VM, `building` and owned by this process. The state directory and
   * `vms/` are made sure to be private to this user first (a PrivateDirError, exit 2, if not).
   */
  async allocate(id: string = newVmId()): Promise<PendingVm> {
    const paths = this.pathsOf(id);
    if (!this.#private) {
      // once per store: a private folder of ours cannot be replaced by another user meanwhile
      ensurePrivateDir(this.stateDir, { what: "state directory" });
      ensurePrivateDir(this.vmsDir);
      this.#private = true;
    }
    await Deno.mkdir(paths.dir, { mode: 0o700 });
    await Deno.mkdir(paths.qemuDir);
    await Deno.chmod(paths.qemuDir, 0o711); // not subject to the umask
    await this.#write(paths, { state: "building", owner: selfIdentity() });
    return new PendingVm(this, paths);
  }

  /**
   * Moves the folder `paths` from one of `from` to `to` under its lock; with `owner`, only when
   * that process owns it. Returns the previous status. Throws {@link FolderStateError} otherwise.
   * Used by this module and {@link PendingVm}; other code calls the named operations.
   */
  async move(
    paths: VmPaths,
    from: readonly FolderState[],
    to: Omit<FolderStatus, "since">,
    check: { owner?: ProcessIdentity } = {},
  ): Promise<FolderStatus> {
    return await this.#locked(paths, `move VM ${paths.id} to ${to.state}`, (status) => {
      if (!from.includes(status.state)) return false;
      if (check.owner && !sameOwner(status.owner, check.owner)) return false;
      return true;
    }, async (status) => {
      await this.#write(paths, to);
      if (to.state === "pooled" || status.state === "pooled") {
        this.#index(paths.id, to.state === "pooled");
      }
      return status;
    });
  }

  /** Adds `id` to the pool index or takes it out (the index's folder is made private first). */
  #index(id: string, pooled: boolean): void {
    const entry = `${this.poolDir}/${id}`;
    try {
      if (!pooled) return Deno.removeSync(entry);
      if (!this.#poolPrivate) {
        ensurePrivateDir(this.poolDir);
        this.#poolPrivate = true;
      }
      Deno.writeFileSync(entry, new Uint8Array(), { createNew: true, mode: 0o600 });
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound || err instanceof Deno.errors.AlreadyExists)) {
        throw err;
      }
    }
  }

  /** Makes the pool index list exactly the pooled folders of `folders` (all of the store's). */
  #reindex(folders: VmFolder[]): void {
    const pooled = new Set(
      folders.filter((f) => f.status?.state === "pooled").map((f) => f.paths.id),
    );
    for (const id of this.#indexed()) {
      // re-read: a folder that became pooled after the scan keeps its entry
      if (!pooled.delete(id) && this.status(this.pathsOf(id))?.state !== "pooled") {
        this.#index(id, false);
      }
    }
    for (const id of pooled) this.#index(id, true);
  }

  /** The ids the pool index lists (each still to be checked against its folder's state). */
  #indexed(): string[] {
    try {
      return [...Deno.readDirSync(this.poolDir)].map((e) => e.name).filter((n) =>
        ID_PATTERN.test(n)
      );
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return [];
      throw err;
    }
  }

  async #write(paths: VmPaths, status: Omit<FolderStatus, "since">): Promise<void> {
    const full: FolderStatus = { ...status, since: new Date().toISOString() };
    await writeFileAtomic(`${paths.dir}/state.json`, JSON.stringify(full) + "\n");
  }

  /** Runs `fn` under the folder's lock when its state passes `allowed`; else throws. */
  async #locked<T>(
    paths: VmPaths,
    action: string,
    allowed: (status: FolderStatus) => boolean,
    fn: (status: FolderStatus) => Promise<T>,
  ): Promise<T> {
    try {
      return await withFileLock(`${paths.dir}/.lock`, async () => {
        const status = this.status(paths);
        if (!status) throw new FolderStateError(action, paths.id, "gone");
        if (!allowed(status)) {
          throw new FolderStateError(action, paths.id, describe(status));
        }
        return await fn(status);
      });
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) throw new FolderStateError(action, paths.id, "gone");
      throw err;
    }
  }

  /** The folder's state; undefined when it has none (or an invalid one). */
  status(paths: VmPaths): FolderStatus | undefined {
    return parseStatus(readJsonFile(`${paths.dir}/state.json`));
  }

  /** The folder's record when it is valid and matches the folder; else undefined. */
  record(paths: VmPaths): VmRecord | undefined {
    return parseRecord(readJsonFile(`${paths.dir}/record.json`), paths);
  }

  /**
   * Every VM folder with its state and record (unreadable parts left undefined); with `states`,
   * only the folders in one of them (the others' records are not read: a claim among 100 running
   * clones reads the pooled ones' only).
   */
  folders(states?: readonly FolderState[]): VmFolder[] {
    let names: string[];
    try {
      names = [...Deno.readDirSync(this.vmsDir)].filter((e) => e.isDirectory).map((e) => e.name);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return [];
      throw err;
    }
    const out: VmFolder[] = [];
    for (const name of names.filter((n) => ID_PATTERN.test(n))) {
      const paths = vmPaths(`${this.vmsDir}/${name}`, name);
      const status = this.status(paths);
      if (states && !(status && states.includes(status.state))) continue; // no record read
      out.push({ paths, status, record: status ? this.record(paths) : undefined });
    }
    return out;
  }

  /** The owned VMs, oldest first, reconciled with the live processes. */
  list(): Promise<VmEntry[]> {
    const entries = this.folders(["owned"])
      .filter((f) => f.record)
      .map((f) => ({ record: f.record!, alive: isAlive(processOf(f.record!)) }));
    return Promise.resolve(
      entries.sort((a, b) => a.record.createdAt.localeCompare(b.record.createdAt)),
    );
  }

  /**
   * The owned VM whose id is `idOrPrefix` or starts with it.
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

  /**
   * Claims a pooled clone of `templateId` (pooled → building, this process the owner); a clone
   * whose QEMU died is removed on the way. Undefined when none is left. Concurrent claims, in any
   * processes, never get the same folder. Reads only the folders the pool index lists.
   */
  async claim(templateId: string): Promise<PendingVm | undefined> {
    for (const { paths, record } of this.pooled(templateId)) {
      if (!record) continue;
      try {
        await this.move(paths, ["pooled"], { state: "building", owner: selfIdentity() });
      } catch (err) {
        if (err instanceof FolderStateError) continue; // another process was first
        throw err;
      }
      const pending = new PendingVm(this, paths, record);
      if (isAlive(pending.process!)) return pending;
      await pending.dispose(); // its QEMU died while pooled: drained, not handed out
    }
    return undefined;
  }

  /**
   * The pooled folders (of `templateId`, or all) with their records, as the pool index lists
   * them: only their state files are read, and an entry whose folder left `pooled` is dropped.
   * A folder whose entry a crash lost shows again after the next {@link VmStore.reap}.
   */
  pooled(templateId?: string): VmFolder[] {
    const out: VmFolder[] = [];
    for (const id of this.#indexed()) {
      const paths = this.pathsOf(id);
      const status = this.status(paths);
      if (status?.state !== "pooled") {
        this.#index(id, false); // claimed or removed meanwhile: a stale entry
        continue;
      }
      if (templateId !== undefined && status.templateId !== templateId) continue;
      out.push({ paths, status, record: this.record(paths) });
    }
    return out;
  }

  /** Offers a cached VM of this server to a client (cached → offered). */
  async offer(id: string): Promise<VmRecord> {
    const paths = this.pathsOf(id);
    await this.move(paths, ["cached"], { state: "offered", owner: selfIdentity() }, {
      owner: selfIdentity(),
    });
    const record = this.record(paths);
    if (!record) throw new FolderStateError(`offer VM ${id}`, id, "without a valid record");
    return record;
  }

  /** Takes back an offered VM whose client never got it (offered → cached); false if taken. */
  async giveBack(id: string): Promise<boolean> {
    try {
      await this.move(this.pathsOf(id), ["offered"], { state: "cached", owner: selfIdentity() }, {
        owner: selfIdentity(),
      });
      return true;
    } catch (err) {
      if (err instanceof FolderStateError) return false;
      throw err;
    }
  }

  /** Takes over an offered VM (offered → building, this process the owner). */
  async adopt(id: string): Promise<PendingVm> {
    const paths = this.pathsOf(id);
    await this.move(paths, ["offered"], { state: "building", owner: selfIdentity() });
    const record = this.record(paths);
    const pending = new PendingVm(this, paths, record);
    if (!record) {
      await pending.dispose();
      throw new FolderStateError(`take over VM ${id}`, id, "without a valid record");
    }
    return pending;
  }

  /**
   * Stops the QEMU of the folder `id` and removes the folder, when its state is one of `from`
   * (and, with `owner`, owned by that process). Returns false when it is gone or not allowed.
   */
  async remove(
    id: string,
    from: readonly FolderState[],
    check: { owner?: ProcessIdentity } = {},
  ): Promise<boolean> {
    const paths = this.pathsOf(id);
    try {
      return await this.#locked(
        paths,
        `remove VM ${id}`,
        (status) =>
          from.includes(status.state) && (!check.owner || sameOwner(status.owner, check.owner)),
        (status) => this.#discard(paths, status.state === "pooled"),
      );
    } catch (err) {
      if (err instanceof FolderStateError) return false;
      throw err;
    }
  }

  async #discard(paths: VmPaths, pooled = false): Promise<true> {
    const record = this.record(paths);
    const process = record ? processOf(record) : readPidFile(paths.pidFile);
    if (process) await stopQemu({ process, qmpSocket: paths.qmpSocket }, { graceMs: 1000 });
    if (pooled) this.#index(paths.id, false);
    await removeFolder(paths.dir);
    return true;
  }

  /**
   * Cleans up after processes that died: removes `building` and `cached` folders whose owner is
   * gone (stopping their QEMU), makes `offered` ones of a dead server `owned` (its client may
   * hold them), and removes folders left without a state for a minute. With `owner`, only that
   * process's folders, whether it runs or not (a server stopping). Returns the removed ids.
   */
  async reap(options: { owner?: ProcessIdentity } = {}): Promise<string[]> {
    const removed: string[] = [];
    const folders = this.folders();
    this.#reindex(folders);
    for (const f of folders) {
      const { status, paths } = f;
      if (!status) {
        if (options.owner) continue;
        const age = Date.now() - (Deno.statSync(paths.dir).mtime?.getTime() ?? 0);
        if (age > ORPHAN_MS) {
          await this.#discard(paths);
          removed.push(paths.id);
        }
        continue;
      }
      if (!status.owner) continue;
      const gone = options.owner ? sameOwner(status.owner, options.owner) : !isAlive(status.owner);
      if (!gone) continue;
      const isOwner = (s: FolderStatus) => sameOwner(s.owner, status.owner!);
      try {
        if (status.state === "offered") {
          await this.#locked(paths, `release VM ${paths.id}`, (s) =>
            s.state === "offered" &&
            isOwner(s), () => this.#write(paths, { state: "owned" }));
        } else {
          await this.#locked(paths, `reap VM ${paths.id}`, isOwner, () => this.#discard(paths));
          removed.push(paths.id);
        }
      } catch (err) {
        if (!(err instanceof FolderStateError)) throw err; // moved meanwhile: not an orphan
      }
    }
    return removed;
  }
}

function sameOwner(a: ProcessIdentity | undefined, b: ProcessIdentity): boolean {
  return a !== undefined && a.pid === b.pid && a.startTime === b.startTime;
}

function describe(status: FolderStatus): string {
  return status.owner ? `${status.state} (by pid ${status.owner.pid})` : status.state;
}

/** The QEMU a record names. */
export function processOf(record: VmRecord): ProcessIdentity {
  return { pid: record.pid, startTime: record.startTime };
}
