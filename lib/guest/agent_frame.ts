/**
 * Framing of the guest agent protocol (the C agent in agent.c speaks the same).
 *
 * A frame is a 16-byte big-endian header: u32 magic "VMFA", u8 version (1), u8 type, u16 flags
 * (0), u32 request id, u32 payload length; then the payload (at most {@link MAX_PAYLOAD} bytes).
 * Requests carry an {@link Op}; every answer carries the request's id and a {@link Reply} type.
 * @module
 */

/** "VMFA" as a big-endian u32. */
export const FRAME_MAGIC = 0x564d4641;
/** Protocol version carried in every header. */
export const FRAME_VERSION = 1;
/** Bytes in a frame header. */
export const HEADER_SIZE = 16;
/** Largest payload either side accepts (1 MiB). */
export const MAX_PAYLOAD = 1 << 20;

/** Request types (host -> guest). */
export const Op = {
  ping: 1,
  info: 2,
  exec: 3,
  setClock: 4,
  seedRng: 5,
  setHostname: 6,
  setBootId: 7,
  onlineHotplugged: 8,
} as const;

/** Answer types (guest -> host). */
export const Reply = {
  result: 0x80,
  stdout: 0x81,
  stderr: 0x82,
  exit: 0x83,
  error: 0xff,
} as const;

/** One decoded frame. */
export interface Frame {
  type: number;
  id: number;
  payload: Uint8Array;
}

/** What {@link FrameDecoder.push} yields: a frame, or a header announcing a too-large payload. */
export type Decoded =
  | { kind: "frame"; frame: Frame }
  | { kind: "oversize"; type: number; id: number; length: number };

/** Encodes one frame; throws a RangeError when the payload exceeds {@link MAX_PAYLOAD}. */
export function encodeFrame(type: number, id: number, payload: Uint8Array = new Uint8Array()) {
  if (payload.length > MAX_PAYLOAD) {
    throw new RangeError(`frame payload of ${payload.length} bytes exceeds ${MAX_PAYLOAD}`);
  }
  const out = new Uint8Array(HEADER_SIZE + payload.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, FRAME_MAGIC);
  view.setUint8(4, FRAME_VERSION);
  view.setUint8(5, type);
  view.setUint32(8, id >>> 0);
  view.setUint32(12, payload.length);
  out.set(payload, HEADER_SIZE);
  return out;
}

const MAGIC_BYTES = [0x56, 0x4d, 0x46, 0x41];

/**
 * Incremental decoder: feed it bytes as they arrive in any split. Bytes that do not start a
 * valid header are skipped up to the next magic (counted in {@link skipped}); a header whose
 * length exceeds {@link MAX_PAYLOAD} is reported as "oversize" and skipped the same way.
 */
export class FrameDecoder {
  #buf = new Uint8Array(0);
  /** Total garbage bytes skipped so far. */
  skipped = 0;

  /** Appends `chunk` and returns every complete frame (and oversize report) now available. */
  push(chunk: Uint8Array): Decoded[] {
    const buf = new Uint8Array(this.#buf.length + chunk.length);
    buf.set(this.#buf);
    buf.set(chunk, this.#buf.length);
    const view = new DataView(buf.buffer);
    const out: Decoded[] = [];
    let off = 0;
    while (buf.length - off >= HEADER_SIZE) {
      if (
        view.getUint32(off) !== FRAME_MAGIC || buf[off + 4] !== FRAME_VERSION ||
        view.getUint16(off + 6) !== 0
      ) {
        const next = findMagic(buf, off + 1);
        this.skipped += next - off;
        off = next;
        continue;
      }
      const type = buf[off + 5], id = view.getUint32(off + 8), length = view.getUint32(off + 12);
      if (length > MAX_PAYLOAD) {
        out.push({ kind: "oversize", type, id, length });
        off += HEADER_SIZE;
        continue;
      }
      if (buf.length - off < HEADER_SIZE + length) break;
      const payload = buf.slice(off + HEADER_SIZE, off + HEADER_SIZE + length);
      out.push({ kind: "frame", frame: { type, id, payload } });
      off += HEADER_SIZE + length;
    }
    this.#buf = buf.slice(off);
    return out;
  }
}

/** Index of the next possible magic at or after `from`; keeps a partial magic at the end. */
function findMagic(buf: Uint8Array, from: number): number {
  for (let i = from; i < buf.length; i++) {
    let match = true;
    for (let k = 0; k < 4 && i + k < buf.length; k++) {
      if (buf[i + k] !== MAGIC_BYTES[k]) {
        match = false;
        break;
      }
    }
    if (match) return i;
  }
  return buf.length;
}
