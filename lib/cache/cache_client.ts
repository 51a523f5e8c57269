/**
 * The VMCache gRPC client (a grpc-js channel to Kata's `cache.CacheService` on a Unix socket).
 *
 * gRPC is imported on the first {@link CacheClient.connect} of the process, not at module load.
 * The channel drops its idle HTTP/2 session after 10 s (see `_h2_goaway_filter.ts`).
 * @module
 */

import type * as GrpcJs from "@grpc/grpc-js";
import { UsageError, VmfactoryError } from "../errors.ts";
import { GOAWAY_SAFE_CHANNEL_OPTIONS } from "./_h2_goaway_filter.ts";
import { loadCacheGrpc } from "./cache_proto.ts";

/** A VM handed out by the server; it now belongs to the caller. */
export interface CachedVm {
  /** VM id. */
  id: string;
  /** JSON telling how to take the VM over. */
  hypervisor: Uint8Array;
  /** vCPUs. */
  cpu: number;
  /** Memory in MiB. */
  memory: number;
  /** `GrpcVM.cpuDelta` (always 0 from vmfactory's server). */
  cpuDelta: number;
}

/** What `Status` reports: the server's pid and one entry per cached VM. */
export interface CacheStatus {
  /** Pid of the server process. */
  pid: number;
  /** The cached VMs. */
  vms: { pid: number; cpu: number; memory: number }[];
}

/** The server is not running at the socket (nothing there, or nothing listening): exit code 2. */
export class CacheServerNotRunningError extends UsageError {
  /** Builds "Cannot reach the VMCache server at <socket>: not running (...)". */
  constructor(socketPath: string, options?: { cause?: unknown }) {
    super(
      `reach the VMCache server at ${socketPath}`,
      "not running (start it with `vmfactory factory init`)",
      options,
    );
  }
}

/** A call reached the server and failed; `code` is the gRPC status code (4 = deadline). */
export class CacheCallError extends VmfactoryError {
  /** gRPC status code. */
  readonly code: number;
  /** Builds "Cannot <rpc> on the VMCache server at <socket>: <server's detail>". */
  constructor(rpc: string, socketPath: string, code: number, detail: string) {
    super(`call ${rpc} on the VMCache server at ${socketPath}`, detail);
    this.code = code;
  }
}

/** Options of {@link CacheClient.connect}. */
export interface CacheClientOptions {
  /** Deadline (ms) of each call, default 60 000. */
  timeoutMs?: number;
}

type Callback = (err: GrpcJs.ServiceError | null, value: unknown) => void;
type Unary = (req: object, meta: GrpcJs.Metadata, opts: GrpcJs.CallOptions, cb: Callback) => void;

/** A connection to a VMCache server; {@link CacheClient.close} it when done. */
export class CacheClient {
  readonly #client: GrpcJs.Client;
  readonly #socketPath: string;
  readonly #timeoutMs: number;
  readonly #grpc: typeof GrpcJs;

  private constructor(
    grpc: typeof GrpcJs,
    client: GrpcJs.Client,
    socketPath: string,
    timeoutMs: number,
  ) {
    this.#grpc = grpc;
    this.#client = client;
    this.#socketPath = socketPath;
    this.#timeoutMs = timeoutMs;
  }

  /**
   * Opens a channel to the server at `socketPath`; throws {@link CacheServerNotRunningError} when
   * nothing listens there. `timeoutMs` is the default deadline of each call.
   */
  static async connect(socketPath: string, options: CacheClientOptions = {}): Promise<CacheClient> {
    const timeoutMs = options.timeoutMs ?? 60_000;
    try {
      // Fails fast on a missing or stale socket, where grpc-js would retry until the deadline;
      // cheaper than waitForReady, and the first call opens the HTTP/2 session anyway.
      (await Deno.connect({ transport: "unix", path: socketPath })).close();
    } catch (cause) {
      throw new CacheServerNotRunningError(socketPath, { cause });
    }
    const { grpc, service } = await loadCacheGrpc();
    const Ctor = grpc.makeGenericClientConstructor(service, "CacheService");
    const client = new Ctor(
      `unix:${socketPath}`,
      grpc.credentials.createInsecure(),
      GOAWAY_SAFE_CHANNEL_OPTIONS,
    );
    return new CacheClient(grpc, client, socketPath, timeoutMs);
  }

  /** Fetches the cache's opaque configuration blobs. */
  async config(): Promise<{ data: Uint8Array; agentConfig: Uint8Array }> {
    const r = await this.#call("Config") as { Data: Uint8Array; AgentConfig: Uint8Array };
    return { data: r.Data, agentConfig: r.AgentConfig };
  }

  /** Takes one cached VM; waits up to `timeoutMs` (default: the client's) for one to be ready. */
  async getBaseVM(timeoutMs: number = this.#timeoutMs): Promise<CachedVm> {
    const r = await this.#call("GetBaseVM", timeoutMs) as CachedVm;
    return {
      id: r.id,
      hypervisor: r.hypervisor,
      cpu: r.cpu,
      memory: r.memory,
      cpuDelta: r.cpuDelta,
    };
  }

  /** Reports the server's pid and its cached VMs. */
  async status(): Promise<CacheStatus> {
    const r = await this.#call("Status") as { pid: number; vmstatus: CacheStatus["vms"] };
    return { pid: r.pid, vms: r.vmstatus.map(({ pid, cpu, memory }) => ({ pid, cpu, memory })) };
  }

  /** Asks the server to stop; it replies first, then destroys its cached VMs and exits. */
  async quit(): Promise<void> {
    await this.#call("Quit");
  }

  /** Closes the channel; calls in flight fail. */
  close(): void {
    this.#client.close();
  }

  #call(rpc: string, timeoutMs = this.#timeoutMs): Promise<unknown> {
    const method = (this.#client as unknown as Record<string, Unary>)[rpc].bind(this.#client);
    const meta = new this.#grpc.Metadata();
    return new Promise((resolve, reject) =>
      method({}, meta, { deadline: Date.now() + timeoutMs }, (err, value) => {
        if (!err) return resolve(value);
        if (
          err.code === this.#grpc.status.UNAVAILABLE &&
          /No connection|ECONNREFUSED|ENOENT/.test(err.details)
        ) {
          return reject(new CacheServerNotRunningError(this.#socketPath, { cause: err }));
        }
        reject(new CacheCallError(rpc, this.#socketPath, err.code, err.details || err.message));
      })
    );
  }
}
