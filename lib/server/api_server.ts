/**
 * The HTTP/JSON API of `vmfactory serve` (v1), on Deno's own HTTP server: a Unix socket (mode
 * 0600, or 0660 for a group) and, optionally, TCP with a bearer token. Routing, strict bodies,
 * caps (body size, requests at once), errors as `{"error": {"code", "message"}}` without stack
 * traces, and the NDJSON streaming form of exec and run. What the API does with VMs is the
 * {@link ApiBackend}'s (lib/server/vm_backend.ts over the factory); docs/api.md is the user's
 * guide and docs/openapi.json the schema of every route in {@link API_ROUTES}.
 * @module
 */
import { errorMessage, UsageError, VmfactoryError } from "../errors.ts";
import type { VmRecord } from "../vm/vm_record.ts";
import { type BoundSocket, serveOnSocket } from "./_api_socket.ts";
import {
  type CreateVmBody,
  type ExecBody,
  parseCreateBody,
  parseExecBody,
  parseRunBody,
  readJsonBody,
  type RunBody,
} from "./api_bodies.ts";
import { ApiError, errorReply } from "./api_error.ts";

export type { CreateVmBody, ExecBody, RunBody } from "./api_bodies.ts";
export { ApiError } from "./api_error.ts";

/** A VM record with whether its QEMU runs. */
export type VmState = VmRecord & { state: "running" | "dead" };

/**
 * What the API does with VMs. Any method may be called concurrently. Errors: throw an
 * {@link ApiError} to choose the status; other errors are answered as described at
 * {@link startApiServer}.
 */
export interface ApiBackend {
  /** Makes a VM; returns its record (the JSON of `vm create --json`). */
  createVm(body: CreateVmBody, signal: AbortSignal): Promise<VmRecord>;
  /** Every VM, oldest first. */
  listVms(): Promise<VmState[]>;
  /** The VM `id` (the `{id}` of the path: an id, or a prefix the backend may resolve); undefined when there is none. */
  getVm(id: string): Promise<VmState | undefined>;
  /** Stops and removes the VM `id` (as in getVm); false when there is none. */
  destroyVm(id: string): Promise<boolean>;
  /**
   * Runs a command in VM `id`, its output to `sink` (awaiting each call: that is the
   * backpressure), until it exits or `signal` aborts (the client left, or the server closes).
   */
  exec(id: string, body: ExecBody, sink: ExecSink, signal: AbortSignal): Promise<ExecOutcome>;
  /** A VM made for one command (as exec), destroyed afterwards whatever happens. */
  run(body: RunBody, sink: ExecSink, signal: AbortSignal): Promise<ExecOutcome & { vm: VmRecord }>;
  /** Whether the backend can serve (`ok`), plus anything worth showing. */
  health(): Promise<{ ok: boolean; [key: string]: unknown }>;
}

/** Where a command's output goes; each call resolves once the chunk is taken. */
export interface ExecSink {
  /** A chunk of stdout. */
  stdout(chunk: Uint8Array): void | Promise<void>;
  /** A chunk of stderr. */
  stderr(chunk: Uint8Array): void | Promise<void>;
  /** Most output bytes, stdout and stderr together, it keeps (the rest may be dropped early). */
  readonly outputLimit?: number;
}

/** How a command ended. */
export interface ExecOutcome {
  /** Exit status; 128 + signal when a signal killed it. */
  exitCode: number;
  /** The signal that killed it, if one did. */
  signal?: number;
  /** Its timeout expired and it was killed. */
  timedOut: boolean;
  /** Output beyond the limit was dropped. */
  truncated: boolean;
}

/** One answered request, for metrics and logs. */
export interface RequestEvent {
  /** Method and route, e.g. "POST /v1/vms/{id}/exec"; "unmatched" for an unknown path. */
  route: string;
  /** The status answered; 499 when the client left before the answer. */
  status: number;
  /** From arrival to the answer's end (a streamed answer's last line). */
  seconds: number;
  /** The made VM's `source` (creates and runs). */
  source?: string;
}

