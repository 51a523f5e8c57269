/**
 * `vmfactory demo`: the main job on the built-in default, in a private state directory and
 * template path: build the guest, cold-boot one VM, build the template, clone VMs, run one command
 * in a small container image through `run`, print cold vs clone times and memory, clean up.
 * @module
 */
import { BUILTIN_DEFAULT_TOML, BUILTIN_PATH } from "../lib/config/builtin_default.ts";
import { mergeSources } from "../lib/config/load_config.ts";
import { settingsFrom } from "../lib/config/settings.ts";
import { DirectSource } from "../lib/factory/direct_source.ts";
import { workloadOptions } from "../lib/factory/factory_for.ts";
import { VmFactory } from "../lib/factory/vm_factory.ts";
import { AgentClient } from "../lib/guest/agent_client.ts";
import { SHARED_MEMORY_NOTE, TemplateManager } from "../lib/template/template_manager.ts";
import { findTemplate, templateBytes } from "../lib/template/template_files.ts";
import type { VmRecord } from "../lib/vm/vm_record.ts";
import { pssMiB, quantile } from "../lib/vm/vm_stats.ts";
import { VmStore } from "../lib/vm/vm_store.ts";
import { ms, say } from "./_context.ts";

/** Runs the demo; returns the exit code. */
export async function runDemo(opts: { clones: number; keep?: boolean }): Promise<number> {
  const root = await Deno.makeTempDir({ prefix: "vmfactory-demo-" });
  const overrides = `[factory]\ntemplate_path = "${root}/template"\n` +
    `[vmfactory]\nstate_dir = "${root}/state"\npool_size = 2\n`;
  const settings = settingsFrom(mergeSources([
    { path: BUILTIN_PATH, text: BUILTIN_DEFAULT_TOML },
    { path: "<demo>", text: overrides },
  ]));
  const store = new VmStore(settings.stateDir);
  const template = new TemplateManager(settings, store, {
    log: say,
    hooks: {
      onProgress: (phase, detail) => say(`  guest: ${phase} ${detail}`),
      onNotice: (n) => say(`  ${n}`),
      onPhase: (phase) => say(`  template: ${phase}`),
    },
  });
  const vms: VmRecord[] = [];
  const cleanup = async () => {
    if (opts.keep) {
      say(`kept: state in ${settings.stateDir}, template in ${settings.templatePath}`);
      return;
    }
    await Promise.all(vms.map((vm) => store.remove(vm.id, ["owned"])));
    await template.destroy();
    await Deno.remove(root, { recursive: true });
  };
  const interrupt = () => {
    say("interrupted: cleaning up");
    cleanup().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", interrupt);
  try {
    say(`1/5 guest: kernel from the host, initrd with busybox + agent (state in ${root})`);
    const plan = await template.plan();
    say(`    accelerator: ${plan.accel}, ${plan.memoryMiB} MiB, ${plan.cpus} vCPU`);

    say("2/5 cold boot (the direct factory) ...");
    const cold = await new VmFactory(new DirectSource(plan, store)).getVm();
    vms.push(cold);
    say(`    cold boot: ${ms(cold.timings.totalMs)} to agent-ready`);
    const coldPss = pssMiB([cold.pid]);

    say("3/5 template: boot, settle, save the device state ...");
    const t0 = performance.now();
    const init = await template.init();
    say(
      `    template ${init.manifest.id} in ${ms(performance.now() - t0)}; state file ${
        (init.manifest.stateBytes / 1e6).toFixed(2)
      } MB (guest RAM stays in the shared memory file)`,
    );
    say(`    ${SHARED_MEMORY_NOTE}`);

    say(`4/5 ${opts.clones} clones ...`);
    const clones: VmRecord[] = [];
    const factory = new VmFactory(template.source(), {
      strict: true,
      workload: workloadOptions(settings, store, say),
    });
    for (let i = 0; i < opts.clones; i++) {
      const vm = await factory.getVm();
      vms.push(vm);
      clones.push(vm);
      await template.refill();
      say(`    clone ${vm.id}: ${ms(vm.timings.totalMs)}`);
    }
    const agent = await AgentClient.connect(clones[0].agentSocket);
    const uname = await agent.exec({ shell: "uname -r; hostname" });
    agent.close();
    const [release, hostname] = new TextDecoder().decode(uname.stdout).trim().split("\n");
    say(`    clone ${clones[0].id} runs Linux ${release} as ${hostname}`);

    say("5/5 run: one command in a small container image, in a VM of its own ...");
    const image = await demoImage(`${root}/image`);
    const { runCommand } = await import("../lib/run/run_command.ts");
    const runArgs = { request: { image }, command: ["cat", "/etc/os-release"] };
    await runCommand(factory, store, runArgs); // converts the image once: the cache has it now
    await template.refill();
    let osRelease = "";
    const ran = await runCommand(factory, store, {
      ...runArgs,
      onStdout: (chunk) => osRelease += new TextDecoder().decode(chunk),
    });
    await template.refill();
    say(`    in the image: ${osRelease.trim().split("\n")[0]} (exit ${ran.exitCode})`);

    const totals = clones.map((c) => c.timings.totalMs);
    const p50 = quantile(totals, 0.5);
    const clonePss = pssMiB(clones.map((c) => c.pid));
    const rows = [
      ["", "cold boot", "template clone", "ratio"],
      [
        "request → agent ready",
        ms(cold.timings.totalMs),
        `${ms(p50)} p50, ${ms(quantile(totals, 0.95))} p95`,
        `${(cold.timings.totalMs / p50).toFixed(0)}× faster`,
      ],
      [
        "`run` in an image (create, exec, destroy)",
        "",
        `${ms(ran.timings.totalMs)} (create ${ms(ran.timings.createMs)}, exec ${
          ms(ran.timings.execMs)
        })`,
        "",
      ],
      [
        `memory (PSS) of ${clones.length} VMs`,
        `${(coldPss * clones.length).toFixed(0)} MiB (1 VM × ${clones.length})`,
        `${clonePss.toFixed(0)} MiB`,
        `${(100 * clonePss / (coldPss * clones.length)).toFixed(0)}%`,
      ],
    ];
    const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
    console.log();
    for (const row of rows) console.log(row.map((c, i) => c.padEnd(widths[i])).join("   "));
    const found = findTemplate(settings.templatePath);
    if (found) {
      console.log(
        `(plus the template's memory file, ${
          (templateBytes(found.files) / 2 ** 20).toFixed(0)
        } MiB on tmpfs, shared by every clone; the pool keeps ${settings.poolSize} more clones ready)`,
      );
    }
    console.log();
  } finally {
    Deno.removeSignalListener("SIGINT", interrupt);
    await cleanup();
  }
  return 0;
}

/** A small container image: a folder with busybox, its applets and an os-release. */
async function demoImage(dir: string): Promise<string> {
  await Deno.mkdir(`${dir}/bin`, { recursive: true });
  await Deno.mkdir(`${dir}/etc`);
  await Deno.copyFile("/bin/busybox", `${dir}/bin/busybox`);
  for (const applet of ["sh", "cat", "ls"]) await Deno.symlink("busybox", `${dir}/bin/${applet}`);
  await Deno.writeTextFile(
    `${dir}/etc/os-release`,
    'PRETTY_NAME="vmfactory demo image (busybox)"\n',
  );
  await Deno.writeTextFile(`${dir}/etc/passwd`, "root:x:0:0:root:/root:/bin/sh\n");
  return dir;
}
