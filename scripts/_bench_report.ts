/**
 * The bench's report, apart from the measuring: the results object (what bench.json holds), the
 * ratios and target checks computed from it, the text table and the SVG chart.
 * @module
 */
import type { ServeResult } from "./bench_serve.ts";
import type { LintResult } from "./bench_lint.ts";
import type { RunResult, WorkloadResult } from "./bench_workloads.ts";
import { quantile } from "../lib/vm/vm_stats.ts";
import { benchChart, type ChartRow } from "./_bench_chart.ts";
import { f1, type Stats } from "./_bench_run.ts";
import type {
  BenchOptions,
  CacheResult,
  CliResult,
  CloneResult,
  ColdResult,
  GrowthLevel,
  MemoryResult,
  RestoreResult,
} from "./bench_paths.ts";
import {
  checkTarget,
  formatFigure,
  limitText,
  type TargetResult,
  TARGETS,
} from "./bench_targets.ts";

/** The machine the run ran on. */
export interface HostInfo {
  /** Start of the run, ISO 8601. */
  date: string;
  /** Logical CPUs. */
  cpus: number;
  /** Kernel release. */
  kernel: string;
  /** Deno version. */
  deno: string;
  /** First line of `qemu-system-x86_64 --version`. */
  qemu: string;
  /** Load averages at the start. */
  loadavgAtStart: number[];
  /** QEMU processes of others running at the start. */
  otherQemuAtStart: number;
}

/** Every path's statistics, as bench.json names them. */
export interface PathResults {
  /** Cold boots through the direct factory. */
  cold: ColdResult;
  /** Plain QEMU full-state restore. */
  plainRestore: RestoreResult;
  /** QEMU's start-up floor (`-machine none`). */
  qemuFloor: Stats;
  /** Template clones spawned on request. */
  cloneSpawned: CloneResult;
  /** Template clones from the warm pool (library). */
  clonePool: CloneResult;
  /** `vm create` of cmd/main.ts. */
  cli: CliResult;
  /** `vm create` of the bundle (`deno bundle` of cmd/main.ts), unless bundling failed. */
  bundle?: CliResult;
  /** A bare `deno run` of an empty file. */
  bareDenoRun: Stats;
  /** VMCache fetches. */
  cacheFetch: CacheResult["cacheFetch"];
  /** The VMCache's own cold boots. */
  coldInsideCache: Stats;
}

/** What the measuring gives the report: bench.json without the computed parts. */
export interface Measured {
  /** The machine. */
  host: HostInfo;
  /** The guest every path runs. */
  guest: { accel: string; memoryMiB: number };
  /** The run's options. */
  options: BenchOptions;
  /** Time to build or find the guest (kernel, initrd). */
  guestBuildMs: number;
  /** Time to build the template. */
  templateBuildMs: number;
  /** The template's figures. */
  template: { stateBytes: number; memoryFileMiB: number };
  /** Every path. */
  paths: PathResults;
  /** Load average when each phase started. */
  loadAtPhase: Record<string, number>;
  /** Memory of clones vs cold VMs. */
  memory: MemoryResult;
  /** Growth levels. */
  growth: GrowthLevel[];
  /** Workloads: `run` without and with an image and a network. */
  workloads?: WorkloadResult;
  /** The daemon's API. */
  serve?: ServeResult;
  /** The linter. */
  lint?: LintResult;
}

/** Ratios of figures measured side by side. */
export interface Ratios {
  /** Cold boot p50 ÷ pool clone p50. */
  coldOverPoolClone: number;
  /** Cold boot p50 ÷ spawned clone p50. */
  coldOverSpawnClone: number;
  /** Plain restore p50 ÷ pool clone p50. */
  restoreOverPoolClone: number;
  /** Plain restore p50 ÷ spawned clone p50. */
  restoreOverSpawnClone: number;
  /** Pool clone p50, ms. */
  poolCloneP50Ms: number;
  /** VMCache fetch p50, ms. */
  cacheFetchP50Ms: number;
  /** (clones + pool) PSS ÷ as many cold VMs. */
  pssRatio: number;
  /** Pool clone p50 at the most clones running ÷ at the fewest. */
  growthPool: number;
  /** The same for clones spawned on request. */
  growthSpawn: number;
}

/** bench.json: what was measured, its ratios and every target checked. */
export interface BenchResults extends Measured {
  /** Ratios. */
  ratios: Ratios;
  /** Every target of bench_targets.ts, checked against this run. */
  targets: TargetResult[];
}