/** Options of {@link startApiServer}; at least one of `socketPath` and `listen`. */
export interface ApiServerOptions {
  /** Unix socket to serve on (its folder must be this user's, writable by no one else). */
  socketPath?: string;
  /** The socket's mode: 0o600 by default, 0o660 with `socketGroup`; never bits for others. */
  socketMode?: number;
  /** Group (name or gid) to give the socket to. */
  socketGroup?: string;
  /** TCP address to serve on too (port 0: any free port, see {@link ApiServer.port}). */
  listen?: { hostname: string; port: number };
  /** Bearer token every TCP request must send (required with `listen`; 16 characters or more). */
  token?: string;
  /** Largest request body (default 1 MiB; larger → 413). */
  maxBodyBytes?: number;
  /** Requests served at once, /healthz and /metrics aside (default 64; more → 429). */
  maxConcurrent?: number;
  /** The body of `GET /metrics` (Prometheus text); without it /metrics answers 404. */
  metrics?: () => string | Promise<string>;
  /** Called after every request. */
  observe?: (event: RequestEvent) => void;
  /** One line per notable event: an internal error (its message, never sent), a stale socket. */
  log?: (line: string, fields?: Record<string, unknown>) => void;
}

/** A running API server. */
export interface ApiServer {
  /** The Unix socket it serves on. */
  readonly socketPath?: string;
  /** The TCP port it serves on (the one chosen for port 0). */
  readonly port?: number;
  /**
   * Stops accepting: removes the socket; what still arrives (on open connections, or over TCP)
   * is answered 503. Resolves once every request in flight is answered, then closes the
   * listeners and the connections. Safe to call more than once.
   */
  drain(): Promise<void>;
  /** {@link ApiServer.drain}, after aborting the requests in flight (exec and run end at once). */
  close(): Promise<void>;
}

/** A route of the v1 API: method, path (OpenAPI template) and every status it can answer. */
export interface ApiRoute {
  /** HTTP method. */
  method: "GET" | "POST" | "DELETE";
  /** Path; `{id}` is one segment. */
  path: string;
  /** Statuses it answers with (401 only on TCP). */
  statuses: readonly number[];
}

/** Default of {@link ApiServerOptions.maxBodyBytes}. */
export const DEFAULT_MAX_BODY_BYTES = 1 << 20;
/** Default of {@link ApiServerOptions.maxConcurrent}. */
export const DEFAULT_MAX_CONCURRENT = 64;
/** Output the JSON form of exec and run keeps (16 MiB); the rest is dropped (`truncated`). */
export const JSON_OUTPUT_LIMIT = 16 << 20;
/** Shortest bearer token accepted. */
export const MIN_TOKEN_LENGTH = 16;
/** Streamed output buffered for a slow client before the command waits for it (bytes). */
const STREAM_BUFFER = 256 << 10;
const NDJSON = "application/x-ndjson";
/** How long drain lets the last answers flush before it closes the connections (ms). */
const FLUSH_GRACE_MS = 100;

/** Statuses of every VM route: bad token (TCP), too many at once, failure, draining. */
const COMMON = [401, 429, 500, 503];
const WITH_BODY = [400, 413];

/** Every route; docs/openapi.json documents exactly these (a test checks it). */
export const API_ROUTES: readonly ApiRoute[] = [
  { method: "POST", path: "/v1/vms", statuses: [201, ...WITH_BODY, 409, ...COMMON] },
  { method: "GET", path: "/v1/vms", statuses: [200, ...COMMON] },
  { method: "GET", path: "/v1/vms/{id}", statuses: [200, 400, 404, ...COMMON] },
  { method: "DELETE", path: "/v1/vms/{id}", statuses: [204, 400, 404, ...COMMON] },
  { method: "POST", path: "/v1/vms/{id}/exec", statuses: [200, ...WITH_BODY, 404, 409, ...COMMON] },
  { method: "POST", path: "/v1/run", statuses: [200, ...WITH_BODY, 409, ...COMMON] },
  { method: "GET", path: "/healthz", statuses: [200, 401, 500, 503] },
  { method: "GET", path: "/metrics", statuses: [200, 401, 404, 500] },
].map((r) => ({ ...r, statuses: [...r.statuses].sort((a, b) => a - b) })) as ApiRoute[];

