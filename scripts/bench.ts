/**
 * `deno task bench`: every way to get a VM, measured side by side in one run on this machine
 * (real guest, the built-in default configuration with TCG), and printed as ratios against the
 * targets of DESIGN.md §4 (never asserted). Paths: cold boot (direct factory), plain QEMU
 * full-state restore (the peer a user would pick), template clone spawned on request, template
 * clone from the warm pool (library, CLI, bundled CLI), VMCache fetch; then memory (PSS) and
 * growth (clone time and idle CPU with 1, 10, 25 clones running).
 *
 * Everything lives in one temp folder (config, state, template tmpfs); every process of the run
 * is found by that folder in its command line and killed at the end, also on failure or Ctrl-C.
 * Writes bench-out/bench.json and bench-out/bench.svg; progress goes to stderr, the table to
 * stdout.
 *
 * Usage: scripts/deno task bench [--clones N] [--cold N] [--quick]
 * @module
 */
import { parseArgs } from "node:util";
import { CacheClientFactory } from "../lib/cache/cache_client_factory.ts";
import { startVmCacheServer, type VmCacheServer } from "../lib/cache/vm_cache_server.ts";
import { BUILTIN_DEFAULT_TOML } from "../lib/config/builtin_default.ts";
import { loadConfig } from "../lib/config/load_config.ts";
import { type Settings, settingsFrom } from "../lib/config/settings.ts";
import { type BootPlan, qemuSpecFor, resolveBootPlan } from "../lib/factory/boot_plan.ts";
import { DirectFactory } from "../lib/factory/direct_factory.ts";
import { waitForAgent } from "../lib/guest/agent_client.ts";
import { buildQemuArgs } from "../lib/qemu/qemu_command.ts";
import { pidsWhere, startQemu, stopQemu } from "../lib/qemu/qemu_process.ts";
import { QmpClient, waitForQmpSocket } from "../lib/qemu/qmp_client.ts";
import { TemplateFactory } from "../lib/template/template_factory.ts";
import { fallbackDir, findTemplate } from "../lib/template/template_files.ts";
import { unmountAll } from "../lib/template/tmpfs_mount.ts";
import type { VmRecord } from "../lib/vm/vm_record.ts";
import { cpuTicks, pssMiB, quantile } from "../lib/vm/vm_stats.ts";
import { VmStore } from "../lib/vm/vm_store.ts";
import { benchChart, type ChartRow } from "./_bench_chart.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const OUT_DIR = `${ROOT}bench-out`;

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    clones: { type: "string" },
    cold: { type: "string" },
    quick: { type: "boolean", default: false },
  },
});
const quick = flags.quick;
const count = (v: string | undefined, fallback: number) => {
  const n = v === undefined ? fallback : Number(v);
  if (!Number.isInteger(n) || n < 1) {
    console.error(`bench: expected a positive integer, got ${v}`);
    Deno.exit(2);
  }
  return n;
};
const opts = {
  quick,
  clones: count(flags.clones, quick ? 8 : 20),
  cold: count(flags.cold, quick ? 2 : 3),
  restores: quick ? 4 : 8,
  cacheFetches: quick ? 3 : 6,
  cliRuns: quick ? 3 : 6,
  growthLevels: quick ? [1, 10] : [1, 10, 25],
  growthSamples: quick ? 3 : 5,
  idleSeconds: 3,
  poolSize: 2,
  cacheSize: 2,
};

const start = performance.now();
let interrupted = false;
const stamp = (line: string) =>
  console.error(`[${((performance.now() - start) / 1000).toFixed(1).padStart(6)} s] ${line}`);
/** A progress line; after Ctrl-C it throws instead, which ends the run at the next step. */
const say = (line: string) => {
  if (interrupted) throw new Error("interrupted");
  stamp(line);
};
/** 1-minute load average when each phase started (the machine is shared: read figures with it). */
const loadAtPhase: Record<string, number> = {};
const phase = (name: string) => {
  loadAtPhase[name] = +Deno.loadavg()[0].toFixed(2);
  say(`${name} (load ${loadAtPhase[name]})`);
};
const f1 = (ms: number) => ms.toFixed(1);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** p50/p95/min/max of samples in ms. */
interface Stats {
  n: number;
  p50: number;
  p95: number;
  min: number;
  max: number;
  samplesMs: number[];
}
function stats(samples: number[]): Stats {
  const r = (v: number) => Math.round(v * 10) / 10;
  return {
    n: samples.length,
    p50: r(quantile(samples, 0.5)),
    p95: r(quantile(samples, 0.95)),
    min: r(Math.min(...samples)),
    max: r(Math.max(...samples)),
    samplesMs: samples.map(r),
  };
}
/** p50 of each named phase over several records. */
function phaseP50(records: VmRecord[]): Record<string, number> {
  const names = [...new Set(records.flatMap((r) => Object.keys(r.timings.phases)))];
  return Object.fromEntries(names.map((n) => [
    n,
    quantile(records.map((r) => r.timings.phases[n] ?? 0), 0.5),
  ]));
}

