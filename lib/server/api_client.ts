/**
 * A client of the `vmfactory serve` daemon's HTTP API v1 (docs/api.md) on its Unix socket,
 * through Deno's `fetch` (HTTP/1.1 over the socket), and {@link daemonFor}, which the CLI asks
 * whether a daemon answers for its state directory.
 *
 * The daemon is trusted less than the user who runs the CLI: every reply is bounded (body size,
 * NDJSON line length, a deadline per call) and checked (a VM record's types, bounds and paths, an
 * exit code's range) before the CLI prints or obeys it, and the daemon's error messages lose
 * their control characters (no terminal escapes). Its errors `{"error": {code, message}}` become
 * {@link ApiUsageError} (exit 2: the request was wrong, as 400, 404, 409 and 413 say) or
 * {@link ApiCallError} (exit 1: the daemon failed, refused or could not be reached).
 * @module
 */

import { cheapTimer, MAX_TIMER_MS } from "../cheap_timer.ts";
import type { Settings } from "../config/settings.ts";
import { errorMessage, UsageError, VmfactoryError } from "../errors.ts";
import { parseRecord, type VmRecord } from "../vm/vm_record.ts";
import { vmPaths } from "../vm/vm_paths.ts";
import { ApiError } from "./api_error.ts";
import { daemonSocketPath } from "./daemon_socket.ts";
import type { CreateVmBody, ExecBody, RunBody } from "./api_bodies.ts";
import type { ExecOutcome, ExecSink } from "./api_server.ts";

/** Where {@link ApiClient.exec} writes the command's output as it arrives. */
export type ExecOutput = Pick<ExecSink, "stdout" | "stderr">;

/** A VM as `GET /v1/vms` lists it: its record and whether its QEMU runs. */
export type ListedVm = VmRecord & { state: "running" | "dead" };

/** The daemon refused the request as wrong (bad input, unknown VM, VM not running): exit 2. */
export class ApiUsageError extends UsageError {
  /** Builds the error from the daemon's reply; `status` is the HTTP status. */
  constructor(
    readonly status: number,
    readonly code: string,
    action: string,
    detail: string,
  ) {
    super(action, detail);
  }
}

/**
 * The call failed: the daemon's own failure, its refusal (429, 503…), or no daemon (status 0, no
 * valid reply): exit 1.
 */
export class ApiCallError extends ApiError {}

/** Options of {@link ApiClient}. */
export interface ApiClientOptions {
  /** Deadline (ms) of calls that have none of their own (list, get, destroy); default 30 000. */
  timeoutMs?: number;
}

/** Largest JSON reply read (a list of the most VMs the tool keeps fits many times over). */
export const MAX_REPLY_BYTES = 8 * 1024 * 1024;
/** Longest NDJSON line of a streamed exec (a base64 output chunk and its JSON wrapping). */
export const MAX_LINE_BYTES = 1024 * 1024;
/** Longest error message kept from the daemon. */
const MAX_MESSAGE_CHARS = 8192;
/** Deadline of `POST /v1/vms`: a first create may build the guest and the template. */
const CREATE_TIMEOUT_MS = 10 * 60_000;
/** How long past an exec's own timeout the daemon has to report its end. */
const EXEC_GRACE_MS = 30_000;
/** Statuses that mean the request was wrong, not that the daemon failed (exit 2). */
const USAGE_STATUSES = new Set([400, 404, 409, 413]);

/** Why a call was aborted. */
class Abort {
  constructor(readonly detail: string) {}
}

/** An error of the caller's output sink (say, a closed stdout): passed on as it is. */
class OutputFailed {
  constructor(readonly error: unknown) {}
}

/**
 * A client of the daemon at `socketPath`. Each call has a deadline and fails with an
 * {@link ApiUsageError} or {@link ApiCallError}; {@link ApiClient.close} aborts the calls in
 * flight. Nothing connects before the first call.
 */
export class ApiClient {
  /** The daemon's socket. */
  readonly socketPath: string;
  readonly #http: Deno.HttpClient;
  readonly #timeoutMs: number;
  readonly #pending = new Set<AbortController>();
  #closed = false;

  /** A client of the daemon listening on the Unix socket `socketPath`. */
  constructor(socketPath: string, options: ApiClientOptions = {}) {
    this.socketPath = socketPath;
    this.#timeoutMs = options.timeoutMs ?? 30_000;
    this.#http = Deno.createHttpClient({ proxy: { transport: "unix", path: socketPath } });
  }

