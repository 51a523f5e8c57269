/**
 * A hand-written HTTP/2 client for the cache server tests: it sends exactly the frames a test asks
 * for (a reset before the trailers, an oversized body or header list) and shows every frame the
 * server sends, which a real gRPC client would hide. Headers go out as HPACK literals (no
 * compression); the server's header blocks are not decoded.
 * @module
 */
import { encodeHeaderBlock } from "./_hpack.ts";

/** HTTP/2 frame types the tests use. */
export const FrameType = {
  data: 0x0,
  headers: 0x1,
  rstStream: 0x3,
  settings: 0x4,
  ping: 0x6,
  goaway: 0x7,
  windowUpdate: 0x8,
  continuation: 0x9,
} as const;

const END_STREAM = 0x1, END_HEADERS = 0x4, ACK = 0x1;
const MAX_FRAME = 16_384;
const PREFACE = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/** One frame as read. */
export interface H2Frame {
  type: number;
  flags: number;
  streamId: number;
  payload: Uint8Array;
}

/** One HTTP/2 connection to a Unix socket; answers SETTINGS and PING, honours flow control. */
export class RawH2 {
  readonly #conn: Deno.UnixConn;
  #buf = new Uint8Array(0);
  #frames: H2Frame[] = [];
  #byStream = new Map<number, H2Frame[]>();
  #waiters: (() => void)[] = [];
  #closed = false;
  #connWindow = 65_535;
  #streamWindows = new Map<number, number>();
  /** Streams the server ended (END_STREAM) or reset. */
  #ended = new Set<number>();
  #nextStream = 1;

  private constructor(conn: Deno.UnixConn) {
    this.#conn = conn;
  }

  /**
   * Connects and sends the preface and SETTINGS: `initialWindow` is how many bytes of DATA the
   * server may send on a stream before this client sends a WINDOW_UPDATE (default 65 535).
   */
  static async connect(path: string, opts: { initialWindow?: number } = {}): Promise<RawH2> {
    const h2 = new RawH2(await Deno.connect({ transport: "unix", path }));
    await h2.#write(PREFACE);
    const settings = new Uint8Array(opts.initialWindow === undefined ? 0 : 6);
    if (opts.initialWindow !== undefined) {
      const view = new DataView(settings.buffer);
      view.setUint16(0, 0x4); // SETTINGS_INITIAL_WINDOW_SIZE
      view.setUint32(2, opts.initialWindow);
    }
    await h2.#frame(FrameType.settings, 0, 0, settings);
    void h2.#readLoop();
    return h2;
  }