/** The results with their ratios and target checks. */
export function withRatios(m: Measured): BenchResults {
  const { cold, plainRestore, cloneSpawned, clonePool, cacheFetch } = m.paths;
  const first = m.growth[0], last = m.growth[m.growth.length - 1];
  const ratios: Ratios = {
    coldOverPoolClone: cold.p50 / clonePool.p50,
    coldOverSpawnClone: cold.p50 / cloneSpawned.p50,
    restoreOverPoolClone: plainRestore.p50 / clonePool.p50,
    restoreOverSpawnClone: plainRestore.p50 / cloneSpawned.p50,
    poolCloneP50Ms: clonePool.p50,
    cacheFetchP50Ms: cacheFetch.p50,
    pssRatio: m.memory.ratio,
    growthPool: last.pool.p50 / first.pool.p50,
    growthSpawn: last.spawn.p50 / first.spawn.p50,
  };
  const withoutTargets = { ...m, ratios, targets: [] };
  return { ...withoutTargets, targets: TARGETS.map((t) => checkTarget(t, withoutTargets)) };
}

/** Lays out rows as columns: the first left-aligned, the others right-aligned. */
function columns(rows: string[][], rule: boolean): string[] {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const line = (r: string[]) =>
    r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  const head = rule ? [line(rows[0]), widths.map((w) => "-".repeat(w)).join("  ")] : [];
  return [...head, ...rows.slice(rule ? 1 : 0).map(line)];
}

/** The table of the paths: p50, p95, range, PSS per VM. */
function pathRows(r: BenchResults): string[][] {
  const p = r.paths;
  const full = (label: string, s: Stats, pss = "") => [
    label,
    `${s.n}`,
    f1(s.p50),
    f1(s.p95),
    `${f1(s.min)}–${f1(s.max)}`,
    pss,
  ];
  const sub = (label: string, s: Stats) => [label, `${s.n}`, f1(s.p50), f1(s.p95), "", ""];
  return [
    ["path (request → agent answers)", "n", "p50 ms", "p95 ms", "min–max ms", "PSS/VM MiB"],
    full("cold boot (direct factory)", p.cold, r.memory.coldPssPerVmMiB.toFixed(0)),
    full(
      "plain QEMU full-state restore",
      p.plainRestore,
      quantile(p.plainRestore.pssMiB, 0.5).toFixed(0),
    ),
    full("template clone, spawned on request", p.cloneSpawned),
    sub("  QEMU start-up floor (-machine none)", p.qemuFloor),
    full(
      "template clone, warm pool (library)",
      p.clonePool,
      r.memory.clonePssPerVmMiB.toFixed(0),
    ),
    sub("  CLI vm create: to JSON output", p.cli.toOutput),
    sub("  CLI vm create: to exit", p.cli.toExit),
    sub("  CLI vm create: record totalMs", p.cli.recordTotal),
    ...(p.bundle
      ? [
        sub("  bundle vm create: to JSON output", p.bundle.toOutput),
        sub("  bundle vm create: to exit", p.bundle.toExit),
      ]
      : []),
    sub("  bare `deno run` of an empty file", p.bareDenoRun),
    full("VMCache fetch (VMCache-fetch source)", p.cacheFetch),
    sub("  of which GetBaseVM round trip", p.cacheFetch.getBaseVm),
    full("  cold boots inside the VMCache (refills)", p.coldInsideCache),
  ];
}

/** The target table: figure (÷ peer), limit, met or MISSED. */
function targetRows(r: BenchResults): string[][] {
  return TARGETS.map((t, i) => {
    const res = r.targets[i];
    const fig = (v: number | undefined, unit = t.unit) =>
      v === undefined ? "?" : formatFigure(v, unit);
    const figure = t.figure === undefined
      ? "not measured by this bench"
      : t.unit !== "×"
      ? fig(res.value)
      : `${fig(res.value, "ms")} / ${fig(res.peerValue, "ms")} = ${fig(res.compared)}`;
    const verdict = res.met === undefined ? "" : res.met ? "met" : "MISSED";
    return [`  ${t.id}`, figure, limitText(t), verdict];
  });
}