  /** `GET /healthz`: true when the daemon answers 200 `{"ok": true}` within `timeoutMs`. */
  async healthy(timeoutMs: number): Promise<boolean> {
    try {
      const body = await this.#json("GET", "/healthz", { what: "ask the daemon", timeoutMs });
      return isObject(body) && body.ok === true;
    } catch (err) {
      if (err instanceof VmfactoryError) return false;
      throw err;
    }
  }

  /** `POST /v1/vms`: makes a VM through the daemon's factory; it is ready when this returns. */
  async createVm(request: CreateVmBody): Promise<VmRecord> {
    const what = "create a VM through the daemon";
    const body = await this.#json("POST", "/v1/vms", {
      what,
      body: request,
      timeoutMs: CREATE_TIMEOUT_MS,
    });
    return checkedRecord(body, what, this.socketPath);
  }

  /** `GET /v1/vms`: every VM the daemon's store holds, oldest first. */
  async listVms(): Promise<ListedVm[]> {
    const what = "list VMs through the daemon";
    const body = await this.#json("GET", "/v1/vms", { what });
    if (!isObject(body) || !Array.isArray(body.vms)) {
      throw this.#malformed(what, "no `vms` list");
    }
    return body.vms.map((vm) => checkedListed(vm, what, this.socketPath));
  }

  /** `GET /v1/vms/{id}`: the VM whose id is (or starts with) `id`; unknown → ApiUsageError. */
  async getVm(id: string): Promise<ListedVm> {
    const what = `find VM ${id} through the daemon`;
    const body = await this.#json("GET", `/v1/vms/${encodeURIComponent(id)}`, { what });
    return checkedListed(body, what, this.socketPath);
  }

  /** `DELETE /v1/vms/{id}`: stops the VM and removes its folder; unknown → ApiUsageError. */
  async destroyVm(id: string): Promise<void> {
    await this.#json("DELETE", `/v1/vms/${encodeURIComponent(id)}`, {
      what: `destroy VM ${id} through the daemon`,
    });
  }

  /**
   * `POST /v1/vms/{id}/exec`, streamed (NDJSON): writes the output to `output` as it arrives and
   * returns how the command ended. Its deadline is the command's timeout plus 30 s, or none
   * without one (a command runs as long as it runs, as `vm exec` does without the daemon).
   */
  async exec(id: string, request: ExecBody, output: ExecOutput): Promise<ExecOutcome> {
    const what = `run a command in VM ${id} through the daemon`;
    const timeoutMs = request.timeoutS ? request.timeoutS * 1000 + EXEC_GRACE_MS : 0;
    return await this.#call(
      "POST",
      `/v1/vms/${encodeURIComponent(id)}/exec`,
      { what, body: request, timeoutMs, accept: "application/x-ndjson" },
      (res) => this.#readExecStream(res, what, output),
    );
  }

  /**
   * `POST /v1/run`, streamed (NDJSON): the daemon makes a VM, runs the command, writes its output
   * to `output` as it arrives and destroys the VM (also when this client goes away: closing it
   * ends the run). Returns how the command ended. Deadline as {@link ApiClient.exec}'s, plus the
   * time to make the VM.
   */
  async run(request: RunBody, output: ExecOutput): Promise<ExecOutcome> {
    const what = "run a command in a new VM through the daemon";
    const timeoutMs = request.timeoutS ? request.timeoutS * 1000 + CREATE_TIMEOUT_MS : 0;
    return await this.#call(
      "POST",
      "/v1/run",
      { what, body: request, timeoutMs, accept: "application/x-ndjson" },
      (res) => this.#readExecStream(res, what, output),
    );
  }

  /** Closes the client: calls in flight fail with an {@link ApiCallError}. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const ac of this.#pending) ac.abort(new Abort("the client was closed"));
    this.#pending.clear();
    this.#http.close();
  }

  /** One call whose reply is JSON (or empty, for 204): the parsed body. */
  #json(
    method: string,
    path: string,
    call: { what: string; body?: unknown; timeoutMs?: number },
  ): Promise<unknown> {
    return this.#call(method, path, call, async (res) => {
      if (res.status === 204) {
        await res.body?.cancel();
        return undefined;
      }
      const bytes = await readCapped(res, MAX_REPLY_BYTES, call.what);
      return parseJson(bytes, () => this.#malformed(call.what));
    });
  }

  /**
   * Sends one request with a deadline (`timeoutMs`, 0 = none; default the client's) and hands a
   * 2xx reply to `read`, within the same deadline; any other reply becomes an error.
   */
  async #call<T>(
    method: string,
    path: string,
    call: { what: string; body?: unknown; timeoutMs?: number; accept?: string },
    read: (res: Response) => Promise<T>,
  ): Promise<T> {
    const { what } = call;
    if (this.#closed) throw new ApiCallError(0, "closed", what, "the client was closed");
    const ac = new AbortController();
    this.#pending.add(ac);
    const ms = Math.min(call.timeoutMs ?? this.#timeoutMs, MAX_TIMER_MS);
    const timer = ms > 0
      ? cheapTimer(ms, () => ac.abort(new Abort(`no answer within ${ms} ms`)))
      : undefined;
    try {
      const headers: Record<string, string> = { accept: call.accept ?? "application/json" };
      if (call.body !== undefined) headers["content-type"] = "application/json";
      const res = await fetch(`http://localhost${path}`, {
        client: this.#http,
        method,
        headers,
        body: call.body === undefined ? undefined : JSON.stringify(call.body),
        signal: ac.signal,
      });
      if (res.status < 200 || res.status > 299) throw await this.#replyError(res, what);
      return await read(res);
    } catch (err) {
      if (err instanceof OutputFailed) throw err.error;
      if (err instanceof VmfactoryError) throw err;
      const reason = ac.signal.reason;
      const why = err instanceof Error && err.cause ? errorMessage(err.cause) : errorMessage(err);
      const detail = ac.signal.aborted && reason instanceof Abort
        ? reason.detail
        : `the daemon at ${this.socketPath} did not answer (${why})`;
      throw new ApiCallError(0, "unavailable", what, detail, { cause: err });
    } finally {
      timer?.cancel();
      this.#pending.delete(ac);
    }
  }

  /** The error a non-2xx reply stands for, from its `{"error": {code, message}}` body. */
  async #replyError(res: Response, what: string): Promise<VmfactoryError> {
    let code = `http_${res.status}`;
    let message = `the daemon answered HTTP ${res.status}`;
    try {
      const body = JSON.parse(new TextDecoder().decode(await readCapped(res, 64 * 1024, what)));
      const error = isObject(body) && isObject(body.error) ? body.error : undefined;
      if (typeof error?.code === "string" && /^[a-z0-9_]{1,64}$/.test(error.code)) {
        code = error.code;
      }
      if (typeof error?.message === "string" && error.message) message = clean(error.message);
    } catch {
      // no JSON error body: the status says it
    }
    // the daemon's messages read "Cannot <action>: <detail>" already: keep them as they are
    const parts = /^Cannot ([^:\n]+): ([\s\S]+)$/.exec(message);
    const [action, detail] = parts ? [parts[1], parts[2]] : [what, message];
    return USAGE_STATUSES.has(res.status)
      ? new ApiUsageError(res.status, code, action, detail)
      : new ApiCallError(res.status, code, action, detail);
  }

  /** Reads an exec's NDJSON events, writing output to `output`, up to its `exit` (or `error`). */
  async #readExecStream(res: Response, what: string, output: ExecOutput): Promise<ExecOutcome> {
    const type = res.headers.get("content-type") ?? "";
    if (!type.startsWith("application/x-ndjson")) {
      await res.body?.cancel();
      throw this.#malformed(what, `content-type "${type}" is not application/x-ndjson`);
    }
    for await (
      const line of ndjsonLines(res.body!, () => this.#malformed(what, "a line too long"))
    ) {
      const event = parseJson(line, () => this.#malformed(what, "a line is not JSON"));
      if (!isObject(event)) throw this.#malformed(what, "an event is not an object");
      if (event.type === "stdout" || event.type === "stderr") {
        const chunk = base64(event.data);
        if (!chunk) throw this.#malformed(what, `${event.type} data is not base64`);
        try {
          await output[event.type](chunk);
        } catch (error) {
          throw new OutputFailed(error);
        }
      } else if (event.type === "exit") {
        const end = checkedEnd(event);
        if (!end) throw this.#malformed(what, "a malformed exit event");
        return end;
      } else if (event.type === "error") {
        const error = isObject(event.error) ? event.error : {};
        const message = typeof error.message === "string" ? clean(error.message) : "";
        const code = typeof error.code === "string" ? clean(error.code).slice(0, 64) : "error";
        throw new ApiCallError(200, code, what, message || "the daemon reported an error");
      } else {
        throw this.#malformed(what, "an event of an unknown type");
      }
    }
    throw new ApiCallError(200, "incomplete", what, "the daemon ended the output before the exit");
  }

  #malformed(what: string, why = "not the JSON the API defines"): ApiCallError {
    return new ApiCallError(0, "malformed_reply", what, `the daemon's reply is malformed: ${why}`);
  }
}

