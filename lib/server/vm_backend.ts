/**
 * The API's real backend: VMs from the daemon's {@link VmFactory}, found and removed through the
 * {@link VmStore} (owned VMs only, as `vm list` and `vm destroy`), commands run through the guest
 * agent (as `vm exec`, streamed). Requests on one VM share one agent connection (QEMU serves one
 * client per agent socket at a time; the agent multiplexes calls), closed when the last ends.
 * @module
 */
import { execSettingsFor, runCommandFor } from "../vm/exec_settings.ts";
import type { Settings } from "../config/settings.ts";
import type { VmFactory } from "../factory/vm_factory.ts";
import { SourceUnfitError, type VmRequest } from "../factory/vm_source.ts";
import { AgentClient } from "../guest/agent_client.ts";
import { AgentError } from "../guest/agent_error.ts";
import { errorMessage } from "../errors.ts";
import type { VmRecord } from "../vm/vm_record.ts";
import type { VmStore } from "../vm/vm_store.ts";
import { stdinOf } from "./api_bodies.ts";
import {
  type ApiBackend,
  ApiError,
  type CreateVmBody,
  type ExecBody,
  type ExecOutcome,
  type ExecSink,
  type RunBody,
  type VmState,
} from "./api_server.ts";

/** What {@link VmApiBackend} works with. */
export interface VmApiBackendOptions {
  /** Makes the VMs. */
  factory: VmFactory;
  /** The state directory's VM folders (the factory's). */
  store: VmStore;
  /** The settings the factory was made from. */
  settings: Settings;
  /** Warnings (a VM a run could not destroy). */
  log?: (line: string, fields?: Record<string, unknown>) => void;
}

/** A request with the workload fields another part of vmfactory is adding to {@link VmRequest}. */
type WorkloadRequest = VmRequest & { image?: string; net?: string; ports?: string[] };

/** Connect deadline and agent watchdog, as `vm exec`. */
const AGENT_TIMEOUT_MS = 10_000;
/** The agent's largest output limit: unlimited for a streamed command. */
const NO_OUTPUT_LIMIT = 0xffff_ffff;

/**
 * {@link ApiBackend} over a factory and its store.
 * @example
 * ```ts
 * const store = new VmStore(settings.stateDir);
 * const factory = await factoryFor(settings, store);
 * const server = await startApiServer(new VmApiBackend({ factory, store, settings }), {
 *   socketPath: `${settings.stateDir}/vmfactory.sock`,
 * });
 * ```
 */
export class VmApiBackend implements ApiBackend {
  #agents = new SharedAgents();

  /** A backend over `options.factory` and `options.store`. */
  constructor(readonly options: VmApiBackendOptions) {}

  /**
   * Makes a VM with `factory.getVm`. The factory cannot be interrupted: a client that left
   * meanwhile has its VM destroyed once made.
   */
  async createVm(body: CreateVmBody, signal: AbortSignal): Promise<VmRecord> {
    const { cpus, memoryMiB, hostname, image, net, ports } = body;
    const wanted: WorkloadRequest = { cpus, memoryMiB, hostname, image, net, ports };
    const request = Object.fromEntries(
      Object.entries(wanted).filter(([, v]) => v !== undefined),
    ) as WorkloadRequest;
    let record: VmRecord;
    try {
      record = await this.options.factory.getVm(request);
    } catch (err) {
      // a request beyond what the source's VMs can grow to is the request's fault, not the server's
      if (err instanceof SourceUnfitError && / asked, its VMs can /.test(err.reason)) {
        throw new ApiError(409, "source_unfit", "create a VM", err.reason, { cause: err });
      }
      throw err;
    }
    if (signal.aborted) {
      await this.#destroyQuietly(record.id);
      throw signal.reason;
    }
    return record;
  }

  /** The owned VMs, oldest first. */
  async listVms(): Promise<VmState[]> {
    return (await this.options.store.list()).map(({ record, alive }) => ({
      ...record,
      state: alive ? "running" : "dead",
    }));
  }

  /**
   * The owned VM whose id is `id` or, as in the CLI, the only one starting with it.
   * @throws ApiError 400 when the prefix matches several
   */
  async getVm(id: string): Promise<VmState | undefined> {
    const vms = await this.listVms();
    const exact = vms.find((vm) => vm.id === id);
    if (exact) return exact;
    const matches = vms.filter((vm) => vm.id.startsWith(id));
    if (matches.length > 1) {
      const ids = matches.map((vm) => vm.id).join(", ");
      throw new ApiError(400, "ambiguous_id", `find VM ${id}`, `the prefix matches ${ids}`);
    }
    return matches[0];
  }

  /** Stops and removes the owned VM `id` (or prefix, as {@link getVm}), as `vm destroy`. */
  async destroyVm(id: string): Promise<boolean> {
    const vm = await this.getVm(id);
    return vm !== undefined && await this.options.store.remove(vm.id, ["owned"]);
  }

  /**
   * Runs a command in the running VM `id` (or prefix, as {@link getVm}).
   * @throws ApiError 404 (no such VM), 409 (not running), 400 (a command that cannot start)
   */
  async exec(
    id: string,
    body: ExecBody,
    sink: ExecSink,
    signal: AbortSignal,
  ): Promise<ExecOutcome> {
    const vm = await this.getVm(id);
    if (!vm) throw new ApiError(404, "vm_not_found", `find VM ${id}`, "no such VM");
    if (vm.state !== "running") {
      throw new ApiError(
        409,
        "vm_not_running",
        `run a command in VM ${id}`,
        "its QEMU is not running",
      );
    }
    return await this.#exec(vm, body, sink, signal);
  }

