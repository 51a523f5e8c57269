/**
 * The VMCache-fetch source (Kata's `grpccache`): a booted VM fetched from the VMCache server at
 * `settings.vmCacheEndpoint` with `GetBaseVM`, then adopted (its folder moves `offered` →
 * `building`, this process the owner). A client that dies between the fetch and the commit
 * leaves a `building` folder of a dead owner, which the next reap removes; a server that dies
 * with the VM still offered leaves it `owned`, shown by `vm list`.
 * @module
 */
import type { Settings } from "../config/settings.ts";
import { VmfactoryError } from "../errors.ts";
import { existingPrivateDir } from "../private_dir.ts";
import { shapeFromSettings } from "../factory/boot_plan.ts";
import {
  type SourceSupply,
  SourceUnfitError,
  type VmRequest,
  type VmSource,
} from "../factory/vm_source.ts";
import { parseRecord, type VmRecord } from "../vm/vm_record.ts";
import { VmStore } from "../vm/vm_store.ts";
import { vmPaths } from "../vm/vm_paths.ts";
import { adoptOffered } from "./adopt_offered.ts";
import { CacheClient, CacheServerNotRunningError } from "./cache_client.ts";
import type { HandOffInfo } from "./vm_cache.ts";

/** Options of {@link VmCacheFetchSource}. */
export interface VmCacheFetchOptions {
  /** Warnings (one line each). */
  log?: (line: string) => void;
  /** Deadline of `GetBaseVM` in ms (default 60 000). */
  timeoutMs?: number;
}

/** Longest `GrpcVM.hypervisor` accepted (it is a small JSON record). */
const MAX_HAND_OFF_BYTES = 64 * 1024;

/**
 * Parses and checks `GrpcVM.hypervisor` (input from another process): bounded JSON, an absolute
 * state directory, and a record whose paths are the ones its folder there has.
 */
export function parseHandOff(bytes: Uint8Array): HandOffInfo {
  const action = "take over the cached VM";
  if (bytes.length > MAX_HAND_OFF_BYTES) {
    throw new VmfactoryError(action, `its hypervisor data is ${bytes.length} bytes`);
  }
  let info: Record<string, unknown>;
  try {
    info = JSON.parse(new TextDecoder().decode(bytes));
  } catch (cause) {
    throw new VmfactoryError(action, "its hypervisor data is not JSON", { cause });
  }
  const stateDir = info?.stateDir;
  if (typeof stateDir !== "string" || !stateDir.startsWith("/") || typeof info.id !== "string") {
    throw new VmfactoryError(action, "its hypervisor data names no state directory and VM id");
  }
  const { stateDir: _, ...fields } = info;
  const store = new VmStore(stateDir);
  let record: VmRecord | undefined;
  try {
    const paths = store.pathsOf(info.id);
    record = parseRecord(fields, vmPaths(paths.dir, paths.id));
  } catch {
    record = undefined;
  }
  if (!record) throw new VmfactoryError(action, "its hypervisor data is not a valid VM record");
  return { ...record, stateDir };
}

/** Gets VMs from the VMCache server at `settings.vmCacheEndpoint`. */
export class VmCacheFetchSource implements VmSource {
  /** Always "vmcache". */
  readonly kind = "vmcache";
  #client?: CacheClient;

  /** A client of the configured server; adopted VMs stay in the server's state directory. */
  constructor(
    readonly settings: Settings,
    readonly store: VmStore,
    readonly options: VmCacheFetchOptions = {},
  ) {}

  async #connect(): Promise<CacheClient> {
    return this.#client ??= await CacheClient.connect(this.settings.vmCacheEndpoint, {
      timeoutMs: this.options.timeoutMs ?? 60_000,
    });
  }

  /** The cached VMs have the configuration's shape; a fetch needs a running server. */
  prepare(_request: VmRequest): Promise<SourceSupply> {
    const shape = shapeFromSettings(this.settings);
    return Promise.resolve({
      shape,
      acquire: async (_want, timer) => {
        let handOff: HandOffInfo;
        try {
          handOff = parseHandOff((await (await this.#connect()).getBaseVM()).hypervisor);
        } catch (err) {
          if (err instanceof CacheServerNotRunningError) {
            throw new SourceUnfitError(this.kind, err.message, { cause: err });
          }
          throw err;
        }
        timer.mark("fetchMs");
        const { stateDir, ...offered } = handOff;
        let store = this.store;
        if (stateDir !== this.store.stateDir) {
          // the server names the folder: take it over only from a state directory of this user's
          if (!existingPrivateDir(stateDir, { what: "the VMCache server's state directory" })) {
            throw new VmfactoryError(
              "take over the cached VM",
              `the server's state directory ${stateDir} is not this user's`,
            );
          }
          (this.options.log ?? console.error)(
            `warning: VM ${offered.id} lives in the server's state directory ${stateDir}; this configuration uses ${this.store.stateDir}`,
          );
          store = new VmStore(stateDir);
        }
        return await adoptOffered(store, offered);
      },
    });
  }

  /** The server's pid and cached VMs, from gRPC `Status`. */
  async status(): Promise<Record<string, unknown>> {
    const status = await (await this.#connect()).status();
    return { socket: this.settings.vmCacheEndpoint, pid: status.pid, vms: status.vms };
  }

  /** Closes the gRPC channel (VMs fetched stay the caller's). */
  close(): void {
    this.#client?.close();
    this.#client = undefined;
  }
}