// ---------------------------------------------------------------- environment and cleanup

const dir = await Deno.makeTempDir({ prefix: "vmf-bench-" });
const marker = `${dir}/`;
const configPath = `${dir}/configuration.toml`;
await Deno.writeTextFile(configPath, BUILTIN_DEFAULT_TOML);
await Deno.mkdir(`${dir}/config.d`);

/** Writes the bench drop-in (private paths, TCG, the pool size) and reads the settings back. */
async function configure(poolSize: number): Promise<Settings> {
  await Deno.writeTextFile(
    `${dir}/config.d/50-bench.toml`,
    `[factory]\ntemplate_path = "${dir}/template"\nvm_cache_endpoint = "${dir}/cache.sock"\n` +
      `[vmfactory]\naccel = "tcg"\nstate_dir = "${dir}/state"\npool_size = ${poolSize}\n`,
  );
  return settingsFrom(await loadConfig({ config: configPath, env: {} }), {});
}

/** Pids of processes (other than this one) whose command line mentions the bench folder. */
function ourPids(kind: "qemu" | "other" | "all" = "all"): number[] {
  return pidsWhere((argv) => {
    if (!argv.some((arg) => arg.includes(marker))) return false;
    return kind === "all" || (kind === "qemu") === argv[0].includes("qemu-system");
  });
}

function killAll(pids: number[]): void {
  for (const pid of pids) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch {
      // gone
    }
  }
}

let cacheServer: VmCacheServer | undefined;
let cleaning: Promise<void> | undefined;
/** Kills every process of the run (helpers first: they start QEMUs), unmounts, deletes. */
function cleanup(): Promise<void> {
  return cleaning ??= (async () => {
    await cacheServer?.stop().catch(() => {});
    for (let i = 0; i < 100 && ourPids().length > 0; i++) {
      killAll(ourPids("other"));
      killAll(ourPids("qemu"));
      await sleep(30);
    }
    const left = ourPids();
    if (left.length) console.error(`bench: processes still running: ${left.join(" ")}`);
    await unmountAll(`${dir}/template`).catch((e) => console.error(`bench: ${e.message}`));
    await Deno.remove(fallbackDir(`${dir}/template`), { recursive: true }).catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  })();
}
/** Last sweep, synchronous so that nothing of the run can start between it and the exit. */
function exitNow(code: number): never {
  killAll(ourPids("other"));
  killAll(ourPids("qemu"));
  Deno.exit(code);
}
const onSignal = () => {
  interrupted = true;
  console.error("bench: interrupted, cleaning up");
  cleanup().finally(() => exitNow(130));
};
Deno.addSignalListener("SIGINT", onSignal);
Deno.addSignalListener("SIGTERM", onSignal);

/** Stops a VM the bench owns and removes its folder. */
async function destroyVm(store: VmStore, vm: { pid: number; qmpSocket: string; dir: string }) {
  await stopQemu(vm, { graceMs: 300 });
  await store.remove(vm.dir);
}

/** Idle CPU of `pids` over `seconds`, in % of one core per process (mean) and in total. */
async function idleCpu(pids: number[], seconds: number, tck: number) {
  const before = pids.map(cpuTicks);
  await sleep(seconds * 1000);
  const used = pids.map((p, i) => cpuTicks(p) - before[i]);
  const pct = used.map((t) => 100 * t / tck / seconds);
  const total = pct.reduce((a, b) => a + b, 0);
  return {
    perVmPct: +(total / pids.length).toFixed(2),
    maxPct: +Math.max(...pct).toFixed(2),
    totalPct: +total.toFixed(1),
  };
}

async function clockTicks(): Promise<number> {
  try {
    const out = await new Deno.Command("getconf", { args: ["CLK_TCK"], stdout: "piped" }).output();
    return Number(new TextDecoder().decode(out.stdout).trim()) || 100;
  } catch {
    return 100;
  }
}

// ---------------------------------------------------------------- the paths

/** 1. Cold boots through the direct factory, `conc` at a time; leaves them running. */
async function coldBoots(plan: BootPlan, store: VmStore, n: number, conc: number) {
  const factory = new DirectFactory(plan, store);
  const vms: { record: VmRecord; wallMs: number }[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(conc, n) }, async () => {
    while (next < n) {
      const i = next++;
      const t0 = performance.now();
      const record = await factory.getVm({});
      const wallMs = performance.now() - t0;
      vms.push({ record, wallMs });
      say(`  cold boot ${i + 1}/${n}: ${f1(wallMs)} ms`);
    }
  }));
  return vms;
}

