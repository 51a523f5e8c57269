/**
 * One bench run's frame: the temp folder that holds everything (config, state, template tmpfs),
 * progress lines, the load average at each phase, and the cleanup. Every process of the run is
 * found by that folder in its command line and killed at the end, also on failure or Ctrl-C.
 * Also the small statistics helpers the paths and the report share.
 * @module
 */
import type { VmCacheServer } from "../lib/cache/vm_cache_server.ts";
import { BUILTIN_DEFAULT_TOML } from "../lib/config/builtin_default.ts";
import { loadConfig } from "../lib/config/load_config.ts";
import { type Settings, settingsFrom } from "../lib/config/settings.ts";
import { processesWhere, type ProcessIdentity, signalProcess } from "../lib/process_identity.ts";
import { fallbackDir } from "../lib/template/template_files.ts";
import { unmountAll } from "../lib/template/tmpfs_mount.ts";
import type { VmRecord } from "../lib/vm/vm_record.ts";
import { quantile } from "../lib/vm/vm_stats.ts";
import type { VmStore } from "../lib/vm/vm_store.ts";

/** p50/p95/min/max of samples in ms, rounded to 0.1 ms. */
export interface Stats {
  /** Number of samples. */
  n: number;
  /** Median. */
  p50: number;
  /** 95th percentile. */
  p95: number;
  /** Smallest sample. */
  min: number;
  /** Largest sample. */
  max: number;
  /** Every sample, in measuring order. */
  samplesMs: number[];
}

/** The {@link Stats} of `samples` (ms). */
export function stats(samples: number[]): Stats {
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

/** p50 of each named phase over several VM records. */
export function phaseP50(records: VmRecord[]): Record<string, number> {
  const names = [...new Set(records.flatMap((r) => Object.keys(r.timings.phases)))];
  return Object.fromEntries(names.map((n) => [
    n,
    quantile(records.map((r) => r.timings.phases[n] ?? 0), 0.5),
  ]));
}

/** Milliseconds with one decimal. */
export const f1 = (ms: number): string => ms.toFixed(1);

/** Resolves after `ms`. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Which processes of the run {@link BenchRun.ourPids} lists. */
export type PidKind = "qemu" | "other" | "all";

/**
 * The run's folder, progress and cleanup. {@link BenchRun.open} creates the folder and installs
 * the Ctrl-C/SIGTERM handler; call {@link BenchRun.cleanup} then {@link BenchRun.exitNow} at the
 * end whatever happened.
 */
export class BenchRun {
  /** Figures the report prints with the run: 1-minute load average when each phase started. */
  readonly loadAtPhase: Record<string, number> = {};
  /** The VMCache server while one runs, so that cleanup stops it first. */
  cacheServer: VmCacheServer | undefined;
  #interrupted = false;
  #start = performance.now();
  #cleaning: Promise<void> | undefined;

  private constructor(
    /** The run's temp folder. */
    readonly dir: string,
  ) {}

  /** Creates the temp folder with the built-in configuration; installs the signal handler. */
  static async open(): Promise<BenchRun> {
    const run = new BenchRun(await Deno.makeTempDir({ prefix: "vmf-bench-" }));
    await Deno.writeTextFile(run.configPath, BUILTIN_DEFAULT_TOML);
    await Deno.mkdir(`${run.dir}/config.d`);
    const onSignal = () => {
      run.#interrupted = true;
      console.error("bench: interrupted, cleaning up");
      run.cleanup().finally(() => run.exitNow(130));
    };
    Deno.addSignalListener("SIGINT", onSignal);
    Deno.addSignalListener("SIGTERM", onSignal);
    return run;
  }

  /** The run's `configuration.toml` (with `config.d/` next to it). */
  get configPath(): string {
    return `${this.dir}/configuration.toml`;
  }

  /** Whether Ctrl-C or SIGTERM arrived. */
  get interrupted(): boolean {
    return this.#interrupted;
  }

  /** A progress line on stderr with the run's clock, even after Ctrl-C. */
  stamp(line: string): void {
    const s = ((performance.now() - this.#start) / 1000).toFixed(1).padStart(6);
    console.error(`[${s} s] ${line}`);
  }

  /** A progress line; after Ctrl-C it throws instead, which ends the run at the next step. */
  say = (line: string): void => {
    if (this.#interrupted) throw new Error("interrupted");
    this.stamp(line);
  };

  /** Starts a phase: records the load average (the machine is shared) and says its name. */
  phase(name: string): void {
    this.loadAtPhase[name] = +Deno.loadavg()[0].toFixed(2);
    this.say(`${name} (load ${this.loadAtPhase[name]})`);
  }

  /** Writes the bench drop-in (private paths, TCG, the pool size) and reads the settings back. */
  async configure(poolSize: number): Promise<Settings> {
    const d = this.dir;
    await Deno.writeTextFile(
      `${d}/config.d/50-bench.toml`,
      `[factory]\ntemplate_path = "${d}/template"\nvm_cache_endpoint = "${d}/cache.sock"\n` +
        `[vmfactory]\naccel = "tcg"\nstate_dir = "${d}/state"\npool_size = ${poolSize}\n`,
    );
    return settingsFrom(await loadConfig({ config: this.configPath, env: {} }), {});
  }

  /** Processes (other than this one) whose command line mentions the run's folder. */
  ourPids(kind: PidKind = "all"): ProcessIdentity[] {
    const marker = `${this.dir}/`;
    return processesWhere((argv) => {
      if (!argv.some((arg) => arg.includes(marker))) return false;
      return kind === "all" || (kind === "qemu") === argv[0].includes("qemu-system");
    });
  }

  /** Waits until no helper process of the run (e.g. the detached refill of `vm create`) runs. */
  async helpersGone(): Promise<void> {
    for (let i = 0; i < 1200 && this.ourPids("other").length > 0; i++) await sleep(50);
  }

  /** Kills every process of the run (helpers first: they start QEMUs), unmounts, deletes. */
  cleanup(): Promise<void> {
    return this.#cleaning ??= (async () => {
      await this.cacheServer?.stop().catch(() => {});
      for (let i = 0; i < 100 && this.ourPids().length > 0; i++) {
        killAll(this.ourPids("other"));
        killAll(this.ourPids("qemu"));
        await sleep(30);
      }
      const left = this.ourPids();
      if (left.length) {
        console.error(`bench: processes still running: ${left.map((p) => p.pid).join(" ")}`);
      }
      const template = `${this.dir}/template`;
      await unmountAll(template).catch((e) => console.error(`bench: ${e.message}`));
      await Deno.remove(fallbackDir(template), { recursive: true }).catch(() => {});
      await Deno.remove(this.dir, { recursive: true }).catch(() => {});
    })();
  }

  /** Last sweep, synchronous so that nothing of the run can start between it and the exit. */
  exitNow(code: number): never {
    killAll(this.ourPids("other"));
    killAll(this.ourPids("qemu"));
    Deno.exit(code);
  }
}

function killAll(processes: ProcessIdentity[]): void {
  for (const p of processes) signalProcess(p, "SIGKILL");
}

/** Stops a VM the bench owns and removes its folder. */
export async function destroyVm(store: VmStore, vm: { id: string }): Promise<void> {
  await store.remove(vm.id, ["owned"]);
}
