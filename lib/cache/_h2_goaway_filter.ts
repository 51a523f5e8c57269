/**
 * Feeds a client connection to a `node:http2` server session without the client's GOAWAY frames.
 *
 * Deno 2.9's `node:http2` aborts the process inside nghttp2 (`find_stream_on_goaway_func`,
 * denoland/deno#36788) while it processes a GOAWAY, which every grpc-js client sends when it closes
 * its channel. Dropping that frame is harmless for a server: the client opens no new stream after
 * it and closes the socket once its calls are done, which ends the session. The wrapper also tracks
 * its writes, so the server can tell whether a reply reached the socket before the client died.
 * @module
 */

import type { Socket } from "node:net";
import { Duplex } from "node:stream";

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

/** A client connection fed to `node:http2` through a {@link GoawayFilter}. */
export interface FilteredConnection {
  /** Pass to `http2Server.emit("connection", …)`; destroying it closes the socket. */
  duplex: Duplex;
  /** Aborts when the socket closes or fails. */
  gone: AbortSignal;
  /** Resolves true once every write issued so far reached the kernel, false if one failed. */
  writesOk(): Promise<boolean>;
}

/** Wraps an accepted client socket: reads pass through a {@link GoawayFilter}, writes are tracked. */
export function filterConnection(socket: Socket): FilteredConnection {
  const filter = new GoawayFilter();
  const goneController = new AbortController();
  let issued = 0, completed = 0, firstFailure = Infinity;
  const waiters: { upTo: number; resolve: (ok: boolean) => void }[] = [];
  const settle = () => {
    for (const w of waiters.splice(0)) {
      if (firstFailure <= w.upTo) w.resolve(false);
      else if (completed >= w.upTo) w.resolve(true);
      else if (goneController.signal.aborted) w.resolve(false);
      else waiters.push(w);
    }
  };
  const duplex = new Duplex({
    // The socket is never paused, so a client's death is seen at once; HTTP/2 flow control bounds
    // what a client can send ahead.
    read() {},
    write(chunk: Uint8Array, _encoding, callback) {
      const seq = ++issued;
      socket.write(chunk, (err) => {
        completed = Math.max(completed, seq);
        if (err) firstFailure = Math.min(firstFailure, seq);
        settle();
      });
      callback(); // never hold nghttp2 back; failures surface through writesOk and gone
    },
    final(callback) {
      socket.end();
      callback();
    },
    destroy(err, callback) {
      socket.destroy();
      callback(err);
    },
  });
  socket.on("data", (chunk: Uint8Array) => {
    for (const part of filter.push(chunk)) duplex.push(part);
  });
  socket.on("end", () => duplex.push(null));
  const onGone = () => {
    goneController.abort();
    settle();
    duplex.destroy();
  };
  socket.on("close", onGone);
  socket.on("error", onGone);
  return {
    duplex,
    gone: goneController.signal,
    writesOk: () =>
      new Promise((resolve) => {
        waiters.push({ upTo: issued, resolve });
        settle();
      }),
  };
}
