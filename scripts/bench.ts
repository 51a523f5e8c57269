/**
 * `deno task bench`: every way to get a VM, measured side by side in one run on this machine
 * (real guest, the built-in default configuration with TCG), and printed as ratios against the
 * targets of docs/performance.md (never asserted). In run order: cold boot (direct factory),
 * plain QEMU full-state restore (the peer a user would pick), QEMU's start-up floor, template
 * clones spawned on request, template clones from the warm pool (library), their memory (PSS),
 * the CLI and bundled CLI, VMCache fetches, growth (clone time and idle CPU with 1, 10, 50, 100
 * clones running), workloads (`run -- true` without and with an image and a network, image
 * conversion), the daemon (`POST /v1/vms`, a burst of 16, the sustained rate) and the linter
 * (one file and the Kata corpus).
 *
 * The paths are in bench_paths.ts, the targets in bench_targets.ts, the report in
 * _bench_report.ts. Everything lives in one temp folder (config, state, template tmpfs); every
 * process of the run is found by that folder in its command line and killed at the end, also on
 * failure or Ctrl-C. Writes bench-out/bench.json and bench-out/bench.svg; progress goes to
 * stderr, the table to stdout.
 *
 * Usage: scripts/deno task bench [--clones N] [--cold N] [--quick]
 * @module
 */
import { DEFAULT_QEMU_PATH } from "../lib/config/builtin_default.ts";
import { parseArgs } from "node:util";
import { resolveBootPlan } from "../lib/factory/boot_plan.ts";
import { processesWhere } from "../lib/process_identity.ts";
import { VmStore } from "../lib/vm/vm_store.ts";
import { BenchRun, destroyVm, f1 } from "./_bench_run.ts";
import { serveDaemon } from "./bench_serve.ts";
import { workloads } from "./bench_workloads.ts";
import { lintRuns } from "./bench_lint.ts";
import { type HostInfo, reportText, withRatios, writeReport } from "./_bench_report.ts";
import {
  bareDeno,
  type BenchOptions,
  buildTemplate,
  cliCreate,
  type CliResult,
  coldBoot,
  growth,
  memoryPss,
  plainRestore,
  poolClones,
  qemuFloor,
  spawnedClones,
  templateKit,
  vmCacheFetch,
} from "./bench_paths.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const OUT_DIR = `${ROOT}bench-out`;