export { daemonSocketPath };

/** Options of {@link daemonFor}. */
export interface DaemonForOptions {
  /**
   * How long `GET /healthz` may take (ms); default 2000. A stale socket refuses at once; a live
   * daemon on a loaded host may take longer than a fast answer, and is still the one to use.
   */
  healthTimeoutMs?: number;
  /** Where a socket that is not trusted is reported (default: nowhere). */
  warn?: (line: string) => void;
  /** The environment `VMFACTORY_SOCKET` is read from (default: this process's). */
  env?: Record<string, string | undefined>;
}

/**
 * A client of the daemon for `settings` when one answers: its socket ({@link daemonSocketPath})
 * exists, is a socket owned by this user or root in a folder no one else may write to, and
 * `GET /healthz` answers `{"ok": true}` within 2 s. Otherwise undefined (no daemon, a stale
 * socket, a daemon draining or not ready), and the caller works without it. With no socket this
 * costs one `lstat`. The caller closes the client.
 */
export async function daemonFor(
  settings: Pick<Settings, "stateDir">,
  options: DaemonForOptions = {},
): Promise<ApiClient | undefined> {
  const socketPath = daemonSocketPath(settings, options.env);
  let info: Deno.FileInfo;
  try {
    info = Deno.lstatSync(socketPath);
  } catch {
    return undefined; // no daemon: the common case, one system call
  }
  const distrust = untrusted(socketPath, info);
  if (distrust) {
    options.warn?.(`vmfactory: not using the daemon socket ${socketPath}: ${distrust}`);
    return undefined;
  }
  const client = new ApiClient(socketPath);
  if (await client.healthy(options.healthTimeoutMs ?? 2000)) return client;
  client.close();
  return undefined;
}

