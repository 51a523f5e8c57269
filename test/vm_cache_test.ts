/**
 * VMCache end to end. (a) The gRPC server over a VmCache of cheap real QEMU processes (`-S`, no
 * guest): many concurrent clients, every VM to exactly one of them, `Quit` spares handed-out VMs.
 * (b) The real CLI with a real guest: `factory init` in a subprocess, `vm create` from another,
 * a server killed -9 and its successor reaping only the orphans, `factory destroy`, no server.
 */
import assert from "node:assert/strict";
import { CacheClient } from "../lib/cache/cache_client.ts";
import { parseHandOff } from "../lib/cache/vmcache_source.ts";
import { cachedFolders, startVmCacheServer } from "../lib/cache/vm_cache_server.ts";
import { DEFAULT_QEMU_PATH } from "../lib/config/builtin_default.ts";
import type { SourceSupply, SourceVm, VmSource } from "../lib/factory/vm_source.ts";
import type { AgentClient } from "../lib/guest/agent_client.ts";
import { identify, isAlive } from "../lib/process_identity.ts";
import { startQemu } from "../lib/qemu/qemu_process.ts";
import type { VmRecord } from "../lib/vm/vm_record.ts";
import { processOf, type VmStore } from "../lib/vm/vm_store.ts";
import { qemuPidsWith, ROOT, vmEnv } from "./_vm_env.ts";

const ok = () => Promise.resolve();
const NO_AGENT = { personalizeGuest: ok, close() {} } as unknown as AgentClient;

/** "Boots" a QEMU that never runs a guest (`-S`, no kernel): real process, QMP, ~0.2 s. */
class BareQemuSource implements VmSource {
  readonly kind = "bare-qemu";
  constructor(readonly store: VmStore) {}
  prepare(): Promise<SourceSupply> {
    return Promise.resolve({
      shape: { cpus: 1, memoryMiB: 16, maxCpus: 1, maxMemoryMiB: 16 },
      acquire: () => this.#boot(),
    });
  }
  async #boot(): Promise<SourceVm> {
    const pending = await this.store.allocate();
    const { paths } = pending;
    const argv = [
      DEFAULT_QEMU_PATH,
      ...["-machine", "pc", "-accel", "tcg", "-S", "-nodefaults", "-display", "none", "-m", "16"],
      ...["-qmp", `unix:${paths.qmpSocket},server=on,wait=off`, "-name", `vmf-${paths.id}`],
    ];
    pending.process = await startQemu(argv, {
      logFile: `${paths.dir}/qemu.log`,
      pidFile: paths.pidFile,
      qmpSocket: paths.qmpSocket,
    });
    return {
      pending,
      agent: NO_AGENT, // no guest: personalization has nothing to set
      size: { cpus: 1, memoryMiB: 16 },
      origin: "direct",
      accel: "tcg",
      sharesBoot: false,
    };
  }
}

const gone = async (pids: number[], ms = 5000) => {
  const deadline = Date.now() + ms;
  const live = pids.map((pid) => identify(pid)).filter((p) => p !== undefined);
  while (live.some((p) => isAlive(p))) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
};

Deno.test("VMCache gRPC: 8 clients × 25 GetBaseVM over real QEMU processes, Quit spares handed-out VMs", async () => {
  await using env = await vmEnv({ enableTemplate: false });
  const socketPath = `${env.dir}/cache.sock`;
  const lines: string[] = [];
  const server = await startVmCacheServer({
    socketPath,
    stateDir: env.store.stateDir,
    size: 4,
    base: (store) => new BareQemuSource(store),
    log: (l) => lines.push(l),
  });
  try {
    assert.equal(Deno.statSync(socketPath).mode! & 0o777, 0o600);
    await server.cache.filled;
    const clients = await Promise.all(
      Array.from({ length: 8 }, () => CacheClient.connect(socketPath, { timeoutMs: 60_000 })),
    );
    const kept: VmRecord[] = [];
    const ids: string[] = [];
    await Promise.all(clients.map(async (client) => {
      for (let i = 0; i < 25; i++) {
        const vm = await client.getBaseVM();
        const info = parseHandOff(vm.hypervisor);
        ids.push(info.id);
        assert.equal(info.stateDir, env.store.stateDir);
        assert.ok(isAlive(processOf(info)), "a live QEMU");
        assert.equal(env.store.status(env.store.pathsOf(info.id))?.state, "offered");
        const record = JSON.parse(Deno.readTextFileSync(`${info.dir}/record.json`));
        assert.equal(record.source, "cache", "the server wrote the hand-out record");
        if (i === 24) kept.push(info);
        else assert.ok(await env.store.remove(info.id, ["offered"]));
      }
    }));
    assert.equal(ids.length, 200);
    assert.equal(new Set(ids).size, 200, "every VM went to exactly one client");
    assert.equal(lines.filter((l) => /handed out VM/.test(l)).length, 200);

    const status = await clients[0].status();
    assert.equal(status.pid, Deno.pid);
    const cachedPids = status.vms.map((v) => v.pid);
    await clients[0].quit();
    for (const c of clients) c.close();
    await server.stopped;
    assert.ok(await gone(cachedPids), "the cached VMs are gone after Quit");
    assert.throws(() => Deno.lstatSync(socketPath), Deno.errors.NotFound);
    assert.deepEqual(cachedFolders(env.store), []);
    for (const vm of kept) assert.ok(isAlive(processOf(vm)), "handed-out VM runs");
    assert.deepEqual((await env.store.list()).map((e) => e.alive), kept.map(() => true));
  } finally {
    await server.stop();
  }
  for (const { record } of await env.store.list()) {
    assert.ok(await env.store.remove(record.id, ["owned"]));
  }
  assert.deepEqual(qemuPidsWith(env.dir), [], "no QEMU left");
  assert.deepEqual([...Deno.readDirSync(env.store.vmsDir)], [], "no folder left");
});