/** The options from the command line; exits 2 on a bad count. */
function benchOptions(args: string[]): BenchOptions {
  const { values: flags } = parseArgs({
    args,
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
  return {
    quick,
    clones: count(flags.clones, quick ? 8 : 20),
    cold: count(flags.cold, quick ? 2 : 3),
    restores: quick ? 4 : 8,
    cacheFetches: quick ? 3 : 6,
    cliRuns: quick ? 3 : 6,
    growthLevels: quick ? [1, 10] : [1, 10, 50, 100],
    growthSamples: quick ? 3 : 10,
    idleSeconds: 3,
    poolSize: 2,
    cacheSize: 2,
  };
}

/** This machine, and how busy it is with others' QEMUs. */
async function hostInfo(): Promise<HostInfo> {
  let qemu = "";
  try {
    const v = await new Deno.Command(DEFAULT_QEMU_PATH, {
      args: ["--version"],
      stdout: "piped",
    }).output();
    qemu = new TextDecoder().decode(v.stdout).split("\n")[0];
  } catch {
    // reported by the boot plan
  }
  return {
    date: new Date().toISOString(),
    cpus: navigator.hardwareConcurrency,
    kernel: Deno.osRelease(),
    deno: Deno.version.deno,
    qemu,
    loadavgAtStart: Deno.loadavg(),
    otherQemuAtStart: processesWhere((argv) => argv[0].includes("qemu-system")).length,
  };
}

/** Every path in order, then the report on stdout and in bench-out/. */
async function measure(run: BenchRun, opts: BenchOptions, host: HostInfo): Promise<void> {
  const { say } = run;
  say(`bench in ${run.dir} (${opts.quick ? "quick" : "full"}: ${JSON.stringify(opts)})`);
  if (host.otherQemuAtStart) {
    say(`note: ${host.otherQemuAtStart} unrelated QEMU process(es) run on this machine`);
  }
  const settings0 = await run.configure(0);
  const store = new VmStore(settings0.stateDir);
  const t = performance.now();
  const plan = await resolveBootPlan(settings0, {
    onProgress: (phase, detail) => say(`  guest: ${phase} ${detail}`),
    onNotice: say,
  });
  const guestBuildMs = performance.now() - t;
  say(`guest ready in ${f1(guestBuildMs)} ms (accel ${plan.accel}, ${plan.memoryMiB} MiB)`);

  run.phase(`1. cold boot x${opts.cold}, 2 at a time`);
  const cold = await coldBoot(run, plan, store, opts.cold, 2);

  run.phase(`2. plain QEMU full-state restore x${opts.restores}`);
  const restore = await plainRestore(run, plan, store, cold.kept, opts.restores);

  run.phase(`3. QEMU start-up floor x${opts.restores} (-machine none)`);
  const floor = await qemuFloor(run, plan, store, opts.restores);

  run.phase("4. template build, then clones spawned on request (pool_size 0)");
  const template = await buildTemplate(run, settings0, store);
  const spawnFactory = template.factory;
  const spawned = await spawnedClones(run, spawnFactory, store, opts.clones);

  run.phase(`5. clones from the warm pool (pool_size ${opts.poolSize}), refilled after each`);
  const settingsPool = await run.configure(opts.poolSize);
  const poolFactory = templateKit(settingsPool, store, say);
  await poolFactory.refill();
  const pooled = await poolClones(run, poolFactory, opts.clones);

  run.phase(`6. memory of ${pooled.records.length} clones + the pool vs cold VMs`);
  const memory = memoryPss(run, pooled.records, cold.result.pssMiB, template.memoryFileMiB);
  await Promise.all(pooled.records.map((r) => destroyVm(store, r)));

  run.phase(`7. the CLI: vm create --json x${opts.cliRuns} (pool_size ${opts.poolSize})`);
  const bare = await bareDeno(run, 3);
  const cli = await cliCreate(run, `${ROOT}cmd/main.ts`, ROOT, poolFactory, store, opts.cliRuns);
  // bundled here from the same source: a stale dist/vmfactory.js would build another guest
  const bundlePath = `${run.dir}/vmfactory.js`;
  let bundle: CliResult | undefined;
  const bundled = await new Deno.Command(Deno.execPath(), {
    args: ["bundle", "--platform=deno", "-o", bundlePath, `${ROOT}cmd/main.ts`],
    cwd: ROOT,
    stdout: "null",
    stderr: "piped",
  }).output();
  if (bundled.success) {
    say(`  the bundle of cmd/main.ts (deno bundle, as scripts/deno task bundle makes it)`);
    bundle = await cliCreate(run, bundlePath, ROOT, poolFactory, store, opts.cliRuns);
  } else {
    say(`  deno bundle failed, bundle skipped: ${new TextDecoder().decode(bundled.stderr).trim()}`);
  }

  run.phase(`8. VMCache: server over the direct factory (size ${opts.cacheSize}), fetches`);
  const cache = await vmCacheFetch(run, plan, settingsPool, opts.cacheFetches, opts.cacheSize);

  run.phase(`9. growth: clones at ${opts.growthLevels.join(", ")} clones running`);
  const levels = await growth(run, poolFactory, spawnFactory, store, opts);

  run.phase("10. workloads: `run -- true` on pool clones: no image, an image, --net");
  const workload = await workloads(run, poolFactory, store, {
    runs: opts.quick ? 3 : 8,
    fillBytes: 50e6,
  });

  run.phase(`11. the daemon: vmfactory serve (pool_min ${opts.poolSize}), API clients`);
  const serve = await serveDaemon(run, store, {
    samples: opts.quick ? 4 : 10,
    poolSize: opts.poolSize,
    rates: opts.quick ? [2] : [1, 2, 4],
    rateSeconds: opts.quick ? 2 : 4,
  });

  run.phase("12. the linter: vmfactory lint over one file and over the Kata corpus");
  const lint = await lintRuns(run, ROOT, opts.cliRuns);

  const results = withRatios({
    host,
    guest: { accel: plan.accel, memoryMiB: plan.memoryMiB },
    options: opts,
    guestBuildMs,
    templateBuildMs: template.buildMs,
    template: { stateBytes: template.stateBytes, memoryFileMiB: template.memoryFileMiB },
    paths: {
      cold: cold.result,
      plainRestore: restore,
      qemuFloor: floor,
      cloneSpawned: spawned,
      clonePool: pooled.result,
      cli,
      bundle,
      bareDenoRun: bare,
      cacheFetch: cache.cacheFetch,
      coldInsideCache: cache.coldInsideCache,
    },
    loadAtPhase: run.loadAtPhase,
    memory,
    growth: levels,
    workloads: workload,
    serve,
    lint,
  });
  await writeReport(OUT_DIR, results);
  console.log(reportText(results));
  console.log(`\nwrote ${OUT_DIR}/bench.json and ${OUT_DIR}/bench.svg`);
}

const opts = benchOptions(Deno.args);
const host = await hostInfo();
const run = await BenchRun.open();
let exitCode = 0;
try {
  await measure(run, opts, host);
} catch (err) {
  if (!run.interrupted) {
    console.error(`bench failed: ${err instanceof Error ? err.stack ?? err.message : err}`);
  }
  exitCode = 1;
} finally {
  run.stamp("cleaning up");
  await run.cleanup();
  run.stamp(`done (${run.ourPids().length} processes of the run left)`);
}
run.exitNow(run.interrupted ? 130 : exitCode);
