/**
 * The bench's measured paths, one function each, every one timing request → guest agent answers
 * (or the path's own end point) and returning its statistics: cold boot, plain QEMU full-state
 * restore, QEMU's start-up floor, the template build, template clones spawned on request and from
 * the warm pool, the CLI and the bundle, a bare `deno run`, VMCache fetches, memory (PSS) and
 * growth. Each path stops the VMs it started unless it says it leaves them running.
 * @module
 */
import { startVmCacheServer } from "../lib/cache/vm_cache_server.ts";
import { VmCacheFetchSource } from "../lib/cache/vmcache_source.ts";
import type { Settings } from "../lib/config/settings.ts";
import { type BootPlan, qemuSpecFor } from "../lib/factory/boot_plan.ts";
import { DirectSource } from "../lib/factory/direct_source.ts";
import { workloadOptions } from "../lib/factory/factory_for.ts";
import { VmFactory } from "../lib/factory/vm_factory.ts";
import type { VmRequest } from "../lib/factory/vm_source.ts";
import { waitForAgent } from "../lib/guest/agent_client.ts";
import { buildQemuArgs } from "../lib/qemu/qemu_command.ts";
import { connectQmp, FIRST_PASSED_FD, startQemu, stopQemu } from "../lib/qemu/qemu_process.ts";
import { QmpClient } from "../lib/qemu/qmp_client.ts";
import { loadFromFdUri, receiveMigration, saveToSocketUri } from "../lib/qemu/migration_uri.ts";
import { TemplateManager } from "../lib/template/template_manager.ts";
import { findTemplate } from "../lib/template/template_files.ts";
import type { VmRecord } from "../lib/vm/vm_record.ts";
import { cpuTicks, pssMiB, quantile } from "../lib/vm/vm_stats.ts";
import { type PendingVm, processOf, VmStore } from "../lib/vm/vm_store.ts";
import { type BenchRun, destroyVm, f1, phaseP50, sleep, type Stats, stats } from "./_bench_run.ts";

/** How much the run measures (the CLI flags and `--quick` set it). */
export interface BenchOptions {
  /** Short run. */
  quick: boolean;
  /** Clones per clone path (and for the memory figure). */
  clones: number;
  /** Cold boots. */
  cold: number;
  /** Plain restores (and QEMU start-up floor samples). */
  restores: number;
  /** VMCache fetches. */
  cacheFetches: number;
  /** `vm create` runs per CLI entry point. */
  cliRuns: number;
  /** Numbers of running clones the growth path measures at. */
  growthLevels: number[];
  /** Clones timed per growth level and kind. */
  growthSamples: number;
  /** Seconds the idle CPU is measured over. */
  idleSeconds: number;
  /** Warm pool size. */
  poolSize: number;
  /** VMCache size. */
  cacheSize: number;
}

/** Cold boots: statistics, PSS of each VM, phases. */
export interface ColdResult extends Stats {
  /** PSS of each cold VM, MiB. */
  pssMiB: number[];
  /** p50 of each phase of the records. */
  phasesP50: Record<string, number>;
}

/**
 * Cold boots through the direct factory, `conc` at a time. Stops all but the first, which it
 * returns running as `kept` (the plain restore saves it).
 */
export async function coldBoot(
  run: BenchRun,
  plan: BootPlan,
  store: VmStore,
  n: number,
  conc: number,
): Promise<{ result: ColdResult; kept: VmRecord }> {
  const factory = new VmFactory(new DirectSource(plan, store));
  const vms: { record: VmRecord; wallMs: number }[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(conc, n) }, async () => {
    while (next < n) {
      const i = next++;
      const t0 = performance.now();
      const record = await factory.getVm({});
      const wallMs = performance.now() - t0;
      vms.push({ record, wallMs });
      run.say(`  cold boot ${i + 1}/${n}: ${f1(wallMs)} ms`);
    }
  }));
  const pss = vms.map((c) => pssMiB([c.record.pid]));
  run.say(`  PSS per cold VM: ${pss.map((p) => p.toFixed(0)).join(", ")} MiB`);
  await Promise.all(vms.slice(1).map((c) => destroyVm(store, c.record)));
  const result = {
    ...stats(vms.map((c) => c.wallMs)),
    pssMiB: pss,
    phasesP50: phaseP50(vms.map((c) => c.record)),
  };
  return { result, kept: vms[0].record };
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

