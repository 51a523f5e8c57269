/**
 * Soak and latency tool for the VMCache gRPC layer (used by test/grpc_soak_test.ts).
 *
 *   grpc_soak.ts server <socket> [maxTakeDelayMs]
 *       Serves fake VMs (given-back VMs are re-queued; take() waits 0..maxTakeDelayMs ms, default 3;
 *       every 25th take about 40 times longer). Prints `READY <pid>`, then
 *       `BACK <id>` per VM given back, and on Quit `STATS {"taken":n,"back":n}` before exiting.
 *   grpc_soak.ts client <socket> <calls> <concurrency> <fresh|reuse>
 *       Makes GetBaseVM calls (a new client per call, or one shared channel), prints `GOT <id>`
 *       per VM, then `LAT p50 p95` (ms per call) and `DONE`.
 *   grpc_soak.ts bench <socket>
 *       Prints latency of fresh vs reused clients against a running server, and of the first call.
 * @module
 */

import { CacheClient } from "../lib/cache/cache_client.ts";
import type { CacheVm } from "../lib/cache/cache_vm_source.ts";

const [mode, socketPath, ...rest] = Deno.args;

if (mode === "server") await server(Number(rest[0] ?? 3));
else if (mode === "client") await client(Number(rest[0]), Number(rest[1]), rest[2] === "fresh");
else if (mode === "bench") await bench();
else {
  console.error("usage: grpc_soak.ts server|client|bench <socket> ...");
  Deno.exit(2);
}

async function server(maxTakeDelayMs: number): Promise<void> {
  const { startCacheServer } = await import("../lib/cache/cache_server.ts");
  const pool: CacheVm[] = [];
  let made = 0, taken = 0, back = 0;
  const hypervisor = new TextEncoder().encode(JSON.stringify({ qmp: "/run/x/qmp.sock" }));
  const handle = await startCacheServer({
    socketPath,
    source: {
      async take() {
        // The delay ignores `signal` on purpose: a VM that becomes ready just as its client dies
        // must come back through giveBack.
        // Every 25th take is slow (about 40x) so that kills often land while a take is pending.
        const ms = maxTakeDelayMs * (made % 25 === 0 ? 40 + Math.random() * 10 : Math.random());
        if (ms) await new Promise((r) => setTimeout(r, ms));
        taken++;
        return pool.shift() ?? { id: `vm-${made++}`, hypervisor, cpu: 1, memory: 256, pid: 1 };
      },
      status: () => pool.map((vm) => ({ pid: vm.pid, cpu: vm.cpu, memory: vm.memory })),
      config: () => ({ data: new Uint8Array([1]), agentConfig: new Uint8Array([2]) }),
      giveBack(vm) {
        back++;
        pool.push(vm);
        console.log(`BACK ${vm.id}`);
      },
    },
  });
  handle.onQuit(() => console.log(`STATS ${JSON.stringify({ taken, back })}`));
  console.log(`READY ${Deno.pid}`);
  await handle.closed;
}

async function client(calls: number, concurrency: number, fresh: boolean): Promise<void> {
  const shared = fresh ? undefined : await CacheClient.connect(socketPath, { timeoutMs: 20_000 });
  const times: number[] = [];
  let next = 0;
  const worker = async () => {
    while (next < calls) {
      next++;
      const t0 = performance.now();
      const c = shared ?? await CacheClient.connect(socketPath, { timeoutMs: 20_000 });
      try {
        const vm = await c.getBaseVM();
        times.push(performance.now() - t0);
        console.log(`GOT ${vm.id}`);
      } finally {
        if (!shared) c.close();
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  shared?.close();
  times.sort((a, b) => a - b);
  const pct = (p: number) => times[Math.min(times.length - 1, Math.floor(times.length * p))];
  console.log(`LAT ${pct(0.5).toFixed(2)} ${pct(0.95).toFixed(2)}`);
  console.log("DONE");
}

async function bench(): Promise<void> {
  // the client is imported statically above: time the first fetch-based call's set-up instead
  const t0 = performance.now();
  const first = await CacheClient.connect(socketPath);
  await first.getBaseVM();
  first.close();
  const importMs = performance.now() - t0;
  const run = async (fresh: boolean, n: number) => {
    const shared = fresh ? undefined : await CacheClient.connect(socketPath);
    const times: number[] = [];
    for (let i = 0; i < n; i++) {
      const s = performance.now();
      const c = shared ?? await CacheClient.connect(socketPath);
      await c.getBaseVM();
      if (!shared) c.close();
      times.push(performance.now() - s);
    }
    shared?.close();
    times.sort((a, b) => a - b);
    return [0.5, 0.95].map((p) => times[Math.floor(times.length * p)]);
  };
  await run(true, 20); // warm up
  const [fresh, reuse] = [await run(true, 300), await run(false, 300)];
  console.log(`first call of the process (connect + GetBaseVM): ${importMs.toFixed(1)} ms`);
  console.log(
    `GetBaseVM fresh client  p50 ${fresh[0].toFixed(2)} ms  p95 ${fresh[1].toFixed(2)} ms`,
  );
  console.log(
    `GetBaseVM reused client p50 ${reuse[0].toFixed(2)} ms  p95 ${reuse[1].toFixed(2)} ms`,
  );
  console.log(`fresh / reused p50 ratio: ${(fresh[0] / reuse[0]).toFixed(1)}x`);
}