  /** Opens a stream with a gRPC request of `path`; returns its id. `extra` adds headers. */
  async request(path: string, extra: [string, string][] = []): Promise<number> {
    const id = this.#nextStream;
    this.#nextStream += 2;
    this.#streamWindows.set(id, 65_535);
    const block = encodeHeaderBlock([
      [":method", "POST"],
      [":scheme", "http"],
      [":path", path],
      [":authority", "localhost"],
      ["content-type", "application/grpc"],
      ["te", "trailers"],
      ...extra,
    ]);
    for (let at = 0; at < block.length || at === 0; at += MAX_FRAME) {
      const last = at + MAX_FRAME >= block.length;
      await this.#frame(
        at === 0 ? FrameType.headers : FrameType.continuation,
        last ? END_HEADERS : 0,
        id,
        block.subarray(at, at + MAX_FRAME),
      );
    }
    return id;
  }

  /**
   * Sends `bytes` as DATA on `id` (split into frames, within the flow-control windows); stops and
   * returns false once the server ended or reset the stream, or closed the connection.
   */
  async data(id: number, bytes: Uint8Array, endStream = true): Promise<boolean> {
    let at = 0;
    do {
      while (Math.min(this.#connWindow, this.#streamWindows.get(id) ?? 0) <= 0) {
        if (this.#ended.has(id) || !(await this.#more())) return false;
      }
      if (this.#ended.has(id) || this.#closed) return false;
      const n = Math.min(
        MAX_FRAME,
        bytes.length - at,
        this.#connWindow,
        this.#streamWindows.get(id)!,
      );
      const last = at + n === bytes.length;
      this.#connWindow -= n;
      this.#streamWindows.set(id, this.#streamWindows.get(id)! - n);
      await this.#frame(
        FrameType.data,
        last && endStream ? END_STREAM : 0,
        id,
        bytes.subarray(at, at + n),
      );
      at += n;
    } while (at < bytes.length);
    return true;
  }

  /** Sends a gRPC request message with an empty protobuf body (what every cache method takes). */
  emptyMessage(id: number): Promise<boolean> {
    return this.data(id, new Uint8Array(5));
  }

  /** Lets the server send `n` more bytes of DATA on stream `id` (0: on the connection). */
  async windowUpdate(id: number, n: number): Promise<void> {
    const payload = new Uint8Array(4);
    new DataView(payload.buffer).setUint32(0, n);
    await this.#frame(FrameType.windowUpdate, 0, id, payload);
  }

  /** Resets stream `id` (8 = CANCEL). */
  async reset(id: number, code = 8): Promise<void> {
    const payload = new Uint8Array(4);
    new DataView(payload.buffer).setUint32(0, code);
    await this.#frame(FrameType.rstStream, 0, id, payload);
  }

  /**
   * The next frame the server sent on any stream (SETTINGS, PING, WINDOW_UPDATE included), or
   * null once the connection is closed.
   */
  async next(): Promise<H2Frame | null> {
    while (this.#frames.length === 0) if (!(await this.#more())) return null;
    return this.#frames.shift()!;
  }

  /**
   * The next frame on stream `id`, or null once the connection is closed. Streams have queues of
   * their own: readers of different streams do not take each other's frames.
   */
  async nextOn(id: number): Promise<H2Frame | null> {
    for (;;) {
      const f = this.#byStream.get(id)?.shift();
      if (f) return f;
      if (!(await this.#more())) return null;
    }
  }

  /** Resolves once the server closed the connection. */
  async closedByPeer(): Promise<void> {
    while (await this.#more());
  }

  /** Closes the socket (no GOAWAY). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch { /* already closed */ }
    for (const wake of this.#waiters.splice(0)) wake();
  }

  /** Waits for the next bytes from the server; false once the connection is closed. */
  #more(): Promise<boolean> {
    if (this.#closed) return Promise.resolve(false);
    return new Promise((resolve) => this.#waiters.push(() => resolve(!this.#closed)));
  }

  async #readLoop(): Promise<void> {
    const chunk = new Uint8Array(65_536);
    try {
      for (let n; (n = await this.#conn.read(chunk)) !== null;) {
        const buf = new Uint8Array(this.#buf.length + n);
        buf.set(this.#buf);
        buf.set(chunk.subarray(0, n), this.#buf.length);
        let at = 0;
        while (buf.length - at >= 9) {
          const length = (buf[at] << 16) | (buf[at + 1] << 8) | buf[at + 2];
          if (buf.length - at < 9 + length) break;
          const view = new DataView(buf.buffer, at);
          const frame = {
            type: buf[at + 3],
            flags: buf[at + 4],
            streamId: view.getUint32(5) & 0x7fffffff,
            payload: buf.slice(at + 9, at + 9 + length),
          };
          at += 9 + length;
          await this.#handle(frame);
        }
        this.#buf = buf.slice(at);
        for (const wake of this.#waiters.splice(0)) wake();
      }
    } catch { /* reset or closed here */ }
    this.close();
  }

  async #handle(f: H2Frame): Promise<void> {
    if (f.type === FrameType.settings && !(f.flags & ACK)) {
      await this.#frame(FrameType.settings, ACK, 0, new Uint8Array());
    } else if (f.type === FrameType.ping && !(f.flags & ACK)) {
      await this.#frame(FrameType.ping, ACK, 0, f.payload);
    } else if (f.type === FrameType.windowUpdate) {
      const n = new DataView(f.payload.buffer).getUint32(0) & 0x7fffffff;
      if (f.streamId === 0) this.#connWindow += n;
      else this.#streamWindows.set(f.streamId, (this.#streamWindows.get(f.streamId) ?? 0) + n);
    }
    if (f.type === FrameType.rstStream || endsStream(f)) this.#ended.add(f.streamId);
    this.#frames.push(f);
    if (!this.#byStream.has(f.streamId)) this.#byStream.set(f.streamId, []);
    this.#byStream.get(f.streamId)!.push(f);
  }

  #frame(type: number, flags: number, streamId: number, payload: Uint8Array): Promise<void> {
    const out = new Uint8Array(9 + payload.length);
    out[0] = payload.length >> 16;
    out[1] = (payload.length >> 8) & 0xff;
    out[2] = payload.length & 0xff;
    out[3] = type;
    out[4] = flags;
    new DataView(out.buffer).setUint32(5, streamId);
    out.set(payload, 9);
    return this.#write(out);
  }

  /** Writes `bytes`; a connection the server closed just ends up closed here too. */
  async #write(bytes: Uint8Array): Promise<void> {
    try {
      for (let at = 0; at < bytes.length && !this.#closed;) {
        at += await this.#conn.write(bytes.subarray(at));
      }
    } catch {
      this.close();
    }
  }
}

/** The gRPC message carried by a DATA payload (a 5-byte prefix, then the protobuf bytes). */
export function grpcMessage(payload: Uint8Array): Uint8Array {
  return payload.subarray(5, 5 + new DataView(payload.buffer, payload.byteOffset).getUint32(1));
}

/** True when a frame ends its stream (END_STREAM on DATA or HEADERS). */
export function endsStream(f: H2Frame): boolean {
  return (f.type === FrameType.data || f.type === FrameType.headers) &&
    (f.flags & END_STREAM) !== 0;
}
