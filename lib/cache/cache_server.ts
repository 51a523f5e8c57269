/**
 * The VMCache gRPC server: Kata's `cache.CacheService` on a Unix socket.
 *
 * It speaks unary gRPC directly on `node:http2` (with the codec of `cache_wire.ts`, shared with
 * the client) instead of through grpc-js's `Server`, because it must own each
 * connection: Deno 2.9's `node:http2` aborts the whole process inside nghttp2 while it handles a
 * GOAWAY (denoland/deno#36788), and every grpc-js client sends one when it closes its channel. So
 * the server accepts connections itself, strips client GOAWAY frames before nghttp2 sees them
 * (see `_h2_goaway_filter.ts`) and never sends GOAWAY: it ends a connection by closing its socket.
 *
 * It accepts with `Deno.listen` rather than `node:net`: Deno's own sockets are close-on-exec, so
 * the QEMUs the VMCache starts hold neither the listener nor a client connection (a QEMU holding
 * the listener would make the socket of a crashed server look alive). Each connection reaches
 * `node:http2` through a Duplex adapter (`_conn_duplex.ts`).
 *
 * VMs come from a {@link CacheVmSource} (the lead's VMCache). A VM the server took for a call whose
 * client went away before the reply was fully written goes back through
 * {@link CacheVmSource.giveBack}; without that method the server logs it, so no VM vanishes silently.
 * "Fully written" means: the stream closed without a reset after the server sent its trailers, and
 * the socket took every byte written until then. A client that read the message and reset before
 * the trailers may adopt the VM while it is being given back: the store decides (a giveBack loses
 * against an adoption that came first, and an adoption fails once the VM is cached again).
 *
 * Clients are not trusted to be well behaved: a request body over {@link MAX_REQUEST_BYTES} or a
 * header list over {@link MAX_HEADER_LIST_BYTES} is answered RESOURCE_EXHAUSTED and its stream
 * reset; at most {@link MAX_CONNECTIONS} connections of {@link MAX_STREAMS_PER_CONNECTION} streams
 * are served (a connection beyond is closed at once); a connection without a stream for
 * {@link IDLE_TIMEOUT_MS} is closed, and a request whose body has not arrived by then is reset.
 * @module
 */

import { ensurePrivateDir } from "../private_dir.ts";
import http2 from "node:http2";
import { MAX_TIMER_MS } from "../cheap_timer.ts";
import { errorMessage, UsageError, VmfactoryError } from "../errors.ts";
import { type ConnDuplex, connDuplex } from "./_conn_duplex.ts";
import { GoawayFilter } from "./_h2_goaway_filter.ts";
import { CacheClient } from "./cache_client.ts";
import {
  encodeGrpcStatus,
  encodeGrpcVM,
  encodeGrpcVMConfig,
  frameMessage,
  GrpcCode,
  unframeMessage,
} from "./cache_wire.ts";
import type { CacheVm, CacheVmSource } from "./cache_vm_source.ts";

/** Largest request body the server reads (bytes); a bigger one is answered RESOURCE_EXHAUSTED. */
export const MAX_REQUEST_BYTES = 64 * 1024;
/** Largest request header list (bytes, as HTTP/2 counts it) the server accepts. */
export const MAX_HEADER_LIST_BYTES = 16 * 1024;
/** Most connections served at once; a connection beyond is closed as soon as it is accepted. */
export const MAX_CONNECTIONS = 64;
/** Streams a connection may have open at once. */
export const MAX_STREAMS_PER_CONNECTION = 32;
/**
 * A connection without a stream for this long (ms) is closed; a request whose body has not fully
 * arrived this long after its headers is reset.
 */
export const IDLE_TIMEOUT_MS = 60_000;

/** Options of {@link startCacheServer}. */
export interface CacheServerOptions {
  /** Unix socket path; its parent folder is created (mode 0700) if missing. */
  socketPath: string;
  /** The VMs to serve. */
  source: CacheVmSource;
  /** Receives one line per notable event (stale socket replaced, VM given back, quit). */
  log?: (line: string) => void;
  /** How long `GetBaseVM` waits for a ready VM (ms, default 60 000); a shorter client deadline wins. */
  takeTimeoutMs?: number;
  /** Connections served at once (default {@link MAX_CONNECTIONS}). */
  maxConnections?: number;
  /** Idle connection and unfinished request limit, ms (default {@link IDLE_TIMEOUT_MS}). */
  idleTimeoutMs?: number;
}

