/**
 * The workaround for denoland/deno#36788, in one place: checked on Deno 2.9.6 (x86_64 Linux).
 *
 * Deno's `node:http2` aborts the whole process inside nghttp2 (`find_stream_on_goaway_func`) while
 * it processes a GOAWAY frame, and every grpc-js client sends one when it closes its channel.
 *
 * - Server side, {@link GoawayFilter} drops the GOAWAY frames a client sends before nghttp2 sees
 *   them. That is harmless for a server: the client opens no new stream after it and closes the
 *   socket once its calls are done, which ends the session. The server itself never sends GOAWAY
 *   (it ends a connection by closing its socket).
 * - Client side there is nothing to work around: the VMCache client speaks HTTP/2 itself
 *   (`_h2_connection.ts`), not through `node:http2`, and never sends GOAWAY.
 *
 * Once a Deno release fixes the issue, delete this file and its use in `cache_server.ts`.
 * @module
 */

const PREFACE_LENGTH = 24; // "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
const FRAME_HEADER_LENGTH = 9;
const GOAWAY = 0x7;

/** Streams HTTP/2 frames through, dropping GOAWAY frames; does not buffer frame payloads. */
export class GoawayFilter {
  #preface = PREFACE_LENGTH;
  #header = new Uint8Array(FRAME_HEADER_LENGTH);
  #headerFill = 0;
  #payloadLeft = 0;
  #dropping = false;

  /** Returns the parts of `chunk` to forward, in order. */
  push(chunk: Uint8Array): Uint8Array[] {
    const out: Uint8Array[] = [];
    let at = 0;
    while (at < chunk.length) {
      if (this.#preface > 0) {
        const n = Math.min(this.#preface, chunk.length - at);
        out.push(chunk.subarray(at, at + n));
        this.#preface -= n;
        at += n;
      } else if (this.#payloadLeft > 0) {
        const n = Math.min(this.#payloadLeft, chunk.length - at);
        if (!this.#dropping) out.push(chunk.subarray(at, at + n));
        this.#payloadLeft -= n;
        at += n;
      } else {
        const n = Math.min(FRAME_HEADER_LENGTH - this.#headerFill, chunk.length - at);
        this.#header.set(chunk.subarray(at, at + n), this.#headerFill);
        this.#headerFill += n;
        at += n;
        if (this.#headerFill < FRAME_HEADER_LENGTH) continue;
        const h = this.#header;
        this.#headerFill = 0;
        this.#payloadLeft = (h[0] << 16) | (h[1] << 8) | h[2];
        this.#dropping = h[3] === GOAWAY;
        if (!this.#dropping) out.push(h.slice());
      }
    }
    return out;
  }
}
