/**
 * `vmfactory vm create|list|exec|logs|destroy`. `create`, `list`, `exec` and `destroy` go through
 * the `vmfactory serve` daemon when one answers on its socket (same output, same exit codes) and
 * work on their own otherwise, or with `--no-daemon`; `logs` reads the VM's folder either way.
 * @module
 */
import { errorMessage, UsageError } from "../lib/errors.ts";
import { factoryFor } from "../lib/factory/factory_for.ts";
import type { VmCreateArgs } from "./_fast_args.ts";
import { AgentClient } from "../lib/guest/agent_client.ts";
import { type ApiClient, daemonFor } from "../lib/server/api_client.ts";
import type { VmRecord } from "../lib/vm/vm_record.ts";
import { type CommandContext, commandContext, ms, requireLintClean, say } from "./_context.ts";
import { OptionError } from "./_usage.ts";

/** `--no-daemon` (commander's `daemon: false`) of the commands that may use the daemon. */
interface DaemonOption {
  daemon?: boolean;
}

/**
 * The daemon of this state directory when one answers and `--no-daemon` was not given; the
 * caller closes it. Costs one `lstat` when there is no daemon.
 */
function daemonOf(ctx: CommandContext, opts: DaemonOption): Promise<ApiClient | undefined> {
  return opts.daemon === false
    ? Promise.resolve(undefined)
    : daemonFor(ctx.settings, { warn: say });
}

/** Runs `fn` with `daemon` and closes it. */
async function withDaemon<T>(daemon: ApiClient, fn: (daemon: ApiClient) => Promise<T>): Promise<T> {
  try {
    return await fn(daemon);
  } finally {
    daemon.close();
  }
}

/**
 * `vm create`: prints the record (JSON with --json) and returns the exit code. Through the
 * daemon its factory makes the VM (with the daemon's configuration, which it linted when it
 * started) and refills its own pool; `--strict` and `--fallback`, which the API does not carry,
 * always work without the daemon.
 */
export async function runVmCreate(opts: VmCreateArgs): Promise<number> {
  const ctx = await commandContext(opts);
  const daemon = opts.strict || opts.fallback ? undefined : await daemonOf(ctx, opts);
  if (daemon) {
    const record = await withDaemon(
      daemon,
      (d) => d.createVm({ cpus: opts.cpus, memoryMiB: opts.memory, hostname: opts.hostname }),
    );
    printCreated(record, opts.json);
    return 0;
  }
  await requireLintClean(ctx, opts.config);
  const factory = await factoryFor(ctx.settings, ctx.store, { ...opts, log: say });
  const record = await factory.getVm({
    cpus: opts.cpus,
    memoryMiB: opts.memory,
    hostname: opts.hostname,
  });
  printCreated(record, opts.json);
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

/** Prints a new VM: its id on stdout and a summary on stderr, or its record as JSON. */
function printCreated(record: VmRecord, json?: boolean): void {
  if (json) {
    console.log(JSON.stringify(record, null, 2));
    return;
  }
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

/** `vm list`. */
export async function runVmList(
  opts: { json?: boolean; config?: string } & DaemonOption,
): Promise<number> {
  const ctx = await commandContext(opts);
  const daemon = await daemonOf(ctx, opts);
  const entries = daemon
    ? (await withDaemon(daemon, (d) => d.listVms())).map(({ state, ...record }) => ({
      record,
      alive: state === "running",
    }))
    : await ctx.store.list();
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
  opts: { shell?: string; timeout?: number; config?: string } & DaemonOption,
): Promise<number> {
  if (!opts.shell && command.length === 0) {
    throw new OptionError("run a command", "give a command after `--` or use --shell");
  }
  const ctx = await commandContext(opts);
  const daemon = await daemonOf(ctx, opts);
  const res = daemon
    ? await withDaemon(daemon, (d) =>
      d.exec(id, {
        ...(opts.shell ? { shell: opts.shell } : { cmd: command }),
        timeoutS: opts.timeout,
      }, {
        stdout: (chunk) => writeAll(Deno.stdout, chunk),
        stderr: (chunk) => writeAll(Deno.stderr, chunk),
      }))
    : await execStandalone(ctx, id, command, opts);
  if (res.truncated) say("vmfactory: output truncated at the agent's limit");
  if (res.timedOut) say(`vmfactory: killed after ${opts.timeout} s`);
  return res.exitCode;
}

/** `vm exec` without the daemon: through the VM's agent socket. */
async function execStandalone(
  { store }: CommandContext,
  id: string,
  command: string[],
  opts: { shell?: string; timeout?: number },
): Promise<{ exitCode: number; truncated: boolean; timedOut: boolean }> {
  const { record, alive } = await store.find(id);
  if (!alive) {
    throw new UsageError(`run a command in VM ${record.id}`, "its QEMU is not running");
  }
  const agent = await AgentClient.connect(record.agentSocket, { timeoutMs: 10_000 });
  try {
    return await agent.exec(opts.shell ? { shell: opts.shell } : command, {
      timeoutMs: opts.timeout ? opts.timeout * 1000 : 0,
      collect: false, // streamed to stdout/stderr: nothing is gathered, so no cap is needed
      outputLimit: 0xffff_ffff,
      onStdout: (chunk) => writeAll(Deno.stdout, chunk),
      onStderr: (chunk) => writeAll(Deno.stderr, chunk),
    });
  } finally {
    agent.close();
  }
}

/** Writes all of `chunk` to `out` (a write may take part of it). */
function writeAll(out: { writeSync(p: Uint8Array): number }, chunk: Uint8Array): void {
  for (let at = 0; at < chunk.length;) at += out.writeSync(chunk.subarray(at));
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

/**
 * `vm destroy ID... | --all`. Every id is looked up before any VM is stopped, so an unknown one
 * stops none.
 */
export async function runVmDestroy(
  ids: string[],
  opts: { all?: boolean; config?: string } & DaemonOption,
): Promise<number> {
  if (!opts.all && ids.length === 0) {
    throw new OptionError("destroy VMs", "give VM ids or --all");
  }
  const ctx = await commandContext(opts);
  const daemon = await daemonOf(ctx, opts);
  if (daemon) {
    const count = await withDaemon(daemon, async (d) => {
      const found = opts.all ? await d.listVms() : await Promise.all(ids.map((id) => d.getVm(id)));
      await Promise.all(found.map((vm) => d.destroyVm(vm.id)));
      return found.length;
    });
    say(`destroyed ${count} VM(s)`);
    return 0;
  }
  const { store } = ctx;
  const records = opts.all
    ? (await store.list()).map((e) => e.record)
    : await Promise.all(ids.map(async (id) => (await store.find(id)).record));
  await Promise.all(records.map((r) => store.remove(r.id, ["owned"])));
  if (opts.all) await store.reap();
  say(`destroyed ${records.length} VM(s)`);
  return 0;
}
