/**
 * The daemon's paths for `deno task bench`: `vmfactory serve` runs as a child on the run's
 * configuration, and a client on the host measures `POST /v1/vms` on a pool hit (beside the
 * library's pool clone and the standalone CLI, measured in the same run by the other phases), the
 * CLI through the daemon, a burst of 16 concurrent creates, and the sustained create rate at which
 * p95 stays within 50 ms. Every VM made is destroyed through the API.
 * @module
 */
import { ApiClient } from "../lib/server/api_client.ts";
import type { VmStore } from "../lib/vm/vm_store.ts";
import { type BenchRun, f1, sleep, type Stats, stats } from "./_bench_run.ts";

/** What the daemon phase measured. */
export interface ServeResult {
  /** `POST /v1/vms` client round trip on a pool hit. */
  apiPoolHit: Stats;
  /** The same requests' records' own `timings.totalMs`. */
  apiRecordTotal: Stats;
  /** `vm create --json` spawn → exit with the daemon answering. */
  cliThroughDaemon: Stats;
  /** 16 creates at once: each request's round trip. */
  burst16: Stats;
  /** How many of the burst's VMs were distinct (16 when none was shared or lost). */
  burstDistinct: number;
  /** Per rate tried (creates/s): p95 of the round trips. */
  sustained: { ratePerS: number; p95Ms: number; p50Ms: number; n: number }[];
  /** The highest rate tried whose p95 stayed ≤ 50 ms (0 when none). */
  sustainedRateP95Under50: number;
}

const ROOT = new URL("..", import.meta.url).pathname;

/** Waits until `n` clones are pooled (the daemon's governor refills them), or 60 s pass. */
async function poolHas(store: VmStore, n: number): Promise<void> {
  for (let i = 0; i < 1200 && store.folders(["pooled"]).length < n; i++) await sleep(50);
}

/** Runs the daemon phase; the daemon is stopped (SIGTERM drain) before it returns. */
export async function serveDaemon(
  run: BenchRun,
  store: VmStore,
  opts: { samples: number; poolSize: number; rates: number[]; rateSeconds: number },
): Promise<ServeResult> {
  const socket = `${run.dir}/state/vmfactory.sock`;
  const daemon = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}cmd/main.ts`, "serve", "--config", run.configPath],
    env: { NO_COLOR: "1", VMFACTORY_SOCKET: socket },
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const errText = new Response(daemon.stderr).text();
  const client = new ApiClient(socket, { timeoutMs: 120_000 });
  try {
    for (let i = 0; i < 600 && !(await client.healthy(500).catch(() => false)); i++) {
      await sleep(100);
    }
    await poolHas(store, opts.poolSize);
    const rtt: number[] = [], total: number[] = [];
    for (let i = -1; i < opts.samples; i++) {
      await poolHas(store, opts.poolSize);
      const t0 = performance.now();
      const vm = await client.createVm({});
      const ms = performance.now() - t0;
      await client.destroyVm(vm.id);
      if (i < 0) continue; // the first warms the daemon's and the client's paths
      rtt.push(ms);
      total.push(vm.timings.totalMs);
      run.say(
        `  POST /v1/vms ${i + 1}/${opts.samples}: ${f1(ms)} ms (${vm.source}, record ${
          f1(vm.timings.totalMs)
        } ms)`,
      );
    }

    const cli: number[] = [];
    for (let i = -1; i < Math.min(opts.samples, 6); i++) {
      await poolHas(store, opts.poolSize);
      const t0 = performance.now();
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          `${ROOT}cmd/main.ts`,
          "vm",
          "create",
          "--json",
          "--config",
          run.configPath,
        ],
        env: { NO_COLOR: "1", VMFACTORY_SOCKET: socket },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const ms = performance.now() - t0;
      if (!out.success) {
        throw new Error(`vm create through the daemon: ${new TextDecoder().decode(out.stderr)}`);
      }
      const vm = JSON.parse(new TextDecoder().decode(out.stdout));
      await client.destroyVm(vm.id);
      if (i >= 0) cli.push(ms);
    }
    run.say(`  CLI through the daemon: p50 ${f1(stats(cli).p50)} ms`);

    await poolHas(store, opts.poolSize);
    const burst = await Promise.all(Array.from({ length: 16 }, async () => {
      const t0 = performance.now();
      const vm = await client.createVm({});
      return { ms: performance.now() - t0, id: vm.id };
    }));
    const distinct = new Set(burst.map((b) => b.id)).size;
    await Promise.all(burst.map((b) => client.destroyVm(b.id)));
    run.say(
      `  burst of 16: p95 ${f1(stats(burst.map((b) => b.ms)).p95)} ms, ${distinct} distinct VMs`,
    );

    const sustained: ServeResult["sustained"] = [];
    for (const rate of opts.rates) {
      await poolHas(store, opts.poolSize);
      const n = Math.max(3, Math.round(rate * opts.rateSeconds));
      const samples = await Promise.all(Array.from({ length: n }, async (_, k) => {
        await sleep((k * 1000) / rate);
        const t0 = performance.now();
        const vm = await client.createVm({});
        const ms = performance.now() - t0;
        await client.destroyVm(vm.id);
        return ms;
      }));
      const s = stats(samples);
      sustained.push({ ratePerS: rate, p95Ms: s.p95, p50Ms: s.p50, n });
      run.say(`  ${rate}/s for ${opts.rateSeconds} s: p50 ${f1(s.p50)} ms, p95 ${f1(s.p95)} ms`);
    }
    return {
      apiPoolHit: stats(rtt),
      apiRecordTotal: stats(total),
      cliThroughDaemon: stats(cli),
      burst16: stats(burst.map((b) => b.ms)),
      burstDistinct: distinct,
      sustained,
      sustainedRateP95Under50: Math.max(
        0,
        ...sustained.filter((s) => s.p95Ms <= 50).map((s) => s.ratePerS),
      ),
    };
  } catch (err) {
    try {
      daemon.kill("SIGTERM");
    } catch { /* gone */ }
    throw new Error(`${err instanceof Error ? err.message : err}\n${(await errText).slice(-2000)}`);
  } finally {
    client.close();
    try {
      daemon.kill("SIGTERM");
    } catch { /* gone */ }
    await daemon.status;
  }
}
