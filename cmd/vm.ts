/**
 * `vmfactory vm create|list|exec|cp|logs|destroy`. `create`, `list`, `exec` and `destroy` go
 * through the `vmfactory serve` daemon when one answers on its socket (same output, same exit
 * codes) and work on their own otherwise, or with `--no-daemon`; `logs`, `cp` and `exec -i`
 * (streams the API does not carry) talk to the VM's folder and agent either way.
 * @module
 */
import { errorMessage, UsageError } from "../lib/errors.ts";
import { factoryFor } from "../lib/factory/factory_for.ts";
import type { VmCreateArgs } from "./_fast_args.ts";
import { AgentClient } from "../lib/guest/agent_client.ts";
import type { ApiClient } from "../lib/server/api_client.ts";
import { daemonIfAny } from "./_daemon.ts";
import type { ExecOverrides } from "../lib/vm/exec_settings.ts";
import type { VmRecord } from "../lib/vm/vm_record.ts";
import { type CommandContext, commandContext, ms, requireLintClean, say } from "./_context.ts";
import { spawnDetached } from "./_self.ts";
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
    : daemonIfAny(ctx.settings, { warn: say });
}

/** Runs `fn` with `daemon` and closes it. */
async function withDaemon<T>(daemon: ApiClient, fn: (daemon: ApiClient) => Promise<T>): Promise<T> {
  try {
    return await fn(daemon);
  } finally {
    daemon.close();
  }
}

/** The workload options of `vm create` and `run`, as commander gives them. */
export interface WorkloadArgs {
  /** `--image REF`. */
  image?: string;
  /** `--net [MODE]`: true when given without a mode (user networking). */
  net?: string | true;
  /** `-p/--port HOST:GUEST`, repeatable. */
  port?: string[];
}

/** `vm create`'s options: the fast parser's, and the workload ones only commander reads. */
export type VmCreateOptions = VmCreateArgs & WorkloadArgs;

/**
 * The workload of `opts`, checked before any VM is made (exit 2 with "Cannot …" for a missing
 * REF, a bad network, or a forward without user networking); the image REF is made absolute so
 * that a daemon, in another folder, finds it too.
 */
export async function workloadOf(
  opts: WorkloadArgs,
): Promise<{ image?: string; net?: string; ports?: string[] }> {
  const net = opts.net === true ? "user" : opts.net;
  const ports = opts.port?.length ? opts.port : undefined;
  if (ports && net !== "user") {
    throw new OptionError("forward a port", "port forwards need user networking (--net user)");
  }
  let image: string | undefined;
  if (opts.image !== undefined) {
    const { parseImageRef } = await import("../lib/image/image_ref.ts");
    const ref = parseImageRef(opts.image);
    image = ref.kind === "oci" ? `oci:${ref.path}${ref.tag ? `:${ref.tag}` : ""}` : ref.path;
  }
  if (net) (await import("../lib/net/net_spec.ts")).parseNetSpec(net);
  return { ...(image ? { image } : {}), ...(net ? { net } : {}), ...(ports ? { ports } : {}) };
}

/**
 * `vm create`: prints the record (JSON with --json) and returns the exit code. Through the
 * daemon its factory makes the VM (with the daemon's configuration, which it linted when it
 * started) and refills its own pool; `--strict` and `--fallback`, which the API does not carry,
 * always work without the daemon. An image conversion reports its progress on stderr.
 */
export async function runVmCreate(opts: VmCreateOptions): Promise<number> {
  const workload = await workloadOf(opts);
  const ctx = await commandContext(opts);
  const daemon = opts.strict || opts.fallback ? undefined : await daemonOf(ctx, opts);
  const request = {
    cpus: opts.cpus,
    memoryMiB: opts.memory,
    hostname: opts.hostname,
    ...workload,
  };
  if (daemon) {
    const record = await withDaemon(daemon, (d) => d.createVm(request));
    printCreated(record, opts.json);
    return 0;
  }
  await requireLintClean(ctx, opts.config);
  const factory = await factoryFor(ctx.settings, ctx.store, { ...opts, log: say });
  const record = await factory.getVm(request);
  printCreated(record, opts.json);
  await factory.close();
  refillInBackground(factory.kind, opts.config);
  return 0;
}