/** Plain QEMU full-state restore: statistics, PSS, the state file, phases. */
export interface RestoreResult extends Stats {
  /** PSS of each restored VM, MiB. */
  pssMiB: number[];
  /** Size of the saved state. */
  stateBytes: number;
  /** Time to save the state. */
  saveMs: number;
  /** p50 of QEMU start → QMP (`qmpMs`), state load (`loadMs`), agent (`agentMs`). */
  phasesP50: Record<string, number>;
}

/**
 * Plain QEMU full-state restore, the peer a user without a factory would pick: saves `source`
 * whole (then stops it), starts `n` copies from the file one after the other.
 */
export async function plainRestore(
  run: BenchRun,
  plan: BootPlan,
  store: VmStore,
  source: VmRecord,
  n: number,
): Promise<RestoreResult> {
  const stateFile = `${run.dir}/restore-state.bin`;
  const qmp = await QmpClient.connect(source.qmpSocket);
  // the sandboxed QEMU (perhaps another user) sends the stream to a socket of ours
  const saveDir = await Deno.makeTempDir({ prefix: "vmf-bench-save-" });
  Deno.chmodSync(saveDir, 0o711);
  const receiver = receiveMigration(`${saveDir}/s.sock`, stateFile);
  const t0 = performance.now();
  await qmp.execute("stop");
  await qmp.execute("migrate", { uri: saveToSocketUri(`${saveDir}/s.sock`) });
  await waitMigrated(qmp, false);
  await receiver.done;
  const saveMs = performance.now() - t0;
  receiver.close();
  await Deno.remove(saveDir, { recursive: true });
  await stopQemu({ process: processOf(source), qmpSocket: source.qmpSocket, qmp }, {
    graceMs: 500,
  });
  await store.remove(source.id, ["owned"]);
  const stateBytes = Deno.statSync(stateFile).size;
  run.say(`  saved the whole state: ${(stateBytes / 1e6).toFixed(1)} MB in ${f1(saveMs)} ms`);
  const copies: PendingVm[] = [];
  const samples: number[] = [];
  const phases: Record<string, number>[] = [];
  for (let i = 0; i < n; i++) {
    const copy = await store.allocate();
    const { paths } = copy;
    copies.push(copy);
    const t = performance.now();
    const process = copy.process = await startQemu(
      buildQemuArgs(qemuSpecFor(plan, paths, { incoming: "defer" })),
      { logFile: `${paths.dir}/qemu.log`, pidFile: paths.pidFile, passFiles: [stateFile] },
    );
    const q = await connectQmp(paths.qmpSocket, {
      process,
      logFile: `${paths.dir}/qemu.log`,
      timeoutMs: 30_000,
    });
    const tQmp = performance.now();
    try {
      await q.execute("migrate-incoming", { uri: loadFromFdUri(FIRST_PASSED_FD) });
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
    run.say(`  restore ${i + 1}/${n}: ${f1(end - t)} ms (load ${f1(tLoad - tQmp)} ms)`);
  }
  const pss = copies.map((c) => pssMiB([c.process!.pid]));
  await Promise.all(copies.map((c) => c.dispose()));
  await Deno.remove(stateFile);
  const phasesP50 = Object.fromEntries(
    Object.keys(phases[0]).map((k) => [k, quantile(phases.map((p) => p[k]), 0.5)]),
  );
  return { ...stats(samples), pssMiB: pss, stateBytes, saveMs, phasesP50 };
}

/**
 * QEMU's start-up floor: spawn → `qmp_capabilities` answered, `n` times, for the plan's QEMU
 * binary with no guest at all (`-machine none`): what any QEMU process costs before it does work.
 */
export async function qemuFloor(
  run: BenchRun,
  plan: BootPlan,
  store: VmStore,
  n: number,
): Promise<Stats> {
  const samples: number[] = [];
  for (let i = -1; i < n; i++) { // start -1 warms the page cache; not counted
    await using pending = await store.allocate();
    const { paths } = pending;
    const logFile = `${paths.dir}/qemu.log`;
    const argv = [
      plan.qemuPath,
      ...["-machine", "none", "-nodefaults", "-no-user-config", "-display", "none"],
      ...["-qmp", `unix:${paths.qmpSocket},server=on,wait=off`, "-name", `vmf-${paths.id}`],
    ];
    const t0 = performance.now();
    const process = pending.process = await startQemu(argv, { logFile, pidFile: paths.pidFile });
    const qmp = await connectQmp(paths.qmpSocket, { process, logFile, timeoutMs: 30_000 });
    const ms = performance.now() - t0;
    await stopQemu({ process, qmpSocket: paths.qmpSocket, qmp }, { graceMs: 300 });
    if (i >= 0) samples.push(ms);
  }
  const s = stats(samples);
  run.say(`  QEMU start-up floor: p50 ${f1(s.p50)} ms, p95 ${f1(s.p95)} ms`);
  return s;
}

/** A template manager and the one factory over its source, as the bench drives them. */
export interface TemplateKit {
  /** The template's manager (init, refill). */
  manager: TemplateManager;
  /** The one factory over the template (strict: never a cold boot). */
  factory: VmFactory;
  /** A clone of the template (strict: never a cold boot). */
  getVm(request: VmRequest): Promise<VmRecord>;
  /** Tops the pool up to the settings' size. */
  refill(): Promise<number>;
}

/** The kit of the template of `settings`. */
export function templateKit(
  settings: Settings,
  store: VmStore,
  log: (line: string) => void,
): TemplateKit {
  const manager = new TemplateManager(settings, store, { log });
  const factory = new VmFactory(manager.source(), {
    strict: true,
    log,
    workload: workloadOptions(settings, store, log),
  });
  return { manager, factory, getVm: (r) => factory.getVm(r), refill: () => manager.refill() };
}

/** The template build: the factory that spawns clones on request, and the template's figures. */
export interface TemplateResult {
  /** The kit the template was built with (its settings' pool size). */
  factory: TemplateKit;
  /** Time of `init()`. */
  buildMs: number;
  /** Size of the saved device state. */
  stateBytes: number;
  /** Resident size of the memory file on tmpfs, MiB. */
  memoryFileMiB: number;
}

/** Builds the template through `TemplateManager.init()` with `settings`. */
export async function buildTemplate(
  run: BenchRun,
  settings: Settings,
  store: VmStore,
): Promise<TemplateResult> {
  const factory = templateKit(settings, store, run.say);
  const t = performance.now();
  const init = await factory.manager.init();
  const buildMs = performance.now() - t;
  const template = findTemplate(settings.templatePath)!;
  const memoryFileMiB = Deno.statSync(template.files.memory).blocks! * 512 / 2 ** 20;
  const stateBytes = init.manifest.stateBytes;
  run.say(
    `  template built in ${f1(buildMs)} ms; state ${(stateBytes / 1e6).toFixed(2)} MB; ` +
      `memory file ${memoryFileMiB.toFixed(0)} MiB resident on ${init.dir}`,
  );
  return { factory, buildMs, stateBytes, memoryFileMiB };
}

/** Clone statistics with the p50 of each phase of the records. */
export interface CloneResult extends Stats {
  /** p50 of each phase of the records. */
  phasesP50: Record<string, number>;
}

/**
 * Clones `n` VMs through `factory` (refilling the pool after each, untimed); leaves them up. One
 * more clone first, untimed and destroyed, runs this process's code of the path once (V8 compiles
 * it lazily: the first call of a path in a process costs several ms more).
 */
async function clones(
  run: BenchRun,
  factory: TemplateKit,
  n: number,
  label: string,
  refill: boolean,
): Promise<{ result: CloneResult; records: VmRecord[] }> {
  const out: { record: VmRecord; wallMs: number }[] = [];
  await destroyVm(factory.manager.store, await factory.getVm({}));
  if (refill) await factory.refill();
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const record = await factory.getVm({});
    out.push({ record, wallMs: performance.now() - t0 });
    if (record.source !== "template") throw new Error(`Cannot clone: got a ${record.source} VM`);
    if (refill) await factory.refill();
  }
  const walls = out.map((c) => c.wallMs);
  run.say(`  ${label}: p50 ${f1(quantile(walls, 0.5))} ms, p95 ${f1(quantile(walls, 0.95))} ms`);
  const records = out.map((c) => c.record);
  return { result: { ...stats(walls), phasesP50: phaseP50(records) }, records };
}

