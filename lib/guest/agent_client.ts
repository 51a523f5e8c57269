/**
 * Host side of the guest agent: talks to the agent through QEMU's chardev Unix socket (the
 * `org.vmfactory.agent` virtio-serial port, `server=on,wait=off`). Calls are multiplexed by
 * numbered request id. QEMU serves one connection per socket at a time: a second client waits
 * until the first closes.
 *
 * The guest is not trusted, so everything it sends is bounded: a frame's payload (1 MiB), the
 * output one exec gathers ({@link DEFAULT_OUTPUT_LIMIT} unless asked otherwise), the calls in
 * flight, and the time of every call (a deadline of its own, or, for a command without a
 * timeout, pings that must be answered). Whatever it sends that is malformed fails the call it
 * answers with an {@link AgentError}; answers to ids nobody waits for are dropped.
 * @module
 */
import { errorMessage } from "../errors.ts";
import { sleep } from "../poll_until.ts";
import { type CheapTimer, cheapTimer, withTimeout } from "../cheap_timer.ts";
import { AgentError, type AgentErrorCode } from "./agent_error.ts";
import { type Decoded, encodeRequest, type Frame, FrameDecoder, Op, Reply } from "./agent_frame.ts";
import {
  type AgentInfo,
  decodeExit,
  decodeHotplugged,
  decodeInfo,
  decodePersonalized,
  encodeExec,
  encodePersonalize,
  type ExecCommand,
  type ExecExit,
  PayloadError,
  type Personalization,
  type Personalized,
} from "./agent_payload.ts";

export type { AgentInfo, ExecCommand, Personalization, Personalized } from "./agent_payload.ts";

/** Output an exec keeps by default, stdout and stderr together (64 MiB). */
export const DEFAULT_OUTPUT_LIMIT = 64 << 20;
/** Default of {@link ConnectOptions.timeoutMs}. */
const DEFAULT_TIMEOUT_MS = 10_000;
/** Default of {@link ConnectOptions.maxInFlight}. */
const DEFAULT_MAX_IN_FLIGHT = 1024;
/** Longest error text of the agent kept in a message. */
const MAX_REMOTE_TEXT = 300;

/** Options of {@link AgentClient.connect}. */
export interface ConnectOptions {
  /**
   * Bounds the connect; then the deadline of every call that gives none, the grace an exec gets
   * beyond its own timeout, and how long the agent may stay silent during a command without a
   * timeout (default 10 000 ms).
   */
  timeoutMs?: number;
  /** Calls that may wait for an answer at once; more fail with code "busy" (default 1024). */
  maxInFlight?: number;
}

/** Per-call option. */
export interface CallOptions {
  /** Give up after this long (default: the connection's `timeoutMs`). */
  timeoutMs?: number;
}

/** Options of {@link AgentClient.exec}. */
export interface ExecOptions {
  /** Bytes (or UTF-8 text) fed to the command's stdin; it gets /dev/null otherwise. */
  stdin?: Uint8Array | string;
  /**
   * Kill the command's process group after this long (default 60 000 ms). 0 = never: the call
   * then has no deadline, and the client pings the agent to tell a long command from a dead guest.
   */
  timeoutMs?: number;
  /**
   * Most output bytes, stdout and stderr together, the command may send (default
   * {@link DEFAULT_OUTPUT_LIMIT}, at most 2^32 - 1). The agent drops the rest, and so does the
   * client; the result then says `truncated`.
   */
  outputLimit?: number;
  /**
   * Gather the output into the result's `stdout` and `stderr` (default true). With false only the
   * callbacks see it, and memory stays flat whatever the limit.
   */
  collect?: boolean;
  /** Called with each stdout chunk as it arrives. */
  onStdout?: (chunk: Uint8Array) => void;
  /** Called with each stderr chunk as it arrives. */
  onStderr?: (chunk: Uint8Array) => void;
}

/** What {@link AgentClient.exec} returns. */
export interface ExecResult extends ExecExit {
  /** What the command wrote to stdout (empty with `collect: false`). */
  stdout: Uint8Array;
  /** What it wrote to stderr (empty with `collect: false`). */
  stderr: Uint8Array;
}

