/**
 * The VMCache gRPC client: Kata's `cache.CacheService` on a Unix socket, spoken through Deno's
 * `fetch` (HTTP/2 with prior knowledge over the socket) and the hand-written codec of
 * `cache_wire.ts`, so the CLI imports neither grpc-js nor proto-loader (~140 ms) and a call costs
 * about 1 ms instead of ~5 ms through grpc-js.
 *
 * Unary gRPC over `fetch`, and what it cannot see:
 * - A request is `POST /cache.CacheService/<rpc>` with `content-type: application/grpc`,
 *   `te: trailers`, a `grpc-timeout` of the call's deadline, and one framed `Empty` message. The
 *   deadline is also enforced here: the call is aborted (its stream reset) when it passes.
 * - An error reply must be trailers-only (`grpc-status` and `grpc-message` in the response
 *   HEADERS), as vmfactory's server and grpc-js servers send it: those headers are read.
 * - Deno's `fetch` (2.9) does not expose HTTP/2 trailers, so the `grpc-status` trailer of a reply
 *   with a message cannot be read. A 200 `application/grpc` reply without `grpc-status` in its
 *   headers whose body is exactly one whole uncompressed message is taken as OK. A server that
 *   sent a message and then a non-OK trailer would be misread; vmfactory's server never does
 *   (a failed call gets no message). A stream reset before its end (no trailers) fails the body
 *   read, so a reply counts only once its stream ended cleanly, as the server's delivery rule does.
 * @module
 */

import { MAX_TIMER_MS } from "../cheap_timer.ts";
import { UsageError, VmfactoryError } from "../errors.ts";
import {
  decodeEmpty,
  decodeGrpcStatus,
  decodeGrpcVM,
  decodeGrpcVMConfig,
  frameMessage,
  GrpcCode,
  unframeMessage,
} from "./cache_wire.ts";

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

/** Largest reply body read (grpc-js's default receive limit). */
const MAX_REPLY_BYTES = 4 * 1024 * 1024;
/** A connection error that means nothing listens at the socket. */
const NOT_RUNNING =
  /No such file or directory|Connection refused|os error (2|111)\)|ENOENT|ECONNREFUSED/;

/** Why a call was aborted. */
class Abort {
  constructor(readonly code: GrpcCode, readonly detail: string) {}
}

/** A connection to a VMCache server; {@link CacheClient.close} it when done. */
export class CacheClient {
  readonly #http: Deno.HttpClient;
  readonly #socketPath: string;
  readonly #timeoutMs: number;
  readonly #pending = new Set<AbortController>();
  #closed = false;

  private constructor(http: Deno.HttpClient, socketPath: string, timeoutMs: number) {
    this.#http = http;
    this.#socketPath = socketPath;
    this.#timeoutMs = timeoutMs;
  }

  /**
   * Opens a client of the server at `socketPath`; throws {@link CacheServerNotRunningError} when
   * nothing listens there. `timeoutMs` is the default deadline of each call.
   */
  static async connect(socketPath: string, options: CacheClientOptions = {}): Promise<CacheClient> {
    const timeoutMs = options.timeoutMs ?? 60_000;
    try {
      // Fails fast with a clear error on a missing or stale socket; the first call opens the
      // HTTP/2 connection that later calls share.
      (await Deno.connect({ transport: "unix", path: socketPath })).close();
    } catch (cause) {
      throw new CacheServerNotRunningError(socketPath, { cause });
    }
    const http = Deno.createHttpClient({
      proxy: { transport: "unix", path: socketPath },
      http1: false, // HTTP/2 with prior knowledge: gRPC needs it and there is no TLS to negotiate
      http2: true,
    });
    return new CacheClient(http, socketPath, timeoutMs);
  }

