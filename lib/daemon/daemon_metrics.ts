/**
 * The daemon's metrics, served at `GET /metrics` in the Prometheus text format (0.0.4), on
 * `prom-client` (the daemon alone loads it). Counters and histograms are fed as things happen
 * (requests, creates, refills, builds); gauges are read when scraped (VM folders by state, the
 * pool, the template), so an idle daemon does no work for them.
 * @module
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { FolderState } from "../vm/vm_store.ts";

/** What the gauges read at scrape time. */
export interface MetricsSources {
  /** VM folders by state. */
  folders(): Partial<Record<FolderState, number>>;
  /** The pool, when the daemon keeps one. */
  pool(): { ready: number; target: number; min: number; max: number; making: number } | undefined;
  /** The template, when the daemon keeps one. */
  template(): { ready: boolean; stale: boolean; ageSeconds?: number } | undefined;
}

/** Where a VM a request got came from: a pooled clone, a clone spawned on request, the VMCache, a cold boot. */
export type CreateSource = "pool" | "template" | "cache" | "direct";

const STATES: readonly FolderState[] = ["owned", "pooled", "cached", "offered", "building"];
/** Distinct route labels kept; others count as "other" (labels must stay bounded). */
const MAX_ROUTES = 64;
const REQUEST_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120];
const REFILL_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const BUILD_BUCKETS = [1, 2.5, 5, 10, 20, 40, 80, 160];

/**
 * The daemon's metrics registry.
 * @example
 * ```ts
 * const metrics = new DaemonMetrics({ folders: () => ({ owned: 1 }), pool: () => undefined, template: () => undefined });
 * metrics.observeRequest({ route: "POST /v1/vms", status: 201, seconds: 0.012, source: "template" });
 * console.log(await metrics.render());
 * ```
 */
export class DaemonMetrics {
  /** The registry (only this daemon's metrics: no process defaults). */
  readonly registry = new Registry();
  /** Content type of {@link DaemonMetrics.render}'s text. */
  readonly contentType: string = this.registry.contentType;
  readonly #routes = new Set<string>();
  readonly #requests: Counter<"route" | "status">;
  readonly #requestSeconds: Histogram<"route">;
  readonly #createSeconds: Histogram<"source">;
  readonly #bootFailures: Counter<"path">;
  readonly #refills: Counter<"outcome">;
  readonly #refillSeconds: Histogram<"outcome">;
  readonly #builds: Counter<"outcome">;
  readonly #buildSeconds: Histogram<"outcome">;

