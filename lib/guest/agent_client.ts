/**
 * Host side of the guest agent: talks to the agent through QEMU's chardev Unix socket (the
 * `org.vmfactory.agent` virtio-serial port, `server=on,wait=off`). Calls are multiplexed by
 * numbered request id. QEMU serves one connection per socket at a time: a second client waits
 * until the first closes.
 *
 * The guest is not trusted, so everything it sends is bounded: a frame's payload (1 MiB), the
 * output one exec gathers ({@link DEFAULT_OUTPUT_LIMIT} unless asked otherwise), the output one
 * exec may have sent and its callbacks not yet consumed ({@link OUTPUT_WINDOW}: the agent gets
 * credit as they finish), the calls in flight, and the time of every call (a deadline of its own,
 * or, for a command without a timeout, pings that must be answered). Whatever it sends that is
 * malformed fails the call it answers with an {@link AgentError}; answers to ids nobody waits for
 * are dropped.
 * @module
 */
import { errorMessage } from "../errors.ts";
import { sleep } from "../poll_until.ts";
import { type CheapTimer, cheapTimer, withTimeout } from "../cheap_timer.ts";
import { AgentError, type AgentErrorCode, startFailureExitCode } from "./agent_error.ts";
import {
  type Decoded,
  encodeRequest,
  FLAG_NEW_SESSION,
  type Frame,
  FrameDecoder,
  MAX_PAYLOAD,
  Op,
  Reply,
} from "./agent_frame.ts";
import {
  type AgentInfo,
  decodeConfiguredNet,
  decodeExit,
  decodeHotplugged,
  decodeInfo,
  decodeMountedImage,
  decodePersonalized,
  decodeStdinAck,
  encodeConfigureNet,
  encodeCredit,
  encodeExec,
  encodeMountImage,
  encodePersonalize,
  encodeStdin,
  encodeUnmountImage,
  type ExecCommand,
  type ExecExit,
  type ExecRequest,
  FRAME_COST,
  type NetConfig,
  PayloadError,
  type Personalization,
  type Personalized,
  STDIN_WINDOW,
  type StdinAck,
} from "./agent_payload.ts";

export type {
  AgentInfo,
  ExecCommand,
  NetConfig,
  Personalization,
  Personalized,
} from "./agent_payload.ts";
export { CD_SERIAL } from "./agent_payload.ts";

/** Output an exec keeps by default, stdout and stderr together (64 MiB). */
export const DEFAULT_OUTPUT_LIMIT = 64 << 20;
/**
 * Output credit of one exec (1 MiB): what the agent may send before the callbacks consumed it
 * (each frame counts its payload plus {@link FRAME_COST}); the client returns credit as they do.
 */
export const OUTPUT_WINDOW = 1 << 20;
/** Default of {@link DeviceWaitOptions.waitMs}. */
export const DEFAULT_DEVICE_WAIT_MS = 5_000;
/** Default of {@link MountImageOptions.writableBytes} (64 MiB). */
export const DEFAULT_WRITABLE_BYTES = 64 << 20;
/** Largest stdin chunk in one frame. */
const STDIN_CHUNK = 64 * 1024;
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

/** What {@link ExecOptions.stdin} may be. */
export type ExecStdin =
  | Uint8Array
  | string
  | ReadableStream<Uint8Array>
  | AsyncIterable<Uint8Array>;

/** Options of {@link AgentClient.exec}; `env`, `cwd`, `user` and `root` go to the guest as given. */
export interface ExecOptions extends Pick<ExecRequest, "env" | "cwd" | "user" | "root"> {
  /**
   * The command's stdin (it gets /dev/null otherwise): bytes or UTF-8 text (sent with the
   * request up to {@link STDIN_WINDOW} bytes, streamed beyond), or a stream of chunks, sent as
   * the agent writes them to the command (at most {@link STDIN_WINDOW} bytes ahead); its end is
   * the command's EOF. When the command closes its stdin or exits first, the stream is cancelled.
   * A stream that fails fails the exec (code "request") and kills the command.
   */
  stdin?: ExecStdin;
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
  /**
   * Called with each stdout chunk, in order with the stderr ones. When it returns a promise, the
   * next chunk waits for it, and the command is stalled (its pipes are no longer read) once
   * {@link OUTPUT_WINDOW} is not yet consumed. A callback that throws or rejects fails the exec
   * (code "request") and kills the command.
   */
  onStdout?: (chunk: Uint8Array) => unknown;
  /** Called with each stderr chunk, like `onStdout`. */
  onStderr?: (chunk: Uint8Array) => unknown;
}