/** One request being served. */
interface Call {
  req: Request;
  /** The route's action, for error messages. */
  action: string;
  id: string;
  /** Aborts when the client leaves or the server closes. */
  signal: AbortSignal;
  /** The made VM's source, for the event. */
  source?: string;
  /** For a streamed answer: resolves with the status once the stream ended. */
  done?: Promise<number>;
}

type Handler = (backend: ApiBackend, call: Call, server: Server) => Promise<Response>;

interface RouteSpec extends ApiRoute {
  /** What it does, for error messages: "Cannot <action>: ...". */
  action: string;
  /** /healthz and /metrics: neither capped nor refused while draining. */
  cheap?: boolean;
  /** Reads a body and may run long: the client leaving aborts it. */
  long?: boolean;
  handle: Handler;
}

const HANDLERS: Record<string, Omit<RouteSpec, keyof ApiRoute>> = {
  "POST /v1/vms": {
    action: "create a VM",
    long: true,
    handle: async (backend, call, server) => {
      const body = parseCreateBody(await server.body(call.req));
      const record = await backend.createVm(body, call.signal);
      call.source = record.source;
      return json(record, 201);
    },
  },
  "GET /v1/vms": {
    action: "list VMs",
    handle: async (backend) => json({ vms: await backend.listVms() }),
  },
  "GET /v1/vms/{id}": {
    action: "show a VM",
    handle: async (backend, call) => {
      const vm = await backend.getVm(call.id);
      if (!vm) throw noSuchVm(call.id);
      return json(vm);
    },
  },
  "DELETE /v1/vms/{id}": {
    action: "destroy a VM",
    handle: async (backend, call) => {
      if (!await backend.destroyVm(call.id)) throw noSuchVm(call.id);
      return new Response(null, { status: 204 });
    },
  },
  "POST /v1/vms/{id}/exec": {
    action: "run a command",
    long: true,
    handle: async (backend, call, server) => {
      const body = parseExecBody(await server.body(call.req));
      return await server.execReply(call, (sink) => backend.exec(call.id, body, sink, call.signal));
    },
  },
  "POST /v1/run": {
    action: "run a command in a new VM",
    long: true,
    handle: async (backend, call, server) => {
      const body = parseRunBody(await server.body(call.req));
      return await server.execReply(call, async (sink) => {
        const outcome = await backend.run(body, sink, call.signal);
        call.source = outcome.vm.source;
        return outcome;
      });
    },
  },
  "GET /healthz": {
    action: "check health",
    cheap: true,
    handle: async (backend, _call, server) => {
      const health = await backend.health();
      if (server.draining) {
        return json({ ...health, ok: false, draining: true }, 503);
      }
      return json(health, health.ok ? 200 : 503);
    },
  },
  "GET /metrics": {
    action: "read the metrics",
    cheap: true,
    handle: async (_backend, _call, server) => {
      if (!server.options.metrics) {
        throw new ApiError(404, "not_found", "read the metrics", "this server keeps none");
      }
      return reply(200, await server.options.metrics(), {
        "content-type": "text/plain; version=0.0.4; charset=utf-8",
      });
    },
  },
};

const ROUTES: RouteSpec[] = API_ROUTES.map((r) => ({ ...r, ...HANDLERS[`${r.method} ${r.path}`] }));
const PATTERNS = new Map(
  ROUTES.map((r) => [r, new RegExp(`^${r.path.replace("{id}", "([A-Za-z0-9_-]{1,64})")}$`)]),
);