/** A running server. */
export interface CacheServerHandle {
  /** The socket the server listens on. */
  socketPath: string;
  /** Resolves once the server stopped (after `Quit` or {@link CacheServerHandle.close}). */
  closed: Promise<void>;
  /** Stops the server, fails waiting calls with UNAVAILABLE and removes the socket; idempotent. */
  close(): Promise<void>;
  /** Registers a callback run once when a client calls `Quit`, before the server closes. */
  onQuit(cb: () => void): void;
}

type Stream = http2.ServerHttp2Stream;
type Reply = { code: GrpcCode.Ok; message: Uint8Array } | { code: GrpcCode; error: string };
/** A served connection: its duplex, its open streams, the timer that closes it when idle. */
type Served = { conn: ConnDuplex; streams: number; idle?: ReturnType<typeof setTimeout> };

/**
 * Starts the VMCache server on `socketPath`. A stale socket (nothing listening) is replaced; a
 * live server on it makes this throw a {@link UsageError}.
 */
export async function startCacheServer(options: CacheServerOptions): Promise<CacheServerHandle> {
  const { socketPath, source } = options;
  const log = options.log ?? (() => {});
  const takeTimeoutMs = options.takeTimeoutMs ?? 60_000;
  const maxConnections = options.maxConnections ?? MAX_CONNECTIONS;
  const idleTimeoutMs = Math.min(options.idleTimeoutMs ?? IDLE_TIMEOUT_MS, MAX_TIMER_MS);
  await prepareSocketPath(socketPath, log);

  const shutdown = new AbortController();
  const conns = new Set<ConnDuplex>();
  let activeStreams = 0;
  let idle: PromiseWithResolvers<void> | undefined; // set while close() waits for replies
  const quitCallbacks: (() => void)[] = [];
  const closed = Promise.withResolvers<void>();
  let closing: Promise<void> | undefined;

  const giveBack = (vm: CacheVm, reason: string) => {
    log(`VM ${vm.id} (pid ${vm.pid}) returned to the cache: ${reason}`);
    source.giveBack?.(vm, reason);
    if (!source.giveBack) {
      log(`VM ${vm.id} (pid ${vm.pid}) has no owner now: the source has no giveBack`);
    }
  };

  type Handler = (stream: Stream, timeoutMs: number, conn: ConnDuplex) => Promise<Reply>;
  const handlers: Record<string, Handler> = {
    Config: () => {
      const c = source.config();
      return Promise.resolve(ok(encodeGrpcVMConfig({ Data: c.data, AgentConfig: c.agentConfig })));
    },
    Status: () =>
      Promise.resolve(ok(encodeGrpcStatus({ pid: Deno.pid, vmstatus: source.status() }))),
    Quit: (stream) => {
      stream.once("close", () => void quit());
      return Promise.resolve(ok(new Uint8Array())); // google.protobuf.Empty
    },
    GetBaseVM: async (stream, timeoutMs, conn) => {
      const ms = Math.min(takeTimeoutMs, timeoutMs, MAX_TIMER_MS); // a longer timer fires at once
      // The wait ends on the deadline, a shutdown or the client leaving, and its timer and
      // listeners go with it: no timer left per call, no abort error built after each reply.
      const waiting = new AbortController();
      const stop = () => waiting.abort();
      const timer = setTimeout(stop, ms);
      shutdown.signal.addEventListener("abort", stop);
      conn.gone.addEventListener("abort", stop);
      stream.once("close", stop);
      if (shutdown.signal.aborted || conn.gone.aborted) stop();
      let vm: CacheVm;
      try {
        vm = await source.take(waiting.signal);
      } catch (err) {
        if (shutdown.signal.aborted) {
          return { code: GrpcCode.Unavailable, error: "the VMCache server is stopping" };
        }
        if (waiting.signal.aborted) {
          const error = `no cached VM became ready within ${ms} ms`;
          return { code: GrpcCode.DeadlineExceeded, error };
        }
        return {
          code: GrpcCode.Unavailable,
          error: `the cache failed to provide a VM: ${errorMessage(err)}`,
        };
      } finally {
        clearTimeout(timer);
        shutdown.signal.removeEventListener("abort", stop);
        conn.gone.removeEventListener("abort", stop);
        stream.off("close", stop);
      }
      if (stream.closed || stream.destroyed || conn.gone.aborted) {
        giveBack(vm, "the client went away before the reply");
        return { code: GrpcCode.Unavailable, error: "client gone" };
      }
      const reply = ok(encodeGrpcVM({
        id: vm.id,
        hypervisor: vm.hypervisor,
        cpu: vm.cpu,
        memory: vm.memory,
      }));
      // Delivered once the stream closed cleanly after our trailers and the socket accepted every
      // byte written up to then; a client killed after that point loses the VM (no ack exists).
      stream.once("close", async () => {
        const clean = stream.rstCode === http2.constants.NGHTTP2_NO_ERROR && stream.sentTrailers;
        if (!clean || !await conn.writesOk()) {
          giveBack(vm, "the client went away before the reply was written");
        }
      });
      return reply;
    },
  };

  const connections = new WeakMap<http2.Http2Session, Served>();
  let accepted: Served | undefined;
  const h2 = http2.createServer({
    // Deno 2.9 advertises maxHeaderListSize but does not enforce it: the "stream" handler does.
    // nghttp2 itself bounds a header block (a field is at most 64 KiB, CONTINUATIONs are limited).
    settings: {
      maxConcurrentStreams: MAX_STREAMS_PER_CONNECTION,
      maxHeaderListSize: MAX_HEADER_LIST_BYTES,
    },
  });
  const idleAfter = (served: Served) => {
    clearTimeout(served.idle);
    served.idle = setTimeout(() => served.conn.duplex.destroy(), idleTimeoutMs);
  };
  h2.on("session", (session) => {
    session.on("error", () => {}); // dying clients are normal
    if (accepted) connections.set(session, accepted); // "session" fires inside emit("connection")
  });
  h2.on("stream", (stream: Stream, headers: http2.IncomingHttpHeaders) => {
    const served = connections.get(stream.session!)!;
    activeStreams++;
    served.streams++;
    clearTimeout(served.idle);
    // a request must arrive whole in time; a slow or endless body does not hold the stream
    const unfinished = setTimeout(
      () => stream.close(http2.constants.NGHTTP2_CANCEL),
      idleTimeoutMs,
    );
    stream.once("close", () => {
      clearTimeout(unfinished);
      if (--served.streams === 0 && !served.conn.gone.aborted) idleAfter(served);
      if (--activeStreams === 0) idle?.resolve();
    });
    stream.on("error", () => {});
    if (headerListSize(headers) > MAX_HEADER_LIST_BYTES) {
      const error = `the request headers are larger than ${MAX_HEADER_LIST_BYTES} bytes`;
      send(stream, { code: GrpcCode.ResourceExhausted, error });
      stream.close(http2.constants.NGHTTP2_NO_ERROR);
      return;
    }
    const path = String(headers[":path"] ?? "");
    const name = path.startsWith("/cache.CacheService/") ? path.slice(20) : "";
    const handler = Object.hasOwn(handlers, name) ? handlers[name] : undefined;
    const chunks: Uint8Array[] = [];
    let received = 0;
    stream.on("data", (chunk: Uint8Array) => {
      if (received > MAX_REQUEST_BYTES) return; // answered already; the rest is dropped
      received += chunk.length;
      if (received <= MAX_REQUEST_BYTES) return void chunks.push(chunk);
      chunks.length = 0;
      clearTimeout(unfinished);
      const error = `the request is larger than ${MAX_REQUEST_BYTES} bytes`;
      send(stream, { code: GrpcCode.ResourceExhausted, error });
      stream.close(http2.constants.NGHTTP2_NO_ERROR); // stop the client sending the rest
    });
    stream.once("end", async () => {
      clearTimeout(unfinished);
      if (received > MAX_REQUEST_BYTES) return;
      let reply: Reply;
      if (!handler) {
        reply = { code: GrpcCode.Unimplemented, error: `no such method ${path}` };
      } else if (!isUnaryFrame(chunks)) { // requests are Empty: only the framing is checked
        reply = { code: GrpcCode.Internal, error: "malformed gRPC request message" };
      } else {
        try {
          reply = await handler(stream, parseGrpcTimeout(headers["grpc-timeout"]), served.conn);
        } catch (err) {
          reply = { code: GrpcCode.Internal, error: `${name} failed: ${errorMessage(err)}` };
        }
      }
      send(stream, reply);
    });
  });
  h2.on("error", (err) => log(`server error: ${errorMessage(err)}`));
  let refusing = false; // logged once per stretch at the cap
  const serve = (conn: Deno.Conn) => {
    if (conns.size >= maxConnections) {
      if (!refusing) log(`refusing connections: ${conns.size} are open (the most served at once)`);
      refusing = true;
      conn.close();
      return;
    }
    refusing = false;
    const filter = new GoawayFilter();
    const c = connDuplex(conn, { incoming: (chunk) => filter.push(chunk) });
    const served: Served = { conn: c, streams: 0 };
    conns.add(c);
    c.gone.addEventListener("abort", () => {
      clearTimeout(served.idle);
      conns.delete(c);
    });
    idleAfter(served);
    accepted = served;
    h2.emit("connection", c.duplex);
    accepted = undefined;
  };

  const listener = listenPrivately(socketPath);
  const socketIno = Deno.statSync(socketPath).ino;
  const accepting = (async () => {
    while (!shutdown.signal.aborted) {
      try {
        serve(await listener.accept());
      } catch (err) {
        if (shutdown.signal.aborted) break;
        log(`cannot accept a connection: ${errorMessage(err)}`);
        await new Promise((r) => setTimeout(r, 100)); // out of descriptors, say: do not spin
      }
    }
  })();

  const close = () => {
    closing ??= (async () => {
      shutdown.abort(); // waiting GetBaseVM calls answer UNAVAILABLE
      listener.close();
      if (activeStreams > 0) {
        idle = Promise.withResolvers();
        const grace = setTimeout(idle.resolve, 1000);
        await idle.promise;
        clearTimeout(grace);
      }
      for (const c of conns) c.duplex.destroy();
      await accepting;
      try {
        if (Deno.statSync(socketPath).ino === socketIno) Deno.removeSync(socketPath);
      } catch { /* already gone */ }
      closed.resolve();
    })();
    return closing;
  };
  const quit = async () => {
    if (closing) return;
    log("Quit received: stopping the VMCache server");
    for (const cb of quitCallbacks.splice(0)) {
      try {
        cb();
      } catch (err) {
        log(`onQuit callback failed: ${errorMessage(err)}`);
      }
    }
    await close();
  };

  return {
    socketPath,
    closed: closed.promise,
    close,
    onQuit: (cb) => void quitCallbacks.push(cb),
  };
}