/** Waits until QMP `query-migrate` (outgoing) or `query-status` (incoming) says it is done. */
async function waitMigrated(qmp: QmpClient, incoming: boolean): Promise<string> {
  const deadline = performance.now() + 60_000;
  for (let delay = 1;; delay = Math.min(delay * 2, 10)) {
    if (incoming) {
      const { status } = await qmp.execute<{ status: string }>("query-status");
      if (status !== "inmigrate") return status;
    } else {
      const { status } = await qmp.execute<{ status?: string }>("query-migrate");
      if (status === "completed") return status;
      if (status === "failed" || status === "cancelled") {
        throw new Error(`Cannot save the VM state: migration ${status}`);
      }
    }
    if (performance.now() > deadline) throw new Error("Cannot migrate: still running after 60 s");
    await sleep(delay);
  }
}

/** 2. Plain QEMU full-state restore: save `source` whole, start `n` copies from the file. */
async function plainRestore(plan: BootPlan, store: VmStore, source: VmRecord, n: number) {
  const stateFile = `${dir}/restore-state.bin`;
  const qmp = await QmpClient.connect(source.qmpSocket);
  const t0 = performance.now();
  await qmp.execute("stop");
  await qmp.execute("migrate", { uri: `exec:cat > '${stateFile}'` });
  await waitMigrated(qmp, false);
  const saveMs = performance.now() - t0;
  await stopQemu({ ...source, qmp }, { graceMs: 500 });
  await store.remove(source.dir);
  const stateBytes = Deno.statSync(stateFile).size;
  say(`  saved the whole state: ${(stateBytes / 1e6).toFixed(1)} MB in ${f1(saveMs)} ms`);
  const copies: { pid: number; qmpSocket: string; dir: string }[] = [];
  const samples: number[] = [];
  const phases: Record<string, number>[] = [];
  for (let i = 0; i < n; i++) {
    const paths = await store.allocate();
    const t = performance.now();
    const { pid } = await startQemu(
      buildQemuArgs(qemuSpecFor(plan, paths, { incoming: "defer" })),
      { logFile: `${paths.dir}/qemu.log`, pidFile: paths.pidFile },
    );
    copies.push({ pid, qmpSocket: paths.qmpSocket, dir: paths.dir });
    const q = await waitForQmpSocket(paths.qmpSocket, {
      pid,
      logFile: `${paths.dir}/qemu.log`,
      timeoutMs: 30_000,
    });
    const tQmp = performance.now();
    try {
      await q.execute("migrate-incoming", { uri: `exec:cat '${stateFile}'` });
      const status = await waitMigrated(q, true);
      if (status !== "running") await q.execute("cont");
    } finally {
      q.close();
    }
    const tLoad = performance.now();
    const agent = await waitForAgent(paths.agentSocket, { deadline: Date.now() + 60_000 });
    agent.close();
    const end = performance.now();
    samples.push(end - t);
    phases.push({ qmpMs: tQmp - t, loadMs: tLoad - tQmp, agentMs: end - tLoad });
    say(`  restore ${i + 1}/${n}: ${f1(end - t)} ms (load ${f1(tLoad - tQmp)} ms)`);
  }
  const pss = copies.map((c) => pssMiB([c.pid]));
  await Promise.all(copies.map((c) => destroyVm(store, c)));
  await Deno.remove(stateFile);
  const phaseP50s = Object.fromEntries(
    Object.keys(phases[0]).map((k) => [k, quantile(phases.map((p) => p[k]), 0.5)]),
  );
  return { samples, pss, saveMs, stateBytes, phases: phaseP50s };
}

/** Clones `n` VMs through `factory` (refilling the pool after each, untimed); leaves them up. */
async function clones(factory: TemplateFactory, n: number, label: string, refill: boolean) {
  const out: { record: VmRecord; wallMs: number }[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const record = await factory.getVm({});
    out.push({ record, wallMs: performance.now() - t0 });
    if (record.source !== "template") throw new Error(`Cannot clone: got a ${record.source} VM`);
    if (refill) await factory.refill();
  }
  const walls = out.map((c) => c.wallMs);
  say(`  ${label}: p50 ${f1(quantile(walls, 0.5))} ms, p95 ${f1(quantile(walls, 0.95))} ms`);
  return out;
}

/** Waits until no helper process of the run (e.g. the detached refill of `vm create`) runs. */
async function helpersGone(): Promise<void> {
  for (let i = 0; i < 1200 && ourPids("other").length > 0; i++) await sleep(50);
}