/** A `factory init` subprocess whose stderr lines are collected. */
function startServer(configPath: string) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}cmd/main.ts`, "factory", "init", "--config", configPath],
    env: { NO_COLOR: "1" },
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  const done = (async () => {
    const decoder = new TextDecoder();
    let buf = "";
    for await (const chunk of child.stderr) {
      buf += decoder.decode(chunk, { stream: true });
      const parts = buf.split("\n");
      buf = parts.pop()!;
      lines.push(...parts);
    }
  })();
  const waitFor = async (re: RegExp, ms = 90_000) => {
    const deadline = Date.now() + ms;
    while (!lines.some((l) => re.test(l))) {
      if (Date.now() > deadline) throw new Error(`no ${re} in:\n${lines.join("\n")}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  return { child, lines, waitFor, output: done };
}

Deno.test("VMCache CLI: factory init, vm create from the cache, kill -9 and reap, destroy, no server", async () => {
  await using env = await vmEnv({ enableTemplate: false, vmCacheNumber: 2 });
  const socket = env.settings.vmCacheEndpoint;
  let server = startServer(env.configPath);
  try {
    await server.waitFor(/cache: 2\/2 VMs ready/);

    const created = await env.cli(["vm", "create", "--json"]);
    assert.equal(created.code, 0, created.stderr);
    const vm = JSON.parse(created.stdout);
    assert.equal(vm.source, "cache");
    console.log(`vm create from the cache: ${JSON.stringify(vm.timings)}`);
    assert.ok(vm.timings.phases.fetchMs >= 0 && vm.timings.phases.personalizeMs >= 0);
    const hostname = await env.cli(["vm", "exec", vm.id, "--", "hostname"]);
    assert.equal(hostname.code, 0, hostname.stderr);
    assert.equal(hostname.stdout.trim(), `vm-${vm.id}`);
    const list = JSON.parse((await env.cli(["vm", "list", "--json"])).stdout);
    assert.deepEqual(list.vms.map((v: VmRecord) => [v.id, v.source]), [[vm.id, "cache"]]);
    await server.waitFor(/handed out VM/);

    const status = JSON.parse((await env.cli(["factory", "status", "--json"])).stdout);
    assert.equal(status.running, true);
    assert.equal(status.pid, server.child.pid);
    assert.equal(status.socket, socket);

    // kill -9: the cached (and booting) VMs are orphans; the handed-out one is the user's
    const orphans = cachedFolders(env.store);
    assert.ok(orphans.length >= 1);
    server.child.kill("SIGKILL");
    await server.child.status;
    assert.ok(Deno.lstatSync(socket).isSocket, "a stale socket is left behind");
    server = startServer(env.configPath);
    await server.waitFor(/cache: 2\/2 VMs ready/);
    assert.ok(server.lines.some((l) => /replacing stale socket/.test(l)), server.lines.join("\n"));
    assert.ok(server.lines.some((l) => /reaped \d+ orphaned cached VM/.test(l)));
    for (const o of orphans) assert.throws(() => Deno.statSync(o.paths.dir), Deno.errors.NotFound);
    assert.ok(isAlive(processOf(vm)), "the handed-out VM survived the reaping");

    const destroyed = await env.cli(["factory", "destroy"]);
    assert.equal(destroyed.code, 0, destroyed.stderr);
    assert.equal((await server.child.status).code, 0);
    await server.output;
    assert.ok(server.lines.some((l) => /Quit received/.test(l)));
    assert.deepEqual(cachedFolders(env.store), []);
    assert.deepEqual(qemuPidsWith(env.dir), [vm.pid], "only the handed-out VM runs");
    assert.throws(() => Deno.lstatSync(socket), Deno.errors.NotFound);
    const again = await env.cli(["factory", "destroy"]);
    assert.equal(again.code, 0);
    assert.match(again.stderr, /no VMCache server running/);
    const stopped = JSON.parse((await env.cli(["factory", "status", "--json"])).stdout);
    assert.equal(stopped.running, false);

    const noServer = await env.cli(["vm", "create"]);
    assert.equal(noServer.code, 2);
    assert.ok(noServer.stderr.includes(socket), noServer.stderr);
    assert.doesNotMatch(noServer.stderr, /at .*\.ts:\d+/, "no stack trace");
    const fallback = await env.cli(["vm", "create", "--fallback", "--json"]);
    assert.equal(fallback.code, 0, fallback.stderr);
    assert.equal(JSON.parse(fallback.stdout).source, "direct");
    assert.match(fallback.stderr, /warning: .*not running.*cold-booting instead/);
    console.log(`cold boot (--fallback): ${JSON.stringify(JSON.parse(fallback.stdout).timings)}`);

    assert.equal((await env.cli(["vm", "destroy", "--all"])).code, 0);
    assert.deepEqual(qemuPidsWith(env.dir), []);
    assert.deepEqual([...Deno.readDirSync(env.store.vmsDir)], []);
  } finally {
    try {
      server.child.kill("SIGKILL");
    } catch {
      // exited
    }
    await server.child.status;
    await server.output.catch(() => {});
  }
});
