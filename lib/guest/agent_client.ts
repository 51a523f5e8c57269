/**
 * Host side of the guest agent: talks to the agent through QEMU's chardev Unix socket (the
 * `org.vmfactory.agent` virtio-serial port, `server=on,wait=off`). Calls are multiplexed by
 * request id and each has a timeout. QEMU serves one connection per socket at a time: a second
 * client waits until the first closes.
 * @module
 */
import { errorMessage } from "../errors.ts";
import { sleep } from "../poll_until.ts";
import { type CheapTimer, cheapTimer, withTimeout } from "../cheap_timer.ts";
import { AgentError } from "./agent_error.ts";
import {
  type Decoded,
  encodeFrame,
  type Frame,
  FrameDecoder,
  MAX_PAYLOAD,
  Op,
  Reply,
} from "./agent_frame.ts";
import {
  type AgentInfo,
  decodeExit,
  decodeHotplugged,
  decodeInfo,
  encodeClock,
  encodeExec,
  type ExecCommand,
  type ExecExit,
} from "./agent_payload.ts";

export type { AgentInfo, ExecCommand } from "./agent_payload.ts";

/** Per-call option. */
export interface CallOptions {
  /** Give up after this long (default: the connection's `timeoutMs`). */
  timeoutMs?: number;
}

/** Options of {@link AgentClient.exec}. */
export interface ExecOptions {
  /** Bytes (or UTF-8 text) fed to the command's stdin; it gets /dev/null otherwise. */
  stdin?: Uint8Array | string;
  /** Kill the command's process group after this long (default 60 000 ms; 0 = never). */
  timeoutMs?: number;
  /** Keep at most this many output bytes, stdout and stderr together (default 16 MiB). */
  outputLimit?: number;
  /** Called with each stdout chunk as it arrives. */
  onStdout?: (chunk: Uint8Array) => void;
  /** Called with each stderr chunk as it arrives. */
  onStderr?: (chunk: Uint8Array) => void;
}

/** What {@link AgentClient.exec} returns. */
export interface ExecResult extends ExecExit {
  stdout: Uint8Array;
  stderr: Uint8Array;
}

interface Pending {
  action: string;
  resolve: (frame: Frame) => void;
  reject: (error: AgentError) => void;
  onChunk?: (frame: Frame) => void;
  timer?: CheapTimer;
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
  #decoder = new FrameDecoder();
  #pending = new Map<number, Pending>();
  #nextId = crypto.getRandomValues(new Uint32Array(1))[0];
  #writes: Promise<void> = Promise.resolve();
  #closed = false;

  private constructor(conn: Deno.UnixConn, socketPath: string, timeoutMs: number) {
    this.#conn = conn;
    this.socketPath = socketPath;
    this.#timeoutMs = timeoutMs;
    this.#readLoop();
  }

  /**
   * Connects to the agent socket of a running VM. Does not check that the agent answers (see
   * {@link waitForAgent}). `timeoutMs` (default 10 s) bounds the connect and is the default
   * timeout of every call.
   */
  static async connect(
    socketPath: string,
    opts: { timeoutMs?: number } = {},
  ): Promise<AgentClient> {
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const connecting = Deno.connect({ transport: "unix", path: socketPath });
    try {
      const conn = await withTimeout(connecting, timeoutMs, () => new Deno.errors.TimedOut());
      return new AgentClient(conn, socketPath, timeoutMs);
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
    await this.#call(Op.ping, "ping the guest agent", new Uint8Array(), opts.timeoutMs);
    return performance.now() - start;
  }

  /** Uptime, memory, boot id, hostname, kernel release, CPUs, vmgenid and clock of the guest. */
  async info(opts: CallOptions = {}): Promise<AgentInfo> {
    const frame = await this.#call(Op.info, "read guest info", new Uint8Array(), opts.timeoutMs);
    return decodeInfo(frame.payload);
  }

  /**
   * Runs a command in the guest (in its own session and process group) and collects its output,
   * streaming chunks to `onStdout` / `onStderr`. A non-zero exit is a result, not an error.
   */
  async exec(command: ExecCommand, opts: ExecOptions = {}): Promise<ExecResult> {
    const action = "run a command in the guest";
    const stdin = typeof opts.stdin === "string" ? encoder.encode(opts.stdin) : opts.stdin;
    const timeoutMs = opts.timeoutMs ?? 60_000;
    const payload = encodeExec(command, { stdin, timeoutMs, outputLimit: opts.outputLimit });
    if (payload.length > MAX_PAYLOAD) {
      throw new AgentError(action, `request of ${payload.length} bytes exceeds 1 MiB`, "protocol");
    }
    const stdout: Uint8Array[] = [], stderr: Uint8Array[] = [];
    const frame = await this.#call(
      Op.exec,
      action,
      payload,
      timeoutMs ? timeoutMs + 5_000 : 0,
      (f) => {
        (f.type === Reply.stdout ? stdout : stderr).push(f.payload);
        (f.type === Reply.stdout ? opts.onStdout : opts.onStderr)?.(f.payload);
      },
    );
    return { ...decodeExit(frame.payload), stdout: concat(stdout), stderr: concat(stderr) };
  }

  /** Sets the guest's wall clock (default: the host's now). */
  async setClock(date: Date = new Date(), opts: CallOptions = {}): Promise<void> {
    await this.#call(Op.setClock, "set the guest clock", encodeClock(date), opts.timeoutMs);
  }