/** Why the socket at `path` must not be trusted to be our daemon, or undefined. */
function untrusted(path: string, info: Deno.FileInfo): string | undefined {
  const trusted = (uid: number | null) => uid === 0 || uid === Deno.uid();
  if (!info.isSocket) return "it is not a socket";
  if (!trusted(info.uid)) return `it belongs to uid ${info.uid}, neither this user nor root`;
  const parent = path.slice(0, path.lastIndexOf("/")) || "/";
  let dir: Deno.FileInfo;
  try {
    dir = Deno.lstatSync(parent);
  } catch {
    return `its folder ${parent} cannot be read`;
  }
  const mode = dir.mode ?? 0;
  // another user who may write to the folder could swap the socket (unless the folder is sticky)
  if (!dir.isDirectory || !trusted(dir.uid) || (mode & 0o022 && !(mode & 0o1000))) {
    return `its folder ${parent} is not this user's or root's alone`;
  }
  return undefined;
}

/** `value` as a VM record the CLI may print and use, or a malformed-reply error. */
function checkedRecord(value: unknown, what: string, socketPath: string): VmRecord {
  const bad = () =>
    new ApiCallError(0, "malformed_reply", what, `the daemon at ${socketPath} sent a bad record`);
  if (!isObject(value) || typeof value.id !== "string" || typeof value.dir !== "string") {
    throw bad();
  }
  const { id, dir } = value;
  // the record names its own folder; its sockets and files must be that folder's
  const ok = /^[A-Za-z0-9_-]{1,64}$/.test(id) && dir.startsWith("/") && dir.endsWith(`/${id}`);
  const record = ok ? parseRecord(value, vmPaths(dir, id)) : undefined;
  if (!record || !timingsOk(record.timings) || hasControl(value)) throw bad();
  return record;
}

