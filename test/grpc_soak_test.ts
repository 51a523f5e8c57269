/**
 * Abuse test of the VMCache gRPC layer: the server runs in a subprocess (so a native abort is a
 * failure here, not a dead test runner) and must survive thousands of calls, concurrent clients,
 * clients killed -9 mid-call and long-lived channels closed after 1,000+ calls. Every VM must reach
 * exactly one surviving caller or come back through giveBack.
 */

import assert from "node:assert/strict";
import { CacheClient } from "../lib/cache/cache_client.ts";

const SCRIPT = new URL("../scripts/grpc_soak.ts", import.meta.url).pathname;
const CONFIG = new URL("../deno.json", import.meta.url).pathname;

/** A subprocess whose stdout lines are collected as they arrive. */
class Proc {
  readonly child: Deno.ChildProcess;
  readonly lines: string[] = [];
  readonly done: Promise<Deno.CommandStatus>;
  #waiters: (() => void)[] = [];

  constructor(args: string[]) {
    this.child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--config", CONFIG, SCRIPT, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stdout = this.#read(this.child.stdout);
    const stderr = new Response(this.child.stderr).text();
    this.done = Promise.all([stdout, stderr, this.child.status]).then(([, err, status]) => {
      this.stderr = err;
      return status;
    });
  }

  stderr = "";

  async #read(stream: ReadableStream<Uint8Array>): Promise<void> {
    let rest = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      const parts = (rest + chunk).split("\n");
      rest = parts.pop()!;
      this.lines.push(...parts);
      for (const w of this.#waiters.splice(0)) w();
    }
  }

  /** Waits until `pred` holds on the lines so far, or fails after `ms`. */
  async until(pred: (lines: string[]) => boolean, ms: number, what: string): Promise<void> {
    const deadline = Date.now() + ms;
    while (!pred(this.lines)) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; stderr: ${this.stderr}`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        new Promise<void>((r) => this.#waiters.push(r)),
        new Promise<void>((r) => timer = setTimeout(r, Math.min(left, 200))),
      ]);
      clearTimeout(timer);
    }
  }

  kill(): void {
    try {
      this.child.kill("SIGKILL");
    } catch { /* already exited */ }
  }

  count(prefix: string): string[] {
    return this.lines.filter((l) => l.startsWith(prefix)).map((l) => l.slice(prefix.length));
  }
}

Deno.test({
  name: "VMCache gRPC server survives soak, concurrency, kill -9 and long channels",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = Deno.makeTempDirSync({ prefix: "vmf-grpc-soak-" });
    const socket = `${dir}/run/cache.sock`;
    const server = new Proc(["server", socket]);
    const clients: Proc[] = [];
    const killed = new Set<Proc>();
    const spawnClient = (calls: number, conc: number, fresh: boolean) => {
      const p = new Proc([
        "client",
        socket,
        String(calls),
        String(conc),
        fresh ? "fresh" : "reuse",
      ]);
      clients.push(p);
      return p;
    };
    const finish = async (p: Proc) => {
      const status = await p.done;
      assert.equal(status.code, 0, `client failed: ${p.stderr}`);
      assert.ok(p.lines.includes("DONE"));
    };
    try {
      await server.until((l) => l.some((x) => x.startsWith("READY")), 20_000, "server READY");

      // 1. Long-lived channels: 2 x 1,100 calls each on one channel, then close.
      await Promise.all([spawnClient(1100, 4, false), spawnClient(1100, 2, false)].map(finish));

      // 2. Many short sessions: 300 fresh clients in a row, one call each (the server aborted
      //    after ~20 of these before it filtered GOAWAY).
      await finish(spawnClient(300, 1, true));

      // 3. Concurrent clients: 8 x 60 calls, half with a fresh client per call.
      await Promise.all(
        Array.from({ length: 8 }, (_, i) => spawnClient(60, 2, i % 2 === 0)).map(finish),
      );

      // 4. Clients killed -9 with calls in flight, in two rounds of 5.
      for (let round = 0; round < 2; round++) {
        const victims = Array.from({ length: 5 }, (_, i) => spawnClient(1e6, 4, i % 2 === 0));
        await Promise.all(
          victims.map((p) =>
            p.until(
              (l) => l.filter((x) => x.startsWith("GOT ")).length >= 15 + 10 * round,
              20_000,
              "GOTs",
            )
          ),
        );
        for (const p of victims) {
          p.kill();
          killed.add(p);
        }
        await Promise.all(victims.map((p) => p.done));
      }

      // 5. After the abuse: still alive and answering, with fresh and reused clients.
      await finish(spawnClient(300, 2, false));
      const client = await CacheClient.connect(socket, { timeoutMs: 10_000 });
      try {
        const status = await client.status();
        assert.equal(status.pid, Number(server.count("READY ")[0]));
        await client.quit();
      } finally {
        client.close();
      }
      const serverStatus = await server.done;
      assert.equal(serverStatus.code, 0, `server died: ${serverStatus.signal} ${server.stderr}`);

      // Accounting: every VM reached at most one surviving caller; none vanished.
      const stats = JSON.parse(server.count("STATS ")[0]) as { taken: number; back: number };
      const survivorIds = clients.filter((p) => !killed.has(p)).flatMap((p) => p.count("GOT "));
      assert.equal(new Set(survivorIds).size, survivorIds.length, "a VM reached two callers");
      const allGot = clients.reduce((n, p) => n + p.count("GOT ").length, 0);
      const unaccounted = stats.taken - stats.back - allGot;
      assert.ok(unaccounted >= 0, `more VMs received (${allGot}) than handed out`);
      assert.ok(unaccounted <= killed.size * 4, `${unaccounted} VMs lost`);
      assert.ok(!Deno.statSync(dir + "/run").isFile);
      assert.throws(() => Deno.statSync(socket), Deno.errors.NotFound);
      console.log(
        `calls ${allGot}, taken ${stats.taken}, given back ${stats.back}, ` +
          `clients killed ${killed.size}, in flight at kill ${unaccounted}`,
      );
    } finally {
      for (const p of [...clients, server]) p.kill();
      await Promise.allSettled([...clients, server].map((p) => p.done));
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
