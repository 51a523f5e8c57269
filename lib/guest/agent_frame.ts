/**
 * Framing of the guest agent protocol (the C agent in agent.c speaks the same).
 *
 * A frame is a 16-byte big-endian header: u32 magic "VMFA", u8 version (2), u8 type, u16 flags
 * (0, or {@link FLAG_NEW_SESSION} on a client's first request), u32 request id, u32 payload
 * length; then the payload (at most {@link MAX_PAYLOAD} bytes). Requests carry an {@link Op};
 * every answer carries the request's id and a {@link Reply} type. The stdin, credit and cancel
 * requests of a running exec carry the exec's id and are not answered.
 *
 * Answers (guest to host) travel as plain frames ({@link encodeFrame}, {@link FrameDecoder}).
 * Requests (host to guest) travel COBS-encoded between two 0 bytes ({@link encodeRequest}): the
 * agent serves one host connection after another on the same port and cannot always tell where
 * one ended (QEMU's close and open notices can reach the guest together, or after the new
 * host's data), so the 0 that starts every request ends whatever a previous host left unfinished
 * and no client's request is ever read as the rest of another's frame.
 * @module
 */

/** "VMFA" as a big-endian u32. */
export const FRAME_MAGIC = 0x564d4641;
/** Protocol version carried in every header. */
export const FRAME_VERSION = 2;
/** Bytes in a frame header. */
export const HEADER_SIZE = 16;
/** Largest payload either side accepts (1 MiB). */
export const MAX_PAYLOAD = 1 << 20;
/**
 * Header flag of a client's first request: the agent then drops what earlier clients' commands
 * still send, and kills those whose streamed stdin can no longer end.
 */
export const FLAG_NEW_SESSION = 1;

/** Request types (host -> guest). */
export const Op = {
  ping: 1,
  info: 2,
  exec: 3,
  personalize: 4,
  onlineHotplugged: 5,
  /** A chunk of a streamed stdin (the exec's id; not answered). */
  stdin: 6,
  /** Output credit returned to a running exec (the exec's id; not answered). */
  credit: 7,
  /** The client gave up on an exec: kill it, drop the rest (the exec's id; not answered). */
  cancel: 8,
  mountImage: 9,
  unmountImage: 10,
  configureNet: 11,
} as const;

/** Answer types (guest -> host). */
export const Reply = {
  result: 0x80,
  stdout: 0x81,
  stderr: 0x82,
  exit: 0x83,
  /** Bytes of a streamed stdin written to the command (an exec's id). */
  stdinAck: 0x84,
  error: 0xff,
} as const;

/** One decoded frame. */
export interface Frame {
  type: number;
  id: number;
  payload: Uint8Array;
}

/** A request as the agent reads it: a frame and its header flags. */
export interface Request extends Frame {
  flags: number;
}

/** What {@link FrameDecoder.push} yields: a frame, or a header announcing a too-large payload. */
export type Decoded =
  | { kind: "frame"; frame: Frame }
  | { kind: "oversize"; type: number; id: number; length: number };

/** Encodes one plain frame; throws a RangeError when the payload exceeds {@link MAX_PAYLOAD}. */
export function encodeFrame(
  type: number,
  id: number,
  payload: Uint8Array = new Uint8Array(),
  flags = 0,
): Uint8Array {
  if (payload.length > MAX_PAYLOAD) {
    throw new RangeError(`frame payload of ${payload.length} bytes exceeds ${MAX_PAYLOAD}`);
  }
  const out = new Uint8Array(HEADER_SIZE + payload.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, FRAME_MAGIC);
  view.setUint8(4, FRAME_VERSION);
  view.setUint8(5, type);
  view.setUint16(6, flags);
  view.setUint32(8, id >>> 0);
  view.setUint32(12, payload.length);
  out.set(payload, HEADER_SIZE);
  return out;
}

/**
 * Encodes a request as the agent reads it: 0, the frame in COBS (every 0 byte removed, each run
 * of up to 254 other bytes preceded by its length + 1), 0. `flags`: 0 or
 * {@link FLAG_NEW_SESSION}. Throws a RangeError like {@link encodeFrame}.
 */
export function encodeRequest(
  op: number,
  id: number,
  payload: Uint8Array = new Uint8Array(),
  flags = 0,
): Uint8Array {
  const frame = encodeFrame(op, id, payload, flags);
  const out = new Uint8Array(frame.length + Math.ceil(frame.length / 254) + 3);
  let code = 1, run = 1, at = 2; // out[0] = 0 starts it; out[code] is the open run's length byte
  for (const byte of frame) {
    if (byte !== 0) {
      out[at++] = byte;
      run++;
    }
    if (byte === 0 || run === 0xff) {
      out[code] = run;
      code = at++;
      run = 1;
    }
  }
  out[code] = run;
  return out.subarray(0, at + 1); // the last 0 ends it
}

/**
 * The agent's side of {@link encodeRequest}, for tests and fake agents: feed it bytes in any
 * split (it copies what it keeps, so the caller may reuse its buffer); it returns the requests of
 * every complete segment and drops segments that do not decode to one whole frame (or exceed the
 * largest request).
 */
export class RequestDecoder {
  #parts: Uint8Array[] = [];
  #size = 0;
  #discard = false;

