/**
 * A `node:stream` Duplex over a `Deno.Conn`, so `node:http2` can run a session on a connection
 * accepted by `Deno.listen` (whose sockets are close-on-exec, unlike `node:net`'s in Deno 2.9: a
 * child process such as QEMU would otherwise inherit every client connection and the listener).
 *
 * Reads are pulled from the connection only while the readable side wants data; a write completes
 * once the kernel took all of its bytes, so the writer sees backpressure. The end of the incoming
 * data ends the outgoing side after pending writes (no half-open connections); destroying the
 * duplex closes the connection. It also tells whether every byte written so far reached the socket.
 * @module
 */

import { Buffer } from "node:buffer";
import { Duplex } from "node:stream";

/** A connection as a Duplex, plus what the server needs to know about its fate. */
export interface ConnDuplex {
  /** The stream to hand to `node:http2` (`server.emit("connection", duplex)`). */
  duplex: Duplex;
  /** Aborts once the connection is closed or failed (client gone, or destroyed here). */
  gone: AbortSignal;
  /**
   * Resolves true once every byte written to `duplex` before this call reached the kernel, false
   * if the connection failed or closed first.
   */
  writesOk(): Promise<boolean>;
}

/** Options of {@link connDuplex}. */
export interface ConnDuplexOptions {
  /** Rewrites incoming data before it is pushed; returns the parts to pass on, in order. */
  incoming?: (chunk: Uint8Array) => Uint8Array[];
  /** Bytes asked of each `conn.read` (default 64 KiB). */
  readSize?: number;
}

/** Wraps `conn`; the duplex owns it from now on and closes it when destroyed. */
export function connDuplex(conn: Deno.Conn, options: ConnDuplexOptions = {}): ConnDuplex {
  const incoming = options.incoming ?? ((chunk) => [chunk]);
  const buffer = new Uint8Array(options.readSize ?? 64 * 1024);
  const gone = new AbortController();
  let written = 0; // bytes the kernel took
  const waiters: { upTo: number; resolve: (ok: boolean) => void }[] = [];
  const settle = () => {
    for (const w of waiters.splice(0)) {
      if (written >= w.upTo) w.resolve(true);
      else if (gone.signal.aborted) w.resolve(false);
      else waiters.push(w);
    }
  };
  const send = async (bytes: Uint8Array, callback: (err?: Error) => void) => {
    try {
      for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
    } catch (err) {
      return callback(err as Error); // destroys the duplex
    }
    written += bytes.length; // and the callback lowers writableLength by as much
    callback();
    settle();
  };

  const duplex: Duplex = new Duplex({
    allowHalfOpen: false,
    // Called again (by the stream) only after a push, and while its buffer is below the mark.
    async read() {
      try {
        for (;;) {
          const n = await conn.read(buffer);
          if (n === null) {
            duplex.push(null);
            return;
          }
          const parts = incoming(buffer.slice(0, n));
          for (const part of parts) {
            duplex.push(Buffer.from(part.buffer, part.byteOffset, part.length));
          }
          if (parts.length > 0) return;
        }
      } catch {
        duplex.destroy(); // reset by the peer, or closed here meanwhile
      }
    },
    write(chunk: Uint8Array, _encoding, callback) {
      void send(chunk, callback);
    },
    writev(chunks: { chunk: Uint8Array }[], callback) {
      void send(Buffer.concat(chunks.map((c) => c.chunk)), callback);
    },
    async final(callback) {
      try {
        await conn.closeWrite();
      } catch { /* the peer is gone already */ }
      callback();
    },
    destroy(err, callback) {
      try {
        conn.close();
      } catch { /* already closed */ }
      gone.abort();
      settle();
      callback(err);
    },
  });
  // Failures are reported through `gone` (the failed write destroys the duplex): nobody has to
  // listen for them, and an unheard 'error' would otherwise throw.
  duplex.on("error", () => {});
  return {
    duplex,
    gone: gone.signal,
    writesOk: () =>
      new Promise((resolve) => {
        // writableLength counts the queued bytes and the ones of the write in progress.
        waiters.push({ upTo: written + duplex.writableLength, resolve });
        settle();
      }),
  };
}
