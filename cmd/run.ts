/**
 * `vmfactory run [options] -- CMD...`: one command in a VM of its own (lib/run/run_command.ts):
 * the VM is made (with an image, a network, forwarded ports), the `--file`s copied in, CMD run
 * with this process's stdout and stderr (and stdin with `-i`), and the VM destroyed afterwards —
 * after a failure, a timeout, or Ctrl-C (SIGINT) and SIGTERM too. Exits with CMD's exit code,
 * 124 when `--timeout` killed it, 130/143 when interrupted.
 * @module
 */
import { VmfactoryError } from "../lib/errors.ts";
import { factoryFor } from "../lib/factory/factory_for.ts";
import type { RunFile } from "../lib/run/run_command.ts";
import type { ApiClient } from "../lib/server/api_client.ts";
import { daemonIfAny } from "./_daemon.ts";
import { commandContext, requireLintClean, say } from "./_context.ts";
import { OptionError } from "./_usage.ts";
import type { RunFastArgs } from "./_fast_args.ts";
import { copyProgress, refillInBackground, workloadOf, writeAll } from "./vm.ts";

/** `run`'s options, as commander (and the fast parser) give them. */
export type RunArgs = RunFastArgs;

/** Exit code when `--timeout` killed the command (as timeout(1)). */
const TIMED_OUT = 124;

/** A run interrupted by a signal: the VM is destroyed, the CLI exits 128 + the signal's number. */
class RunInterrupted extends VmfactoryError {
  constructor(signal: "SIGINT" | "SIGTERM") {
    super("run the command", `interrupted by ${signal}; its VM is destroyed`, {
      exitCode: signal === "SIGINT" ? 130 : 143,
    });
  }
}

/**
 * `run`: makes the VM through a standalone factory (as `vm create --no-daemon`), runs CMD,
 * destroys the VM; afterwards tops a template's clone pool up in the background, as `vm create`
 * does, so that the next run is fast. Returns CMD's exit code.
 */
export async function runRun(command: string[], opts: RunArgs): Promise<number> {
  const files = (opts.file ?? []).map(fileOf);
  const workload = await workloadOf(opts);
  const ctx = await commandContext(opts);
  // through a daemon when one answers: it owns the pool; files, stdin and --strict need the
  // standalone path (the API takes no files, stdin only whole, and always falls back)
  if (!files.length && !opts.interactive && !opts.strict && opts.daemon !== false) {
    const daemon = await daemonIfAny(ctx.settings, { warn: say });
    if (daemon) return await runThroughDaemon(daemon, command, opts, workload);
  }
  await requireLintClean(ctx, opts.config);
  const factory = await factoryFor(ctx.settings, ctx.store, { strict: opts.strict, log: say });
  const { runCommand } = await import("../lib/run/run_command.ts");
  const aborter = new AbortController();
  const listeners = (["SIGINT", "SIGTERM"] as const).map((signal) => {
    const listener = () => aborter.abort(new RunInterrupted(signal));
    Deno.addSignalListener(signal, listener);
    return () => Deno.removeSignalListener(signal, listener);
  });
  const progress = copyProgress(opts.progress);
  try {
    const result = await runCommand(factory, ctx.store, {
      request: { cpus: opts.cpus, memoryMiB: opts.memory, ...workload },
      command,
      ...(opts.env?.length ? { env: opts.env } : {}),
      ...(opts.workdir !== undefined ? { cwd: opts.workdir } : {}),
      ...(opts.user !== undefined ? { user: opts.user } : {}),
      files,
      copy: { onProgress: progress.onProgress },
      ...(opts.interactive ? { stdin: Deno.stdin.readable } : {}),
      ...(opts.timeout ? { timeoutMs: opts.timeout * 1000 } : {}),
      onStdout: (chunk) => writeAll(Deno.stdout, chunk),
      onStderr: (chunk) => writeAll(Deno.stderr, chunk),
      signal: aborter.signal,
    });
    if (result.timedOut) say(`vmfactory: killed after ${opts.timeout} s`);
    return result.timedOut ? TIMED_OUT : result.exitCode;
  } finally {
    progress.stop();
    for (const remove of listeners) remove();
    await factory.close();
    refillInBackground(factory.kind, opts.config);
  }
}

/** `run` as one `POST /v1/run`; Ctrl-C closes the connection, and the daemon destroys the VM. */
async function runThroughDaemon(
  daemon: ApiClient,
  command: string[],
  opts: RunArgs,
  workload: Awaited<ReturnType<typeof workloadOf>>,
): Promise<number> {
  let interrupted: RunInterrupted | undefined;
  const listeners = (["SIGINT", "SIGTERM"] as const).map((signal) => {
    const listener = () => {
      interrupted = new RunInterrupted(signal);
      daemon.close();
    };
    Deno.addSignalListener(signal, listener);
    return () => Deno.removeSignalListener(signal, listener);
  });
  try {
    const outcome = await daemon.run({
      ...(opts.cpus ? { cpus: opts.cpus } : {}),
      ...(opts.memory ? { memoryMiB: opts.memory } : {}),
      ...workload,
      cmd: command,
      ...(opts.env?.length ? { env: opts.env } : {}),
      ...(opts.workdir !== undefined ? { cwd: opts.workdir } : {}),
      ...(opts.user !== undefined ? { user: opts.user } : {}),
      ...(opts.timeout ? { timeoutS: opts.timeout } : {}),
    }, {
      stdout: (chunk) => writeAll(Deno.stdout, chunk),
      stderr: (chunk) => writeAll(Deno.stderr, chunk),
    }).catch((err) => {
      throw interrupted ?? err;
    });
    if (outcome.timedOut) say(`vmfactory: killed after ${opts.timeout} s`);
    return outcome.timedOut ? TIMED_OUT : outcome.exitCode;
  } finally {
    for (const remove of listeners) remove();
    daemon.close();
  }
}

/** Reads `--file HOST:GUEST` (split at the first colon; GUEST absolute). */
function fileOf(text: string): RunFile {
  const at = text.indexOf(":");
  const host = text.slice(0, at), guest = text.slice(at + 1);
  if (at <= 0 || !guest.startsWith("/")) {
    throw new OptionError(
      "read --file",
      `expected HOST:GUEST with an absolute GUEST path, e.g. ./app:/srv/app, got ${text}`,
    );
  }
  return { host, guest };
}