function noSuchVm(id: string): ApiError {
  return new ApiError(404, "vm_not_found", `find VM ${id}`, "no such VM");
}

/**
 * An answer whose body is a stream even when it is known: Deno settles a request's `completed`
 * only once the client took a streamed body (a fixed one settles it at once), and drain waits
 * for `completed` before it closes the connections.
 */
function reply(status: number, text: string, headers: Record<string, string>): Response {
  const bytes = new TextEncoder().encode(text);
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(bytes);
      controller.close();
    },
  });
  return new Response(body, {
    status,
    headers: { "content-length": String(bytes.length), ...headers },
  });
}

function json(value: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return reply(status, JSON.stringify(value), { "content-type": "application/json", ...headers });
}

function errorResponse(
  status: number,
  code: string,
  message: string,
  headers: Record<string, string> = {},
): Response {
  return json({ error: { code, message } }, status, headers);
}

/** `outcome`'s fields as answered (no undefined `signal`). */
function outcomeFields(outcome: ExecOutcome, truncated = false) {
  return {
    exitCode: outcome.exitCode,
    ...(outcome.signal !== undefined ? { signal: outcome.signal } : {}),
    timedOut: outcome.timedOut,
    truncated: outcome.truncated || truncated,
  };
}

/** A sink that keeps up to {@link JSON_OUTPUT_LIMIT} bytes, for the JSON form. */
class Gathered implements ExecSink {
  readonly outputLimit = JSON_OUTPUT_LIMIT;
  #kept = 0;
  #parts = { stdout: [] as Uint8Array[], stderr: [] as Uint8Array[] };
  truncated = false;

  stdout(chunk: Uint8Array): void {
    this.#keep("stdout", chunk);
  }

  stderr(chunk: Uint8Array): void {
    this.#keep("stderr", chunk);
  }

  #keep(stream: "stdout" | "stderr", chunk: Uint8Array): void {
    const room = this.outputLimit - this.#kept;
    if (chunk.length > room) this.truncated = true;
    const kept = chunk.subarray(0, Math.max(0, room));
    this.#kept += kept.length;
    if (kept.length) this.#parts[stream].push(kept);
  }

  /** `stdout` and `stderr` as UTF-8 text, or `stdoutBase64` / `stderrBase64` when not UTF-8. */
  fields(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const stream of ["stdout", "stderr"] as const) {
      const bytes = new Uint8Array(this.#parts[stream].reduce((n, p) => n + p.length, 0));
      this.#parts[stream].reduce((off, p) => (bytes.set(p, off), off + p.length), 0);
      try {
        out[stream] = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
      } catch {
        out[`${stream}Base64`] = bytes.toBase64();
      }
    }
    return out;
  }
}

/** The abort reason of a request whose client left; never sent, 499 in its event. */
const CLIENT_LEFT = new ApiError(499, "client_left", "answer the request", "the client left");
/** The abort reason of the requests in flight when the server closes. */
const CLOSING = new ApiError(503, "closing", "finish the request", "the server is closing");

class Server {
  draining = false;
  port?: number;
  #active = 0;
  /** Abort controllers of the admitted requests (close aborts them). */
  #inFlight = new Set<AbortController>();
  /** Settles once each request's answer was sent (or failed to be). */
  #answering = new Set<Promise<void>>();
  /** Closes the listeners and every connection at once. */
  #force = new AbortController();
  #tokenDigest?: Uint8Array;
  #bound?: BoundSocket;
  #servers: Deno.HttpServer<Deno.NetAddr | Deno.UnixAddr>[] = [];
  #drained?: Promise<void>;

  constructor(readonly backend: ApiBackend, readonly options: ApiServerOptions) {}

  log(line: string, fields?: Record<string, unknown>): void {
    (this.options.log ?? ((l) => console.error(l)))(line, fields);
  }