  /** Appends `chunk`; returns the requests it completed. */
  push(chunk: Uint8Array): Request[] {
    const out: Request[] = [];
    for (let at = 0; at < chunk.length;) {
      const zero = chunk.indexOf(0, at);
      const end = zero < 0 ? chunk.length : zero;
      if (!this.#discard && end > at) {
        // what is kept for a later call is copied: the caller may reuse its buffer
        this.#parts.push(zero < 0 ? chunk.slice(at, end) : chunk.subarray(at, end));
        this.#size += end - at;
        if (this.#size > MAX_SEGMENT) [this.#parts, this.#size, this.#discard] = [[], 0, true];
      }
      if (zero < 0) break;
      const frame = this.#discard ? null : decodeSegment(concat(this.#parts, this.#size));
      if (frame) out.push(frame);
      this.#parts = [];
      this.#size = 0;
      this.#discard = false;
      at = zero + 1;
    }
    return out;
  }
}

const MAX_SEGMENT = HEADER_SIZE + MAX_PAYLOAD + Math.ceil((HEADER_SIZE + MAX_PAYLOAD) / 254);

function decodeSegment(segment: Uint8Array): Request | null {
  const bytes = new Uint8Array(segment.length);
  let n = 0;
  for (let at = 0; at < segment.length;) {
    const code = segment[at++];
    if (code === 0 || code - 1 > segment.length - at) return null;
    bytes.set(segment.subarray(at, at + code - 1), n);
    n += code - 1;
    at += code - 1;
    if (code < 0xff && at < segment.length) bytes[n++] = 0;
  }
  if (n < HEADER_SIZE) return null;
  const view = new DataView(bytes.buffer);
  const flags = view.getUint16(6);
  const ok = view.getUint32(0) === FRAME_MAGIC && bytes[4] === FRAME_VERSION &&
    (flags & ~FLAG_NEW_SESSION) === 0 && view.getUint32(12) === n - HEADER_SIZE;
  return ok
    ? { type: bytes[5], id: view.getUint32(8), payload: bytes.slice(HEADER_SIZE, n), flags }
    : null;
}

function concat(parts: Uint8Array[], size: number): Uint8Array {
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(size);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

const MAGIC_BYTES = [0x56, 0x4d, 0x46, 0x41];

/**
 * Incremental decoder of plain frames: feed it bytes as they arrive in any split; its work is
 * linear in the bytes received (each payload byte is copied once, into its frame). Bytes that do
 * not start a valid header are skipped up to the next magic (counted in {@link skipped}); a
 * header whose length exceeds {@link MAX_PAYLOAD} is reported as "oversize" and skipped the same
 * way. It holds at most one unfinished frame, so at most {@link MAX_PAYLOAD} + 16 bytes.
 */
export class FrameDecoder {
  #header = new Uint8Array(HEADER_SIZE);
  #have = 0; // header bytes collected
  #frame?: Frame; // the frame whose payload is being filled
  #filled = 0;
  /** Total garbage bytes skipped so far. */
  skipped = 0;

  /** Appends `chunk` and returns every complete frame (and oversize report) now available. */
  push(chunk: Uint8Array): Decoded[] {
    const out: Decoded[] = [];
    this.#feed(chunk, out);
    return out;
  }

  #feed(chunk: Uint8Array, out: Decoded[]): void {
    for (let at = 0; at < chunk.length;) {
      const frame = this.#frame;
      if (frame) {
        const n = Math.min(chunk.length - at, frame.payload.length - this.#filled);
        frame.payload.set(chunk.subarray(at, at + n), this.#filled);
        this.#filled += n;
        at += n;
        if (this.#filled === frame.payload.length) {
          out.push({ kind: "frame", frame });
          this.#frame = undefined;
        }
        continue;
      }
      if (this.#have === 0) { // looking for a magic: skip to the next "V" at native speed
        const next = chunk.indexOf(MAGIC_BYTES[0], at);
        const start = next < 0 ? chunk.length : next;
        this.skipped += start - at;
        if (next < 0) return;
        this.#header[this.#have++] = chunk[start];
        at = start + 1;
        continue;
      }
      const byte = chunk[at++];
      if (this.#have < 4 && byte !== MAGIC_BYTES[this.#have]) {
        // "VMFA" has no repeated prefix: the match restarts at this byte
        this.skipped += this.#have;
        this.#have = 0;
        at--;
        continue;
      }
      this.#header[this.#have++] = byte;
      if (this.#have === HEADER_SIZE) this.#headerDone(out);
    }
  }

  #headerDone(out: Decoded[]): void {
    const h = this.#header, view = new DataView(h.buffer);
    this.#have = 0;
    const type = h[5], id = view.getUint32(8), length = view.getUint32(12);
    const valid = h[4] === FRAME_VERSION && view.getUint16(6) === 0;
    if (valid && length <= MAX_PAYLOAD) {
      const frame = { type, id, payload: new Uint8Array(length) };
      if (length === 0) out.push({ kind: "frame", frame });
      else [this.#frame, this.#filled] = [frame, 0];
      return;
    }
    if (valid) out.push({ kind: "oversize", type, id, length });
    // not a usable header: its magic is skipped and the rest is searched again (no magic can
    // start inside the magic itself)
    this.skipped += 4;
    this.#feed(h.slice(4), out);
  }
}
