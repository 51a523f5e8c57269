/**
 * The HTTP API over a real template factory (QEMU under TCG), driven with curl over the Unix
 * socket: create, exec (JSON, NDJSON, concurrent on one VM), run, destroy, and a burst of 16
 * concurrent creates. Prints (never asserts) POST /v1/vms on a pool hit beside factory.getVm.
 */
import assert from "node:assert/strict";
import { VmFactory } from "../lib/factory/vm_factory.ts";
import { isAlive } from "../lib/process_identity.ts";
import { type ApiServer, type RequestEvent, startApiServer } from "../lib/server/api_server.ts";
import { VmApiBackend } from "../lib/server/vm_backend.ts";
import { TemplateManager } from "../lib/template/template_manager.ts";
import type { VmRecord } from "../lib/vm/vm_record.ts";
import { vmEnv } from "./_vm_env.ts";

const CURL = "/usr/bin/curl";
const BASE = "http://vmfactory";

interface Reply {
  status: number;
  body: string;
  /** curl's own time for the request, ms (connect to last byte). */
  ms: number;
}

async function curl(socket: string, args: string[]): Promise<Reply> {
  const out = await new Deno.Command(CURL, {
    args: ["-sS", "--unix-socket", socket, "-w", "\n%{http_code} %{time_total}", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const cut = text.lastIndexOf("\n");
  const [status, seconds] = text.slice(cut + 1).split(" ").map(Number);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return { status, body: text.slice(0, cut), ms: seconds * 1000 };
}

function post(path: string, body: unknown, ...extra: string[]): string[] {
  return [
    "-H",
    "Content-Type: application/json",
    ...extra,
    "-d",
    JSON.stringify(body),
    BASE + path,
  ];
}

function p(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

Deno.test("api server over a template factory: create, exec, run, destroy, a burst of 16", async (t) => {
  await using env = await vmEnv({ poolSize: 4 });
  const lines: string[] = [];
  const log = (line: string) => lines.push(line);
  const template = new TemplateManager(env.settings, env.store, { log });
  const factory = new VmFactory(template.source(), { log });
  const socket = `${env.dir}/api.sock`;
  const events: RequestEvent[] = [];
  const server: ApiServer = await startApiServer(
    new VmApiBackend({ factory, store: env.store, settings: env.settings, log }),
    { socketPath: socket, log, observe: (e) => events.push(e) },
  );
  await using _closed = { [Symbol.asyncDispose]: () => server.close() };
  const c = (...args: string[]) => curl(socket, args);
  await template.init();
  await template.refill();

  let vm: VmRecord;
  await t.step("POST /v1/vms → 201, a clone from the pool", async () => {
    const res = await c(...post("/v1/vms", { hostname: "api-one" }));
    assert.equal(res.status, 201, res.body);
    vm = JSON.parse(res.body);
    assert.equal(vm.source, "template");
    assert.equal(vm.hostname, "api-one");
    assert.ok("claimMs" in vm.timings.phases, "a pool hit");
    const listed = JSON.parse((await c(`${BASE}/v1/vms`)).body).vms;
    assert.deepEqual(listed.map((v: VmRecord) => v.id), [vm.id]);
    assert.equal(listed[0].state, "running");
  });

  await t.step("exec: JSON, NDJSON, and four at once on one VM", async () => {
    const res = await c(...post(`/v1/vms/${vm.id}/exec`, { cmd: ["hostname"] }));
    assert.equal(res.status, 200, res.body);
    assert.deepEqual(JSON.parse(res.body), {
      exitCode: 0,
      timedOut: false,
      truncated: false,
      stdout: "api-one\n",
      stderr: "",
    });
    const streamed = await c(
      ...post(
        `/v1/vms/${vm.id}/exec`,
        { shell: "echo out; echo err >&2; cat; exit 3", stdin: "in\n" },
        "-N",
        "-H",
        "Accept: application/x-ndjson",
      ),
    );
    const events = streamed.body.trim().split("\n").map((l) => JSON.parse(l));
    const text = (type: string) =>
      events.filter((e) => e.type === type)
        .map((e) => new TextDecoder().decode(Uint8Array.fromBase64(e.data))).join("");
    assert.equal(text("stdout"), "out\nin\n");
    assert.equal(text("stderr"), "err\n");
    assert.deepEqual(events.at(-1), {
      type: "exit",
      exitCode: 3,
      timedOut: false,
      truncated: false,
    });
    const together = await Promise.all(
      [1, 2, 3, 4].map((n) =>
        c(...post(`/v1/vms/${vm.id}/exec`, { shell: `sleep 0.2; echo ${n}`, timeoutS: 60 }))
      ),
    );
    assert.deepEqual(together.map((r) => JSON.parse(r.body).stdout), ["1\n", "2\n", "3\n", "4\n"]);
    const late = await c(...post(`/v1/vms/${vm.id}/exec`, { shell: "sleep 5", timeoutS: 1 }));
    assert.equal(JSON.parse(late.body).timedOut, true);
  });

  await t.step("exec: env, cwd and user; a command that cannot start → 400", async () => {
    const res = await c(...post(`/v1/vms/${vm.id}/exec`, {
      cmd: ["sh", "-c", 'echo "$GREETING"; pwd; id -u'],
      env: ["GREETING=hi", "PATH=/bin:/sbin"],
      cwd: "/dev",
      user: "1000",
    }));
    assert.equal(JSON.parse(res.body).stdout, "hi\n/dev\n1000\n", res.body);
    const missing = await c(...post(`/v1/vms/${vm.id}/exec`, { cmd: ["/no/such/program"] }));
    assert.equal(missing.status, 400, missing.body);
    assert.equal(JSON.parse(missing.body).error.code, "bad_command");
  });

  await t.step("exec: a client that leaves a stream has its command killed", async () => {
    const loop = "echo start; while true; do echo tick; sleep 0.1; done";
    const control = "(while true; do sleep 0.1; done) & ps; kill $!";
    const seen = await c(...post(`/v1/vms/${vm.id}/exec`, { shell: control }));
    assert.match(JSON.parse(seen.body).stdout, /while true/, "ps shows a loop that runs");
    const out = await new Deno.Command(CURL, {
      args: [
        "-sN",
        "--max-time",
        "1",
        "--unix-socket",
        socket,
        ...post(
          `/v1/vms/${vm.id}/exec`,
          { shell: loop },
          "-H",
          "Accept: application/x-ndjson",
        ),
      ],
      stdout: "piped",
    }).output();
    assert.equal(out.code, 28, "curl gave up at --max-time");
    assert.match(new TextDecoder().decode(out.stdout), /"type":"stdout"/);
    let ps = "";
    for (let i = 0; i < 100; i++) {
      ps = JSON.parse((await c(...post(`/v1/vms/${vm.id}/exec`, { cmd: ["ps"] }))).body).stdout;
      if (!ps.includes("while true")) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.doesNotMatch(ps, /while true/);
  });

  await t.step("POST /v1/run → 200; its VM is gone afterwards", async () => {
    const res = await c(
      ...post("/v1/run", { shell: "hostname; cat /proc/sys/kernel/random/boot_id" }),
    );
    assert.equal(res.status, 200, res.body);
    const body = JSON.parse(res.body);
    assert.equal(body.exitCode, 0);
    assert.match(body.stdout, new RegExp(`^vm-${body.vm.id}\\n[0-9a-f-]{36}\\n$`));
    assert.equal(body.vm.source, "template");
    assert.deepEqual((await env.store.list()).map((e) => e.record.id), [vm.id]);
  });

  await t.step("DELETE /v1/vms/{id} → 204, then 404; its QEMU is stopped", async () => {
    assert.equal((await c("-X", "DELETE", `${BASE}/v1/vms/${vm.id}`)).status, 204);
    assert.equal((await c(`${BASE}/v1/vms/${vm.id}`)).status, 404);
    assert.equal((await c("-X", "DELETE", `${BASE}/v1/vms/${vm.id}`)).status, 404);
    assert.equal(isAlive({ pid: vm.pid, startTime: vm.startTime }), false);
  });

  await t.step("16 concurrent creates: 16 distinct VMs, none lost, all destroyed", async () => {
    await template.refill();
    const replies = await Promise.all(
      Array.from({ length: 16 }, (_, i) => c(...post("/v1/vms", { hostname: `burst-${i}` }))),
    );
    for (const r of replies) assert.equal(r.status, 201, r.body);
    const vms: VmRecord[] = replies.map((r) => JSON.parse(r.body));
    assert.equal(new Set(vms.map((v) => v.id)).size, 16);
    assert.equal(new Set(vms.map((v) => v.pid)).size, 16);
    const listed = JSON.parse((await c(`${BASE}/v1/vms`)).body).vms as VmRecord[];
    assert.deepEqual(listed.map((v) => v.id).sort(), vms.map((v) => v.id).sort());
    const names = await Promise.all(
      vms.map((v) => c(...post(`/v1/vms/${v.id}/exec`, { cmd: ["hostname"], timeoutS: 60 }))),
    );
    assert.deepEqual(
      names.map((r) => JSON.parse(r.body).stdout),
      vms.map((v) => `${v.hostname}\n`),
    );
    const ms = replies.map((r) => r.ms);
    console.log(
      `burst of 16 POST /v1/vms (4 from the pool): p50 ${p(ms, 0.5).toFixed(1)} ms, ` +
        `p95 ${p(ms, 0.95).toFixed(1)} ms (curl time_total)`,
    );
    const gone = await Promise.all(vms.map((v) => c("-X", "DELETE", `${BASE}/v1/vms/${v.id}`)));
    assert.deepEqual(gone.map((r) => r.status), Array(16).fill(204));
    assert.deepEqual(await env.store.list(), []);
  });

  await t.step("figures: POST /v1/vms vs factory.getVm on a pool hit (printed)", async () => {
    const api: number[] = [],
      server: number[] = [],
      factoryMs: number[] = [],
      direct: number[] = [];
    const made: string[] = [];
    for (let round = 0; round < 3; round++) {
      await template.refill();
      for (let i = 0; i < 4; i++) {
        const res = await c(...post("/v1/vms", {}));
        const record = JSON.parse(res.body) as VmRecord;
        made.push(record.id);
        if (!("claimMs" in record.timings.phases)) continue; // only pool hits count
        api.push(res.ms);
        server.push(events.at(-1)!.seconds * 1000);
        factoryMs.push(record.timings.totalMs);
      }
      await template.refill();
      for (let i = 0; i < 4; i++) {
        const start = performance.now();
        const record = await factory.getVm({});
        const ms = performance.now() - start;
        made.push(record.id);
        if ("claimMs" in record.timings.phases) direct.push(ms);
      }
    }
    for (const id of made) await env.store.remove(id, ["owned"]);
    const f = (values: number[]) => `${p(values, 0.5).toFixed(1)} ms`;
    console.log(
      `pool hit, p50: POST /v1/vms ${f(api)} (curl time_total, ${api.length} samples; in the ` +
        `server ${f(server)}, of which the factory's totalMs ${f(factoryMs)}), factory.getVm ` +
        `${f(direct)} (${direct.length} samples): ratio ${
          (p(api, 0.5) / p(direct, 0.5)).toFixed(2)
        }×`,
    );
  });
});