function ok(message: Uint8Array): Reply {
  return { code: GrpcCode.Ok, message };
}

/**
 * Answers `stream` unless it is gone. A stream that cannot take the answer is reset, so a
 * `GetBaseVM` close handler sees it undelivered (no trailers sent) and gives the VM back.
 */
function send(stream: Stream, reply: Reply): void {
  if (stream.closed || stream.destroyed) return;
  try {
    respond(stream, reply);
  } catch {
    stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
  }
}

function respond(stream: Stream, reply: Reply): void {
  if (reply.code !== GrpcCode.Ok || !("message" in reply)) {
    const error = "error" in reply ? reply.error : "";
    stream.respond({
      ":status": 200,
      "content-type": "application/grpc",
      "grpc-status": String(reply.code),
      "grpc-message": encodeURIComponent(error),
    }, { endStream: true });
    return;
  }
  stream.respond({ ":status": 200, "content-type": "application/grpc" }, {
    waitForTrailers: true,
  });
  stream.once("wantTrailers", () => {
    // the client may have reset the stream after our data: then no trailers, and no delivery
    if (stream.closed || stream.destroyed) return;
    try {
      stream.sendTrailers({ "grpc-status": "0" });
    } catch {
      stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    }
  });
  stream.end(frameMessage(reply.message));
}