/** The text report (stdout): header, path table, details, memory, growth, targets. */
export function reportText(r: BenchResults): string {
  const p = r.paths, m = r.memory;
  const pct = (v: number) => `${(100 * v).toFixed(1)}%`;
  const x = (v: number) => `${v.toFixed(v < 10 ? 1 : 0)}×`;
  const phases = (rec: Record<string, number>) =>
    Object.entries(rec).map(([k, v]) => `${k} ${v}`).join(", ");
  const cloneTotal = m.clonesPssMiB + m.poolPssMiB;
  const first = r.growth[0], last = r.growth[r.growth.length - 1];
  return [
    `vmfactory bench (${r.options.quick ? "quick" : "full"}), ${r.host.date}, ${r.host.cpus} ` +
    `cores, accel ${r.guest.accel}, ${r.guest.memoryMiB} MiB guest, ${r.host.qemu}`,
    `load average at each phase (shared machine, ${r.host.otherQemuAtStart} unrelated QEMU at ` +
    `start): ${
      Object.entries(r.loadAtPhase).map(([k, v]) => `${k.split(" ")[0]} ${v}`).join(", ")
    }`,
    "",
    ...columns(pathRows(r), true),
    "",
    `template: built in ${f1(r.templateBuildMs)} ms, state ${
      (r.template.stateBytes / 1e6).toFixed(2)
    } MB; plain restore: state ${(p.plainRestore.stateBytes / 1e6).toFixed(1)} MB, saved in ${
      f1(p.plainRestore.saveMs)
    } ms`,
    `pool clone phases (p50 ms): ${phases(p.clonePool.phasesP50)}`,
    `spawned clone phases (p50 ms): ${phases(p.cloneSpawned.phasesP50)}`,
    `CLI: a user scripting \`vm create\` pays Deno start-up + module load; the library figures do not.`,
    "",
    `memory (PSS): ${m.clones} clones ${m.clonesPssMiB} MiB + ${m.poolProcesses} pool ` +
    `processes ${m.poolPssMiB} MiB = ${cloneTotal.toFixed(0)} MiB vs ${m.clones} cold × ` +
    `${m.coldPssPerVmMiB.toFixed(0)} MiB = ${m.coldTotalMiB.toFixed(0)} MiB (cold measured on ` +
    `${m.coldSamplesMiB.length} VMs, multiplied): ${pct(m.ratio)}`,
    `  + the template memory file (${m.templateFileMiB.toFixed(0)} MiB on tmpfs, counted once): ` +
    `${pct(m.ratioWithTemplateFile)}; extrapolated to 50 clones (per-clone PSS as ` +
    `measured, template file included): ${pct(m.ratio50)}; idle clones that fit in 16 GiB by ` +
    `PSS (template file once): ${m.clonesIn16GiB}`,
    "",
    "growth (clones running → p50/p95 ms of the next clone; idle CPU of the running clones " +
    `over ${r.options.idleSeconds} s)`,
    ...r.growth.map((g) =>
      `  ${String(g.running).padStart(3)} running: pool ${f1(g.pool.p50)}/${f1(g.pool.p95)}, ` +
      `spawned ${f1(g.spawn.p50)}/${f1(g.spawn.p95)}; idle CPU ${g.idleCpu.perVmPct}% ` +
      `of a core per clone (max ${g.idleCpu.maxPct}%, total ${g.idleCpu.totalPct}%)`
    ),
    "",
    ...workloadLines(r),
    ...serveLines(r),
    ...lintLines(r),
    `targets of docs/performance.md (growth: at ${last.running} / at ${first.running} running)`,
    ...columns(targetRows(r), false),
    `peers, no target: cold / pool clone p50 ${x(r.ratios.coldOverPoolClone)} (spawned ` +
    `${x(r.ratios.coldOverSpawnClone)}); plain restore / pool clone p50 ` +
    `${x(r.ratios.restoreOverPoolClone)} (spawned ${x(r.ratios.restoreOverSpawnClone)}); ` +
    `spawned clone growth ${x(r.ratios.growthSpawn)}`,
  ].join("\n");
}

