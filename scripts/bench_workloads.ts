/**
 * The workload paths for `deno task bench`, side by side in one run on pool clones of the run's
 * template: `run -- true` through the library without an image, with an image, and with `--net`
 * (create, run the command through the agent, destroy); the attach cost of an image and of a NIC
 * from the records' phases; and the conversion of a ~50 MB rootfs folder into an image, then the
 * same REF again (a cache hit).
 * @module
 */
import { prepareImage } from "../lib/image/prepare_image.ts";
import { AgentClient } from "../lib/guest/agent_client.ts";
import type { VmRequest } from "../lib/factory/vm_source.ts";
import { execSettingsFor, runCommandFor } from "../lib/vm/exec_settings.ts";
import type { VmStore } from "../lib/vm/vm_store.ts";
import { type BenchRun, destroyVm, f1, phaseP50, type Stats, stats } from "./_bench_run.ts";
import type { TemplateKit } from "./bench_paths.ts";
import type { VmRecord } from "../lib/vm/vm_record.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** One kind of `run`: its end-to-end figures and its records' phases. */
export interface RunResult extends Stats {
  /** p50 of each phase of the records (`attachMs` is the QMP hot-plug). */
  phasesP50: Record<string, number>;
}

/** What the workload phase measured. */
export interface WorkloadResult {
  /** `run -- true`, no image. */
  runTrue: RunResult;
  /** `run -- true` in a small image. */
  runImage: RunResult;
  /** `run --net -- true`. */
  runNet: RunResult;
  /** `runNet` p50 − `runTrue` p50. */
  netExtraMs: number;
  /** `runImage` p50 − `runTrue` p50. */
  imageExtraMs: number;
  /** The CLI `run -- true` (standalone, pool refilled before each), spawn → exit. */
  cliRunTrue: Stats;
  /** Converting the ~50 MB rootfs folder, and preparing it again (a cache hit). */
  conversion: { bytes: number; convertMs: number; cachedMs: number; imageBytes: number };
}

/** A rootfs folder: busybox and its applets, an /etc/passwd, and `fillBytes` of random files. */
async function rootfs(dir: string, fillBytes: number): Promise<void> {
  await Deno.mkdir(`${dir}/bin`, { recursive: true });
  await Deno.mkdir(`${dir}/etc`);
  await Deno.copyFile("/bin/busybox", `${dir}/bin/busybox`);
  for (const applet of ["sh", "true", "cat", "ls", "env", "id"]) {
    await Deno.symlink("busybox", `${dir}/bin/${applet}`);
  }
  await Deno.writeTextFile(`${dir}/etc/passwd`, "root:x:0:0:root:/root:/bin/sh\n");
  const chunk = new Uint8Array(1 << 20);
  for (let i = 0; i < Math.ceil(fillBytes / chunk.length); i++) {
    for (let at = 0; at < chunk.length; at += 65536) {
      crypto.getRandomValues(chunk.subarray(at, at + 65536));
    }
    await Deno.writeFile(`${dir}/data-${i}.bin`, chunk);
  }
}

/** Create, `true`, destroy through the library, `n` times with the pool refilled before each. */
async function runs(
  run: BenchRun,
  kit: TemplateKit,
  store: VmStore,
  request: VmRequest,
  n: number,
  label: string,
): Promise<RunResult> {
  const walls: number[] = [];
  const records: VmRecord[] = [];
  for (let i = -1; i < n; i++) {
    await kit.refill();
    const t0 = performance.now();
    const vm = await kit.getVm(request);
    try {
      const agent = await AgentClient.connect(vm.agentSocket);
      try {
        const res = await agent.exec(runCommandFor(vm, ["true"]), execSettingsFor(vm));
        if (res.exitCode !== 0) throw new Error(`${label}: true exited ${res.exitCode}`);
      } finally {
        agent.close();
      }
    } finally {
      await destroyVm(store, vm);
    }
    if (i < 0) continue; // the first of each kind warms its code paths
    walls.push(performance.now() - t0);
    records.push(vm);
  }
  const s = stats(walls);
  run.say(`  run ${label}: p50 ${f1(s.p50)} ms, p95 ${f1(s.p95)} ms`);
  return { ...s, phasesP50: phaseP50(records) };
}

/** Runs the workload phase on `kit`'s pool. */
export async function workloads(
  run: BenchRun,
  kit: TemplateKit,
  store: VmStore,
  opts: { runs: number; fillBytes: number },
): Promise<WorkloadResult> {
  const small = `${run.dir}/rootfs-small`, big = `${run.dir}/rootfs-50mb`;
  await rootfs(small, 0);
  await rootfs(big, opts.fillBytes);
  const cacheDir = `${run.dir}/bench-images`;
  let t0 = performance.now();
  const image = await prepareImage(big, { cacheDir });
  const convertMs = performance.now() - t0;
  t0 = performance.now();
  await prepareImage(big, { cacheDir });
  const cachedMs = performance.now() - t0;
  run.say(
    `  converted ${(opts.fillBytes / 1e6).toFixed(0)} MB in ${f1(convertMs)} ms (again: ${
      f1(cachedMs)
    } ms)`,
  );
  const runTrue = await runs(run, kit, store, {}, opts.runs, "-- true");
  const runImage = await runs(run, kit, store, { image: small }, opts.runs, "--image -- true");
  const runNet = await runs(run, kit, store, { net: "user" }, opts.runs, "--net -- true");
  const cli: number[] = [];
  for (let i = -1; i < Math.min(opts.runs, 5); i++) {
    await run.helpersGone();
    await kit.refill();
    const t = performance.now();
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        `${ROOT}cmd/main.ts`,
        "run",
        "--no-daemon",
        "--config",
        run.configPath,
        "--",
        "true",
      ],
      env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!out.success) throw new Error(`run -- true: ${new TextDecoder().decode(out.stderr)}`);
    if (i >= 0) cli.push(performance.now() - t);
  }
  await run.helpersGone();
  run.say(`  CLI run -- true: p50 ${f1(stats(cli).p50)} ms`);
  return {
    cliRunTrue: stats(cli),
    runTrue,
    runImage,
    runNet,
    netExtraMs: Math.round((runNet.p50 - runTrue.p50) * 10) / 10,
    imageExtraMs: Math.round((runImage.p50 - runTrue.p50) * 10) / 10,
    conversion: { bytes: opts.fillBytes, convertMs, cachedMs, imageBytes: image.sizeBytes },
  };
}