  /** Mixes host bytes (1 to 4096) into the guest RNG and credits them as entropy. */
  async seedRng(bytes: Uint8Array, opts: CallOptions = {}): Promise<void> {
    await this.#call(Op.seedRng, "seed the guest RNG", bytes, opts.timeoutMs);
  }

  /** Sets the guest's hostname (1 to 64 bytes). */
  async setHostname(name: string, opts: CallOptions = {}): Promise<void> {
    await this.#call(
      Op.setHostname,
      "set the guest hostname",
      encoder.encode(name),
      opts.timeoutMs,
    );
  }

  /** Gives the guest a new boot_id (lowercase UUID; default: a random one); returns it. */
  async setBootId(uuid: string = crypto.randomUUID(), opts: CallOptions = {}): Promise<string> {
    await this.#call(Op.setBootId, "set the guest boot_id", encoder.encode(uuid), opts.timeoutMs);
    return uuid;
  }

  /** Brings hot-added CPUs and memory blocks online; returns how many it onlined. */
  async onlineHotplugged(opts: CallOptions = {}): Promise<{ cpus: number; memoryBlocks: number }> {
    const frame = await this.#call(
      Op.onlineHotplugged,
      "online hot-added CPUs and memory",
      new Uint8Array(),
      opts.timeoutMs,
    );
    return decodeHotplugged(frame.payload);
  }

  /** Closes the connection; pending calls fail with code "closed". Safe to call twice. */
  close(): void {
    this.#fail("the connection was closed");
  }

  #call(
    op: number,
    action: string,
    payload: Uint8Array,
    timeoutMs = this.#timeoutMs,
    onChunk?: (frame: Frame) => void,
  ): Promise<Frame> {
    if (this.#closed) {
      return Promise.reject(new AgentError(action, "the connection is closed", "closed"));
    }
    const id = this.#nextId = (this.#nextId + 1) >>> 0;
    return new Promise<Frame>((resolve, reject) => {
      const pending: Pending = { action, resolve, reject, onChunk };
      if (timeoutMs > 0) {
        pending.timer = cheapTimer(timeoutMs, () => {
          this.#pending.delete(id);
          reject(new AgentError(action, `no answer within ${timeoutMs} ms`, "timeout"));
        });
      }
      this.#pending.set(id, pending);
      this.#write(encodeFrame(op, id, payload));
    });
  }

  #write(bytes: Uint8Array): void {
    this.#writes = this.#writes.then(async () => {
      for (let off = 0; off < bytes.length && !this.#closed;) {
        off += await this.#conn.write(bytes.subarray(off));
      }
    }).catch((error) => {
      this.#fail(`write failed: ${error}`);
    });
  }

  async #readLoop(): Promise<void> {
    const buf = new Uint8Array(65536);
    let reason = "the agent closed the connection";
    try {
      for (let n; (n = await this.#conn.read(buf)) !== null;) {
        for (const item of this.#decoder.push(buf.subarray(0, n))) this.#dispatch(item);
      }
    } catch (error) {
      reason = `read failed: ${error}`;
    }
    this.#fail(reason);
  }

  #dispatch(item: Decoded): void {
    const id = item.kind === "frame" ? item.frame.id : item.id;
    const pending = this.#pending.get(id);
    if (!pending) return; // a late answer to a call that timed out, or to a previous client
    if (item.kind === "oversize") {
      return this.#settle(id, pending, () =>
        pending.reject(
          new AgentError(
            pending.action,
            `answer of ${item.length} bytes exceeds 1 MiB`,
            "protocol",
          ),
        ));
    }
    const frame = item.frame;
    if (frame.type === Reply.stdout || frame.type === Reply.stderr) return pending.onChunk?.(frame);
    this.#settle(id, pending, () => {
      if (frame.type === Reply.error) {
        pending.reject(new AgentError(pending.action, decoder.decode(frame.payload), "remote"));
      } else if (frame.type === (pending.onChunk ? Reply.exit : Reply.result)) {
        pending.resolve(frame);
      } else {
        pending.reject(
          new AgentError(
            pending.action,
            `unexpected answer type 0x${frame.type.toString(16)}`,
            "protocol",
          ),
        );
      }
    });
  }

  #settle(id: number, pending: Pending, settle: () => void): void {
    pending.timer?.cancel();
    this.#pending.delete(id);
    settle();
  }

  #fail(detail: string): void {
    if (!this.#closed) {
      this.#closed = true;
      try {
        this.#conn.close();
      } catch {
        // already closed by the peer
      }
    }
    for (const [id, pending] of this.#pending) {
      this.#settle(
        id,
        pending,
        () => pending.reject(new AgentError(pending.action, detail, "closed")),
      );
    }
  }
}

/**
 * Connects to a VM's agent socket and pings until the agent answers or `deadline` (a
 * `Date.now()` time) passes; returns the connected client. Meant for right after a boot or a
 * clone: the socket may not exist yet (retried every few ms), and a ping sent before the guest
 * opened its port waits in QEMU and is answered once the agent runs (re-sent with back-off in
 * case one is lost; late answers are ignored). Only whole frames are sent, so abandoning an
 * attempt leaves the agent in a clean state.
 */
export async function waitForAgent(
  socketPath: string,
  opts: { deadline: number },
): Promise<AgentClient> {
  let delay = 2;
  let lastError: unknown;
  while (Date.now() < opts.deadline) {
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

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}