/**
 * After a standalone factory handed out a template clone: tops the clone pool up in a detached
 * process (`factory refill`), so that this command returns at once and the next one is fast.
 */
export function refillInBackground(kind: string, config?: string): void {
  if (kind !== "template") return;
  try {
    spawnDetached(["factory", "refill", ...(config ? ["--config", config] : [])]);
  } catch (err) {
    // the VM is made and printed: a refill that cannot start costs the next request, no more
    say(`warning: cannot start the background pool refill: ${errorMessage(err)}`);
  }
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

/** `vm exec`'s options. */
export interface VmExecArgs extends DaemonOption {
  shell?: string;
  timeout?: number;
  config?: string;
  /** `-i`: this process's stdin is the command's (else /dev/null). */
  interactive?: boolean;
  /** `-e K=V`, repeatable. */
  env?: string[];
  /** `-w DIR`. */
  workdir?: string;
  /** `-u USER`. */
  user?: string;
}

/**
 * `vm exec ID -- CMD...`: streams output (with backpressure), returns the command's exit code.
 * In a VM with an image the command runs in it with the image's Env, WorkingDir and User, which
 * `-e`, `-w` and `-u` override. With `-i` this process's stdin is streamed to the command.
 */
export async function runVmExec(id: string, command: string[], opts: VmExecArgs): Promise<number> {
  if (!opts.shell && command.length === 0) {
    throw new OptionError("run a command", "give a command after `--` or use --shell");
  }
  const overrides: ExecOverrides & { env?: string[] } = {
    ...(opts.env?.length ? { env: opts.env } : {}),
    ...(opts.workdir !== undefined ? { cwd: opts.workdir } : {}),
    ...(opts.user !== undefined ? { user: opts.user } : {}),
  };
  const ctx = await commandContext(opts);
  // the API takes stdin whole, not as a stream: -i talks to the agent itself
  const daemon = opts.interactive ? undefined : await daemonOf(ctx, opts);
  const res = daemon
    ? await withDaemon(daemon, (d) =>
      d.exec(id, {
        ...(opts.shell ? { shell: opts.shell } : { cmd: command }),
        ...overrides,
        timeoutS: opts.timeout,
      }, {
        stdout: (chunk) => writeAll(Deno.stdout, chunk),
        stderr: (chunk) => writeAll(Deno.stderr, chunk),
      }))
    : await execStandalone(ctx, id, command, opts, overrides);
  if (res.truncated) say("vmfactory: output truncated at the agent's limit");
  if (res.timedOut) say(`vmfactory: killed after ${opts.timeout} s`);
  return res.exitCode;
}

/** `vm exec` without the daemon: through the VM's agent socket. */
async function execStandalone(
  { store }: CommandContext,
  id: string,
  command: string[],
  opts: VmExecArgs,
  overrides: ExecOverrides,
): Promise<{ exitCode: number; truncated: boolean; timedOut: boolean }> {
  const { record, agent } = await connectTo(store, id, "run a command in");
  try {
    const { execSettingsFor } = await import("../lib/vm/exec_settings.ts");
    return await agent.exec(opts.shell ? { shell: opts.shell } : command, {
      ...execSettingsFor(record, overrides),
      ...(opts.interactive ? { stdin: Deno.stdin.readable } : {}),
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

/** The running VM `id` of `store` and a connection to its agent (the caller closes it). */
async function connectTo(
  store: CommandContext["store"],
  id: string,
  what: string,
): Promise<{ record: VmRecord; agent: AgentClient }> {
  const { record, alive } = await store.find(id);
  if (!alive) throw new UsageError(`${what} VM ${record.id}`, "its QEMU is not running");
  return { record, agent: await AgentClient.connect(record.agentSocket, { timeoutMs: 10_000 }) };
}

/** Writes all of `chunk` to `out`, waiting for each write (backpressure). */
export async function writeAll(
  out: { write(p: Uint8Array): Promise<number> },
  chunk: Uint8Array,
): Promise<void> {
  for (let at = 0; at < chunk.length;) at += await out.write(chunk.subarray(at));
}

/** `vm cp`'s options. */
export interface VmCpArgs {
  config?: string;
  /** `--max-size SIZE`: largest tar stream (bytes, or with K, M, G, T). */
  maxSize?: string;
  /** `--progress`: report bytes on stderr even when it is not a terminal. */
  progress?: boolean;
}

/**
 * `vm cp SRC ID:DST` / `vm cp ID:SRC DST`: copies files and folder trees into or out of a VM
 * by `docker cp`'s rules, streamed through its agent (lib/run/vm_copy.ts).
 */
export async function runVmCp(src: string, dst: string, opts: VmCpArgs): Promise<number> {
  const [from, to] = [vmSideOf(src), vmSideOf(dst)];
  if ((from === undefined) === (to === undefined)) {
    throw new OptionError(
      `copy ${src} to ${dst}`,
      "exactly one side must be in a VM, as ID:PATH (a local path with a colon: ./NAME)",
    );
  }
  const maxBytes = opts.maxSize === undefined ? undefined : byteSize(opts.maxSize);
  const { store } = await commandContext(opts);
  const vmSide = (from ?? to)!;
  const { record, agent } = await connectTo(store, vmSide.id, "copy files with");
  const progress = copyProgress(opts.progress);
  try {
    const { copyFromVm, copyIntoVm } = await import("../lib/run/vm_copy.ts");
    const options = { maxBytes, onProgress: progress.onProgress };
    const { bytes } = from
      ? await copyFromVm(agent, record, from.path, dst, options)
      : await copyIntoVm(agent, record, src, to!.path, options);
    progress.done(bytes);
  } finally {
    progress.stop();
    agent.close();
  }
  return 0;
}

/** `ID:PATH` read as a VM's side of a copy, or undefined for a local path. */
function vmSideOf(arg: string): { id: string; path: string } | undefined {
  const m = /^([A-Za-z0-9_-]+):(.*)$/.exec(arg);
  return m ? { id: m[1], path: m[2] } : undefined;
}

/** Reads `--max-size`: bytes, or a whole number with K, M, G or T (powers of 1024). */
export function byteSize(text: string): number {
  const m = /^([0-9]{1,15})([KMGT]?)(i?B)?$/i.exec(text);
  const power = m?.[2] ? "KMGT".indexOf(m[2].toUpperCase()) + 1 : 0;
  const n = m ? Number(m[1]) * 1024 ** power : NaN;
  if (!(n >= 1) || !Number.isSafeInteger(n)) {
    throw new OptionError(
      "read --max-size",
      `expected bytes, e.g. 1048576, 512M or 4G, got ${text}`,
    );
  }
  return n;
}

/**
 * Progress of a copy on stderr, every half second once it runs longer than that: when stderr is
 * a terminal, or with `force` (`--progress`); otherwise nothing.
 */
export function copyProgress(force?: boolean): {
  onProgress?: (bytes: number) => void;
  done(bytes: number): void;
  stop(): void;
} {
  if (!force && !Deno.stderr.isTerminal()) return { done() {}, stop() {} };
  const start = performance.now();
  let bytes = 0, shown = false;
  const line = () => {
    const s = (performance.now() - start) / 1000;
    return `copied ${mib(bytes)} in ${s.toFixed(1)} s (${mib(bytes / Math.max(s, 0.001))}/s)`;
  };
  const timer = setInterval(() => {
    shown = true;
    say(line());
  }, 500);
  return {
    onProgress: (n) => bytes = n,
    done(n) {
      bytes = n;
      if (shown) say(line());
    },
    stop: () => clearInterval(timer),
  };
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
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
