/**
 * VMCache fetch vs cold boot, side by side in one run (real guest, TCG). Starts `factory init`
 * (vm_cache_number = 4) as a subprocess, then from this process: `GetBaseVM` → the agent answers
 * a ping ("fetch"), and the whole take-over of `vm create` (CacheClientFactory.getVm: fetch, clock,
 * hostname, record). Fetches only hit ready VMs (it waits for the refill between rounds). Ends with
 * cold boots through the direct factory. Usage: scripts/deno run -A scripts/bench_vm_cache.ts
 * @module
 */
import { CacheClient } from "../lib/cache/cache_client.ts";
import { CacheClientFactory, parseHandOff } from "../lib/cache/cache_client_factory.ts";
import { resolveBootPlan } from "../lib/factory/boot_plan.ts";
import { DirectFactory } from "../lib/factory/direct_factory.ts";
import { AgentClient } from "../lib/guest/agent_client.ts";
import { stopQemu } from "../lib/qemu/qemu_process.ts";
import { ROOT, vmEnv } from "../test/_vm_env.ts";

const SIZE = 4, ROUNDS = 3, COLD = 2;
await using env = await vmEnv({ enableTemplate: false, vmCacheNumber: SIZE });
const server = new Deno.Command(Deno.execPath(), {
  args: ["run", "-A", `${ROOT}cmd/main.ts`, "factory", "init", "--config", env.configPath],
  stdout: "null",
  stderr: "null",
}).spawn();
const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))];
const fmt = (xs: number[]) =>
  `p50 ${pct(xs, 0.5).toFixed(1)} ms, p95 ${pct(xs, 0.95).toFixed(1)} ms (n=${xs.length})`;
try {
  const socket = env.settings.vmCacheEndpoint;
  let client: CacheClient | undefined;
  const full = async () => {
    while (true) {
      try {
        client ??= await CacheClient.connect(socket);
        if ((await client.status()).vms.length >= SIZE) return;
      } catch {
        // not up yet
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  const rpcMs: number[] = [], fetchMs: number[] = [], takeOverMs: number[] = [];
  const factory = new CacheClientFactory(env.settings, env.store, { log: () => {} });
  await full();
  await factory.getVm({}); // warms the factory's channel (its first call loads nothing new)
  for (let round = 0; round < ROUNDS; round++) {
    await full();
    for (let i = 0; i < SIZE / 2; i++) {
      const t0 = performance.now();
      const info = parseHandOff((await client!.getBaseVM()).hypervisor);
      rpcMs.push(performance.now() - t0);
      const agent = await AgentClient.connect(info.agentSocket);
      await agent.ping();
      fetchMs.push(performance.now() - t0);
      agent.close();
      const t1 = performance.now();
      await factory.getVm({});
      takeOverMs.push(performance.now() - t1);
    }
  }
  client?.close();
  await factory.close();
  server.kill("SIGTERM");
  await server.status;
  const plan = await resolveBootPlan(env.settings);
  const coldMs: number[] = [];
  for (let i = 0; i < COLD; i++) {
    const t0 = performance.now();
    await new DirectFactory(plan, env.store).getVm({});
    coldMs.push(performance.now() - t0);
  }
  console.log(`GetBaseVM round trip alone:                      ${fmt(rpcMs)}`);
  console.log(`VMCache fetch (GetBaseVM → agent ping answered): ${fmt(fetchMs)}`);
  console.log(`VMCache take-over (CacheClientFactory.getVm):    ${fmt(takeOverMs)}`);
  console.log(`cold boot (DirectFactory.getVm):                 ${fmt(coldMs)}`);
  console.log(`cold / fetch p50: ${(pct(coldMs, 0.5) / pct(fetchMs, 0.5)).toFixed(0)}×`);
} finally {
  try {
    server.kill("SIGKILL");
  } catch {
    // exited
  }
  for (const { record } of await env.store.list()) {
    await stopQemu({ pid: record.pid, qmpSocket: record.qmpSocket }, { graceMs: 300 });
  }
}
