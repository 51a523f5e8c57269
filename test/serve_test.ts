/**
 * `vmfactory serve` end to end: the real daemon as a child process (JSON logs) over a real
 * template and pool, called with curl on its Unix socket. /healthz, POST /v1/vms from the pool,
 * /metrics through `promtool check metrics`, SIGHUP (new pool bounds apply; a template the new
 * configuration makes stale is rebuilt in the background while a request is cold-booted; a bad
 * file is logged and the old configuration kept), a second start refused, SIGTERM draining an exec in flight
 * (pooled clones destroyed, the handed-out VM kept, exit 0), kill -9 and a new start that takes
 * the lock over and recovers, every log line JSON. And the misuse that exits 2 without QEMU.
 */
import assert from "node:assert/strict";
import { promtoolComplaints } from "../lib/daemon/_promtool.ts";
import { isAlive, signalProcess } from "../lib/process_identity.ts";
import type { VmRecord } from "../lib/vm/vm_record.ts";
import { processOf } from "../lib/vm/vm_store.ts";
import { readUntil, runCli } from "./_cli.ts";
import { qemuPidsWith, ROOT, type VmEnv, vmEnv } from "./_vm_env.ts";

const CURL = "/usr/bin/curl";

/** One HTTP call on the daemon's socket: status and body. */
async function curl(
  socket: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: string }> {
  const args = ["-s", "--unix-socket", socket, "-X", method, "-w", "\n%{http_code}"];
  if (body !== undefined) {
    args.push("-H", "content-type: application/json", "-d", JSON.stringify(body));
  }
  const out = await new Deno.Command(CURL, {
    args: [...args, `http://vmfactory${path}`],
    stdout: "piped",
  })
    .output();
  const text = new TextDecoder().decode(out.stdout);
  const cut = text.lastIndexOf("\n");
  return { status: Number(text.slice(cut + 1)), body: text.slice(0, cut) };
}