  async start(): Promise<void> {
    const o = this.options;
    if (o.token !== undefined) this.#tokenDigest = await sha256(o.token);
    const signal = this.#force.signal;
    try {
      if (o.socketPath !== undefined) {
        this.#bound = await serveOnSocket({
          path: o.socketPath,
          mode: o.socketMode ?? (o.socketGroup !== undefined ? 0o660 : 0o600),
          group: o.socketGroup,
          log: (line) => this.log(line),
          signal,
        }, (req, info) => this.serve(req, info, false));
        this.#servers.push(this.#bound.server);
      }
      if (o.listen) {
        const { hostname, port } = o.listen;
        let tcp: Deno.HttpServer<Deno.NetAddr>;
        try {
          tcp = Deno.serve(
            { hostname, port, signal, onListen() {} },
            (req, info) => this.serve(req, info, true),
          );
        } catch (err) {
          const Kind = err instanceof Deno.errors.AddrInUse ? UsageError : VmfactoryError;
          throw new Kind(
            "start the API server",
            `cannot listen on ${hostname}:${port}: ${errorMessage(err)}`,
            { cause: err },
          );
        }
        this.#servers.push(tcp);
        this.port = tcp.addr.port;
      }
    } catch (err) {
      await this.drain();
      throw err;
    }
  }

  /**
   * Removes the socket (new clients cannot connect; on TCP they are answered 503), waits until
   * every request in flight is answered, then closes the listeners and the connections left
   * (idle ones, or a client still sending a body that was refused).
   */
  drain(): Promise<void> {
    this.draining = true;
    this.#drained ??= (async () => {
      this.#bound?.unlink();
      while (this.#answering.size) await Promise.allSettled([...this.#answering]);
      // the last bytes of an answer may still be on their way out of Deno's HTTP layer
      await new Promise((resolve) => setTimeout(resolve, FLUSH_GRACE_MS));
      this.#force.abort();
      await Promise.all(this.#servers.map((s) => s.finished));
    })();
    return this.#drained;
  }

  close(): Promise<void> {
    for (const ac of this.#inFlight) ac.abort(CLOSING);
    return this.drain();
  }

  /** The request's JSON body, within the cap. */
  body(req: Request): Promise<unknown> {
    return readJsonBody(req, this.options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES);
  }

  async #authorized(req: Request): Promise<boolean> {
    const m = /^Bearer +(\S+) *$/i.exec(req.headers.get("authorization") ?? "");
    if (!m || !this.#tokenDigest) return false;
    const digest = await sha256(m[1]);
    let diff = 0;
    for (let i = 0; i < digest.length; i++) diff |= digest[i] ^ this.#tokenDigest[i];
    return diff === 0;
  }

  async serve(req: Request, info: Deno.ServeHandlerInfo, tcp: boolean): Promise<Response> {
    const started = performance.now();
    const answered = info.completed.catch(() => {});
    this.#answering.add(answered);
    answered.then(() => this.#answering.delete(answered));
    const path = new URL(req.url).pathname;
    const route = ROUTES.find((r) => r.method === req.method && PATTERNS.get(r)!.test(path));
    const label = route ? `${route.method} ${route.path}` : "unmatched";
    const ac = new AbortController();
    const call: Call = {
      req,
      action: route?.action ?? "serve the request",
      id: route ? PATTERNS.get(route)!.exec(path)![1] ?? "" : "",
      signal: ac.signal,
    };
    const clientLeft = () => ac.abort(CLIENT_LEFT);
    let capped = false;
    const finish = (status: number) => {
      if (capped) this.#active--;
      this.#inFlight.delete(ac);
      req.signal.removeEventListener("abort", clientLeft);
      const event: RequestEvent = { route: label, status, seconds: seconds(started) };
      if (call.source) event.source = call.source;
      try {
        this.options.observe?.(event);
      } catch (err) {
        this.log(`observe failed: ${errorMessage(err)}`);
      }
    };
    let response: Response;
    try {
      response = await this.#dispatch(req, tcp, path, route, call, () => {
        capped = true;
        this.#active++;
        this.#inFlight.add(ac);
        if (route?.long) req.signal.addEventListener("abort", clientLeft, { once: true });
      });
    } catch (err) {
      const reply = errorReply(err, call.action);
      if (reply.internal) {
        this.log(`internal error in ${label}: ${errorMessage(err)}`, { route: label });
      }
      response = errorResponse(reply.status, reply.code, reply.message);
    }
    if (call.done) call.done.then(finish);
    else finish(response.status);
    return response;
  }

  async #dispatch(
    req: Request,
    tcp: boolean,
    path: string,
    route: RouteSpec | undefined,
    call: Call,
    admit: () => void,
  ): Promise<Response> {
    if (tcp && !await this.#authorized(req)) {
      return errorResponse(
        401,
        "unauthorized",
        "Cannot serve the request: a valid bearer token is required",
        { "www-authenticate": "Bearer" },
      );
    }
    if (!route) {
      const allow = ROUTES.filter((r) => PATTERNS.get(r)!.test(path)).map((r) => r.method);
      if (allow.length === 0) {
        return errorResponse(404, "not_found", `Cannot serve ${path}: no such route`);
      }
      return errorResponse(
        405,
        "method_not_allowed",
        `Cannot ${req.method} ${path}: allowed: ${allow.join(", ")}`,
        { allow: allow.join(", ") },
      );
    }
    if (!route.cheap) {
      if (this.draining) {
        return errorResponse(503, "draining", `Cannot ${route.action}: the server is stopping`);
      }
      const most = this.options.maxConcurrent ?? DEFAULT_MAX_CONCURRENT;
      if (this.#active >= most) {
        return errorResponse(
          429,
          "too_many_requests",
          `Cannot ${route.action}: ${most} requests are being served, the most at once`,
          { "retry-after": "1" },
        );
      }
      admit();
    }
    return await route.handle(this.backend, call, this);
  }

  /**
   * Runs `run` for exec or run and answers with its output: gathered into JSON, or, when the
   * client accepts NDJSON, streamed one line per chunk. A stream's headers go out with its first
   * line, so an error before any output (unknown VM, failed create) still has its own status.
   */
  execReply(
    call: Call,
    run: (sink: ExecSink) => Promise<ExecOutcome & { vm?: VmRecord }>,
  ): Promise<Response> {
    if (!(call.req.headers.get("accept") ?? "").includes(NDJSON)) return this.#gathered(run);
    const stream = new TransformStream<Uint8Array, Uint8Array>(
      undefined,
      new ByteLengthQueuingStrategy({ highWaterMark: STREAM_BUFFER }),
    );
    const writer = stream.writable.getWriter();
    const answer = Promise.withResolvers<Response>();
    let started = false;
    const aborted = new Promise<never>((_, reject) => {
      call.signal.addEventListener("abort", () => reject(call.signal.reason), { once: true });
    });
    aborted.catch(() => {});
    const encoder = new TextEncoder();
    const send = async (line: object) => {
      if (!started) {
        started = true;
        answer.resolve(new Response(stream.readable, { headers: { "content-type": NDJSON } }));
      }
      // a stream that fails was cancelled by Deno: its client is gone
      await Promise.race([writer.ready, aborted]).catch(() => {
        throw call.signal.aborted ? call.signal.reason : CLIENT_LEFT;
      });
      writer.write(encoder.encode(JSON.stringify(line) + "\n")).catch(() => {});
    };
    const sink: ExecSink = {
      stdout: (chunk) => send({ type: "stdout", data: chunk.toBase64() }),
      stderr: (chunk) => send({ type: "stderr", data: chunk.toBase64() }),
    };
    call.done = (async () => {
      try {
        const outcome = await run(sink);
        await send({ type: "exit", ...outcomeFields(outcome) });
        await Promise.race([writer.close(), aborted]);
        return 200;
      } catch (err) {
        const reply = errorReply(err, call.action);
        if (reply.internal) this.log(`internal error in ${call.action}: ${errorMessage(err)}`);
        if (!started) {
          answer.resolve(errorResponse(reply.status, reply.code, reply.message));
          return reply.status;
        }
        if (call.signal.aborted) {
          await writer.abort(call.signal.reason).catch(() => {});
          return 200;
        }
        try {
          await send({ type: "error", error: { code: reply.code, message: reply.message } });
          await Promise.race([writer.close(), aborted]);
        } catch {
          await writer.abort().catch(() => {});
        }
        return 200;
      }
    })();
    return answer.promise;
  }

  async #gathered(run: (sink: ExecSink) => Promise<ExecOutcome & { vm?: VmRecord }>) {
    const gathered = new Gathered();
    const outcome = await run(gathered);
    return json({
      ...outcomeFields(outcome, gathered.truncated),
      ...gathered.fields(),
      ...(outcome.vm
        ? { vm: { id: outcome.vm.id, source: outcome.vm.source, timings: outcome.vm.timings } }
        : {}),
    });
  }
}