/** Template clones spawned on request (a factory with pool_size 0), one at a time; stops them. */
export async function spawnedClones(
  run: BenchRun,
  factory: TemplateKit,
  store: VmStore,
  n: number,
): Promise<CloneResult> {
  const { result, records } = await clones(run, factory, n, "spawned clones", false);
  await Promise.all(records.map((r) => destroyVm(store, r)));
  return result;
}

/** Template clones from the warm pool, refilled after each (untimed); leaves them running. */
export function poolClones(
  run: BenchRun,
  factory: TemplateKit,
  n: number,
): Promise<{ result: CloneResult; records: VmRecord[] }> {
  return clones(run, factory, n, "pool clones", true);
}

/** Memory of the running clones and the pool against cold VMs (PSS, MiB). */
export interface MemoryResult {
  /** Clones measured. */
  clones: number;
  /** QEMU processes of the pool. */
  poolProcesses: number;
  /** Sum of the clones' PSS. */
  clonesPssMiB: number;
  /** Sum of the pool processes' PSS. */
  poolPssMiB: number;
  /** Resident size of the template memory file on tmpfs. */
  templateFileMiB: number;
  /** Clones' PSS per clone. */
  clonePssPerVmMiB: number;
  /** Median PSS of a cold VM. */
  coldPssPerVmMiB: number;
  /** PSS of each cold VM. */
  coldSamplesMiB: number[];
  /** `clones` cold VMs: the median multiplied. */
  coldTotalMiB: number;
  /** (clones + pool) ÷ cold total. */
  ratio: number;
  /** (clones + pool + template file) ÷ cold total. */
  ratioWithTemplateFile: number;
  /** The same extrapolated to 50 clones with the per-clone PSS as measured. */
  ratio50: number;
  /** Idle clones that fit in 16 GiB of host memory by PSS, the template file counted once. */
  clonesIn16GiB: number;
}

