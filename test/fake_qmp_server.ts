/**
 * A scripted QMP server on a Unix socket for unit tests of the QMP client (no QEMU needed).
 * @module
 */

/** A command the fake server read from the client. */
export interface FakeCommand {
  /** The command name. */
  execute: string;
  /** Its arguments, if any. */
  arguments?: Record<string, unknown>;
  /** The client's id. */
  id: number;
}

/** The server's side of one client connection, driven by the test script. */
export interface FakePeer {
  /** Writes raw text (a JSON object per line, or anything else) in one write. */
  sendRaw(text: string): Promise<void>;
  /** Writes objects, one JSON line each, in one write. */
  send(...messages: unknown[]): Promise<void>;
  /** Sends QEMU 7.2's greeting. */
  greet(): Promise<void>;
  /** Reads the next command line from the client. */
  read(): Promise<FakeCommand>;
  /** Greets, reads `qmp_capabilities` and answers it. */
  handshake(): Promise<void>;
  /** Closes the connection abruptly. */
  close(): void;
}

/** QEMU 7.2's greeting. */
export const GREETING = {
  QMP: {
    version: { qemu: { micro: 22, minor: 2, major: 7 }, package: "Debian 1:7.2" },
    capabilities: ["oob"],
  },
};

/**
 * Listens on `<dir>/qmp.sock`, runs `script` for the first client, and resolves `done` when the
 * script has finished. `stop()` closes everything and removes `dir`.
 */
export async function startFakeQmp(script: (peer: FakePeer) => Promise<void>): Promise<{
  path: string;
  done: Promise<void>;
  stop: () => Promise<void>;
}> {
  const dir = await Deno.makeTempDir({ prefix: "vmf-fakeqmp-" });
  const path = `${dir}/qmp.sock`;
  const listener = Deno.listen({ transport: "unix", path });
  let conn: Deno.UnixConn | undefined;
  const done = (async () => {
    conn = await listener.accept();
    const c = conn;
    const encoder = new TextEncoder();
    const decoder = new TextDecoder();
    const buffer = new Uint8Array(4096);
    let pending = "";
    const peer: FakePeer = {
      async sendRaw(text) {
        await c.write(encoder.encode(text));
      },
      send(...messages) {
        return peer.sendRaw(messages.map((m) => JSON.stringify(m) + "\n").join(""));
      },
      greet() {
        return peer.send(GREETING);
      },
      async read() {
        while (!pending.includes("\n")) {
          const n = await c.read(buffer);
          if (n === null) throw new Error("client closed");
          pending += decoder.decode(buffer.subarray(0, n));
        }
        const line = pending.slice(0, pending.indexOf("\n"));
        pending = pending.slice(line.length + 1);
        return JSON.parse(line);
      },
      async handshake() {
        await peer.greet();
        const caps = await peer.read();
        await peer.send({ return: {}, id: caps.id });
      },
      close() {
        c.close();
      },
    };
    await script(peer);
  })();
  const stop = async () => {
    try {
      conn?.close();
    } catch {
      // closed by the script
    }
    listener.close();
    await done.catch(() => {});
    await Deno.remove(dir, { recursive: true });
  };
  return { path, done, stop };
}