  /** Fetches the cache's opaque configuration blobs. */
  async config(): Promise<{ data: Uint8Array; agentConfig: Uint8Array }> {
    const r = decodeGrpcVMConfig(await this.#call("Config"));
    return { data: r.Data, agentConfig: r.AgentConfig };
  }

  /** Takes one cached VM; waits up to `timeoutMs` (default: the client's) for one to be ready. */
  async getBaseVM(timeoutMs: number = this.#timeoutMs): Promise<CachedVm> {
    const r = decodeGrpcVM(await this.#call("GetBaseVM", timeoutMs));
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
    const r = decodeGrpcStatus(await this.#call("Status"));
    return { pid: r.pid, vms: r.vmstatus.map(({ pid, cpu, memory }) => ({ pid, cpu, memory })) };
  }

  /** Asks the server to stop; it replies first, then destroys its cached VMs and exits. */
  async quit(): Promise<void> {
    decodeEmpty(await this.#call("Quit"));
  }

  /** Closes the client: calls in flight fail with CANCELLED (their streams are reset). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const ac of this.#pending) {
      ac.abort(new Abort(GrpcCode.Cancelled, "the client was closed"));
    }
    this.#pending.clear();
    this.#http.close();
  }

  /** Makes one unary call with an `Empty` request; returns the reply's message bytes. */
  async #call(rpc: string, timeoutMs = this.#timeoutMs): Promise<Uint8Array> {
    const fail = (code: number, detail: string) =>
      new CacheCallError(rpc, this.#socketPath, code, detail);
    if (this.#closed) throw fail(GrpcCode.Cancelled, "the client was closed");
    const ms = Math.max(0, Math.min(Math.ceil(timeoutMs), MAX_TIMER_MS));
    const ac = new AbortController();
    this.#pending.add(ac);
    const timer = setTimeout(
      () => ac.abort(new Abort(GrpcCode.DeadlineExceeded, `deadline of ${ms} ms exceeded`)),
      ms,
    );
    try {
      const res = await fetch(`http://localhost/cache.CacheService/${rpc}`, {
        client: this.#http,
        method: "POST",
        headers: {
          "content-type": "application/grpc",
          te: "trailers",
          "grpc-timeout": grpcTimeout(ms),
        },
        body: frameMessage(new Uint8Array()),
        signal: ac.signal,
      });
      const status = res.headers.get("grpc-status");
      if (status !== null && status !== "0") {
        await res.body?.cancel();
        const code = Number(status);
        throw fail(
          Number.isInteger(code) ? code : GrpcCode.Unknown,
          grpcMessage(res.headers, status),
        );
      }
      if (res.status !== 200) {
        await res.body?.cancel();
        throw fail(httpToGrpc(res.status), `HTTP status ${res.status}`);
      }
      const type = res.headers.get("content-type") ?? "";
      if (!/^application\/grpc([+;]|$)/.test(type)) {
        await res.body?.cancel();
        throw fail(GrpcCode.Unknown, `reply content-type "${type}" is not gRPC`);
      }
      const body = await readBody(res);
      if (body === undefined) {
        throw fail(GrpcCode.ResourceExhausted, `reply larger than ${MAX_REPLY_BYTES} bytes`);
      }
      // trailers-only OK carries no message: an Empty
      if (status === "0" && body.length === 0) return body;
      try {
        return unframeMessage(body);
      } catch (err) {
        throw fail(GrpcCode.Internal, `malformed reply: ${(err as Error).message}`);
      }
    } catch (err) {
      if (err instanceof CacheCallError) throw err;
      const reason = ac.signal.reason;
      if (ac.signal.aborted && reason instanceof Abort) throw fail(reason.code, reason.detail);
      // a reused connection the server closed fails with a broken pipe: then, as grpc-js would
      // on reconnecting, a socket nothing listens on means the server is not running
      if (NOT_RUNNING.test(causes(err)) || !await listening(this.#socketPath)) {
        throw new CacheServerNotRunningError(this.#socketPath, { cause: err });
      }
      throw Object.assign(fail(GrpcCode.Unavailable, causes(err)), { cause: err });
    } finally {
      clearTimeout(timer);
      this.#pending.delete(ac);
    }
  }
}

/** The body, or undefined when it is larger than {@link MAX_REPLY_BYTES}. */
async function readBody(res: Response): Promise<Uint8Array | undefined> {
  const declared = Number(res.headers.get("content-length") ?? 0);
  if (declared > MAX_REPLY_BYTES) {
    await res.body?.cancel().catch(() => {});
    return undefined;
  }
  // a unary reply is small: reading it whole is faster than iterating the stream's chunks
  const body = new Uint8Array(await res.arrayBuffer());
  return body.length > MAX_REPLY_BYTES ? undefined : body;
}

/** `grpc-timeout` for `ms` (at most 8 digits, as the spec allows). */
function grpcTimeout(ms: number): string {
  return ms < 1e8 ? `${ms}m` : `${Math.ceil(ms / 1000)}S`;
}

function grpcMessage(headers: Headers, status: string): string {
  const raw = headers.get("grpc-message");
  if (!raw) return `gRPC status ${status}`;
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}

/** The gRPC code of an HTTP status without `grpc-status` (gRPC's http-grpc-status-mapping). */
function httpToGrpc(status: number): number {
  if (status === 400) return GrpcCode.Internal;
  if (status === 401) return GrpcCode.Unauthenticated;
  if (status === 403) return GrpcCode.PermissionDenied;
  if (status === 404) return GrpcCode.Unimplemented;
  if ([429, 502, 503, 504].includes(status)) return GrpcCode.Unavailable;
  return GrpcCode.Unknown;
}

/** False when nothing listens at `socketPath` (no socket, or a stale one). */
async function listening(socketPath: string): Promise<boolean> {
  try {
    (await Deno.connect({ transport: "unix", path: socketPath })).close();
    return true;
  } catch {
    return false;
  }
}

/** `err`'s message and those of its causes (fetch puts the OS error in `cause`). */
function causes(err: unknown): string {
  const parts: string[] = [];
  for (let e = err, i = 0; e !== undefined && i < 5; i++) {
    parts.push(e instanceof Error ? e.message : String(e));
    e = e instanceof Error ? e.cause : undefined;
  }
  return parts.join(": ");
}