  /** Creates a VM, runs the command, destroys the VM (also on failure and when the client left). */
  async run(
    body: RunBody,
    sink: ExecSink,
    signal: AbortSignal,
  ): Promise<ExecOutcome & { vm: VmRecord }> {
    const vm = await this.createVm(body, signal);
    try {
      return { ...await this.#exec(vm, body, sink, signal, { run: true }), vm };
    } finally {
      await this.#destroyQuietly(vm.id);
    }
  }

  /** `ok`, the factory's kind, the owned VMs, and for templates the clone pool. */
  async health(): Promise<{ ok: boolean; [key: string]: unknown }> {
    const { factory, store, settings } = this.options;
    const pool = factory.kind === "template"
      ? { pool: { ready: store.pooled().length, size: settings.poolSize } }
      : {};
    return { ok: true, source: factory.kind, vms: (await store.list()).length, ...pool };
  }

  async #exec(
    vm: VmRecord,
    body: ExecBody,
    sink: ExecSink,
    signal: AbortSignal,
    how: { run?: boolean } = {},
  ): Promise<ExecOutcome> {
    // in the VM's image with its config's settings; `run` starts the image's Entrypoint/Cmd
    const settings = execSettingsFor(vm, body);
    const command = body.shell !== undefined
      ? { shell: body.shell }
      : how.run
      ? runCommandFor(vm, body.cmd ?? [])
      : body.cmd!;
    const stop = abortion(signal);
    const leasing = this.#agents.lease(vm.agentSocket);
    let lease: AgentLease;
    try {
      lease = await Promise.race([leasing, stop]);
    } catch (err) {
      leasing.then((l) => l.release(), () => {});
      throw err;
    }
    // the agent waits for each callback (backpressure); one that fails kills the command
    let sinkError: unknown;
    const forward =
      (take: (chunk: Uint8Array) => void | Promise<void>) => async (chunk: Uint8Array) => {
        try {
          if (signal.aborted) throw signal.reason;
          await take.call(sink, chunk);
        } catch (err) {
          sinkError ??= err;
          throw err;
        }
      };
    try {
      const running = lease.agent.exec(command, {
        ...(body.stdin !== undefined || body.stdinBase64 !== undefined
          ? { stdin: stdinOf(body) }
          : {}),
        ...settings,
        timeoutMs: (body.timeoutS ?? 0) * 1000,
        collect: false,
        outputLimit: Math.min(sink.outputLimit ?? NO_OUTPUT_LIMIT, NO_OUTPUT_LIMIT),
        onStdout: forward(sink.stdout),
        onStderr: forward(sink.stderr),
      });
      // the connection is kept until the command ends: after an abort, the callback its next
      // output reaches fails, and that kills the command (closing the connection would not)
      running.catch(() => {}).finally(() => lease.release());
      const result = await Promise.race([running, stop]);
      return {
        exitCode: result.exitCode,
        ...(result.signal !== undefined ? { signal: result.signal } : {}),
        timedOut: result.timedOut,
        truncated: result.truncated,
      };
    } catch (err) {
      if (sinkError !== undefined) throw sinkError;
      if (err instanceof AgentError && (err.code === "request" || err.code === "remote")) {
        // a bad argument, or a command the guest cannot start (no such program, user, folder)
        throw new ApiError(400, "bad_command", "run a command", err.message, { cause: err });
      }
      throw err;
    }
  }

  async #destroyQuietly(id: string): Promise<void> {
    try {
      await this.options.store.remove(id, ["owned"]);
    } catch (err) {
      const line = `warning: cannot destroy VM ${id}: ${errorMessage(err)}`;
      (this.options.log ?? ((l) => console.error(l)))(line, { vm: id });
    }
  }
}

/** Rejects with the signal's reason once it aborts. */
function abortion(signal: AbortSignal): Promise<never> {
  const stop = new Promise<never>((_, reject) => {
    if (signal.aborted) reject(signal.reason);
    signal.addEventListener("abort", () => reject(signal.reason), { once: true });
  });
  stop.catch(() => {});
  return stop;
}

/** A shared agent connection, for one request. */
interface AgentLease {
  /** The connection. */
  agent: AgentClient;
  /** Ends this request's use; the last one closes the connection. */
  release(): void;
}

/** One agent connection per VM while requests use it. */
class SharedAgents {
  #byPath = new Map<string, { agent: Promise<AgentClient>; users: number }>();

  async lease(socketPath: string): Promise<AgentLease> {
    for (let attempt = 0;; attempt++) {
      let entry = this.#byPath.get(socketPath);
      if (!entry) {
        entry = {
          agent: AgentClient.connect(socketPath, { timeoutMs: AGENT_TIMEOUT_MS }),
          users: 0,
        };
        this.#byPath.set(socketPath, entry);
      }
      const held = entry;
      held.users++;
      const forget = () => {
        if (this.#byPath.get(socketPath) === held) this.#byPath.delete(socketPath);
      };
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        if (--held.users > 0) return;
        forget();
        held.agent.then((agent) => agent.close(), () => {});
      };
      let agent: AgentClient;
      try {
        agent = await held.agent;
      } catch (err) {
        forget();
        release();
        throw err;
      }
      // a connection that failed (the guest stopped answering) is replaced once
      if (agent.connected || attempt > 0) return { agent, release };
      forget();
      release();
    }
  }
}