interface Pending {
  action: string;
  /** The answer type that ends the call (result, or exit for an exec). */
  ends: number;
  resolve: (payload: Uint8Array) => void;
  reject: (error: AgentError) => void;
  /** Output of an exec. */
  onChunk?: (frame: Frame) => void;
  timer?: CheapTimer;
}

interface CallSpec<T> {
  payload?: Uint8Array;
  /** Deadline (default: the connection's); an exec's 0 = none of its own, pings watch the agent. */
  timeoutMs?: number;
  decode: (payload: Uint8Array) => T;
  onChunk?: (frame: Frame) => void;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * A connection to one VM's guest agent. Close it when done: the agent then sleeps again.
 * @example
 * ```ts
 * const agent = await AgentClient.connect(vm.agentSocket);
 * try {
 *   const res = await agent.exec(["uname", "-r"]);
 *   console.log(new TextDecoder().decode(res.stdout), res.exitCode);
 * } finally {
 *   agent.close();
 * }
 * ```
 */
export class AgentClient {
  /** The chardev socket this client is connected to. */
  readonly socketPath: string;
  #conn: Deno.UnixConn;
  #timeoutMs: number;
  #maxInFlight: number;
  #decoder = new FrameDecoder();
  #pending = new Map<number, Pending>();
  #nextId = crypto.getRandomValues(new Uint32Array(1))[0];
  #outbox: { id: number; bytes: Uint8Array }[] = [];
  #writing = false;
  #closed = false;
  /** Calls without a deadline of their own (commands without timeout), watched by pings. */
  #open = 0;
  #watch?: CheapTimer;
  #watchDue = 0;
  #pingedAt?: number;
  #heardAt = 0;

  private constructor(conn: Deno.UnixConn, socketPath: string, opts: Required<ConnectOptions>) {
    this.#conn = conn;
    this.socketPath = socketPath;
    this.#timeoutMs = opts.timeoutMs;
    this.#maxInFlight = opts.maxInFlight;
    this.#readLoop();
  }

  /**
   * Connects to the agent socket of a running VM. Does not check that the agent answers (see
   * {@link waitForAgent}).
   */
  static async connect(socketPath: string, opts: ConnectOptions = {}): Promise<AgentClient> {
    const timeoutMs = positive(opts.timeoutMs) ?? DEFAULT_TIMEOUT_MS;
    const maxInFlight = positive(opts.maxInFlight) ?? DEFAULT_MAX_IN_FLIGHT;
    const connecting = Deno.connect({ transport: "unix", path: socketPath });
    try {
      const conn = await withTimeout(connecting, timeoutMs, () => new Deno.errors.TimedOut());
      return new AgentClient(conn, socketPath, { timeoutMs, maxInFlight });
    } catch (error) {
      connecting.then((c) => c.close(), () => {});
      throw new AgentError(
        "connect to the guest agent",
        `${socketPath}: ${errorMessage(error)}`,
        "connect",
        { cause: error },
      );
    }
  }

  /** True until {@link close} or a connection failure. */
  get connected(): boolean {
    return !this.#closed;
  }

  /** Round trip with an empty frame; resolves to the round-trip time in ms. */
  async ping(opts: CallOptions = {}): Promise<number> {
    const start = performance.now();
    await this.#call(Op.ping, "ping the guest agent", { ...opts, decode: () => undefined });
    return performance.now() - start;
  }

  /** Uptime, memory, boot id, hostname, kernel release, CPUs, vmgenid and clock of the guest. */
  info(opts: CallOptions = {}): Promise<AgentInfo> {
    return this.#call(Op.info, "read guest info", { ...opts, decode: decodeInfo });
  }

