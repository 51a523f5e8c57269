/**
 * One command in a VM of its own, as one call (`vmfactory run`): a VM from the factory (with an
 * image and a network when asked), files copied in, the command run with its stdin and output
 * streamed (in the image, with its Entrypoint/Cmd, Env, WorkingDir and User unless overridden),
 * and the VM destroyed afterwards, whatever happened: a failure, a timeout, an abort.
 * @module
 */
import { UsageError } from "../errors.ts";
import type { VmFactory } from "../factory/vm_factory.ts";
import type { VmRequest } from "../factory/vm_source.ts";
import { AgentClient, type ExecStdin } from "../guest/agent_client.ts";
import {
  checkEnvEntry,
  type ExecOverrides,
  execSettingsFor,
  runCommandFor,
} from "../vm/exec_settings.ts";
import type { VmRecord } from "../vm/vm_record.ts";
import type { VmStore } from "../vm/vm_store.ts";
import { copyIntoVm, type CopyOptions } from "./vm_copy.ts";

/** A host file or folder copied into the VM before the command runs (as `vm cp HOST ID:GUEST`). */
export interface RunFile {
  /** Host path. */
  host: string;
  /** Absolute path in the VM (in its image when it has one). */
  guest: string;
}

/** Options of {@link runCommand}. */
export interface RunOptions extends ExecOverrides {
  /** The VM to make (size, image, network, forwarded ports). */
  request?: VmRequest;
  /** The command; with an image, appended to its Entrypoint, or its Cmd when empty. */
  command: readonly string[];
  /** Copied in, in order, before the command runs. */
  files?: readonly RunFile[];
  /** Limit and progress of the copies. */
  copy?: CopyOptions;
  /** The command's stdin (it gets /dev/null otherwise); a stream is sent with flow control. */
  stdin?: ExecStdin;
  /** Kill the command after this long, ms (default: never); the result then says `timedOut`. */
  timeoutMs?: number;
  /** Each stdout chunk; a returned promise holds the command back until it settles. */
  onStdout?: (chunk: Uint8Array) => unknown;
  /** Each stderr chunk, like `onStdout`. */
  onStderr?: (chunk: Uint8Array) => unknown;
  /**
   * Aborting stops waiting for the command and destroys the VM; the call then rejects with the
   * signal's reason. A VM being made is destroyed once made (the factory is not interrupted).
   */
  signal?: AbortSignal;
}

/** How long each part of a run took, ms. */
export interface RunTimings {
  /** Getting the VM from the factory (with the image and network attached). */
  createMs: number;
  /** Copying the files in. */
  copyMs: number;
  /** The command, start to exit. */
  execMs: number;
  /** Destroying the VM. */
  destroyMs: number;
  /** The whole call. */
  totalMs: number;
}

/** What {@link runCommand} returns. */
export interface RunResult {
  /** The command's exit status (128 + signal when a signal killed it). */
  exitCode: number;
  /** The signal that killed it, if one did. */
  signal?: number;
  /** The timeout killed it. */
  timedOut: boolean;
  /** The VM it ran in (destroyed by now). */
  vm: VmRecord;
  /** Where the time went. */
  timings: RunTimings;
}

/** Connect deadline and agent watchdog, as `vm exec`. */
const AGENT_TIMEOUT_MS = 10_000;

/**
 * Runs `options.command` in a new VM of `factory` and destroys the VM (its folder in `store`)
 * afterwards, also when anything fails or `signal` aborts. Bad input (an environment entry, a
 * relative working folder or guest path, a host file that does not exist) is refused with a
 * {@link UsageError} before any VM is made. A non-zero exit is a result, not an error.
 * @example
 * ```ts
 * const store = new VmStore(settings.stateDir);
 * const factory = await factoryFor(settings, store);
 * const out = new TextDecoder();
 * const { exitCode } = await runCommand(factory, store, {
 *   request: { image: "oci:/srv/alpine:3.20", net: "user" },
 *   command: ["sh", "-c", "wget -qO- http://example.com | head -1"],
 *   onStdout: (chunk) => console.log(out.decode(chunk)),
 * });
 * ```
 */
export async function runCommand(
  factory: VmFactory,
  store: VmStore,
  options: RunOptions,
): Promise<RunResult> {
  const start = performance.now();
  checkRunOptions(options);
  const { signal } = options;
  signal?.throwIfAborted();
  const vm = await factory.getVm(options.request ?? {});
  const made = performance.now();
  let copied = made, ran = made;
  let failure: { error: unknown } | undefined;
  let outcome: { exitCode: number; signal?: number; timedOut: boolean } | undefined;
  const stopped = abortion(signal);
  const connecting = AgentClient.connect(vm.agentSocket, { timeoutMs: AGENT_TIMEOUT_MS });
  try {
    signal?.throwIfAborted();
    const agent = await raced(connecting, stopped);
    for (const file of options.files ?? []) {
      await raced(copyIntoVm(agent, vm, file.host, file.guest, options.copy), stopped);
    }
    copied = performance.now();
    const argv = runCommandFor(vm, options.command);
    const result = await raced(
      agent.exec(argv, {
        ...execSettingsFor(vm, options),
        stdin: options.stdin,
        timeoutMs: options.timeoutMs ?? 0,
        collect: false,
        outputLimit: 0xffff_ffff,
        onStdout: options.onStdout,
        onStderr: options.onStderr,
      }),
      stopped,
    );
    ran = performance.now();
    outcome = {
      exitCode: result.exitCode,
      ...(result.signal !== undefined ? { signal: result.signal } : {}),
      timedOut: result.timedOut,
    };
  } catch (error) {
    failure = { error };
  }
  // closing fails what still waits for the agent (after an abort); destroying kills the rest
  await connecting.then((agent) => agent.close(), () => {});
  const destroying = performance.now();
  try {
    await store.remove(vm.id, ["owned"]);
  } catch (error) {
    failure ??= { error };
  }
  if (failure) throw failure.error;
  const end = performance.now();
  const round = (ms: number) => Math.round(ms * 10) / 10;
  return {
    ...outcome!,
    vm,
    timings: {
      createMs: round(made - start),
      copyMs: round(copied - made),
      execMs: round(ran - copied),
      destroyMs: round(end - destroying),
      totalMs: round(end - start),
    },
  };
}

/** Refuses what would fail only once a VM is made. */
function checkRunOptions(options: RunOptions): void {
  options.env?.forEach(checkEnvEntry);
  if (options.cwd !== undefined && !options.cwd.startsWith("/")) {
    throw new UsageError(
      "run a command",
      `the working folder must be absolute, got ${JSON.stringify(options.cwd)}`,
    );
  }
  for (const { host, guest } of options.files ?? []) {
    const action = `copy ${host} to ${guest}`;
    if (!guest.startsWith("/")) {
      throw new UsageError(action, `the path in the VM must be absolute, got ${guest}`);
    }
    try {
      Deno.lstatSync(host);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) {
        throw new UsageError(action, `${host} does not exist`);
      }
      throw err;
    }
  }
}

/** `work`, or the abort's rejection when that comes first (a late failure of `work` is dropped). */
function raced<T>(work: Promise<T>, stopped: Promise<never>): Promise<T> {
  work.catch(() => {});
  return Promise.race([work, stopped]);
}

/** Rejects with the signal's reason once it aborts (never, without a signal). */
function abortion(signal: AbortSignal | undefined): Promise<never> {
  const stop = new Promise<never>((_, reject) => {
    signal?.addEventListener("abort", () => reject(signal.reason), { once: true });
  });
  stop.catch(() => {});
  return stop;
}