/** How long the guest waits for a hot-plugged device. */
export interface DeviceWaitOptions extends CallOptions {
  /**
   * Wait this long for the device to appear (default {@link DEFAULT_DEVICE_WAIT_MS}, at most
   * 600 000); the call's own deadline is this plus the connection's `timeoutMs` unless
   * `timeoutMs` says otherwise.
   */
  waitMs?: number;
}

/** Options of {@link AgentClient.mountImage}. */
export interface MountImageOptions extends DeviceWaitOptions {
  /**
   * Size cap of the image's writable layer, a tmpfs (default {@link DEFAULT_WRITABLE_BYTES}, 1 MiB
   * to 1 TiB); the image's /tmp gets the same cap.
   */
  writableBytes?: number;
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
  /** An exec's other frames: output and stdin acknowledgements. Throws to fail the call. */
  onFrame?: (frame: Frame) => void;
  timer?: CheapTimer;
}

interface CallSpec<T> {
  payload?: Uint8Array;
  /** Deadline (default: the connection's); an exec's 0 = none of its own, pings watch the agent. */
  timeoutMs?: number;
  decode: (payload: Uint8Array) => T;
  onFrame?: (frame: Frame) => void;
}

/** A request waiting to be written; `always`: even when its call ended (a cancel). */
interface Outgoing {
  op: number;
  id: number;
  payload?: Uint8Array;
  always?: boolean;
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
  #outbox: Outgoing[] = [];
  #writing = false;
  /** No request was written yet: the next one says it starts a new session. */
  #fresh = true;
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
   * streaming chunks to `onStdout` / `onStderr`; optionally in another root, as another user,
   * with its own environment and working directory, with stdin streamed. A non-zero exit is a
   * result, not an error; a command that cannot start (no such program, user or cwd) fails with
   * code "remote" saying why. The call's deadline is the command's timeout plus the
   * connection's `timeoutMs`; when the call fails for any reason the command is killed.
   */
  async exec(command: ExecCommand, opts: ExecOptions = {}): Promise<ExecResult> {
    const action = "run a command in the guest";
    const { inline, source } = stdinOf(opts.stdin, action);
    const timeoutMs = opts.timeoutMs ?? 60_000;
    const limit = opts.outputLimit ?? DEFAULT_OUTPUT_LIMIT;
    const payload = encodeOr(action, () =>
      encodeExec(command, {
        stdin: inline,
        stdinStream: source !== undefined,
        env: opts.env,
        cwd: opts.cwd,
        user: opts.user,
        root: opts.root,
        timeoutMs,
        outputLimit: limit,
        outputWindow: OUTPUT_WINDOW,
      }));
    let id = -1;
    const streams = new ExecStreams(action, opts, limit, {
      send: (op, bytes) => this.#queue({ op, id, payload: bytes }),
      fail: (error) => this.#failCall(id, error),
    });
    let ended = false; // the agent said the command ended (its exit, or an error)
    const call = this.#call(Op.exec, action, {
      payload,
      timeoutMs: timeoutMs > 0 ? timeoutMs + this.#timeoutMs : 0,
      decode: (exit) => (ended = true, decodeExit(exit)),
      onFrame: (frame) => streams.frame(frame),
    }, (callId) => id = callId);
    if (source && id >= 0) streams.pump(source);
    let exit: ExecExit;
    try {
      exit = await call;
      streams.stop();
      await streams.consumed();
    } catch (error) {
      streams.stop({ failed: true });
      ended ||= error instanceof AgentError && error.code === "remote";
      if (id >= 0 && !ended) this.#queue({ op: Op.cancel, id, always: true });
      throw error;
    }
    const result = { ...exit, stdout: concat(streams.stdout), stderr: concat(streams.stderr) };
    return streams.truncated ? { ...result, truncated: true } : result;
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

  /**
   * Mounts the erofs image on the hot-plugged virtio disk whose serial is `serial` (1 to 20 of
   * A-Z a-z 0-9 _ -), or with `serial` {@link CD_SERIAL} the medium in the VM's CD drive (put
   * there with `insertImage`): the guest waits for the disk or medium (`waitMs`), mounts it read-only at
   * `/run/vmf/<name>/lower`, a tmpfs of `writableBytes` at `rw` and the overlay of the two at
   * `root`, with proc, sysfs, devtmpfs and a tmpfs /tmp in it, and /etc/resolv.conf and /etc/hosts
   * regular files there (writable: a symbolic link is replaced, a missing file created). `name`:
   * 1 to 64 of A-Z a-z 0-9 _ -, not in use. Resolves to the root, for {@link ExecOptions.root}.
   * May be called once the agent answers; the disk may be hot-plugged (the medium inserted)
   * before or after.
   */
  async mountImage(serial: string, name: string, opts: MountImageOptions = {}): Promise<string> {
    const action = "mount an image in the guest";
    const waitMs = opts.waitMs ?? DEFAULT_DEVICE_WAIT_MS;
    const payload = encodeOr(action, () =>
      encodeMountImage({
        serial,
        name,
        writableBytes: opts.writableBytes ?? DEFAULT_WRITABLE_BYTES,
        waitMs,
      }));
    const mounted = await this.#call(Op.mountImage, action, {
      payload,
      timeoutMs: opts.timeoutMs ?? waitMs + this.#timeoutMs,
      decode: decodeMountedImage,
    });
    if (mounted.root !== `/run/vmf/${name}/root`) {
      throw new AgentError(action, `the guest mounted ${mounted.root}, not ${name}`, "protocol");
    }
    return mounted.root;
  }

  /**
   * Unmounts what {@link mountImage} mounted as `name` (lazily: commands still running in it
   * keep their files) and removes its folders. Fails with code "remote" when nothing is mounted
   * as `name`. The disk may be unplugged afterwards.
   */
  async unmountImage(name: string, opts: CallOptions = {}): Promise<void> {
    const action = "unmount an image in the guest";
    const payload = encodeOr(action, () => encodeUnmountImage(name));
    await this.#call(Op.unmountImage, action, { ...opts, payload, decode: () => undefined });
  }

  /**
   * Configures the NIC whose MAC is `net.mac` — else the VM's built-in NIC (still
   * `BUILTIN_NIC_MAC` of `qemu_command.ts`), which gets that MAC: the guest waits for one
   * (`waitMs`; a hot-plugged NIC takes a moment to appear), brings lo and it up with the address, replaces the default route (when a gateway is given)
   * and writes /etc/resolv.conf (when DNS servers are given) in the guest and in `net.image`'s
   * root. Resolves to the interface's name (e.g. "eth0").
   */
  async configureNet(net: NetConfig, opts: DeviceWaitOptions = {}): Promise<string> {
    const action = "configure a network interface in the guest";
    const waitMs = opts.waitMs ?? DEFAULT_DEVICE_WAIT_MS;
    const payload = encodeOr(action, () => encodeConfigureNet(net, waitMs));
    return await this.#call(Op.configureNet, action, {
      payload,
      timeoutMs: opts.timeoutMs ?? waitMs + this.#timeoutMs,
      decode: decodeConfiguredNet,
    });
  }

  /** Closes the connection; pending calls fail with code "closed". Safe to call twice. */
  close(): void {
    this.#fail("the connection was closed", "closed");
  }

  /** Sends a call; `started` learns its id once it is sent. */
  #call<T>(
    op: number,
    action: string,
    spec: CallSpec<T>,
    started?: (id: number) => void,
  ): Promise<T> {
    const fail = (detail: string, code: AgentErrorCode) =>
      Promise.reject(new AgentError(action, detail, code));
    if (this.#closed) return fail("the connection is closed", "closed");
    if (this.#pending.size >= this.#maxInFlight) {
      return fail(`${this.#pending.size} calls already wait for the agent`, "busy");
    }
    if ((spec.payload?.length ?? 0) > MAX_PAYLOAD) {
      return fail(`request of ${spec.payload?.length} bytes exceeds 1 MiB`, "request");
    }
    const id = this.#newId();
    // only an exec without timeout goes without a deadline of its own
    const open = spec.onFrame !== undefined && spec.timeoutMs === 0;
    const timeoutMs = open ? 0 : positive(spec.timeoutMs) ?? this.#timeoutMs;
    return new Promise<T>((resolve, reject) => {
      const pending: Pending = {
        action,
        ends: spec.onFrame ? Reply.exit : Reply.result,
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
        onFrame: spec.onFrame,
      };
      if (timeoutMs > 0) {
        pending.timer = cheapTimer(timeoutMs, () => {
          this.#end(id, pending);
          this.#outbox = this.#outbox.filter((entry) => entry.id !== id || entry.always);
          reject(new AgentError(action, `no answer within ${timeoutMs} ms`, "timeout"));
        });
      } else {
        this.#open++;
        this.#watchAgent();
      }
      this.#pending.set(id, pending);
      started?.(id);
      this.#queue({ op, id, payload: spec.payload });
    });
  }

  /** Fails a pending call from outside (an exec's callback or stdin stream failed). */
  #failCall(id: number, error: AgentError): void {
    const pending = this.#pending.get(id);
    if (!pending) return;
    this.#end(id, pending);
    pending.reject(error);
  }

  /** Queues a request and starts writing. */
  #queue(entry: Outgoing): void {
    if (this.#closed) return;
    this.#outbox.push(entry);
    if (!this.#writing) this.#drain();
  }

  /** The next request id no pending call uses. */
  #newId(): number {
    do this.#nextId = (this.#nextId + 1) >>> 0; while (this.#pending.has(this.#nextId));
    return this.#nextId;
  }

  /**
   * Writes queued requests in order; one whose call ended before its turn (it timed out, or the
   * exec it streams to ended) is not sent. The first one written starts a new session.
   */
  async #drain(): Promise<void> {
    this.#writing = true;
    try {
      for (let entry; (entry = this.#outbox.shift()) && !this.#closed;) {
        if (!entry.always && !this.#pending.has(entry.id)) continue;
        const bytes = encodeRequest(
          entry.op,
          entry.id,
          entry.payload,
          this.#fresh ? FLAG_NEW_SESSION : 0,
        );
        this.#fresh = false;
        for (let off = 0; off < bytes.length && !this.#closed;) {
          off += await this.#conn.write(bytes.subarray(off));
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
    const reject = (detail: string, code: AgentErrorCode, cause?: unknown, exitCode?: number) => {
      this.#end(id, pending);
      pending.reject(new AgentError(action, detail, code, { cause, exitCode }));
    };
    if (item.kind === "oversize") {
      return reject(`answer of ${item.length} bytes exceeds 1 MiB`, "protocol");
    }
    const { type, payload } = item.frame;
    const streamed = type === Reply.stdout || type === Reply.stderr || type === Reply.stdinAck;
    if (pending.onFrame && streamed) {
      try {
        pending.onFrame(item.frame);
      } catch (error) {
        this.#end(id, pending);
        pending.reject(
          error instanceof AgentError
            ? error
            : new AgentError(action, errorMessage(error), "protocol", { cause: error }),
        );
      }
    } else if (type === Reply.error) {
      const answer = printable(payload);
      // an exec whose command could not start exits as a shell would (127, 126)
      const exitCode = pending.ends === Reply.exit ? startFailureExitCode(answer) : undefined;
      reject(`the agent answered: ${answer}`, "remote", undefined, exitCode);
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

/** What an exec's streams need from its call. */
interface ExecLink {
  /** Queues a stdin or credit request of the exec (not sent once the call ended). */
  send(op: number, payload: Uint8Array): void;
  /** Fails the call. */
  fail(error: AgentError): void;
}

/**
 * The streams of one running exec. Output goes to its callbacks in order, one chunk at a time (a
 * returned promise is awaited before the next), and credit goes back to the agent as they
 * finish, so what was received and not yet consumed stays within {@link OUTPUT_WINDOW}. Stdin
 * goes out within {@link STDIN_WINDOW} bytes the agent has not acknowledged.
 */
class ExecStreams {
  /** Output gathered for the result (`collect`). */
  readonly stdout: Uint8Array[] = [];
  readonly stderr: Uint8Array[] = [];
  /** Output beyond the limit was dropped here. */
  truncated = false;
  #action: string;
  #opts: ExecOptions;
  #limit: number;
  #link: ExecLink;
  #kept = 0; // output bytes within the limit
  #received = 0; // credit the agent spent: output bytes + FRAME_COST a frame
  #allowed = OUTPUT_WINDOW; // credit it got: the window + what was returned
  #consumed = 0; // credit of the output the callbacks finished
  #queue: Frame[] = [];
  #busy = false; // a callback's promise is pending
  #idle?: PromiseWithResolvers<void>;
  #failure?: AgentError;
  #stopped = false;
  #streaming = false;
  #stdinStopped = false;
  #stdinSent = 0;
  #stdinAcked = 0;
  #room?: PromiseWithResolvers<void>;
  #source?: AsyncIterator<Uint8Array>;

  constructor(action: string, opts: ExecOptions, limit: number, link: ExecLink) {
    this.#action = action;
    this.#opts = opts;
    this.#limit = limit;
    this.#link = link;
  }

  /** A frame of the exec before its exit; throws an AgentError when it breaks the protocol. */
  frame(frame: Frame): void {
    if (frame.type === Reply.stdinAck) return this.#ack(frame.payload);
    this.#received += frame.payload.length + FRAME_COST;
    if (this.#received > this.#allowed) {
      throw new AgentError(
        this.#action,
        `the agent sent output beyond its credit (${this.#received} of ${this.#allowed} bytes)`,
        "protocol",
      );
    }
    if (this.#failure || this.#stopped) return;
    this.#queue.push(frame);
    if (!this.#busy) this.#deliver();
  }

  /** Resolves once the callbacks finished every chunk; rejects when one failed. */
  consumed(): Promise<void> {
    if (this.#failure) return Promise.reject(this.#failure);
    if (!this.#busy && this.#queue.length === 0) return Promise.resolve();
    this.#idle ??= Promise.withResolvers();
    return this.#idle.promise;
  }

  /** Sends `source` as the command's stdin, then its end; a source that fails fails the exec. */
  async pump(source: AsyncIterable<Uint8Array>): Promise<void> {
    this.#streaming = true;
    try {
      const it = this.#source = source[Symbol.asyncIterator]();
      for (let next; !this.#stdinStopped && !(next = await it.next()).done;) {
        const chunk: unknown = next.value;
        if (!(chunk instanceof Uint8Array)) {
          throw new TypeError(`it yielded a ${typeof chunk}, not a Uint8Array`);
        }
        for (let at = 0; at < chunk.length && !this.#stdinStopped;) {
          const room = STDIN_WINDOW - (this.#stdinSent - this.#stdinAcked);
          if (room <= 0) {
            this.#room = Promise.withResolvers();
            await this.#room.promise;
            continue;
          }
          const n = Math.min(room, STDIN_CHUNK, chunk.length - at);
          this.#link.send(Op.stdin, encodeStdin(chunk.subarray(at, at + n), false));
          this.#stdinSent += n;
          at += n;
        }
      }
      if (!this.#stdinStopped) this.#link.send(Op.stdin, encodeStdin(new Uint8Array(), true));
    } catch (error) {
      if (this.#stdinStopped) return;
      this.#link.fail(
        new AgentError(this.#action, `the stdin stream failed: ${errorMessage(error)}`, "request", {
          cause: error,
        }),
      );
    }
  }

  /**
   * The call ended: no more stdin or credit; an unfinished stdin stream is cancelled. When it
   * failed, output not yet handed to the callbacks is dropped.
   */
  stop(opts: { failed?: boolean } = {}): void {
    this.#stopped = true;
    if (opts.failed) this.#queue = [];
    this.#stopStdin();
  }

  #stopStdin(): void {
    if (this.#stdinStopped) return;
    this.#stdinStopped = true;
    this.#room?.resolve();
    const source = this.#source;
    if (source?.return) Promise.resolve().then(() => source.return!()).catch(() => {});
  }

  #ack(payload: Uint8Array): void {
    let ack: StdinAck;
    try {
      ack = decodeStdinAck(payload);
    } catch (error) {
      const detail = error instanceof PayloadError ? error.detail : errorMessage(error);
      throw new AgentError(this.#action, `malformed answer: ${detail}`, "protocol", {
        cause: error,
      });
    }
    const acked = this.#stdinAcked + ack.bytes;
    if (!this.#streaming || acked > this.#stdinSent) {
      throw new AgentError(
        this.#action,
        `the agent acknowledged ${acked} bytes of stdin, ${this.#stdinSent} were sent`,
        "protocol",
      );
    }
    this.#stdinAcked = acked;
    if (ack.closed) this.#stopStdin();
    this.#room?.resolve();
  }

  #deliver(): void {
    for (let frame; !this.#failure && (frame = this.#queue.shift());) {
      let done: unknown;
      try {
        done = this.#hand(frame);
      } catch (error) {
        return this.#callbackFailed(error);
      }
      const cost = frame.payload.length + FRAME_COST;
      if (typeof (done as PromiseLike<unknown> | undefined)?.then === "function") {
        this.#busy = true;
        (done as PromiseLike<unknown>).then(() => {
          this.#busy = false;
          this.#credit(cost);
          this.#deliver();
        }, (error) => this.#callbackFailed(error));
        return;
      }
      this.#credit(cost);
    }
    if (!this.#failure) this.#idle?.resolve();
  }

  /** Cuts a chunk to the limit, gathers it, and hands it to its callback. */
  #hand(frame: Frame): unknown {
    let chunk = frame.payload;
    if (this.#kept + chunk.length > this.#limit) {
      chunk = chunk.subarray(0, this.#limit - this.#kept); // the guest sent more than it may
      this.truncated = true;
    }
    this.#kept += chunk.length;
    if (chunk.length === 0) return;
    const out = frame.type === Reply.stdout;
    if (this.#opts.collect ?? true) (out ? this.stdout : this.stderr).push(chunk);
    return (out ? this.#opts.onStdout : this.#opts.onStderr)?.(chunk);
  }

  /** Returns the credit of what the callbacks finished, a quarter window at a time. */
  #credit(cost: number): void {
    this.#consumed += cost;
    const owed = this.#consumed - (this.#allowed - OUTPUT_WINDOW);
    if (owed < OUTPUT_WINDOW / 4 || this.#stopped) return;
    this.#allowed += owed;
    this.#link.send(Op.credit, encodeCredit(owed));
  }

  #callbackFailed(error: unknown): void {
    this.#failure = new AgentError(
      this.#action,
      `an output callback failed: ${errorMessage(error)}`,
      "request",
      { cause: error },
    );
    this.#queue = [];
    this.#busy = false;
    this.#idle?.reject(this.#failure);
    this.#link.fail(this.#failure);
  }
}

/** Splits {@link ExecOptions.stdin} into bytes sent with the request, or a stream to send. */
function stdinOf(
  stdin: ExecStdin | undefined,
  action: string,
): { inline?: Uint8Array; source?: AsyncIterable<Uint8Array> } {
  if (stdin === undefined) return {};
  const bytes = typeof stdin === "string"
    ? encoder.encode(stdin)
    : stdin instanceof Uint8Array
    ? stdin
    : undefined;
  if (bytes) {
    return bytes.length <= STDIN_WINDOW ? { inline: bytes } : {
      source: (async function* () {
        yield bytes;
      })(),
    };
  }
  if (typeof (stdin as AsyncIterable<Uint8Array>)[Symbol.asyncIterator] === "function") {
    return { source: stdin as AsyncIterable<Uint8Array> };
  }
  throw new AgentError(
    action,
    "stdin must be bytes, text, a ReadableStream or an async iterable of Uint8Array",
    "request",
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