/**
 * Memory (PSS) of `clones` and of the pool (every other QEMU of the run) against cold VMs of
 * `coldPss` MiB; the template memory file is counted once.
 */
export function memoryPss(
  run: BenchRun,
  clones: VmRecord[],
  coldPss: number[],
  templateFileMiB: number,
): MemoryResult {
  const clonePids = clones.map((c) => c.pid);
  const poolPids = run.ourPids("qemu").map((p) => p.pid).filter((p) => !clonePids.includes(p));
  const clonesPss = pssMiB(clonePids), poolPss = pssMiB(poolPids);
  const coldPerVm = quantile(coldPss, 0.5);
  const n = clones.length;
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
    clonesIn16GiB: Math.floor((16 * 1024 - templateFileMiB) / (clonesPss / n)),
  };
  run.say(
    `  clones ${clonesPss.toFixed(0)} MiB + pool ${poolPss.toFixed(0)} MiB vs ${n} x ${
      coldPerVm.toFixed(0)
    } MiB cold = ${(100 * memory.ratio).toFixed(1)}%`,
  );
  return memory;
}

/** One `vm create --json` run of the CLI. */
export interface CliRun {
  /** Spawn → the JSON record on stdout. */
  toOutputMs: number;
  /** Spawn → exit. */
  toExitMs: number;
  /** The record's own `timings.totalMs`. */
  totalMs: number;
}

/** `vm create --json` runs of one entry point. */
export interface CliResult {
  /** Spawn → JSON output. */
  toOutput: Stats;
  /** Spawn → exit. */
  toExit: Stats;
  /** The records' `timings.totalMs`. */
  recordTotal: Stats;
  /** Every run. */
  runs: CliRun[];
}