async function sha256(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
}

function seconds(since: number): number {
  return (performance.now() - since) / 1000;
}

/** Checks the options; throws a UsageError naming the first that does not fit. */
function checkOptions(o: ApiServerOptions): void {
  const bad = (detail: string) => new UsageError("start the API server", detail);
  if (o.socketPath === undefined && o.listen === undefined) {
    throw bad("give a socket path, a TCP address, or both");
  }
  if (o.listen) {
    if (o.token === undefined) throw bad("listening on TCP needs a bearer token");
    if (o.token.length < MIN_TOKEN_LENGTH || /\s/.test(o.token)) {
      throw bad(`the token must be at least ${MIN_TOKEN_LENGTH} characters, without spaces`);
    }
    const { port } = o.listen;
    if (!(Number.isInteger(port) && port >= 0 && port <= 65535)) {
      throw bad(`port ${port} is not a whole number from 0 to 65535`);
    }
  }
  const mode = o.socketMode;
  if (
    mode !== undefined && (!Number.isInteger(mode) || (mode & ~0o770) || (mode & 0o600) !== 0o600)
  ) {
    throw bad(
      `socket mode ${
        mode.toString(8)
      }: expected the owner's read and write, no bits for others (600, 660)`,
    );
  }
  for (
    const [name, value] of [["maxBodyBytes", o.maxBodyBytes], ["maxConcurrent", o.maxConcurrent]]
  ) {
    if (value !== undefined && !(Number.isSafeInteger(value) && (value as number) >= 1)) {
      throw bad(`${name} must be a whole number of at least 1, not ${value}`);
    }
  }
}

