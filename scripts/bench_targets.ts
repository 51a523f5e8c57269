/**
 * The performance targets as data: what docs/performance.md explains, row by row, and what the
 * bench compares its figures with. Every target is an upper limit, either on a figure of the run
 * itself or on its ratio to a peer or floor measured in the same run. Nothing here is asserted:
 * the bench prints "met" or "MISSED".
 * @module
 */

/**
 * Unit of a target's limit. `×`: the limit is on figure ÷ peer, two times in ms of the same run;
 * `share`: a ratio the run computed, shown as a percentage.
 */
export type TargetUnit = "ms" | "MiB" | "% of a core" | "share" | "×";

/** One target: `figure` (divided by `peer` for a `×` target) must be at most `limit`. */
export interface Target {
  /** Stable id; docs/performance.md has a table row and a section with it. */
  id: string;
  /** What is measured, in one line. */
  what: string;
  /**
   * The figure, as a dotted path into bench.json (a number segment indexes an array, `-1` is its
   * last element). Absent: the bench does not measure this target yet.
   */
  figure?: string;
  /** For a `×` target: the peer or floor the figure is divided by (a dotted path too). */
  peer?: string;
  /** Upper limit, in `unit`. */
  limit: number;
  /** Unit of the limit. */
  unit: TargetUnit;
}

/** The targets, in the order docs/performance.md and the bench's report list them. */
export const TARGETS: readonly Target[] = [
  {
    id: "pool-clone-ms",
    what: "pool clone, request to agent answers, p50",
    figure: "paths.clonePool.p50",
    limit: 5,
    unit: "ms",
  },
  {
    id: "pool-clone-vs-qemu-start",
    what: "pool clone p50 over QEMU's start-up floor p50",
    figure: "paths.clonePool.p50",
    peer: "paths.qemuFloor.p50",
    limit: 1 / 6,
    unit: "×",
  },
  {
    id: "spawned-clone-vs-qemu-start",
    what: "clone spawned on request p50 over QEMU's start-up floor p50",
    figure: "paths.cloneSpawned.p50",
    peer: "paths.qemuFloor.p50",
    limit: 2,
    unit: "×",
  },
  {
    id: "cli-create-vs-deno",
    what: "CLI `vm create` to exit p50 over a bare `deno run` of an empty file p50",
    figure: "paths.cli.toExit.p50",
    peer: "paths.bareDenoRun.p50",
    limit: 2,
    unit: "×",
  },
  {
    id: "api-create-ms",
    what: "API `POST /v1/vms` at a pool hit, p50",
    figure: "serve.apiPoolHit.p50",
    limit: 10,
    unit: "ms",
  },
  {
    id: "api-burst-p95-ms",
    what: "API `POST /v1/vms`, 16 concurrent requests, p95",
    figure: "serve.burst16.p95",
    limit: 250,
    unit: "ms",
  },
  {
    id: "run-true-ms",
    what: "`run -- true` on a pool clone, no image",
    figure: "workloads.runTrue.p50",
    limit: 30,
    unit: "ms",
  },
  {
    id: "run-true-image-ms",
    what: "`run -- true` on a pool clone, with an image",
    figure: "workloads.runImage.p50",
    limit: 60,
    unit: "ms",
  },
  {
    id: "run-net-extra-ms",
    what: "`run --net` over `run`, extra time",
    figure: "workloads.netExtraMs",
    limit: 10,
    unit: "ms",
  },
  {
    id: "cache-fetch-ms",
    what: "VMCache fetch, request to usable VM, p50",
    figure: "paths.cacheFetch.p50",
    limit: 3,
    unit: "ms",
  },
  {
    id: "clone-pss-mib",
    what: "memory (PSS) per idle clone of a 256 MiB guest",
    figure: "memory.clonePssPerVmMiB",
    limit: 15,
    unit: "MiB",
  },
  {
    id: "pss-50-clones",
    what: "total PSS of 50 idle clones (pool and template file included) over 50 cold VMs",
    figure: "memory.ratio50",
    limit: 0.1,
    unit: "share",
  },
  {
    id: "growth-next-clone",
    what: "next pool clone p50 with the most clones running over with 1 running",
    figure: "growth.-1.pool.p50",
    peer: "growth.0.pool.p50",
    limit: 1.2,
    unit: "×",
  },
  {
    id: "idle-cpu-pct",
    what: "idle CPU per running clone, with the most clones running",
    figure: "growth.-1.idleCpu.perVmPct",
    limit: 0.5,
    unit: "% of a core",
  },
  {
    id: "lint-many-vs-one",
    what: "linting every file of kata-configs/ in one run over linting one file",
    figure: "lint.all.p50",
    peer: "lint.one.p50",
    limit: 2,
    unit: "×",
  },
  {
    id: "lint-vs-deno",
    what: "linting every file of kata-configs/ over a bare `deno run`",
    figure: "lint.all.p50",
    peer: "paths.bareDenoRun.p50",
    limit: 10,
    unit: "×",
  },
];

/** A target checked against one run: absent figures mean "not measured". */
export interface TargetResult {
  /** The target's id. */
  id: string;
  /** The target's description. */
  what: string;
  /** The figure read from the run. */
  value?: number;
  /** The peer read from the run, for ratio targets. */
  peerValue?: number;
  /** What is compared with the limit: value ÷ peer, or the value itself. */
  compared?: number;
  /** The limit. */
  limit: number;
  /** Whether `compared` ≤ `limit`; absent when not measured. */
  met?: boolean;
}

/** The number at dotted `path` in `data` (`-1` indexes the last array element), if any. */
export function figureAt(data: unknown, path: string): number | undefined {
  let at: unknown = data;
  for (const key of path.split(".")) {
    if (Array.isArray(at) && /^-?\d+$/.test(key)) at = at.at(Number(key));
    else if (at !== null && typeof at === "object") at = (at as Record<string, unknown>)[key];
    else return undefined;
  }
  return typeof at === "number" && Number.isFinite(at) ? at : undefined;
}

/** `target` checked against `data` (the bench.json object). */
export function checkTarget(target: Target, data: unknown): TargetResult {
  const value = target.figure === undefined ? undefined : figureAt(data, target.figure);
  const peerValue = target.peer === undefined ? undefined : figureAt(data, target.peer);
  const compared = value === undefined
    ? undefined
    : target.unit !== "×"
    ? value
    : peerValue
    ? value / peerValue
    : undefined;
  const met = compared === undefined ? undefined : compared <= target.limit;
  return { id: target.id, what: target.what, value, peerValue, compared, limit: target.limit, met };
}

/** A figure for the report, e.g. `5 ms`, `15 MiB`, `10%`, `0.5% of a core`, `1/6×`. */
export function formatFigure(value: number, unit: TargetUnit): string {
  const n = (v: number) => String(+v.toFixed(v < 10 ? 2 : 1));
  if (unit === "share") return `${n(100 * value)}%`;
  if (unit === "% of a core") return `${n(value)}% of a core`;
  if (unit === "×") {
    const inverse = 1 / value;
    const unitFraction = value < 1 && Math.abs(inverse - Math.round(inverse)) < 1e-9;
    return unitFraction ? `1/${Math.round(inverse)}×` : `${n(value)}×`;
  }
  return `${n(value)} ${unit}`;
}

/** The limit as docs/performance.md writes it, e.g. `≤ 5 ms`, `≤ 1/6×`, `≤ 10%`. */
export function limitText(target: Target): string {
  return `≤ ${formatFigure(target.limit, target.unit)}`;
}