  /**
   * Runs a command in the guest (in its own session and process group) and collects its output,
   * streaming chunks to `onStdout` / `onStderr`. A non-zero exit is a result, not an error. The
   * call's deadline is the command's timeout plus the connection's `timeoutMs`.
   */
  async exec(command: ExecCommand, opts: ExecOptions = {}): Promise<ExecResult> {
    const action = "run a command in the guest";
    const stdin = typeof opts.stdin === "string" ? encoder.encode(opts.stdin) : opts.stdin;
    const timeoutMs = opts.timeoutMs ?? 60_000;
    const limit = opts.outputLimit ?? DEFAULT_OUTPUT_LIMIT;
    const payload = encodeOr(
      action,
      () => encodeExec(command, { stdin, timeoutMs, outputLimit: limit }),
    );
    const stdout: Uint8Array[] = [], stderr: Uint8Array[] = [];
    let received = 0, truncated = false;
    const exit = await this.#call(Op.exec, action, {
      payload,
      timeoutMs: timeoutMs > 0 ? timeoutMs + this.#timeoutMs : 0,
      decode: decodeExit,
      onChunk: (frame) => {
        let chunk = frame.payload;
        if (received + chunk.length > limit) {
          chunk = chunk.subarray(0, limit - received); // the guest sent more than it may
          truncated = true;
        }
        received += chunk.length;
        if (chunk.length === 0) return;
        const out = frame.type === Reply.stdout;
        if (opts.collect ?? true) (out ? stdout : stderr).push(chunk);
        (out ? opts.onStdout : opts.onStderr)?.(chunk);
      },
    });
    const result = { ...exit, stdout: concat(stdout), stderr: concat(stderr) };
    return truncated ? { ...result, truncated } : result;
  }

  /**
   * Makes the guest its own in one round trip: mixes `seed` into its RNG and reseeds the CRNG
   * from it, sets its clock, hostname and (when given) boot_id, in that order. Resolves only
   * once the guest confirmed each: the reseed, and the hostname and boot_id read back; fails
   * with an {@link AgentError} otherwise (code "remote" when a step failed in the guest).
   */
  async personalizeGuest(p: Personalization, opts: CallOptions = {}): Promise<Personalized> {
    const action = "personalize the guest";
    const payload = encodeOr(action, () => encodePersonalize(p));
    const done = await this.#call(Op.personalize, action, {
      ...opts,
      payload,
      decode: decodePersonalized,
    });
    const wrong = !done.reseeded
      ? "does not confirm that its RNG was reseeded"
      : done.hostname !== p.hostname
      ? `reports hostname ${JSON.stringify(done.hostname)}, not ${JSON.stringify(p.hostname)}`
      : p.bootId !== undefined && done.bootId !== p.bootId
      ? `reports boot_id ${JSON.stringify(done.bootId)}, not ${p.bootId}`
      : undefined;
    if (wrong) throw new AgentError(action, `the guest ${wrong}`, "protocol");
    return done;
  }

  /** Brings hot-added CPUs and memory blocks online; returns how many it onlined. */
  onlineHotplugged(opts: CallOptions = {}): Promise<{ cpus: number; memoryBlocks: number }> {
    return this.#call(Op.onlineHotplugged, "online hot-added CPUs and memory", {
      ...opts,
      decode: decodeHotplugged,
    });
  }

  /** Closes the connection; pending calls fail with code "closed". Safe to call twice. */
  close(): void {
    this.#fail("the connection was closed", "closed");
  }

  #call<T>(op: number, action: string, spec: CallSpec<T>): Promise<T> {
    const fail = (detail: string, code: AgentErrorCode) =>
      Promise.reject(new AgentError(action, detail, code));
    if (this.#closed) return fail("the connection is closed", "closed");
    if (this.#pending.size >= this.#maxInFlight) {
      return fail(`${this.#pending.size} calls already wait for the agent`, "busy");
    }
    const id = this.#newId();
    let bytes: Uint8Array;
    try {
      bytes = encodeRequest(op, id, spec.payload);
    } catch {
      return fail(`request of ${spec.payload?.length} bytes exceeds 1 MiB`, "request");
    }
    // only an exec without timeout goes without a deadline of its own
    const open = spec.onChunk !== undefined && spec.timeoutMs === 0;
    const timeoutMs = open ? 0 : positive(spec.timeoutMs) ?? this.#timeoutMs;
    return new Promise<T>((resolve, reject) => {
      const pending: Pending = {
        action,
        ends: spec.onChunk ? Reply.exit : Reply.result,
        resolve: (payload) => {
          try {
            resolve(spec.decode(payload));
          } catch (error) {
            const detail = error instanceof PayloadError ? error.detail : errorMessage(error);
            reject(
              new AgentError(action, `malformed answer: ${detail}`, "protocol", { cause: error }),
            );
          }
        },
        reject,
        onChunk: spec.onChunk,
      };
      if (timeoutMs > 0) {
        pending.timer = cheapTimer(timeoutMs, () => {
          this.#end(id, pending);
          this.#outbox = this.#outbox.filter((entry) => entry.id !== id);
          reject(new AgentError(action, `no answer within ${timeoutMs} ms`, "timeout"));
        });
      } else {
        this.#open++;
        this.#watchAgent();
      }
      this.#pending.set(id, pending);
      this.#outbox.push({ id, bytes });
      if (!this.#writing) this.#drain();
    });
  }

  /** The next request id no pending call uses. */
  #newId(): number {
    do this.#nextId = (this.#nextId + 1) >>> 0; while (this.#pending.has(this.#nextId));
    return this.#nextId;
  }

  /** Writes queued requests in order; a call that timed out before its turn is not sent. */
  async #drain(): Promise<void> {
    this.#writing = true;
    try {
      for (let entry; (entry = this.#outbox.shift()) && !this.#closed;) {
        if (!this.#pending.has(entry.id)) continue;
        for (let off = 0; off < entry.bytes.length && !this.#closed;) {
          off += await this.#conn.write(entry.bytes.subarray(off));
        }
      }
    } catch (error) {
      this.#fail(`write failed: ${errorMessage(error)}`, "closed");
    } finally {
      this.#writing = false;
    }
  }

  async #readLoop(): Promise<void> {
    const buf = new Uint8Array(65536);
    let reason = "the agent closed the connection";
    try {
      for (let n; (n = await this.#conn.read(buf)) !== null;) {
        this.#heardAt = performance.now();
        for (const item of this.#decoder.push(buf.subarray(0, n))) this.#dispatch(item);
      }
    } catch (error) {
      reason = `read failed: ${errorMessage(error)}`;
    }
    this.#fail(reason, "closed");
  }

  /** Hands one decoded item to the call it answers; never throws. */
  #dispatch(item: Decoded): void {
    const id = item.kind === "frame" ? item.frame.id : item.id;
    const pending = this.#pending.get(id);
    if (!pending) return; // a late answer to a call that timed out, or to a previous client
    const { action } = pending;
    const reject = (detail: string, code: AgentErrorCode, cause?: unknown) => {
      this.#end(id, pending);
      pending.reject(new AgentError(action, detail, code, { cause }));
    };
    if (item.kind === "oversize") {
      return reject(`answer of ${item.length} bytes exceeds 1 MiB`, "protocol");
    }
    const { type, payload } = item.frame;
    if (pending.onChunk && (type === Reply.stdout || type === Reply.stderr)) {
      try {
        pending.onChunk(item.frame);
      } catch (error) {
        reject(`an output callback failed: ${errorMessage(error)}`, "request", error);
      }
    } else if (type === Reply.error) {
      reject(`the agent answered: ${printable(payload)}`, "remote");
    } else if (type === pending.ends) {
      this.#end(id, pending);
      pending.resolve(payload);
    } else {
      reject(`unexpected answer type 0x${type.toString(16)}`, "protocol");
    }
  }

  /** Forgets a call (answered, failed or timed out). */
  #end(id: number, pending: Pending): void {
    if (this.#pending.get(id) !== pending) return;
    this.#pending.delete(id);
    if (pending.timer) pending.timer.cancel();
    else this.#open--;
  }

  /**
   * While a call without deadline waits, pings the agent every `timeoutMs`; when nothing at all
   * arrived since the previous ping, the guest stopped answering and every call fails. A check
   * that runs late (this process was busy) only pings again.
   */
  #watchAgent(): void {
    if (this.#watch || this.#closed) return;
    this.#watchDue = performance.now() + this.#timeoutMs;
    this.#watch = cheapTimer(this.#timeoutMs, () => {
      this.#watch = undefined;
      if (this.#open === 0 || this.#closed) return void (this.#pingedAt = undefined);
      const now = performance.now(), late = now - this.#watchDue > this.#timeoutMs / 2;
      if (!late && this.#pingedAt !== undefined && this.#heardAt < this.#pingedAt) {
        return this.#fail(
          `the agent sent nothing for ${this.#timeoutMs} ms, not even a ping answer`,
          "timeout",
        );
      }
      this.#pingedAt = now;
      this.#call(Op.ping, "ping the guest agent", {
        timeoutMs: 2 * this.#timeoutMs,
        decode: () => undefined,
      }).catch(() => {});
      this.#watchAgent();
    });
  }

  #fail(detail: string, code: AgentErrorCode): void {
    if (!this.#closed) {
      this.#closed = true;
      this.#outbox = [];
      this.#watch?.cancel();
      try {
        this.#conn.close();
      } catch {
        // already closed by the peer
      }
    }
    for (const [id, pending] of this.#pending) {
      this.#end(id, pending);
      pending.reject(new AgentError(pending.action, detail, code));
    }
  }
}

