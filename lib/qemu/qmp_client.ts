/**
 * QMP (QEMU Machine Protocol) client over a Unix socket: greeting, `qmp_capabilities`, numbered
 * commands with a pending map, events to listeners, every pending call rejected on disconnect.
 * @module
 */
import { type CheapTimer, cheapTimer, withTimeout } from "../cheap_timer.ts";
import { VmfactoryError } from "../errors.ts";

/** The greeting QEMU sends when a client connects. */
export interface QmpGreeting {
  /** QEMU version, e.g. `{ qemu: { major: 7, minor: 2, micro: 22 }, package: "Debian ..." }`. */
  version: { qemu: { major: number; minor: number; micro: number }; package: string };
  /** Optional capabilities QEMU offers (e.g. `oob`); none are enabled. */
  capabilities: string[];
}

/** An asynchronous event from QEMU (`STOP`, `RESUME`, `SHUTDOWN`, ...). */
export interface QmpEvent {
  /** Event name, e.g. `STOP`. */
  event: string;
  /** Event payload, when the event has one. */
  data?: Record<string, unknown>;
  /** When QEMU emitted it. */
  timestamp: { seconds: number; microseconds: number };
}

/** QEMU answered a command with an error; `errorClass` is QEMU's class (e.g. `GenericError`). */
export class QmpError extends VmfactoryError {
  /** QEMU's error class. */
  readonly errorClass: string;
  /** QEMU's description. */
  readonly desc: string;
  /** The command that failed. */
  readonly command: string;
  /** "Cannot <command>: <desc>". */
  constructor(command: string, errorClass: string, desc: string) {
    super(command, desc);
    this.command = command;
    this.errorClass = errorClass;
    this.desc = desc;
  }
}

/** The QMP connection closed (QEMU exited, or `close()` was called) before a reply came. */
export class QmpDisconnectedError extends VmfactoryError {
  /** "Cannot <action>: QMP connection closed". */
  constructor(action: string) {
    super(action, "QMP connection closed");
  }
}

/** No reply (or no greeting) came within the time limit. */
export class QmpTimeoutError extends VmfactoryError {
  /** "Cannot <action>: no answer from QEMU within <ms> ms". */
  constructor(action: string, timeoutMs: number) {
    super(action, `no answer from QEMU within ${timeoutMs} ms`);
  }
}

/** Options of {@link QmpClient.connect}. */
export interface QmpConnectOptions {
  /** Limit for connect + greeting + `qmp_capabilities`; default 5000 ms. */
  timeoutMs?: number;
  /** Default limit of each `execute`; default 10000 ms. */
  callTimeoutMs?: number;
}

type Listener = (event: QmpEvent) => void;

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  timer: CheapTimer;
}

const encoder = new TextEncoder();

/** A connected, capability-negotiated QMP session. Create it with {@link QmpClient.connect}. */
export class QmpClient {
  #conn: Deno.UnixConn;
  #callTimeoutMs: number;
  #nextId = 1;
  #pending = new Map<number, Pending>();
  #listeners = new Map<string, Set<Listener>>();
  #writing: Promise<void> = Promise.resolve();
  #greeting = Promise.withResolvers<QmpGreeting>();
  #closed = Promise.withResolvers<void>();
  #isClosed = false;
  /** The greeting QEMU sent; set once `connect` resolves. */
  greeting!: QmpGreeting;

  private constructor(conn: Deno.UnixConn, callTimeoutMs: number) {
    this.#conn = conn;
    this.#callTimeoutMs = callTimeoutMs;
    this.#greeting.promise.catch(() => {});
    this.#readLoop();
  }

  /**
   * Connects to QEMU's QMP socket, reads the greeting and negotiates capabilities. Throws the
   * `Deno.connect` error (e.g. `Deno.errors.NotFound`, `ConnectionRefused`) when nothing
   * listens, {@link QmpTimeoutError} when QEMU does not answer in time.
   */
  static async connect(socketPath: string, options: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = options.timeoutMs ?? 5000;
    const start = performance.now();
    const conn = await Deno.connect({ transport: "unix", path: socketPath });
    const client = new QmpClient(conn, options.callTimeoutMs ?? 10_000);
    try {
      client.greeting = await withTimeout(
        client.#greeting.promise,
        timeoutMs,
        () => new QmpTimeoutError("read the QMP greeting", timeoutMs),
      );
      const left = Math.max(1, timeoutMs - (performance.now() - start));
      await client.execute("qmp_capabilities", undefined, { timeoutMs: left });
      return client;
    } catch (error) {
      client.close();
      throw error;
    }
  }

