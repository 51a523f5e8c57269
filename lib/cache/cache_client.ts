/**
 * The VMCache gRPC client: Kata's `cache.CacheService` on a Unix socket, spoken over the minimal
 * HTTP/2 client of `_h2_connection.ts` (prior knowledge, one connection shared by the calls and
 * reopened when the server closed it) and the hand-written codec of `cache_wire.ts`, so the CLI
 * imports neither grpc-js nor proto-loader (~140 ms).
 *
 * A call is `POST /cache.CacheService/<rpc>` with `content-type: application/grpc`,
 * `te: trailers`, a `grpc-timeout` of the call's deadline, and one framed `Empty` message. The
 * deadline is also enforced here: the stream is reset when it passes. The reply counts once its
 * stream ended cleanly (as the server's delivery rule does): `grpc-status` is read from the
 * trailers, or from the response headers of a trailers-only reply; a reply without one fails.
 * @module
 */

import { MAX_TIMER_MS } from "../cheap_timer.ts";
import { UsageError, VmfactoryError } from "../errors.ts";
import type { HeaderField } from "./_hpack.ts";
import { H2Connection, type H2Reply, H2StreamError } from "./_h2_connection.ts";
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
  readonly #socketPath: string;
  readonly #timeoutMs: number;
  readonly #pending = new Set<AbortController>();
  #h2: H2Connection;
  #opening?: Promise<H2Connection>;
  #closed = false;

  private constructor(h2: H2Connection, socketPath: string, timeoutMs: number) {
    this.#h2 = h2;
    this.#socketPath = socketPath;
    this.#timeoutMs = timeoutMs;
  }

  /**
   * Opens a client of the server at `socketPath` (its HTTP/2 connection); throws
   * {@link CacheServerNotRunningError} when nothing listens there. `timeoutMs` is the default
   * deadline of each call.
   */
  static async connect(socketPath: string, options: CacheClientOptions = {}): Promise<CacheClient> {
    try {
      const h2 = await H2Connection.open(socketPath);
      return new CacheClient(h2, socketPath, options.timeoutMs ?? 60_000);
    } catch (cause) {
      throw new CacheServerNotRunningError(socketPath, { cause });
    }
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

  /** Closes the client: calls in flight fail with CANCELLED (the connection is closed). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const ac of this.#pending) {
      ac.abort(new Abort(GrpcCode.Cancelled, "the client was closed"));
    }
    this.#pending.clear();
    this.#h2.close();
  }

  /** The shared connection, reopened when the last one is closed or draining. */
  async #connection(): Promise<H2Connection> {
    if (this.#h2.usable) return this.#h2;
    this.#opening ??= H2Connection.open(this.#socketPath).then((h2) => {
      if (this.#closed) h2.close();
      return this.#h2 = h2;
    }).finally(() => this.#opening = undefined);
    return await this.#opening;
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
    let reply: H2Reply;
    try {
      const h2 = await this.#connection();
      reply = await h2.request(requestFields(rpc, ms), EMPTY_REQUEST, {
        maxBody: MAX_REPLY_BYTES,
        signal: ac.signal,
      });
    } catch (err) {
      if (err instanceof Abort) throw fail(err.code, err.detail);
      if (err instanceof RangeError) {
        throw fail(GrpcCode.ResourceExhausted, `reply larger than ${MAX_REPLY_BYTES} bytes`);
      }
      if (err instanceof H2StreamError) {
        throw fail(resetToGrpc(err.code), `${err.message} (HTTP/2 error ${err.code})`);
      }
      // the connection failed: as grpc-js would on reconnecting, a socket nothing listens on
      // means the server is not running
      if (NOT_RUNNING.test(causes(err)) || !await listening(this.#socketPath)) {
        throw new CacheServerNotRunningError(this.#socketPath, { cause: err });
      }
      throw Object.assign(fail(GrpcCode.Unavailable, causes(err)), { cause: err });
    } finally {
      clearTimeout(timer);
      this.#pending.delete(ac);
    }
    return messageOf(reply, fail);
  }
}

/** The framed `Empty` every call sends. */
const EMPTY_REQUEST = frameMessage(new Uint8Array());

function requestFields(rpc: string, ms: number): HeaderField[] {
  return [
    [":method", "POST"],
    [":scheme", "http"],
    [":path", `/cache.CacheService/${rpc}`],
    [":authority", "localhost"],
    ["content-type", "application/grpc"],
    ["te", "trailers"],
    ["grpc-timeout", grpcTimeout(ms)],
  ];
}

/** The message of a reply, or the call's error (its gRPC status, else its HTTP status). */
function messageOf(
  reply: H2Reply,
  fail: (code: number, detail: string) => CacheCallError,
): Uint8Array {
  const headers = new Map(reply.headers);
  const last = new Map(reply.trailers.length > 0 ? reply.trailers : reply.headers);
  const status = last.get("grpc-status");
  if (status !== undefined && status !== "0") {
    const code = Number(status);
    throw fail(Number.isInteger(code) ? code : GrpcCode.Unknown, grpcMessage(last, status));
  }
  const http = headers.get(":status");
  if (http !== "200") throw fail(httpToGrpc(Number(http)), `HTTP status ${http}`);
  const type = headers.get("content-type") ?? "";
  if (!/^application\/grpc([+;]|$)/.test(type)) {
    throw fail(GrpcCode.Unknown, `reply content-type "${type}" is not gRPC`);
  }
  if (status === undefined) throw fail(GrpcCode.Internal, "the reply carries no grpc-status");
  if (reply.body.length === 0) return reply.body; // an OK without a message: an Empty
  try {
    return unframeMessage(reply.body);
  } catch (err) {
    throw fail(GrpcCode.Internal, `malformed reply: ${(err as Error).message}`);
  }
}

/** The gRPC code of a stream reset (gRPC's HTTP/2 error code mapping). */
function resetToGrpc(code: number): number {
  if (code === 0x7) return GrpcCode.Unavailable; // REFUSED_STREAM: never processed
  if (code === 0x8) return GrpcCode.Cancelled;
  if (code === 0xb) return GrpcCode.ResourceExhausted; // ENHANCE_YOUR_CALM
  if (code === 0xc) return GrpcCode.PermissionDenied; // INADEQUATE_SECURITY
  return GrpcCode.Internal;
}

/** `grpc-timeout` for `ms` (at most 8 digits, as the spec allows). */
function grpcTimeout(ms: number): string {
  return ms < 1e8 ? `${ms}m` : `${Math.ceil(ms / 1000)}S`;
}

/** The percent-decoded `grpc-message` (RFC 3986 escapes, as gRPC sends it). */
function grpcMessage(fields: Map<string, string>, status: string): string {
  const raw = fields.get("grpc-message");
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

/** `err`'s message and those of its causes (the OS error is in `cause`). */
function causes(err: unknown): string {
  const parts: string[] = [];
  for (let e = err, i = 0; e !== undefined && i < 5; i++) {
    parts.push(e instanceof Error ? e.message : String(e));
    e = e instanceof Error ? e.cause : undefined;
  }
  return parts.join(": ");
}