/** `value` as a listed VM (a record and its state), or a malformed-reply error. */
function checkedListed(value: unknown, what: string, socketPath: string): ListedVm {
  const record = checkedRecord(value, what, socketPath) as ListedVm;
  if (record.state !== "running" && record.state !== "dead") {
    throw new ApiCallError(0, "malformed_reply", what, "the daemon sent a VM without its state");
  }
  return record;
}

/** True for timings the CLI can print: finite numbers, at most 64 short-named phases. */
function timingsOk(timings: unknown): boolean {
  if (!isObject(timings) || !Number.isFinite(timings.totalMs)) return false;
  if (!isObject(timings.phases)) return false;
  const phases = Object.entries(timings.phases);
  return phases.length <= 64 && phases.every(([k, v]) => k.length <= 64 && Number.isFinite(v));
}

/**
 * True when a string anywhere in `value` (keys too) holds a control character, or when it nests
 * deeper than a record does (no string goes unchecked).
 */
function hasControl(value: unknown, depth = 0): boolean {
  // deno-lint-ignore no-control-regex
  if (typeof value === "string") return /[\x00-\x1f\x7f-\x9f]/.test(value);
  if (typeof value !== "object" || value === null) return false;
  if (depth > 4) return true;
  return Object.entries(value).some(([k, v]) => hasControl(k) || hasControl(v, depth + 1));
}

/** An `exit` event as an {@link ExecOutcome}, or undefined when malformed. */
function checkedEnd(event: Record<string, unknown>): ExecOutcome | undefined {
  const { exitCode, signal, timedOut, truncated } = event;
  const byte = (v: unknown) => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 255;
  if (!byte(exitCode) || typeof timedOut !== "boolean" || typeof truncated !== "boolean") {
    return undefined;
  }
  if (signal !== undefined && !(byte(signal) && (signal as number) > 0)) return undefined;
  const end: ExecOutcome = { exitCode: exitCode as number, timedOut, truncated };
  if (signal !== undefined) end.signal = signal as number;
  return end;
}

/**
 * The lines of an NDJSON body (without their `\n`; empty lines skipped); throws `tooLong()`
 * for a line longer than {@link MAX_LINE_BYTES}. A last line without `\n` counts too.
 */
async function* ndjsonLines(
  body: ReadableStream<Uint8Array>,
  tooLong: () => Error,
): AsyncGenerator<Uint8Array> {
  let parts: Uint8Array[] = []; // the line so far
  let size = 0;
  const take = (last: Uint8Array) => {
    const line = join([...parts, last], size + last.length);
    parts = [];
    size = 0;
    return line;
  };
  for await (let chunk of body) {
    for (let nl = chunk.indexOf(10); nl >= 0; nl = chunk.indexOf(10)) {
      if (size + nl > MAX_LINE_BYTES) throw tooLong();
      const line = take(chunk.subarray(0, nl));
      chunk = chunk.subarray(nl + 1);
      if (line.length) yield line;
    }
    size += chunk.length;
    if (size > MAX_LINE_BYTES) throw tooLong();
    if (chunk.length) parts.push(chunk);
  }
  if (size) yield take(new Uint8Array(0));
}

/** The body, at most `max` bytes (more fails the call: the reply is not what the API sends). */
async function readCapped(res: Response, max: number, what: string): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let size = 0;
  for await (const part of res.body ?? []) {
    size += part.length;
    if (size > max) {
      throw new ApiCallError(0, "reply_too_large", what, `the daemon's reply is over ${max} bytes`);
    }
    parts.push(part);
  }
  return join(parts, size);
}

/** `parts` in one array of `size` bytes. */
function join(parts: Uint8Array[], size: number): Uint8Array {
  const out = new Uint8Array(size);
  parts.reduce((at, part) => (out.set(part, at), at + part.length), 0);
  return out;
}

function parseJson(bytes: Uint8Array, bad: () => Error): unknown {
  try {
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    throw bad();
  }
}

/** Base64 text decoded, or undefined when it is not base64. */
function base64(value: unknown): Uint8Array | undefined {
  if (typeof value !== "string") return undefined;
  try {
    return Uint8Array.from(atob(value), (c) => c.charCodeAt(0));
  } catch {
    return undefined;
  }
}

/** `text` bounded, with control characters other than newline and tab shown as `?`. */
function clean(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.slice(0, MAX_MESSAGE_CHARS).replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/g, "?");
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