/**
 * `vm create --json` of `entry` (cmd/main.ts or the bundle) as a subprocess, `n` times with the
 * pool refilled before each (one more run first warms Deno's module cache); stops the VMs.
 */
export async function cliCreate(
  run: BenchRun,
  entry: string,
  root: string,
  factory: TemplateKit,
  store: VmStore,
  n: number,
): Promise<CliResult> {
  const env = Object.fromEntries(
    Object.entries(Deno.env.toObject()).filter(([k]) => !k.startsWith("VMFACTORY_")),
  );
  const runs: CliRun[] = [];
  for (let i = -1; i < n; i++) { // run -1 warms Deno's module cache; not counted
    await run.helpersGone();
    await factory.refill();
    const t0 = performance.now();
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", entry, "vm", "create", "--config", run.configPath, "--json"],
      cwd: root,
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
    run.say(
      `  ${entry.split("/").pop()} ${i + 1}/${n}: output ${f1(toOutputMs)} ms, exit ${
        f1(toExitMs)
      } ms, record ${f1(record.timings.totalMs)} ms`,
    );
  }
  await run.helpersGone();
  return {
    toOutput: stats(runs.map((r) => r.toOutputMs)),
    toExit: stats(runs.map((r) => r.toExitMs)),
    recordTotal: stats(runs.map((r) => r.totalMs)),
    runs,
  };
}

/** A bare `deno run` of an empty script, `n` times (after one uncounted): the CLI's floor. */
export async function bareDeno(run: BenchRun, n: number): Promise<Stats> {
  const file = `${run.dir}/empty.ts`;
  await Deno.writeTextFile(file, "\n");
  const out: number[] = [];
  for (let i = -1; i < n; i++) {
    const t0 = performance.now();
    await new Deno.Command(Deno.execPath(), { args: ["run", file], cwd: run.dir }).output();
    if (i >= 0) out.push(performance.now() - t0);
  }
  return stats(out);
}

/** VMCache fetches, and the cold boots the cache did to fill itself. */
export interface CacheResult {
  /** A VMCache-fetch factory's `getVm` with the GetBaseVM round trip and the records' phases. */
  cacheFetch: Stats & { getBaseVm: Stats; phasesP50: Record<string, number> };
  /** The cache's own cold boots (refills, 2 at a time). */
  coldInsideCache: Stats;
}

/**
 * VMCache: an in-process server of `size` VMs over the direct factory, `n` fetches through the
 * client, each once the cache is full again (one more fetch first opens the gRPC channel).
 */
export async function vmCacheFetch(
  run: BenchRun,
  plan: BootPlan,
  settings: Settings,
  n: number,
  size: number,
): Promise<CacheResult> {
  const stateDir = `${run.dir}/cache-state`;
  const cacheSettings = { ...settings, enableTemplate: false, vmCacheNumber: size, stateDir };
  const store = new VmStore(stateDir);
  const boots: number[] = [];
  const server = run.cacheServer = await startVmCacheServer({
    socketPath: cacheSettings.vmCacheEndpoint,
    stateDir,
    size,
    base: (s) => {
      const direct = new DirectSource(plan, s);
      return {
        kind: direct.kind,
        prepare: async (request) => {
          const supply = await direct.prepare(request);
          return {
            shape: supply.shape,
            acquire: async (want, timer) => {
              const t0 = performance.now();
              const vm = await supply.acquire(want, timer);
              boots.push(performance.now() - t0);
              return vm;
            },
          };
        },
      };
    },
  });
  const full = async () => {
    const deadline = performance.now() + 180_000;
    while (server.cache.cached().length < size) {
      if (performance.now() > deadline) throw new Error("Cannot fill the VMCache in 180 s");
      await sleep(50);
    }
  };
  const client = new VmFactory(new VmCacheFetchSource(cacheSettings, store, { log: run.say }));
  const samples: number[] = [], records: VmRecord[] = [];
  try {
    for (let i = -1; i < n; i++) { // fetch -1 opens the gRPC channel; not counted
      const t = performance.now();
      await full();
      if (i <= 0) {
        run.say(`  cache full (${size} cold boots) after ${f1(performance.now() - t)} ms`);
      }
      const t0 = performance.now();
      const record = await client.getVm({});
      const ms = performance.now() - t0;
      await destroyVm(store, record);
      if (i < 0) continue;
      samples.push(ms);
      records.push(record);
      run.say(
        `  fetch ${i + 1}/${n}: ${f1(ms)} ms (GetBaseVM ${record.timings.phases.fetchMs} ms)`,
      );
    }
  } finally {
    await client.close();
    await server.stop();
    run.cacheServer = undefined;
  }
  return {
    cacheFetch: {
      ...stats(samples),
      getBaseVm: stats(records.map((r) => r.timings.phases.fetchMs)),
      phasesP50: phaseP50(records),
    },
    coldInsideCache: stats(boots),
  };
}

