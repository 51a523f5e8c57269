/** `vmfactory vm create|list|exec|logs|destroy`. @module */
import { errorMessage, UsageError } from "../lib/errors.ts";
import { factoryFor } from "../lib/factory/factory_for.ts";
import type { VmCreateArgs } from "./_fast_args.ts";
import { AgentClient } from "../lib/guest/agent_client.ts";
import { commandContext, ms, requireLintClean, say } from "./_context.ts";
import { OptionError } from "./_usage.ts";

/** `vm create`: prints the record (JSON with --json) and returns the exit code. */
export async function runVmCreate(opts: VmCreateArgs): Promise<number> {
  const ctx = await commandContext(opts);
  await requireLintClean(ctx, opts.config);
  const factory = await factoryFor(ctx.settings, ctx.store, { ...opts, log: say });
  const record = await factory.getVm({
    cpus: opts.cpus,
    memoryMiB: opts.memory,
    hostname: opts.hostname,
  });
  if (opts.json) console.log(JSON.stringify(record, null, 2));
  else {
    const phases = Object.entries(record.timings.phases).map(([k, v]) =>
      `${k.replace(/Ms$/, "")} ${ms(v)}`
    ).join(", ");
    console.log(record.id);
    say(
      `${record.source} VM ${record.id} (pid ${record.pid}, ${record.cpus} vCPU, ${record.memoryMiB} MiB) ready in ${
        ms(record.timings.totalMs)
      } (${phases})`,
    );
  }
  await factory.close();
  if (factory.kind === "template") {
    // top the clone pool up in the background so that this command returns at once
    const { spawnDetached } = await import("./_self.ts");
    try {
      spawnDetached(["factory", "refill", ...(opts.config ? ["--config", opts.config] : [])]);
    } catch (err) {
      // the VM is made and printed: a refill that cannot start costs the next request, no more
      say(`warning: cannot start the background pool refill: ${errorMessage(err)}`);
    }
  }
  return 0;
}

/** `vm list`. */
export async function runVmList(opts: { json?: boolean; config?: string }): Promise<number> {
  const { store } = await commandContext(opts);
  const entries = await store.list();
  if (opts.json) {
    console.log(JSON.stringify(
      { vms: entries.map((e) => ({ ...e.record, state: e.alive ? "running" : "dead" })) },
      null,
      2,
    ));
    return 0;
  }
  if (entries.length === 0) {
    say("no VMs (create one with `vmfactory vm create`)");
    return 0;
  }
  const rows = [["ID", "STATE", "SOURCE", "PID", "CPUS", "MEMORY", "HOSTNAME", "CREATED"]];
  for (const { record: r, alive } of entries) {
    rows.push([
      r.id,
      alive ? "running" : "dead",
      r.source,
      String(r.pid),
      String(r.cpus),
      `${r.memoryMiB} MiB`,
      r.hostname,
      r.createdAt,
    ]);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  for (const row of rows) console.log(row.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd());
  const dead = entries.filter((e) => !e.alive).length;
  if (dead) say(`${dead} VM(s) are dead (QEMU exited); \`vmfactory vm destroy <id>\` removes them`);
  return 0;
}

/** `vm exec ID -- CMD...`: streams output, returns the command's exit code. */
export async function runVmExec(
  id: string,
  command: string[],
  opts: { shell?: string; timeout?: number; config?: string },
): Promise<number> {
  if (!opts.shell && command.length === 0) {
    throw new OptionError("run a command", "give a command after `--` or use --shell");
  }
  const { store } = await commandContext(opts);
  const { record, alive } = await store.find(id);
  if (!alive) {
    throw new UsageError(`run a command in VM ${record.id}`, "its QEMU is not running");
  }
  const agent = await AgentClient.connect(record.agentSocket, { timeoutMs: 10_000 });
  try {
    const res = await agent.exec(opts.shell ? { shell: opts.shell } : command, {
      timeoutMs: opts.timeout ? opts.timeout * 1000 : 0,
      collect: false, // streamed to stdout/stderr: nothing is gathered, so no cap is needed
      outputLimit: 0xffff_ffff,
      onStdout: (chunk) => Deno.stdout.writeSync(chunk),
      onStderr: (chunk) => Deno.stderr.writeSync(chunk),
    });
    if (res.truncated) say("vmfactory: output truncated at the agent's limit");
    if (res.timedOut) say(`vmfactory: killed after ${opts.timeout} s`);
    return res.exitCode;
  } finally {
    agent.close();
  }
}

/**
 * `vm logs ID`: prints the serial console the VM kept (its newest `console_log_max` bytes) to
 * stdout. An unknown VM exits 2; a dead one prints what was kept before it stopped.
 */
export async function runVmLogs(id: string, opts: { config?: string }): Promise<number> {
  const { store, settings } = await commandContext(opts);
  const { record, alive } = await store.find(id);
  const { readConsole } = await import("../lib/vm/console_log.ts");
  const bytes = await readConsole(store.pathsOf(record.id), settings.consoleLogMax);
  for (let at = 0; at < bytes.length;) at += await Deno.stdout.write(bytes.subarray(at));
  if (!alive) say(`vmfactory: VM ${record.id} is not running; this is what was kept before`);
  return 0;
}

/** `vm destroy ID... | --all`. */
export async function runVmDestroy(
  ids: string[],
  opts: { all?: boolean; config?: string },
): Promise<number> {
  if (!opts.all && ids.length === 0) {
    throw new OptionError("destroy VMs", "give VM ids or --all");
  }
  const { store } = await commandContext(opts);
  const records = opts.all
    ? (await store.list()).map((e) => e.record)
    : await Promise.all(ids.map(async (id) => (await store.find(id)).record));
  await Promise.all(records.map((r) => store.remove(r.id, ["owned"])));
  if (opts.all) await store.reap();
  say(`destroyed ${records.length} VM(s)`);
  return 0;
}