/** The size of a header list as HTTP/2 counts it: name + value + 32 per field. */
function headerListSize(headers: http2.IncomingHttpHeaders): number {
  let size = 0;
  for (const [name, value] of Object.entries(headers)) {
    for (const v of Array.isArray(value) ? value : [value ?? ""]) {
      size += name.length + v.length + 32;
    }
  }
  return size;
}

/** Parses a `grpc-timeout` header ("100m", "5S"...) into ms; Infinity when absent or invalid. */
export function parseGrpcTimeout(value: string | string[] | undefined): number {
  const match = typeof value === "string" ? /^(\d{1,8})([HMSmun])$/.exec(value) : null;
  if (!match) return Infinity;
  const unitMs = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 }[match[2]]!;
  return Number(match[1]) * unitMs;
}

/** Creates the parent folder, replaces a stale socket, refuses a live one or a non-socket file. */
async function prepareSocketPath(socketPath: string, log: (line: string) => void): Promise<void> {
  ensurePrivateDir(parentOf(socketPath), { what: "VMCache socket folder" });
  let info: Deno.FileInfo;
  try {
    info = Deno.lstatSync(socketPath);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return;
    throw err;
  }
  const action = "start the VMCache server";
  if (!info.isSocket) throw new UsageError(action, `${socketPath} exists and is not a socket`);
  try {
    const conn = await Deno.connect({ transport: "unix", path: socketPath });
    conn.close();
  } catch (err) {
    if (!(err instanceof Deno.errors.ConnectionRefused)) {
      throw new VmfactoryError(action, `cannot probe ${socketPath}: ${errorMessage(err)}`);
    }
    log(`replacing stale socket ${socketPath} (nothing listens on it)`);
    Deno.removeSync(socketPath);
    return;
  }
  const pid = await livePid(socketPath);
  const who = pid === undefined ? "" : ` (pid ${pid})`;
  throw new UsageError(action, `another server is listening on ${socketPath}${who}`);
}