/**
 * Starts the API server on `options.socketPath` and/or `options.listen`. Refuses (UsageError) a
 * socket path where a server answers, or that is not a socket; replaces a stale socket.
 *
 * Answers: the route's status; 400 for a body that is not JSON, has unknown fields or a value out
 * of bounds; 401 on TCP without the token; 404 / 405 for unknown paths and methods; 413 for a
 * body over the cap; 429 beyond `maxConcurrent`; 503 while draining. What the backend throws:
 * an {@link ApiError} its status, a SourceUnfitError 503, another UsageError 400, another
 * VmfactoryError 500 with its message, anything else 500 "internal" (the message is logged).
 * @example
 * ```ts
 * const server = await startApiServer(new VmApiBackend({ factory, store, settings }), {
 *   socketPath: `${settings.stateDir}/vmfactory.sock`,
 * });
 * // curl --unix-socket /run/vmfactory/vmfactory.sock -X POST http://vmfactory/v1/vms
 * await server.close();
 * ```
 */
export async function startApiServer(
  backend: ApiBackend,
  options: ApiServerOptions,
): Promise<ApiServer> {
  checkOptions(options);
  const server = new Server(backend, options);
  await server.start();
  return {
    socketPath: options.socketPath,
    port: server.port,
    drain: () => server.drain(),
    close: () => server.close(),
  };
}