  /** Metrics whose gauges read `sources`; `info` labels the `vmfactory_info` gauge. */
  constructor(sources: MetricsSources, info: { version: string; factory: string } = {
    version: "",
    factory: "",
  }) {
    const registers = [this.registry];
    this.#requests = new Counter({
      name: "vmfactory_http_requests_total",
      help: "API requests answered, by route and status.",
      labelNames: ["route", "status"],
      registers,
    });
    this.#requestSeconds = new Histogram({
      name: "vmfactory_http_request_duration_seconds",
      help: "From a request's arrival to the end of its answer, by route.",
      labelNames: ["route"],
      buckets: REQUEST_BUCKETS,
      registers,
    });
    this.#createSeconds = new Histogram({
      name: "vmfactory_vm_create_duration_seconds",
      help:
        "Time to make a VM for a request, by where it came from (pool, template, cache, direct).",
      labelNames: ["source"],
      buckets: REQUEST_BUCKETS,
      registers,
    });
    this.#bootFailures = new Counter({
      name: "vmfactory_boot_failures_total",
      help: "VMs that could not be made: for a request, or for the pool.",
      labelNames: ["path"],
      registers,
    });
    this.#refills = new Counter({
      name: "vmfactory_pool_refills_total",
      help: "Clones the pool governor tried to make, by outcome.",
      labelNames: ["outcome"],
      registers,
    });
    this.#refillSeconds = new Histogram({
      name: "vmfactory_pool_refill_duration_seconds",
      help: "Time to make one pooled clone, by outcome.",
      labelNames: ["outcome"],
      buckets: REFILL_BUCKETS,
      registers,
    });
    this.#builds = new Counter({
      name: "vmfactory_template_builds_total",
      help: "Template builds (missing or stale template), by outcome.",
      labelNames: ["outcome"],
      registers,
    });
    this.#buildSeconds = new Histogram({
      name: "vmfactory_template_build_duration_seconds",
      help: "Time to build the template, by outcome.",
      labelNames: ["outcome"],
      buckets: BUILD_BUCKETS,
      registers,
    });
    for (const outcome of ["ok", "failed"]) {
      this.#refills.inc({ outcome }, 0);
      this.#builds.inc({ outcome }, 0);
    }
    for (const path of ["request", "pool"]) this.#bootFailures.inc({ path }, 0);

    new Gauge({
      name: "vmfactory_info",
      help: "Always 1; the labels say which vmfactory and which factory serve.",
      labelNames: ["version", "factory"],
      registers,
    }).set(info, 1);
    new Gauge({
      name: "vmfactory_vms",
      help: "VM folders in the state directory, by state.",
      labelNames: ["state"],
      registers,
      collect() {
        const counts = sources.folders();
        for (const state of STATES) this.set({ state }, counts[state] ?? 0);
      },
    });
    /** Gauges read from one source's view (0 while it has none). */
    const gaugesOf =
      <T>(view: () => T | undefined) => (name: string, help: string, read: (v: T) => number) =>
        new Gauge({
          name,
          help,
          registers,
          collect() {
            const v = view();
            this.set(v ? read(v) : 0);
          },
        });
    const pool = gaugesOf(() => sources.pool() ?? undefined);
    pool(
      "vmfactory_pool_ready",
      "Clones ready in the pool (0 without a template pool).",
      (p) => p.ready,
    );
    pool("vmfactory_pool_target", "The pool size the governor aims at now.", (p) => p.target);
    pool("vmfactory_pool_min", "[vmfactory] pool_min in force.", (p) => p.min);
    pool("vmfactory_pool_max", "[vmfactory] pool_max in force.", (p) => p.max);
    pool(
      "vmfactory_pool_refills_in_progress",
      "Clones being made for the pool now.",
      (p) => p.making,
    );
    const template = gaugesOf(() => sources.template() ?? undefined);
    template(
      "vmfactory_template_ready",
      "1 while a fresh template serves clones.",
      (t) => Number(t.ready),
    );
    template(
      "vmfactory_template_stale",
      "1 while the template does not match the configuration.",
      (t) => Number(t.stale),
    );
    template(
      "vmfactory_template_age_seconds",
      "Seconds since the template was built (0 without one).",
      (t) => t.ageSeconds ?? 0,
    );
  }

  /** Counts one answered request (the API server's `observe` hook). */
  observeRequest(event: { route: string; status: number; seconds: number }): void {
    let route = event.route;
    if (!this.#routes.has(route)) {
      if (this.#routes.size >= MAX_ROUTES) route = "other";
      else this.#routes.add(route);
    }
    this.#requests.inc({ route, status: String(event.status) });
    this.#requestSeconds.observe({ route }, event.seconds);
  }

  /** A VM made for a request, from `source`, in `seconds`. */
  observeCreate(source: CreateSource, seconds: number): void {
    this.#createSeconds.observe({ source }, seconds);
  }

  /** A VM that could not be made, for a request or for the pool. */
  bootFailed(path: "request" | "pool"): void {
    this.#bootFailures.inc({ path });
  }

  /** One pool refill (the governor's `onRefill`). */
  observeRefill(seconds: number, ok: boolean): void {
    const outcome = ok ? "ok" : "failed";
    this.#refills.inc({ outcome });
    this.#refillSeconds.observe({ outcome }, seconds);
    if (!ok) this.bootFailed("pool");
  }

  /** One template build (the supervisor's `onBuild`). */
  observeBuild(seconds: number, ok: boolean): void {
    const outcome = ok ? "ok" : "failed";
    this.#builds.inc({ outcome });
    this.#buildSeconds.observe({ outcome }, seconds);
  }

  /** The text of `GET /metrics`. */
  render(): Promise<string> {
    return this.registry.metrics();
  }
}
