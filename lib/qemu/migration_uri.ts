/**
 * Migration channels a sandboxed QEMU can use: it may not spawn a program (`exec:` is gone) and
 * QEMU 7.2 has no `file:` URI. A clone reads the state from a file descriptor it inherited
 * (`fd:N`: for `migrate-incoming`, QEMU 7.2 takes a number); a template writes it to a Unix socket
 * this process listens on (for `migrate`, `fd:` only takes a name registered with `getfd`, which
 * needs SCM_RIGHTS that Deno cannot send), see {@link receiveMigration}.
 * @module
 */
import { errorMessage, VmfactoryError } from "../errors.ts";

/** `migrate-incoming` URI that reads the stream from the inherited file descriptor `fd`. */
export function loadFromFdUri(fd: number): string {
  if (!Number.isInteger(fd) || fd < 3) throw new RangeError(`not a passed file descriptor: ${fd}`);
  return `fd:${fd}`;
}

/**
 * `migrate` URI that connects to the Unix socket `path`. A relative path is looked up in QEMU's
 * working directory (which is how a QEMU that switched user reaches a folder of root's).
 */
export function saveToSocketUri(path: string): string {
  if (path.includes(",") || path === "") throw new RangeError(`bad socket path: ${path}`);
  return `unix:${path}`;
}

/** A migration stream being received (see {@link receiveMigration}). */
export interface MigrationReceiver {
  /** Resolves with the bytes written once QEMU has sent the stream and closed the socket. */
  done: Promise<number>;
  /** Stops listening (idempotent); an unfinished stream rejects `done`. */
  close(): void;
}

/**
 * Listens on the Unix socket `socketPath` (made connectable by any user: the folder is what
 * restricts it) for one connection, and writes what it sends to a new file `outFile` (mode 0600).
 * Start it before QMP `migrate` with {@link saveToSocketUri}.
 */
export function receiveMigration(socketPath: string, outFile: string): MigrationReceiver {
  const listener = Deno.listen({ transport: "unix", path: socketPath });
  Deno.chmodSync(socketPath, 0o666);
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    listener.close();
  };
  const done = (async () => {
    try {
      const conn = await listener.accept();
      close(); // one stream only
      using file = await Deno.open(outFile, { write: true, createNew: true, mode: 0o600 });
      let bytes = 0;
      const buffer = new Uint8Array(256 * 1024);
      try {
        for (let n; (n = await conn.read(buffer)) !== null;) {
          for (let at = 0; at < n;) at += await file.write(buffer.subarray(at, n));
          bytes += n;
        }
      } finally {
        conn.close();
      }
      return bytes;
    } catch (err) {
      throw new VmfactoryError("receive the migration stream", errorMessage(err), { cause: err });
    } finally {
      close();
    }
  })();
  done.catch(() => {}); // the caller awaits it; an abandoned receiver must not be unhandled
  return { done, close };
}