/** 5. `vm create --json` as a subprocess: wall time to the JSON output and to exit. */
async function cliCreate(entry: string, factory: TemplateFactory, store: VmStore, n: number) {
  const env = Object.fromEntries(
    Object.entries(Deno.env.toObject()).filter(([k]) => !k.startsWith("VMFACTORY_")),
  );
  const runs: { toOutputMs: number; toExitMs: number; totalMs: number }[] = [];
  for (let i = -1; i < n; i++) { // run -1 warms Deno's module cache; not counted
    await helpersGone();
    await factory.refill();
    const t0 = performance.now();
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", entry, "vm", "create", "--config", configPath, "--json"],
      cwd: ROOT,
      env: { ...env, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let text = "", toOutputMs = 0, record: VmRecord | undefined;
    const dec = new TextDecoder();
    for await (const chunk of child.stdout) {
      text += dec.decode(chunk, { stream: true });
      try {
        record = JSON.parse(text) as VmRecord;
        toOutputMs = performance.now() - t0;
      } catch {
        // not complete yet
      }
    }
    const stderr = new TextDecoder().decode(await new Response(child.stderr).arrayBuffer());
    const status = await child.status;
    const toExitMs = performance.now() - t0;
    if (!status.success || !record) {
      throw new Error(`Cannot run vm create: exit ${status.code}: ${stderr.trim()}`);
    }
    if (record.source !== "template") throw new Error(`vm create gave a ${record.source} VM`);
    await destroyVm(store, record);
    if (i < 0) continue;
    runs.push({ toOutputMs, toExitMs, totalMs: record.timings.totalMs });
    say(
      `  ${entry.split("/").pop()} ${i + 1}/${n}: output ${f1(toOutputMs)} ms, exit ${
        f1(toExitMs)
      } ms, record ${f1(record.timings.totalMs)} ms`,
    );
  }
  await helpersGone();
  return runs;
}

/** A bare `deno run` of an empty script: the floor under every CLI figure. */
async function bareDeno(n: number): Promise<number[]> {
  const file = `${dir}/empty.ts`;
  await Deno.writeTextFile(file, "\n");
  const out: number[] = [];
  for (let i = -1; i < n; i++) {
    const t0 = performance.now();
    await new Deno.Command(Deno.execPath(), { args: ["run", file], cwd: dir }).output();
    if (i >= 0) out.push(performance.now() - t0);
  }
  return out;
}

/** 6. VMCache: an in-process server over the direct factory; fetches through the client. */
async function vmCache(plan: BootPlan, settings: Settings, n: number, size: number) {
  const stateDir = `${dir}/cache-state`;
  const cacheSettings = { ...settings, enableTemplate: false, vmCacheNumber: size, stateDir };
  const store = new VmStore(stateDir);
  const boots: number[] = []; // the cache's own cold boots (refills, 2 at a time)
  cacheServer = await startVmCacheServer({
    socketPath: cacheSettings.vmCacheEndpoint,
    stateDir,
    size,
    base: (s) => {
      const direct = new DirectFactory(plan, s);
      return {
        kind: direct.kind,
        getVm: async (request) => {
          const record = await direct.getVm(request);
          boots.push(record.timings.totalMs);
          return record;
        },
        status: () => direct.status(),
        close: () => direct.close(),
      };
    },
  });
  const server = cacheServer;
  const full = async () => {
    const deadline = performance.now() + 180_000;
    while (server.cache.cached().length < size) {
      if (performance.now() > deadline) throw new Error("Cannot fill the VMCache in 180 s");
      await sleep(50);
    }
  };
  const client = new CacheClientFactory(cacheSettings, store, { log: say });
  const samples: number[] = [], records: VmRecord[] = [];
  try {
    for (let i = -1; i < n; i++) { // fetch -1 opens the gRPC channel; not counted
      const t = performance.now();
      await full();
      if (i <= 0) say(`  cache full (${size} cold boots) after ${f1(performance.now() - t)} ms`);
      const t0 = performance.now();
      const record = await client.getVm({});
      const ms = performance.now() - t0;
      await destroyVm(store, record);
      if (i < 0) continue;
      samples.push(ms);
      records.push(record);
      say(`  fetch ${i + 1}/${n}: ${f1(ms)} ms (GetBaseVM ${record.timings.phases.fetchMs} ms)`);
    }
  } finally {
    await client.close();
    await server.stop();
    cacheServer = undefined;
  }
  return { samples, rpc: records.map((r) => r.timings.phases.fetchMs), records, boots };
}

// ---------------------------------------------------------------- the run

const host = {
  date: new Date().toISOString(),
  cpus: navigator.hardwareConcurrency,
  kernel: Deno.osRelease(),
  deno: Deno.version.deno,
  qemu: "",
  loadavgAtStart: Deno.loadavg(),
  otherQemuAtStart: 0,
};
try {
  const v = await new Deno.Command("/usr/bin/qemu-system-x86_64", {
    args: ["--version"],
    stdout: "piped",
  }).output();
  host.qemu = new TextDecoder().decode(v.stdout).split("\n")[0];
} catch {
  // reported by the plan below
}
host.otherQemuAtStart = pidsWhere((argv) => argv[0].includes("qemu-system")).length;

let exitCode = 0;
try {
  say(`bench in ${dir} (${quick ? "quick" : "full"}: ${JSON.stringify(opts)})`);
  if (host.otherQemuAtStart) {
    say(`note: ${host.otherQemuAtStart} unrelated QEMU process(es) run on this machine`);
  }
  const tck = await clockTicks();
  const settings0 = await configure(0);
  const store = new VmStore(settings0.stateDir);
  let t = performance.now();
  const plan = await resolveBootPlan(settings0, {
    onProgress: (phase, detail) => say(`  guest: ${phase} ${detail}`),
    onNotice: say,
  });
  const guestBuildMs = performance.now() - t;
  say(`guest ready in ${f1(guestBuildMs)} ms (accel ${plan.accel}, ${plan.memoryMiB} MiB)`);

  phase(`1. cold boot x${opts.cold}, 2 at a time`);
  const cold = await coldBoots(plan, store, opts.cold, 2);
  const coldPss = cold.map((c) => pssMiB([c.record.pid]));
  say(`  PSS per cold VM: ${coldPss.map((p) => p.toFixed(0)).join(", ")} MiB`);
  await Promise.all(cold.slice(1).map((c) => destroyVm(store, c.record)));

  phase(`2. plain QEMU full-state restore x${opts.restores}`);
  const restore = await plainRestore(plan, store, cold[0].record, opts.restores);

  phase("3. template build, then clones spawned on request (pool_size 0)");
  const spawnFactory = new TemplateFactory(settings0, store, { log: say });
  t = performance.now();
  const init = await spawnFactory.init();
  const templateBuildMs = performance.now() - t;
  const template = findTemplate(settings0.templatePath)!;
  const templateFileMiB = Deno.statSync(template.files.memory).blocks! * 512 / 2 ** 20;
  say(
    `  template built in ${f1(templateBuildMs)} ms; state ${
      (init.manifest.stateBytes / 1e6).toFixed(2)
    } MB; memory file ${templateFileMiB.toFixed(0)} MiB resident on ${init.dir}`,
  );
  const spawned = await clones(spawnFactory, opts.clones, "spawned clones", false);
  await Promise.all(spawned.map((c) => destroyVm(store, c.record)));

  phase(`4. clones from the warm pool (pool_size ${opts.poolSize}), refilled after each`);
  const settingsPool = await configure(opts.poolSize);
  const poolFactory = new TemplateFactory(settingsPool, store, { log: say });
  await poolFactory.refill();
  const pooled = await clones(poolFactory, opts.clones, "pool clones", true);

  phase(`7. memory of ${pooled.length} clones + the pool vs cold VMs`);
  const clonePids = pooled.map((c) => c.record.pid);
  const poolPids = ourPids("qemu").filter((p) => !clonePids.includes(p));
  const clonesPss = pssMiB(clonePids), poolPss = pssMiB(poolPids);
  const coldPerVm = quantile(coldPss, 0.5);
  const n = pooled.length;
  const cloneTotal = clonesPss + poolPss;
  const memory = {
    clones: n,
    poolProcesses: poolPids.length,
    clonesPssMiB: +clonesPss.toFixed(1),
    poolPssMiB: +poolPss.toFixed(1),
    templateFileMiB: +templateFileMiB.toFixed(1),
    clonePssPerVmMiB: +(clonesPss / n).toFixed(1),
    coldPssPerVmMiB: +coldPerVm.toFixed(1),
    coldSamplesMiB: coldPss.map((p) => +p.toFixed(1)),
    coldTotalMiB: +(coldPerVm * n).toFixed(1),
    ratio: cloneTotal / (coldPerVm * n),
    ratioWithTemplateFile: (cloneTotal + templateFileMiB) / (coldPerVm * n),
    ratio50: (poolPss + templateFileMiB + 50 * clonesPss / n) / (50 * coldPerVm),
  };
  say(
    `  clones ${clonesPss.toFixed(0)} MiB + pool ${poolPss.toFixed(0)} MiB vs ${n} x ${
      coldPerVm.toFixed(0)
    } MiB cold = ${(100 * memory.ratio).toFixed(1)}%`,
  );
  await Promise.all(pooled.map((c) => destroyVm(store, c.record)));

  phase(`5. the CLI: vm create --json x${opts.cliRuns} (pool_size ${opts.poolSize})`);
  const bare = await bareDeno(3);
  const cli = await cliCreate(`${ROOT}cmd/main.ts`, poolFactory, store, opts.cliRuns);
  const bundlePath = `${ROOT}dist/vmfactory.js`;
  let bundle: typeof cli | undefined;
  try {
    Deno.statSync(bundlePath);
    say(`  the bundle ${bundlePath}`);
    bundle = await cliCreate(bundlePath, poolFactory, store, opts.cliRuns);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
    say("  no dist/vmfactory.js (scripts/deno task bundle makes it): skipped");
  }

  phase(`6. VMCache: server over the direct factory (size ${opts.cacheSize}), fetches`);
  const cache = await vmCache(plan, settingsPool, opts.cacheFetches, opts.cacheSize);

  phase(`8. growth: clones at ${opts.growthLevels.join(", ")} clones running`);
  const running: VmRecord[] = [];
  const growth: {
    running: number;
    idleCpu: Awaited<ReturnType<typeof idleCpu>>;
    pool: Stats;
    spawn: Stats;
  }[] = [];
  for (const level of opts.growthLevels) {
    while (running.length < level) {
      running.push(await poolFactory.getVm({}));
      await poolFactory.refill();
    }
    await sleep(500);
    const idle = await idleCpu(running.map((r) => r.pid), opts.idleSeconds, tck);
    const pool: number[] = [];
    for (let i = 0; i < opts.growthSamples; i++) {
      const t0 = performance.now();
      const vm = await poolFactory.getVm({});
      pool.push(performance.now() - t0);
      await destroyVm(store, vm);
      await poolFactory.refill();
    }
    // empty the pool so that the next clones are spawned on request
    for (let i = 0; i < opts.poolSize; i++) await destroyVm(store, await poolFactory.getVm({}));
    const spawn: number[] = [];
    for (let i = 0; i < opts.growthSamples; i++) {
      const t0 = performance.now();
      const vm = await spawnFactory.getVm({});
      spawn.push(performance.now() - t0);
      await destroyVm(store, vm);
    }
    await poolFactory.refill();
    growth.push({ running: level, idleCpu: idle, pool: stats(pool), spawn: stats(spawn) });
    say(
      `  ${level} running: pool p50 ${f1(quantile(pool, 0.5))} ms, spawn p50 ${
        f1(quantile(spawn, 0.5))
      } ms, idle CPU ${idle.perVmPct}%/VM (${idle.totalPct}% total)`,
    );
  }
  await Promise.all(running.map((r) => destroyVm(store, r)));

  // ---------------------------------------------------------------- report
  const coldS = stats(cold.map((c) => c.wallMs));
  const restoreS = stats(restore.samples);
  const spawnS = stats(spawned.map((c) => c.wallMs));
  const poolS = stats(pooled.map((c) => c.wallMs));
  const cliOut = stats(cli.map((r) => r.toOutputMs));
  const cliExit = stats(cli.map((r) => r.toExitMs));
  const cliRec = stats(cli.map((r) => r.totalMs));
  const bundleOut = bundle && stats(bundle.map((r) => r.toOutputMs));
  const bundleExit = bundle && stats(bundle.map((r) => r.toExitMs));
  const cacheS = stats(cache.samples);
  const rpcS = stats(cache.rpc);
  const cacheBootS = stats(cache.boots);
  const bareS = stats(bare);
  const g = (i: number) => growth[Math.min(i, growth.length - 1)];
  const first = g(0), last = g(growth.length - 1);
  const ratios = {
    coldOverPoolClone: coldS.p50 / poolS.p50,
    coldOverSpawnClone: coldS.p50 / spawnS.p50,
    restoreOverPoolClone: restoreS.p50 / poolS.p50,
    restoreOverSpawnClone: restoreS.p50 / spawnS.p50,
    poolCloneP50Ms: poolS.p50,
    cacheFetchP50Ms: cacheS.p50,
    pssRatio: memory.ratio,
    growthPool: last.pool.p50 / first.pool.p50,
    growthSpawn: last.spawn.p50 / first.spawn.p50,
  };
  const pctS = (r: number) => `${(100 * r).toFixed(1)}%`;
  const x = (r: number) => `${r.toFixed(r < 10 ? 1 : 0)}×`;
  const mark = (ok: boolean) => (ok ? "met" : "MISSED");
  const rows: string[][] = [
    ["path (request → agent answers)", "n", "p50 ms", "p95 ms", "min–max ms", "PSS/VM MiB"],
    [
      "cold boot (direct factory)",
      `${coldS.n}`,
      f1(coldS.p50),
      f1(coldS.p95),
      `${f1(coldS.min)}–${f1(coldS.max)}`,
      coldPerVm.toFixed(0),
    ],
    [
      "plain QEMU full-state restore",
      `${restoreS.n}`,
      f1(restoreS.p50),
      f1(restoreS.p95),
      `${f1(restoreS.min)}–${f1(restoreS.max)}`,
      quantile(restore.pss, 0.5).toFixed(0),
    ],
    [
      "template clone, spawned on request",
      `${spawnS.n}`,
      f1(spawnS.p50),
      f1(spawnS.p95),
      `${f1(spawnS.min)}–${f1(spawnS.max)}`,
      "",
    ],
    [
      "template clone, warm pool (library)",
      `${poolS.n}`,
      f1(poolS.p50),
      f1(poolS.p95),
      `${f1(poolS.min)}–${f1(poolS.max)}`,
      memory.clonePssPerVmMiB.toFixed(0),
    ],
    ["  CLI vm create: to JSON output", `${cliOut.n}`, f1(cliOut.p50), f1(cliOut.p95), "", ""],
    ["  CLI vm create: to exit", `${cliExit.n}`, f1(cliExit.p50), f1(cliExit.p95), "", ""],
    ["  CLI vm create: record totalMs", `${cliRec.n}`, f1(cliRec.p50), f1(cliRec.p95), "", ""],
    ...(bundleOut && bundleExit
      ? [
        [
          "  bundle vm create: to JSON output",
          `${bundleOut.n}`,
          f1(bundleOut.p50),
          f1(bundleOut.p95),
          "",
          "",
        ],
        [
          "  bundle vm create: to exit",
          `${bundleExit.n}`,
          f1(bundleExit.p50),
          f1(bundleExit.p95),
          "",
          "",
        ],
      ]
      : []),
    ["  bare `deno run` of an empty file", `${bareS.n}`, f1(bareS.p50), f1(bareS.p95), "", ""],
    [
      "VMCache fetch (CacheClientFactory.getVm)",
      `${cacheS.n}`,
      f1(cacheS.p50),
      f1(cacheS.p95),
      `${f1(cacheS.min)}–${f1(cacheS.max)}`,
      "",
    ],
    ["  of which GetBaseVM round trip", `${rpcS.n}`, f1(rpcS.p50), f1(rpcS.p95), "", ""],
    [
      "  cold boots inside the VMCache (refills)",
      `${cacheBootS.n}`,
      f1(cacheBootS.p50),
      f1(cacheBootS.p95),
      `${f1(cacheBootS.min)}–${f1(cacheBootS.max)}`,
      "",
    ],
  ];
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const line = (r: string[]) =>
    r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  const out: string[] = [];
  out.push(
    `vmfactory bench (${quick ? "quick" : "full"}), ${host.date}, ${host.cpus} cores, ` +
      `accel ${plan.accel}, ${plan.memoryMiB} MiB guest, ${host.qemu}`,
    `load average at each phase (shared machine, ${host.otherQemuAtStart} unrelated QEMU at ` +
      `start): ${
        Object.entries(loadAtPhase).map(([k, v]) => `${k.split(" ")[0]} ${v}`).join(", ")
      }`,
    "",
    line(rows[0]),
    widths.map((w) => "-".repeat(w)).join("  "),
    ...rows.slice(1).map(line),
    "",
    `template: built in ${f1(templateBuildMs)} ms, state ${
      (init.manifest.stateBytes / 1e6).toFixed(2)
    } MB; plain restore: state ${(restore.stateBytes / 1e6).toFixed(1)} MB, saved in ${
      f1(restore.saveMs)
    } ms`,
    `pool clone phases (p50 ms): ${
      Object.entries(phaseP50(pooled.map((c) => c.record))).map(([k, v]) => `${k} ${v}`).join(
        ", ",
      )
    }`,
    `spawned clone phases (p50 ms): ${
      Object.entries(phaseP50(spawned.map((c) => c.record))).map(([k, v]) => `${k} ${v}`).join(
        ", ",
      )
    }`,
    `CLI: a user scripting \`vm create\` pays Deno start-up + module load; the library figures do not.`,
    "",
    `memory (PSS): ${n} clones ${memory.clonesPssMiB} MiB + ${memory.poolProcesses} pool ` +
      `processes ${memory.poolPssMiB} MiB = ${cloneTotal.toFixed(0)} MiB vs ${n} cold × ` +
      `${coldPerVm.toFixed(0)} MiB = ${memory.coldTotalMiB.toFixed(0)} MiB (cold measured on ` +
      `${coldPss.length} VMs, multiplied): ${pctS(memory.ratio)}`,
    `  + the template memory file (${templateFileMiB.toFixed(0)} MiB on tmpfs, counted once): ` +
      `${pctS(memory.ratioWithTemplateFile)}; extrapolated to 50 clones (per-clone PSS as ` +
      `measured, template file included): ${pctS(memory.ratio50)}`,
    "",
    "growth (clones running → p50/p95 ms of the next clone; idle CPU of the running clones " +
      `over ${opts.idleSeconds} s)`,
    ...growth.map((gr) =>
      `  ${String(gr.running).padStart(3)} running: pool ${f1(gr.pool.p50)}/${
        f1(gr.pool.p95)
      }, spawned ${f1(gr.spawn.p50)}/${f1(gr.spawn.p95)}; idle CPU ${gr.idleCpu.perVmPct}% ` +
      `of a core per clone (max ${gr.idleCpu.maxPct}%, total ${gr.idleCpu.totalPct}%)`
    ),
    "",
    "ratios vs DESIGN.md §4 targets",
    `  cold / pool clone p50        ${x(ratios.coldOverPoolClone).padStart(7)}  ` +
      `target ≥ 50×      ${mark(ratios.coldOverPoolClone >= 50)}  (spawned: ${
        x(ratios.coldOverSpawnClone)
      })`,
    `  pool clone p50               ${(f1(poolS.p50) + " ms").padStart(9)}  ` +
      `target ≤ 40 ms  ${mark(poolS.p50 <= 40)}`,
    `  restore / pool clone p50     ${x(ratios.restoreOverPoolClone).padStart(7)}  ` +
      `target ≥ 10×      ${mark(ratios.restoreOverPoolClone >= 10)}  (spawned: ${
        x(ratios.restoreOverSpawnClone)
      })`,
    `  VMCache fetch p50            ${(f1(cacheS.p50) + " ms").padStart(9)}  ` +
      `target ≤ 5 ms   ${mark(cacheS.p50 <= 5)}  (GetBaseVM alone ${f1(rpcS.p50)} ms)`,
    `  PSS clones / cold            ${pctS(ratios.pssRatio).padStart(7)}  ` +
      `target ≤ 20%      ${mark(ratios.pssRatio <= 0.2)}  (50 extrapolated: ${
        pctS(memory.ratio50)
      })`,
    `  growth p50 at ${last.running} / at ${first.running}        ${
      x(ratios.growthPool).padStart(7)
    }  target flat      (pool; spawned ${x(ratios.growthSpawn)})`,
  );
  await Deno.mkdir(OUT_DIR, { recursive: true });
  const json = {
    host,
    options: opts,
    guestBuildMs,
    templateBuildMs,
    template: { stateBytes: init.manifest.stateBytes, memoryFileMiB: templateFileMiB },
    paths: {
      cold: { ...coldS, pssMiB: coldPss, phasesP50: phaseP50(cold.map((c) => c.record)) },
      plainRestore: {
        ...restoreS,
        pssMiB: restore.pss,
        stateBytes: restore.stateBytes,
        saveMs: restore.saveMs,
        phasesP50: restore.phases,
      },
      cloneSpawned: { ...spawnS, phasesP50: phaseP50(spawned.map((c) => c.record)) },
      clonePool: { ...poolS, phasesP50: phaseP50(pooled.map((c) => c.record)) },
      cli: { toOutput: cliOut, toExit: cliExit, recordTotal: cliRec, runs: cli },
      bundle: bundle && { toOutput: bundleOut, toExit: bundleExit, runs: bundle },
      bareDenoRun: bareS,
      cacheFetch: { ...cacheS, getBaseVm: rpcS, phasesP50: phaseP50(cache.records) },
      coldInsideCache: cacheBootS,
    },
    loadAtPhase,
    memory,
    growth,
    ratios,
  };
  await Deno.writeTextFile(`${OUT_DIR}/bench.json`, JSON.stringify(json, null, 2) + "\n");
  const chartRows: ChartRow[] = [
    { label: "cold boot", ...coldS, samples: coldS.samplesMs },
    { label: "plain QEMU restore", ...restoreS, samples: restoreS.samplesMs },
    { label: "clone, spawned on request", ...spawnS, samples: spawnS.samplesMs },
    { label: "clone, warm pool (library)", ...poolS, samples: poolS.samplesMs },
    { label: "CLI vm create (to exit)", ...cliExit, samples: cliExit.samplesMs },
    ...(bundleExit
      ? [{ label: "bundle vm create (to exit)", ...bundleExit, samples: bundleExit.samplesMs }]
      : []),
    { label: "VMCache fetch", ...cacheS, samples: cacheS.samplesMs },
    { label: "cold boot inside the VMCache", ...cacheBootS, samples: cacheBootS.samplesMs },
    ...growth.flatMap((gr) => [
      { label: `pool clone, ${gr.running} running`, ...gr.pool, samples: gr.pool.samplesMs },
      { label: `spawned clone, ${gr.running} running`, ...gr.spawn, samples: gr.spawn.samplesMs },
    ]),
  ];
  await Deno.writeTextFile(
    `${OUT_DIR}/bench.svg`,
    benchChart(`vmfactory: request → agent answers (${host.date.slice(0, 10)})`, chartRows, [
      { ms: 5, label: "cache 5 ms" },
      { ms: 40, label: "clone 40 ms" },
    ]),
  );
  console.log(out.join("\n"));
  console.log(`\nwrote ${OUT_DIR}/bench.json and ${OUT_DIR}/bench.svg`);
} catch (err) {
  if (!interrupted) {
    console.error(`bench failed: ${err instanceof Error ? err.stack ?? err.message : err}`);
  }
  exitCode = 1;
} finally {
  stamp("cleaning up");
  await cleanup();
  stamp(`done (${ourPids().length} processes of the run left)`);
}
exitNow(interrupted ? 130 : exitCode);
