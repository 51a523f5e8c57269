/**
 * The VMCache client as a factory (Kata's `grpccache`): `getVm` fetches a booted VM with
 * `GetBaseVM`, takes it over (its `record.json` joins the local state, `source: "cache"`), and
 * sets its clock and hostname through the guest agent. The server already wrote `record.json`
 * when it handed the VM out, so a client that dies right after the fetch leaves a VM that
 * `vm list` shows and `vm destroy` removes; the client rewrites it with its hostname and timings.
 * @module
 */
import type { Settings } from "../config/settings.ts";
import { UsageError, VmfactoryError } from "../errors.ts";
import type { FactoryStatus, VmFactory, VmRequest } from "../factory/vm_factory.ts";
import { AgentClient } from "../guest/agent_client.ts";
import { isQemuAlive, stopQemu } from "../qemu/qemu_process.ts";
import { personalize } from "../vm/personalize.ts";
import { PhaseTimer, type VmRecord } from "../vm/vm_record.ts";
import type { VmStore } from "../vm/vm_store.ts";
import { CacheClient, CacheServerNotRunningError } from "./cache_client.ts";
import type { HandOffInfo } from "./vm_cache.ts";

/** Options of {@link CacheClientFactory}. */
export interface CacheClientFactoryOptions {
  /** Cold-boot (with a warning) when the server is not running or cannot serve the request. */
  fallback?: boolean;
  /** Warnings (one line each). */
  log?: (line: string) => void;
  /** Deadline of `GetBaseVM` in ms (default 60 000). */
  timeoutMs?: number;
}

const KEYS = ["id", "pid", "qmpSocket", "agentSocket", "dir", "cpus", "memoryMiB"] as const;

/** Parses and checks `GrpcVM.hypervisor`. */
export function parseHandOff(bytes: Uint8Array): HandOffInfo {
  let info: Record<string, unknown>;
  try {
    info = JSON.parse(new TextDecoder().decode(bytes));
  } catch (cause) {
    throw new VmfactoryError("take over the cached VM", "its hypervisor data is not JSON", {
      cause,
    });
  }
  const missing = KEYS.filter((k) => info[k] === undefined);
  if (missing.length) {
    throw new VmfactoryError("take over the cached VM", `hypervisor data lacks ${missing}`);
  }
  return info as unknown as HandOffInfo;
}

/** Gets VMs from the VMCache server at `settings.vmCacheEndpoint`. */
export class CacheClientFactory implements VmFactory {
  /** Always "cache". */
  readonly kind = "cache";
  #client?: CacheClient;

  /** A client of the configured server; VM records go to `store`. */
  constructor(
    readonly settings: Settings,
    readonly store: VmStore,
    readonly options: CacheClientFactoryOptions = {},
  ) {}

  #log(line: string): void {
    (this.options.log ?? console.error)(line);
  }

  async #connect(): Promise<CacheClient> {
    return this.#client ??= await CacheClient.connect(this.settings.vmCacheEndpoint, {
      timeoutMs: this.options.timeoutMs ?? 60_000,
    });
  }

  /**
   * Fetches a cached VM and makes it the caller's. Throws {@link CacheServerNotRunningError}
   * (exit 2, naming the socket) when no server runs, and a UsageError for a shape the cache does
   * not hold; with `fallback`, both cold-boot with a warning instead.
   */
  async getVm(request: VmRequest): Promise<VmRecord> {
    const { vcpus, memoryMiB } = this.settings;
    if (
      (request.cpus ?? vcpus) !== vcpus || (request.memoryMiB ?? memoryMiB) !== memoryMiB
    ) {
      const why = `the VMCache holds VMs of ${vcpus} vCPU / ${memoryMiB} MiB`;
      if (!this.options.fallback) {
        throw new UsageError("get a VM from the VMCache", `${why} (--fallback cold-boots others)`);
      }
      this.#log(`warning: ${why}; cold-booting this request (--fallback)`);
      return await this.#coldBoot(request);
    }
    const timer = new PhaseTimer();
    let handOff: HandOffInfo;
    try {
      const vm = await (await this.#connect()).getBaseVM();
      handOff = parseHandOff(vm.hypervisor);
    } catch (err) {
      if (!(err instanceof CacheServerNotRunningError) || !this.options.fallback) throw err;
      this.#log(`warning: ${err.message}; cold-booting instead (--fallback)`);
      return await this.#coldBoot(request);
    }
    timer.mark("fetchMs");
    return await this.#takeOver(handOff, request, timer);
  }

  async #takeOver(info: HandOffInfo, request: VmRequest, timer: PhaseTimer): Promise<VmRecord> {
    const { stateDir: serverStateDir, ...received } = info;
    if (serverStateDir !== this.store.stateDir) {
      this.#log(
        `warning: VM ${info.id} lives in the server's state directory ${serverStateDir}; this configuration uses ${this.store.stateDir}`,
      );
    }
    const hostname = request.hostname ?? `vm-${info.id}`;
    try {
      if (!isQemuAlive(info.pid, { expectArg: info.qmpSocket })) {
        throw new VmfactoryError("take over the cached VM", `its QEMU (pid ${info.pid}) is gone`);
      }
      const agent = await AgentClient.connect(info.agentSocket, { timeoutMs: 10_000 });
      try {
        await personalize(agent, { hostname, newBootId: false });
      } finally {
        agent.close();
      }
      timer.mark("personalizeMs");
      const record: VmRecord = {
        ...received,
        source: "cache",
        hostname,
        createdAt: new Date().toISOString(),
        timings: timer.done(),
      };
      await this.store.save(record);
      return record;
    } catch (err) {
      await stopQemu({ pid: info.pid, qmpSocket: info.qmpSocket }, { graceMs: 300 });
      await this.store.remove(info.dir);
      throw err;
    }
  }

  async #coldBoot(request: VmRequest): Promise<VmRecord> {
    const { directFactoryFor } = await import("../factory/direct_factory.ts");
    const direct = await directFactoryFor(this.settings, this.store, {
      onNotice: (l) => this.#log(l),
    });
    return await direct.getVm(request);
  }

  /** The server's pid and cached VMs, from gRPC `Status`. */
  async status(): Promise<FactoryStatus> {
    const status = await (await this.#connect()).status();
    return {
      kind: this.kind,
      socket: this.settings.vmCacheEndpoint,
      pid: status.pid,
      vms: status.vms,
    };
  }

  /** Closes the gRPC channel (VMs fetched stay the caller's). */
  close(): Promise<void> {
    this.#client?.close();
    this.#client = undefined;
    return Promise.resolve();
  }
}