/** The workload phase's lines (none when it did not run). */
function workloadLines(r: BenchResults): string[] {
  const w = r.workloads;
  if (!w) return [];
  const line = (label: string, s: RunResult) =>
    `  ${label}: p50 ${f1(s.p50)} ms, p95 ${f1(s.p95)} ms (phases p50: ${
      Object.entries(s.phasesP50).map(([k, v]) => `${k} ${v}`).join(", ")
    })`;
  return [
    "workloads through the library on pool clones (create, `true`, destroy)",
    line("run -- true", w.runTrue),
    line("run --image -- true", w.runImage),
    line("run --net -- true", w.runNet),
    `  the CLI \`run -- true\` to exit: p50 ${f1(w.cliRunTrue.p50)} ms = the library's ` +
    `${f1(w.runTrue.p50)} ms + ${f1(w.cliRunTrue.p50 - w.runTrue.p50)} ms (a bare \`deno run\`: ` +
    `${f1(r.paths.bareDenoRun.p50)} ms)`,
    `  an image adds ${f1(w.imageExtraMs)} ms, --net adds ${f1(w.netExtraMs)} ms; converting a ` +
    `${(w.conversion.bytes / 1e6).toFixed(0)} MB rootfs: ${f1(w.conversion.convertMs)} ms ` +
    `(${(w.conversion.imageBytes / 1e6).toFixed(1)} MB erofs), again from the cache ` +
    `${f1(w.conversion.cachedMs)} ms`,
    "",
  ];
}

/** The daemon phase's lines (none when it did not run). */
function serveLines(r: BenchResults): string[] {
  const s = r.serve;
  if (!s) return [];
  const lib = r.paths.clonePool.p50, cli = r.paths.cli.toExit.p50;
  return [
    "the daemon (vmfactory serve) and its API, from a client on the host",
    `  POST /v1/vms at a pool hit: p50 ${f1(s.apiPoolHit.p50)} ms, p95 ${
      f1(s.apiPoolHit.p95)
    } ms ` +
    `(record ${f1(s.apiRecordTotal.p50)} ms) beside the library's pool clone ${f1(lib)} ms and ` +
    `the standalone CLI ${f1(cli)} ms; the CLI through the daemon ${f1(s.cliThroughDaemon.p50)} ms`,
    `  16 concurrent: p50 ${f1(s.burst16.p50)} ms, p95 ${f1(s.burst16.p95)} ms, ` +
    `${s.burstDistinct} distinct VMs`,
    `  sustained: ${
      s.sustained.map((x) => `${x.ratePerS}/s p95 ${f1(x.p95Ms)} ms`).join(", ")
    }; highest rate with p95 ≤ 50 ms: ${s.sustainedRateP95Under50 || "none tried"}/s`,
    "",
  ];
}

/** The linter phase's lines (none when it did not run). */
function lintLines(r: BenchResults): string[] {
  const l = r.lint;
  if (!l) return [];
  return [
    `the linter (vmfactory lint, spawn → exit; ${l.corpus})`,
    `  1 file: p50 ${f1(l.one.p50)} ms; ${l.files} files in one run: p50 ${f1(l.all.p50)} ms ` +
    `(a bare \`deno run\`: ${f1(r.paths.bareDenoRun.p50)} ms)`,
    "",
  ];
}

/** The SVG chart: one row per path and growth level, the absolute ms targets as lines. */
export function reportChart(r: BenchResults): string {
  const p = r.paths;
  const row = (label: string, s: Stats): ChartRow => ({ label, ...s, samples: s.samplesMs });
  const rows: ChartRow[] = [
    row("cold boot", p.cold),
    row("plain QEMU restore", p.plainRestore),
    row("QEMU start-up floor", p.qemuFloor),
    row("clone, spawned on request", p.cloneSpawned),
    row("clone, warm pool (library)", p.clonePool),
    row("CLI vm create (to exit)", p.cli.toExit),
    ...(p.bundle ? [row("bundle vm create (to exit)", p.bundle.toExit)] : []),
    row("VMCache fetch", p.cacheFetch),
    row("cold boot inside the VMCache", p.coldInsideCache),
    ...r.growth.flatMap((g) => [
      row(`pool clone, ${g.running} running`, g.pool),
      row(`spawned clone, ${g.running} running`, g.spawn),
    ]),
  ];
  const marks = TARGETS.filter((t) => t.figure && t.unit === "ms")
    .map((t) => ({ ms: t.limit, label: `${t.id} ${t.limit} ms` }));
  return benchChart(
    `vmfactory: request → agent answers (${r.host.date.slice(0, 10)})`,
    rows,
    marks,
  );
}

/** Writes bench.json and bench.svg into `outDir`. */
export async function writeReport(outDir: string, r: BenchResults): Promise<void> {
  await Deno.mkdir(outDir, { recursive: true });
  await Deno.writeTextFile(`${outDir}/bench.json`, JSON.stringify(r, null, 2) + "\n");
  await Deno.writeTextFile(`${outDir}/bench.svg`, reportChart(r));
}