/**
 * Connects to a VM's agent socket and pings until the agent answers or `deadline` (a
 * `Date.now()` time) passes; returns the connected client. Meant for right after a boot or a
 * clone: the socket may not exist yet (retried every few ms), and a ping sent before the guest
 * opened its port waits in QEMU and is answered once the agent runs (re-sent with back-off in
 * case one is lost; late answers are ignored). `giveUp`, asked between attempts, ends the wait at
 * once with the reason it returns (e.g. the VM's QEMU exited): an AgentError with code "closed".
 */
export async function waitForAgent(
  socketPath: string,
  opts: { deadline: number; giveUp?: () => string | undefined },
): Promise<AgentClient> {
  let delay = 2;
  let lastError: unknown;
  const stopIf = () => {
    const why = opts.giveUp?.();
    if (why) throw new AgentError("reach the guest agent", why, "closed", { cause: lastError });
  };
  while (Date.now() < opts.deadline) {
    stopIf();
    let client: AgentClient;
    try {
      client = await AgentClient.connect(socketPath, { timeoutMs: opts.deadline - Date.now() });
    } catch (error) {
      lastError = error;
      const cause = error instanceof AgentError ? error.cause : error;
      if (
        !(cause instanceof Deno.errors.NotFound || cause instanceof Deno.errors.ConnectionRefused)
      ) {
        throw error;
      }
      await sleep(Math.min(delay, opts.deadline - Date.now()));
      delay = Math.min(delay * 2, 50);
      continue;
    }
    for (let interval = 25; client.connected && Date.now() < opts.deadline;) {
      try {
        stopIf();
      } catch (error) {
        client.close();
        throw error;
      }
      try {
        await client.ping({
          timeoutMs: Math.max(1, Math.min(interval, opts.deadline - Date.now())),
        });
        return client;
      } catch (error) {
        lastError = error;
        if (!(error instanceof AgentError && error.code === "timeout")) break;
        interval = Math.min(interval * 2, 500);
      }
    }
    client.close();
  }
  throw new AgentError(
    "reach the guest agent",
    `no answer on ${socketPath} before the deadline${
      lastError === undefined ? "" : ` (last: ${errorMessage(lastError)})`
    }`,
    "timeout",
    { cause: lastError },
  );
}

/** Encodes a request, turning a bad argument into an AgentError with code "request". */
function encodeOr(action: string, encode: () => Uint8Array): Uint8Array {
  try {
    return encode();
  } catch (error) {
    const detail = error instanceof PayloadError ? error.detail : errorMessage(error);
    throw new AgentError(action, detail, "request", { cause: error });
  }
}

/** `n` when it is a positive finite number. */
function positive(n: number | undefined): number | undefined {
  return n !== undefined && n > 0 && Number.isFinite(n) ? n : undefined;
}

/** The agent's text, cut short, with control characters shown as "?". */
function printable(bytes: Uint8Array): string {
  const text = decoder.decode(bytes.subarray(0, MAX_REMOTE_TEXT * 4));
  // deno-lint-ignore no-control-regex
  const clean = text.replace(/[\x00-\x1f\x7f-\x9f]/g, "?");
  return clean.length > MAX_REMOTE_TEXT ? `${clean.slice(0, MAX_REMOTE_TEXT)}...` : clean;
}

function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}