/** A `vmfactory serve` child whose stderr lines (JSON) are collected. */
function startServe(env: VmEnv, extra: string[] = []) {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `${ROOT}cmd/main.ts`,
      "serve",
      "--config",
      env.configPath,
      "--log-format",
      "json",
      ...extra,
    ],
    env: { NO_COLOR: "1" },
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  const output = (async () => {
    let buf = "";
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
      buf += chunk;
      const parts = buf.split("\n");
      buf = parts.pop()!;
      lines.push(...parts);
    }
    if (buf) lines.push(buf);
  })();
  const messages = () =>
    lines.map((l) => {
      try {
        return JSON.parse(l).msg as string;
      } catch {
        return l;
      }
    });
  const waitFor = async (re: RegExp, ms = 120_000) => {
    const deadline = Date.now() + ms;
    while (!messages().some((m) => re.test(m))) {
      if (Date.now() > deadline) throw new Error(`no ${re} in:\n${lines.join("\n")}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const kill = async () => {
    try {
      child.kill("SIGKILL");
    } catch {
      // exited
    }
    await child.status;
    await output.catch(() => {});
  };
  return { child, lines, messages, waitFor, output, kill };
}

/** What the tests read of /healthz. */
interface Health {
  ok: boolean;
  pool?: { ready: number; min: number; max: number };
  template?: { state: string; id?: string };
}

/** Polls /healthz until `ok(health)`. */
async function healthUntil(
  socket: string,
  ok: (h: Health) => boolean,
  ms = 120_000,
): Promise<Health> {
  const deadline = Date.now() + ms;
  let last = "";
  for (;;) {
    const reply = await curl(socket, "GET", "/healthz").catch(() => ({ status: 0, body: "" }));
    last = `${reply.status} ${reply.body}`;
    if (reply.status === 200 && ok(JSON.parse(reply.body))) return JSON.parse(reply.body);
    if (Date.now() > deadline) throw new Error(`healthz never got there: ${last}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Every line is a JSON object with time, level and msg. */
function assertJsonLines(lines: string[]) {
  assert.ok(lines.length > 3, lines.join("\n"));
  for (const line of lines) {
    const entry = JSON.parse(line);
    assert.equal(typeof entry.time, "string", line);
    assert.ok(["info", "warn", "error"].includes(entry.level), line);
    assert.equal(typeof entry.msg, "string", line);
  }
}

const pooledPids = (env: VmEnv) => env.store.folders(["pooled"]).map((f) => f.record!.pid);

Deno.test("serve: health, a VM from the pool, metrics, reload, drain with a request in flight, kill -9 and recovery", async () => {
  await using env = await vmEnv({ enableTemplate: true, poolSize: 1 });
  const socket = `${env.settings.stateDir}/vmfactory.sock`;
  let daemon = startServe(env);
  const daemons = [daemon];
  let vm: VmRecord | undefined;
  try {
    const health = await healthUntil(
      socket,
      (h) => h.template?.state === "ready" && (h.pool?.ready ?? 0) >= 1,
    );
    assert.equal(health.ok, true);
    assert.deepEqual([health.pool?.min, health.pool?.max], [1, 4]);

    const created = await curl(socket, "POST", "/v1/vms", {});
    assert.equal(created.status, 201, created.body);
    vm = JSON.parse(created.body) as VmRecord;
    assert.equal(vm.source, "template");
    assert.ok("claimMs" in vm.timings.phases, `a pool hit: ${JSON.stringify(vm.timings)}`);
    console.log(`POST /v1/vms (pool): ${JSON.stringify(vm.timings)}`);

    const started = performance.now();
    const metrics = await curl(socket, "GET", "/metrics");
    console.log(
      `GET /metrics: ${(performance.now() - started).toFixed(1)} ms, ${metrics.body.length} bytes`,
    );
    assert.equal(metrics.status, 200);
    assert.equal(await promtoolComplaints(metrics.body), "");
    for (
      const line of [
        'vmfactory_http_requests_total{route="POST /v1/vms",status="201"} 1',
        'vmfactory_vm_create_duration_seconds_count{source="pool"} 1',
        'vmfactory_vms{state="owned"} 1',
        "vmfactory_template_ready 1",
        "vmfactory_template_stale 0",
        "vmfactory_pool_min 1",
      ]
    ) assert.ok(metrics.body.split("\n").includes(line), `${line} in:\n${metrics.body}`);

    // a second daemon on the same state directory is refused, naming the first
    const second = await runCli([
      "serve",
      "--config",
      env.configPath,
      "--socket",
      `${env.dir}/b.sock`,
    ]);
    assert.equal(second.code, 2, second.stderr);
    assert.match(second.stderr, new RegExp(`another one runs on .* \\(pid ${daemon.child.pid}\\)`));

    // SIGHUP: new pool bounds apply; a broken file is logged and the old configuration kept
    env.reconfigure({ poolSize: 2 }); // pool_min 2, pool_max 8
    daemon.child.kill("SIGHUP");
    await daemon.waitFor(/reloaded the configuration \(pool 2–8\)/);
    await healthUntil(socket, (h) => h.pool?.min === 2 && (h.pool?.ready ?? 0) >= 2);
    // a template the new configuration does not match: rebuilt in the background, the request
    // meanwhile cold-booted, then the pool switched over to the new template. (The rebuild needs
    // the old template's memory freed on the tmpfs: a running clone keeps it allocated, so the
    // only clone handed out goes first.)
    const oldTemplate = (await healthUntil(socket, () => true)).template?.id;
    assert.equal((await curl(socket, "DELETE", `/v1/vms/${vm.id}`)).status, 204);
    env.reconfigure({ kernelParams: "quiet" });
    daemon.child.kill("SIGHUP");
    await daemon.waitFor(/template: the template is stale: kernel_params/);
    const during = await curl(socket, "POST", "/v1/vms", {});
    assert.equal(during.status, 201, during.body);
    const cold = JSON.parse(during.body) as VmRecord;
    assert.equal(cold.source, "direct", "cold-booted while the template builds");
    assert.ok(
      daemon.messages().some((m) => /the template is stale.*; cold-booting instead/.test(m)),
      daemon.lines.join("\n"),
    );
    const rebuilt = await healthUntil(
      socket,
      (h) =>
        h.template?.state === "ready" && h.template.id !== oldTemplate && (h.pool?.ready ?? 0) >= 2,
    );
    const fromNew = await curl(socket, "POST", "/v1/vms", {});
    assert.equal(fromNew.status, 201, fromNew.body);
    vm = JSON.parse(fromNew.body) as VmRecord;
    assert.equal(vm.templateId, rebuilt.template?.id);
    assert.ok(
      env.store.folders(["pooled"]).every((f) => f.status?.templateId === rebuilt.template?.id),
    );

    const good = Deno.readTextFileSync(env.configPath);
    Deno.writeTextFileSync(env.configPath, good + "\n[vmfactory\n");
    daemon.child.kill("SIGHUP");
    await daemon.waitFor(/reload failed; keeping the configuration in force/);
    Deno.writeTextFileSync(env.configPath, good);
    assert.equal((await curl(socket, "GET", "/healthz")).status, 200, "still serving");

    // SIGTERM while an exec streams: it finishes, the pool goes, the handed-out VM stays
    await healthUntil(socket, (h) => (h.pool?.ready ?? 0) >= 2);
    const pooled = pooledPids(env);
    const exec = new Deno.Command(CURL, {
      args: [
        ...["-s", "-N", "--unix-socket", socket, "-H", "accept: application/x-ndjson"],
        ...["-d", JSON.stringify({ shell: "echo started; sleep 2; echo finished" })],
        `http://vmfactory/v1/vms/${vm.id}/exec`,
      ],
      stdout: "piped",
    }).spawn();
    const reader = exec.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let streamed = await readUntil(reader, btoa("started\n"));
    daemon.child.kill("SIGTERM");
    for (let r; !(r = await reader.read()).done;) streamed += r.value;
    await exec.status;
    const events = streamed.trim().split("\n").map((l) => JSON.parse(l));
    assert.deepEqual(
      events.filter((e) => e.type === "stdout").map((e) => atob(e.data)).join(""),
      "started\nfinished\n",
    );
    assert.equal(events.at(-1).type, "exit");
    assert.equal(events.at(-1).exitCode, 0);
    assert.equal((await daemon.child.status).code, 0);
    await daemon.output;
    assertJsonLines(daemon.lines);
    assert.ok(daemon.messages().some((m) => /^stopped: [2-9] pooled clone\(s\) destroyed/.test(m)));
    assert.deepEqual(env.store.folders(["pooled"]), []);
    assert.deepEqual(
      pooled.filter((pid) => qemuPidsWith(env.dir).includes(pid)),
      [],
      "pool stopped",
    );
    assert.ok(isAlive(processOf(vm)), "the handed-out VM runs");
    assert.throws(() => Deno.lstatSync(socket), Deno.errors.NotFound);

    // kill -9 with a full pool: the next start takes the lock over and destroys the leftovers
    daemon = startServe(env);
    daemons.push(daemon);
    await healthUntil(socket, (h) => (h.pool?.ready ?? 0) >= 2);
    const orphans = pooledPids(env);
    daemon.child.kill("SIGKILL");
    await daemon.child.status;
    daemon = startServe(env);
    daemons.push(daemon);
    await daemon.waitFor(/recovery: destroyed [2-9] pooled clone\(s\) of a previous daemon/);
    await healthUntil(socket, (h) => (h.pool?.ready ?? 0) >= 2);
    assert.deepEqual(
      orphans.filter((pid) => qemuPidsWith(env.dir).includes(pid)),
      [],
      "orphans gone",
    );
    assert.ok(isAlive(processOf(vm)), "the handed-out VM survived the recovery");
    daemon.child.kill("SIGTERM");
    assert.equal((await daemon.child.status).code, 0);
    await daemon.output;
    assertJsonLines(daemon.lines);
    assert.deepEqual(
      qemuPidsWith(env.dir).sort(),
      [cold.pid, vm.pid].sort(),
      "only the VMs handed out run",
    );
  } catch (err) {
    for (const d of daemons) console.error(`--- daemon ${d.child.pid}:\n${d.lines.join("\n")}`);
    throw err;
  } finally {
    for (const d of daemons) await d.kill();
    if (vm) signalProcess(processOf(vm), "SIGKILL");
  }
});

Deno.test("serve: --listen without --token-file, a bad address or an open token file exit 2", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const env = { VMFACTORY_STATE_DIR: `${dir}/state` };
    const noToken = await runCli(["serve", "--listen", "127.0.0.1:8080"], env);
    assert.equal(noToken.code, 2);
    assert.match(noToken.stderr, /--listen needs --token-file/);
    const badAddress = await runCli(["serve", "--listen", "localhost", "--token-file", "/x"], env);
    assert.equal(badAddress.code, 2);
    assert.match(badAddress.stderr, /expected HOST:PORT/);
    Deno.writeTextFileSync(`${dir}/token`, "0123456789abcdef0123\n", { mode: 0o644 });
    Deno.chmodSync(`${dir}/token`, 0o644);
    const open = await runCli(
      ["serve", "--listen", "127.0.0.1:0", "--token-file", `${dir}/token`],
      env,
    );
    assert.equal(open.code, 2);
    assert.match(open.stderr, /other users may read it/);
    const format = await runCli(["serve", "--log-format", "xml"], env);
    assert.equal(format.code, 2);
    assert.doesNotMatch(
      noToken.stderr + badAddress.stderr + open.stderr,
      /at .*\.ts:\d+/,
      "no stack",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