/**
 * Listens on `socketPath` with the socket at mode 0600 from its first moment there, without touching
 * the process-wide umask: binds in a fresh 0700 folder next to it, chmods the socket, then
 * hard-links it into place. The link fails if the path exists meanwhile, so a server that started
 * in between is not clobbered.
 */
function listenPrivately(socketPath: string): Deno.UnixListener {
  const action = "start the VMCache server";
  const dir = Deno.makeTempDirSync({ dir: parentOf(socketPath), prefix: "." });
  const bound = `${dir}/s`;
  let listener: Deno.UnixListener | undefined;
  try {
    listener = Deno.listen({ transport: "unix", path: bound });
    Deno.chmodSync(bound, 0o600);
    Deno.linkSync(bound, socketPath);
    return listener;
  } catch (err) {
    listener?.close();
    if (err instanceof Deno.errors.AlreadyExists) {
      throw new UsageError(action, `another server created ${socketPath} meanwhile`, {
        cause: err,
      });
    }
    throw new VmfactoryError(action, `cannot listen on ${socketPath}: ${errorMessage(err)}`, {
      cause: err,
    });
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

function parentOf(path: string): string {
  const slash = path.lastIndexOf("/");
  return slash < 0 ? "." : path.slice(0, slash) || "/";
}

async function livePid(socketPath: string): Promise<number | undefined> {
  let client: CacheClient | undefined;
  try {
    client = await CacheClient.connect(socketPath, { timeoutMs: 2000 });
    return (await client.status()).pid;
  } catch {
    return undefined;
  } finally {
    client?.close();
  }
}

/** True when the request body is exactly one uncompressed length-prefixed message. */
function isUnaryFrame(chunks: Uint8Array[]): boolean {
  try {
    unframeMessage(concatBytes(chunks));
    return true;
  } catch {
    return false;
  }
}

function concatBytes(chunks: Uint8Array[]): Uint8Array {
  const body = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) body.set(c, (at += c.length) - c.length);
  return body;
}