/** Idle CPU of the running clones over a few seconds, in % of one core. */
export interface IdleCpu {
  /** Mean per clone. */
  perVmPct: number;
  /** The busiest clone. */
  maxPct: number;
  /** All clones together. */
  totalPct: number;
}

/** Idle CPU of `pids` over `seconds` (`tck` clock ticks per second). */
async function idleCpu(pids: number[], seconds: number, tck: number): Promise<IdleCpu> {
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

/** The kernel's clock ticks per second (`getconf CLK_TCK`), 100 when unknown. */
export async function clockTicks(): Promise<number> {
  try {
    const out = await new Deno.Command("getconf", { args: ["CLK_TCK"], stdout: "piped" }).output();
    return Number(new TextDecoder().decode(out.stdout).trim()) || 100;
  } catch {
    return 100;
  }
}

/** One growth level: idle CPU of the running clones and the next clone's time. */
export interface GrowthLevel {
  /** Clones running. */
  running: number;
  /** Their idle CPU. */
  idleCpu: IdleCpu;
  /** The next clone from the warm pool. */
  pool: Stats;
  /** The next clone spawned on request. */
  spawn: Stats;
}

/**
 * Growth: with 1, 10, … clones running (`opts.growthLevels`), their idle CPU and the time of the
 * next clone from the pool and spawned on request; stops every clone it started.
 */
export async function growth(
  run: BenchRun,
  poolFactory: TemplateKit,
  spawnFactory: TemplateKit,
  store: VmStore,
  opts: BenchOptions,
): Promise<GrowthLevel[]> {
  const tck = await clockTicks();
  const running: VmRecord[] = [];
  const levels: GrowthLevel[] = [];
  for (const level of opts.growthLevels) {
    while (running.length < level) {
      running.push(await poolFactory.getVm({}));
      await poolFactory.refill();
    }
    await sleep(500);
    const idle = await idleCpu(running.map((r) => r.pid), opts.idleSeconds, tck);
    /** `growthSamples` clones from `kit`, each timed, destroyed, then `after()` (untimed). */
    const sample = async (kit: TemplateKit, after: () => Promise<unknown>) => {
      const ms: number[] = [];
      for (let i = 0; i < opts.growthSamples; i++) {
        const t0 = performance.now();
        const vm = await kit.getVm({});
        ms.push(performance.now() - t0);
        await destroyVm(store, vm);
        await after();
      }
      return ms;
    };
    const pool = await sample(poolFactory, () => poolFactory.refill());
    // empty the pool so that the next clones are spawned on request
    for (let i = 0; i < opts.poolSize; i++) await destroyVm(store, await poolFactory.getVm({}));
    const spawn = await sample(spawnFactory, () => Promise.resolve());
    await poolFactory.refill();
    levels.push({ running: level, idleCpu: idle, pool: stats(pool), spawn: stats(spawn) });
    run.say(
      `  ${level} running: pool p50 ${f1(quantile(pool, 0.5))} ms, spawn p50 ${
        f1(quantile(spawn, 0.5))
      } ms, idle CPU ${idle.perVmPct}%/VM (${idle.totalPct}% total)`,
    );
  }
  await Promise.all(running.map((r) => destroyVm(store, r)));
  return levels;
}