  /** QEMU's version as `major.minor.micro`. */
  get version(): string {
    const { major, minor, micro } = this.greeting.version.qemu;
    return `${major}.${minor}.${micro}`;
  }

  /** Resolves when the connection has closed (QEMU exited or `close()` was called). */
  get closed(): Promise<void> {
    return this.#closed.promise;
  }

  /**
   * Runs a QMP command and resolves with its `return` value. Rejects with {@link QmpError} when
   * QEMU reports an error, {@link QmpTimeoutError} after `timeoutMs`, {@link QmpDisconnectedError}
   * when the connection closes first. Commands may be issued concurrently.
   */
  execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    options: { timeoutMs?: number } = {},
  ): Promise<T> {
    if (this.#isClosed) return Promise.reject(new QmpDisconnectedError(command));
    const id = this.#nextId++;
    const timeoutMs = options.timeoutMs ?? this.#callTimeoutMs;
    const { promise, resolve, reject } = Promise.withResolvers<T>();
    const timer = cheapTimer(timeoutMs, () => {
      this.#pending.delete(id);
      reject(new QmpTimeoutError(command, timeoutMs));
    });
    this.#pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
    const message = { execute: command, ...(args ? { arguments: args } : {}), id };
    this.#write(JSON.stringify(message) + "\n");
    return promise;
  }

  /**
   * Calls `listener` for each event named `event` (or every event for `"*"`). Returns a function
   * that removes the listener. Listener exceptions are ignored.
   */
  on(event: string, listener: (event: QmpEvent) => void): () => void {
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, set = new Set());
    set.add(listener);
    return () => set.delete(listener);
  }

  /** Closes the connection; pending calls reject with {@link QmpDisconnectedError}. Idempotent. */
  close(): void {
    if (this.#isClosed) return;
    try {
      this.#conn.close();
    } catch {
      // already closed by the read loop
    }
    this.#finish();
  }

  #write(text: string): void {
    const bytes = encoder.encode(text);
    this.#writing = this.#writing.then(async () => {
      let done = 0;
      while (done < bytes.length) done += await this.#conn.write(bytes.subarray(done));
    }).catch(() => this.close());
  }

  async #readLoop(): Promise<void> {
    const decoder = new TextDecoder();
    const buffer = new Uint8Array(64 * 1024);
    let partial = "";
    try {
      while (true) {
        const n = await this.#conn.read(buffer);
        if (n === null) break;
        partial += decoder.decode(buffer.subarray(0, n), { stream: true });
        let newline: number;
        while ((newline = partial.indexOf("\n")) >= 0) {
          const line = partial.slice(0, newline).trim();
          partial = partial.slice(newline + 1);
          if (line) this.#dispatch(line);
        }
      }
    } catch {
      // a closed or reset connection ends the session like end-of-file does
    }
    this.close();
  }

  #dispatch(line: string): void {
    let message: Record<string, unknown>;
    try {
      message = JSON.parse(line);
    } catch {
      return; // not JSON: QEMU never sends this; skip the line
    }
    if (typeof message !== "object" || message === null) return;
    if ("QMP" in message) {
      this.#greeting.resolve(message.QMP as QmpGreeting);
    } else if (typeof message.event === "string") {
      this.#emit(message as unknown as QmpEvent);
    } else if (typeof message.id === "number") {
      const pending = this.#pending.get(message.id);
      if (!pending) return; // timed out already
      this.#pending.delete(message.id);
      pending.timer.cancel();
      if ("error" in message) {
        const error = message.error as { class?: string; desc?: string };
        pending.reject(
          new QmpError(pending.command, error.class ?? "GenericError", error.desc ?? "error"),
        );
      } else {
        pending.resolve(message.return);
      }
    }
  }

  #emit(event: QmpEvent): void {
    for (const key of [event.event, "*"]) {
      for (const listener of this.#listeners.get(key) ?? []) {
        try {
          listener(event);
        } catch {
          // a listener's failure must not break the session
        }
      }
    }
  }

  #finish(): void {
    if (this.#isClosed) return;
    this.#isClosed = true;
    this.#greeting.reject(new QmpDisconnectedError("read the QMP greeting"));
    for (const [id, pending] of this.#pending) {
      this.#pending.delete(id);
      pending.timer.cancel();
      pending.reject(new QmpDisconnectedError(pending.command));
    }
    this.#closed.resolve();
  }
}
