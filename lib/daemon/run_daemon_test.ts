import assert from "node:assert/strict";
import { DaemonLog } from "./daemon_log.ts";
import { InstanceRunningError } from "./instance_lock.ts";
import { type DaemonService, runDaemon, type SignalSource } from "./run_daemon.ts";

/** Signals a test sends. */
class FakeSignals implements SignalSource {
  readonly listeners = new Map<Deno.Signal, Set<() => void>>();
  add(signal: Deno.Signal, fn: () => void) {
    if (!this.listeners.has(signal)) this.listeners.set(signal, new Set());
    this.listeners.get(signal)!.add(fn);
  }
  remove(signal: Deno.Signal, fn: () => void) {
    this.listeners.get(signal)?.delete(fn);
  }
  send(signal: Deno.Signal) {
    for (const fn of this.listeners.get(signal) ?? []) fn();
  }
  get count() {
    return [...this.listeners.values()].reduce((n, s) => n + s.size, 0);
  }
}

const tick = () => new Promise((r) => setTimeout(r, 0));

async function withDir(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("recover, start, SIGHUP reloads (errors logged), SIGTERM drains and resolves 0", () =>
  withDir(async (dir) => {
    const signals = new FakeSignals();
    const lines: string[] = [];
    const steps: string[] = [];
    let reloads = 0;
    const service: DaemonService = {
      drain: (reason) => {
        steps.push(`drain ${reason}`);
        return Promise.resolve();
      },
      reload: () => {
        reloads++;
        steps.push("reload");
        return reloads === 2 ? Promise.reject(new Error("bad file")) : Promise.resolve();
      },
    };
    const run = runDaemon({
      role: "serve",
      what: "the daemon",
      stateDir: dir,
      log: new DaemonLog("text", (l) => lines.push(l)),
      signals,
      recover: () => {
        steps.push("recover");
        return Promise.resolve();
      },
      start: () => {
        steps.push("start");
        return Promise.resolve(service);
      },
    });
    await tick();
    await assert.rejects(
      () =>
        runDaemon({
          role: "serve",
          what: "the daemon",
          stateDir: dir,
          log: new DaemonLog(),
          start: () => Promise.resolve(service),
        }),
      InstanceRunningError,
    );
    signals.send("SIGHUP");
    signals.send("SIGHUP");
    await tick();
    signals.send("SIGTERM");
    assert.equal(await run, 0);
    assert.deepEqual(steps, ["recover", "start", "reload", "reload", "drain SIGTERM"]);
    assert.deepEqual(lines, ["error: reload failed; keeping the configuration in force: bad file"]);
    assert.equal(signals.count, 0, "listeners removed");
  }));

Deno.test("a service that stops by itself is drained; a stop during start drains after it", () =>
  withDir(async (dir) => {
    const stopped = Promise.withResolvers<void>();
    const drained: string[] = [];
    const base = {
      role: "vmcache",
      what: "the VMCache server",
      stateDir: dir,
      log: new DaemonLog(),
    };
    const quit = runDaemon({
      ...base,
      signals: new FakeSignals(),
      start: () =>
        Promise.resolve({
          stopped: stopped.promise,
          drain: (r) => (drained.push(r), Promise.resolve()),
        }),
    });
    await tick();
    stopped.resolve();
    assert.equal(await quit, 0);

    const signals = new FakeSignals();
    const started = Promise.withResolvers<void>();
    let aborted = false;
    const slow = runDaemon({
      ...base,
      signals,
      start: async (signal) => {
        await started.promise;
        aborted = signal.aborted;
        return { drain: (r) => (drained.push(r), Promise.resolve()) };
      },
    });
    await tick();
    signals.send("SIGINT");
    signals.send("SIGHUP"); // ignored while stopping
    started.resolve();
    assert.equal(await slow, 0);
    assert.ok(aborted, "start saw the stop");
    assert.deepEqual(drained, ["stopped", "SIGINT"]);
  }));

Deno.test("a second stop signal while draining exits at once with 1", () =>
  withDir(async (dir) => {
    const signals = new FakeSignals();
    const exits: number[] = [];
    const drainGate = Promise.withResolvers<void>();
    const lines: string[] = [];
    const run = runDaemon({
      role: "serve",
      what: "the daemon",
      stateDir: dir,
      log: new DaemonLog("text", (l) => lines.push(l)),
      signals,
      exit: (code) => exits.push(code),
      start: () => Promise.resolve({ drain: () => drainGate.promise }),
    });
    await tick();
    signals.send("SIGTERM");
    await tick();
    signals.send("SIGTERM");
    assert.deepEqual(exits, [1]);
    assert.match(lines[0], /SIGTERM again: exiting now/);
    drainGate.resolve();
    assert.equal(await run, 0);
  }));
