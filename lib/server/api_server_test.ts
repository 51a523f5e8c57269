import assert from "node:assert/strict";
import { UsageError, VmfactoryError } from "../errors.ts";
import { SourceUnfitError } from "../factory/vm_source.ts";
import type { VmRecord } from "../vm/vm_record.ts";
import { makeStaleSocket } from "../cache/_testing.ts";
import {
  API_ROUTES,
  type ApiBackend,
  ApiError,
  type ApiServerOptions,
  type CreateVmBody,
  type ExecBody,
  type ExecOutcome,
  type ExecSink,
  JSON_OUTPUT_LIMIT,
  type RequestEvent,
  type RunBody,
  startApiServer,
  type VmState,
} from "./api_server.ts";

import { fakeRecord } from "./_testing.ts";

const CURL = "/usr/bin/curl";
const PYTHON = "/usr/bin/python3";
const encoder = new TextEncoder();
const decoder = new TextDecoder();

type Output = (sink: ExecSink, signal: AbortSignal) => Promise<ExecOutcome>;

const hello: Output = async (sink) => {
  await sink.stdout(encoder.encode("hello\n"));
  return { exitCode: 0, timedOut: false, truncated: false };
};

/** An ApiBackend in memory; `fail` makes every call throw it, `gate` holds creates. */
class FakeBackend implements ApiBackend {
  vms = new Map<string, VmState>();
  created: CreateVmBody[] = [];
  execs: ExecBody[] = [];
  sinks: ExecSink[] = [];
  signals: AbortSignal[] = [];
  fail?: unknown;
  gate?: Promise<void>;
  waiting = 0;
  output: Output = hello;
  healthy = true;
  #next = 0xabc000;

  #check(): void {
    if (this.fail !== undefined) throw this.fail;
  }

  async createVm(body: CreateVmBody, signal: AbortSignal): Promise<VmRecord> {
    this.#check();
    this.signals.push(signal);
    this.waiting++;
    await this.gate;
    this.waiting--;
    const vm = fakeRecord((this.#next++).toString(16));
    this.created.push(body);
    this.vms.set(vm.id, { ...vm, state: "running" });
    return vm;
  }

  listVms(): Promise<VmState[]> {
    this.#check();
    return Promise.resolve([...this.vms.values()]);
  }

  getVm(id: string): Promise<VmState | undefined> {
    this.#check();
    return Promise.resolve(this.vms.get(id));
  }

  destroyVm(id: string): Promise<boolean> {
    this.#check();
    return Promise.resolve(this.vms.delete(id));
  }

  async exec(id: string, body: ExecBody, sink: ExecSink, signal: AbortSignal) {
    this.#check();
    const vm = this.vms.get(id);
    if (!vm) throw new ApiError(404, "vm_not_found", `find VM ${id}`, "no such VM");
    if (vm.state !== "running") {
      throw new ApiError(409, "vm_not_running", `run a command in VM ${id}`, "it is dead");
    }
    this.execs.push(body);
    this.sinks.push(sink);
    this.signals.push(signal);
    return await this.output(sink, signal);
  }

  async run(body: RunBody, sink: ExecSink, signal: AbortSignal) {
    const vm = await this.createVm(body, signal);
    try {
      return { ...await this.exec(vm.id, body, sink, signal), vm };
    } finally {
      this.vms.delete(vm.id);
    }
  }

  health() {
    this.#check();
    return Promise.resolve({ ok: this.healthy, source: "fake" });
  }
}

interface Harness {
  dir: string;
  socket: string;
  backend: FakeBackend;
  events: RequestEvent[];
  logs: string[];
  server: Awaited<ReturnType<typeof startApiServer>>;
  /** fetch over the Unix socket. */
  fetch(path: string, init?: RequestInit): Promise<Response>;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * A server over a FakeBackend on a socket in a fresh temp folder. Every event's status must be
 * one its route lists (checked at the end); disposing closes everything and removes the folder.
 */
async function harness(
  options: Partial<ApiServerOptions> = {},
  backend = new FakeBackend(),
): Promise<Harness> {
  const dir = await Deno.makeTempDir({ prefix: "vmf-api-" });
  const socket = `${dir}/api.sock`;
  const events: RequestEvent[] = [];
  const logs: string[] = [];
  const unlisted: string[] = [];
  let server;
  try {
    server = await startApiServer(backend, {
      socketPath: socket,
      observe: (e) => {
        events.push(e);
        const route = API_ROUTES.find((r) => `${r.method} ${r.path}` === e.route);
        if (route && e.status !== 499 && !route.statuses.includes(e.status)) {
          unlisted.push(`${e.route} answered ${e.status}`);
        }
      },
      log: (line) => logs.push(line),
      ...options,
    });
  } catch (err) {
    await Deno.remove(dir, { recursive: true });
    throw err;
  }
  const client = Deno.createHttpClient({ proxy: { transport: "unix", path: socket } });
  return {
    dir,
    socket,
    backend,
    events,
    logs,
    server,
    fetch: (path, init) => fetch(`http://vmfactory${path}`, { client, ...init }),
    async [Symbol.asyncDispose]() {
      client.close();
      await server.close();
      await Deno.remove(dir, { recursive: true });
      assert.deepEqual(unlisted, [], "statuses API_ROUTES does not list");
    },
  };
}

function post(body: unknown, headers: Record<string, string> = {}): RequestInit {
  return { method: "POST", body: typeof body === "string" ? body : JSON.stringify(body), headers };
}

async function errorOf(res: Response): Promise<{ code: string; message: string }> {
  const body = await res.json();
  assert.deepEqual(Object.keys(body), ["error"]);
  assert.deepEqual(Object.keys(body.error).sort(), ["code", "message"]);
  assert.doesNotMatch(body.error.message, /\n\s+at /, "no stack trace");
  return body.error;
}

async function ndjson(res: Response): Promise<Record<string, unknown>[]> {
  assert.equal(res.headers.get("content-type"), "application/x-ndjson");
  return (await res.text()).trim().split("\n").map((line) => JSON.parse(line));
}

const NDJSON = { accept: "application/x-ndjson" };

Deno.test("api: every route answers over the Unix socket", async (t) => {
  await using h = await harness({ metrics: () => "vmfactory_up 1\n" });
  let id = "";

  await t.step("POST /v1/vms → 201 record; the event names its source", async () => {
    const res = await h.fetch("/v1/vms", post({ cpus: 2, memoryMiB: 512, hostname: "web-1" }));
    assert.equal(res.status, 201);
    const vm = await res.json();
    assert.deepEqual(vm, fakeRecord(vm.id));
    id = vm.id;
    assert.deepEqual(h.backend.created, [{ cpus: 2, memoryMiB: 512, hostname: "web-1" }]);
    const event = h.events.at(-1)!;
    assert.deepEqual([event.route, event.status, event.source], ["POST /v1/vms", 201, "template"]);
    assert.ok(event.seconds >= 0);
  });

  await t.step("an empty body is an empty request", async () => {
    assert.equal((await h.fetch("/v1/vms", { method: "POST" })).status, 201);
    assert.deepEqual(h.backend.created.at(-1), {});
    const workload = { image: "oci:/srv/alpine:3", net: "tap:tap0", ports: ["8080:80"] };
    assert.equal((await h.fetch("/v1/vms", post(workload))).status, 201);
    assert.deepEqual(h.backend.created.at(-1), workload);
  });

  await t.step("GET /v1/vms, GET and DELETE /v1/vms/{id}", async () => {
    const list = await (await h.fetch("/v1/vms")).json();
    assert.equal(list.vms.length, 3);
    assert.equal(list.vms[0].state, "running");
    assert.equal((await (await h.fetch(`/v1/vms/${id}`)).json()).id, id);
    const gone = await h.fetch(`/v1/vms/${id}`, { method: "DELETE" });
    assert.equal(gone.status, 204);
    assert.equal(await gone.text(), "");
    const again = await h.fetch(`/v1/vms/${id}`, { method: "DELETE" });
    assert.equal(again.status, 404);
    assert.equal((await errorOf(again)).code, "vm_not_found");
    const missing = await h.fetch(`/v1/vms/${id}`);
    assert.equal(missing.status, 404);
    assert.match((await errorOf(missing)).message, /^Cannot find VM abc000: no such VM$/);
  });

  await t.step("POST /v1/vms/{id}/exec → 200 with exit code and output", async () => {
    const [vm] = [...h.backend.vms.keys()];
    h.backend.output = async (sink) => {
      await sink.stdout(encoder.encode("out\n"));
      await sink.stderr(encoder.encode("err\n"));
      return { exitCode: 3, timedOut: false, truncated: false };
    };
    const body = { cmd: ["ls", "-l"], stdin: "x", timeoutS: 5, env: ["A=1"], cwd: "/", user: "0" };
    const res = await h.fetch(`/v1/vms/${vm}/exec`, post(body));
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), {
      exitCode: 3,
      timedOut: false,
      truncated: false,
      stdout: "out\n",
      stderr: "err\n",
    });
    assert.deepEqual(h.backend.execs.at(-1), body);
    assert.equal(h.backend.sinks.at(-1)!.outputLimit, JSON_OUTPUT_LIMIT);
  });

  await t.step("output that is not UTF-8 comes as base64; a signal is reported", async () => {
    const [vm] = [...h.backend.vms.keys()];
    h.backend.output = async (sink) => {
      await sink.stdout(new Uint8Array([0xff, 0xfe, 0x00]));
      return { exitCode: 137, signal: 9, timedOut: true, truncated: false };
    };
    const res = await h.fetch(`/v1/vms/${vm}/exec`, post({ shell: "cat /dev/urandom" }));
    assert.deepEqual(await res.json(), {
      exitCode: 137,
      signal: 9,
      timedOut: true,
      truncated: false,
      stdoutBase64: "//4A",
      stderr: "",
    });
  });

  await t.step("the JSON form keeps 16 MiB and says truncated", async () => {
    const [vm] = [...h.backend.vms.keys()];
    h.backend.output = async (sink) => {
      await sink.stdout(new Uint8Array(JSON_OUTPUT_LIMIT + 10).fill(97));
      await sink.stderr(encoder.encode("dropped"));
      return { exitCode: 0, timedOut: false, truncated: false };
    };
    const body = await (await h.fetch(`/v1/vms/${vm}/exec`, post({ cmd: ["yes"] }))).json();
    assert.equal(body.truncated, true);
    assert.equal(body.stdout.length, JSON_OUTPUT_LIMIT);
    assert.equal(body.stderr, "");
    h.backend.output = hello;
  });

  await t.step("exec on an unknown VM → 404, on a dead one → 409", async () => {
    const res = await h.fetch("/v1/vms/ffffff/exec", post({ cmd: ["true"] }));
    assert.equal(res.status, 404);
    assert.equal((await errorOf(res)).code, "vm_not_found");
    const [vm] = [...h.backend.vms.values()];
    h.backend.vms.set(vm.id, { ...vm, state: "dead" });
    const dead = await h.fetch(`/v1/vms/${vm.id}/exec`, post({ cmd: ["true"] }));
    assert.equal(dead.status, 409);
    assert.equal((await errorOf(dead)).code, "vm_not_running");
  });

  await t.step("POST /v1/run → 200 with the VM, which is gone afterwards", async () => {
    const before = h.backend.vms.size;
    const res = await h.fetch("/v1/run", post({ cpus: 1, shell: "echo hello" }));
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.equal(body.stdout, "hello\n");
    assert.equal(body.exitCode, 0);
    assert.deepEqual(Object.keys(body.vm), ["id", "source", "timings"]);
    assert.equal(body.vm.source, "template");
    assert.equal(h.backend.vms.size, before);
    assert.deepEqual(h.backend.created.at(-1), { cpus: 1, shell: "echo hello" });
    assert.equal(h.events.at(-1)!.source, "template");
  });

  await t.step("GET /healthz → 200, 503 when the backend is not ok", async () => {
    const ok = await h.fetch("/healthz");
    assert.equal(ok.status, 200);
    assert.deepEqual(await ok.json(), { ok: true, source: "fake" });
    h.backend.healthy = false;
    assert.equal((await h.fetch("/healthz")).status, 503);
    h.backend.healthy = true;
  });

  await t.step("GET /metrics → Prometheus text", async () => {
    const res = await h.fetch("/metrics");
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
    assert.equal(await res.text(), "vmfactory_up 1\n");
  });

  await t.step("unknown path → 404, wrong method → 405 with Allow", async () => {
    const unknown = await h.fetch("/v2/vms");
    assert.equal(unknown.status, 404);
    assert.equal((await errorOf(unknown)).code, "not_found");
    assert.equal((await h.fetch("/v1/vms/not%20an%20id")).status, 404);
    const put = await h.fetch("/v1/vms", { method: "PUT" });
    assert.equal(put.status, 405);
    assert.equal(put.headers.get("allow"), "POST, GET");
    assert.equal((await errorOf(put)).code, "method_not_allowed");
    assert.equal(h.events.at(-1)!.route, "unmatched");
  });
});

Deno.test("api: /metrics without a metrics source → 404", async () => {
  await using h = await harness();
  const res = await h.fetch("/metrics");
  assert.equal(res.status, 404);
  await res.body?.cancel();
});

Deno.test("api: bodies are checked strictly (400)", async (t) => {
  await using h = await harness();
  const vm = (await (await h.fetch("/v1/vms", post({}))).json()).id;
  const cases: [string, string, string, RegExp][] = [
    ["/v1/vms", "{", "invalid_json", /not JSON/],
    ["/v1/vms", "[1]", "invalid_body", /a JSON object/],
    ["/v1/vms", `"x"`, "invalid_body", /a JSON object/],
    ["/v1/vms", '{"cpu": 1}', "unknown_field", /unknown field "cpu" \(known: cpus, /],
    ["/v1/vms", '{"__proto__": {}}', "unknown_field", /__proto__/],
    ["/v1/vms", '{"cpus": 0}', "invalid_field", /cpus: expected a whole number of vCPUs from 1/],
    ["/v1/vms", '{"cpus": 1.5}', "invalid_field", /cpus/],
    ["/v1/vms", '{"cpus": "2"}', "invalid_field", /cpus/],
    ["/v1/vms", '{"cpus": 1025}', "invalid_field", /to 1024/],
    ["/v1/vms", '{"memoryMiB": 1e300}', "invalid_field", /memoryMiB/],
    ["/v1/vms", '{"hostname": "a b"}', "invalid_field", /hostname: expected 1 to 64/],
    ["/v1/vms", `{"hostname": "${"a".repeat(65)}"}`, "invalid_field", /hostname/],
    ["/v1/vms", '{"image": ""}', "invalid_field", /image/],
    ["/v1/vms", '{"image": "a\\nb"}', "invalid_field", /image/],
    ["/v1/vms", '{"image": "rootfs/dir"}', "invalid_field", /absolute/],
    ["/v1/vms", '{"net": "bridge"}', "invalid_field", /net: expected "user" or "tap:NAME"/],
    ["/v1/vms", '{"net": "tap:a-very-long-name0"}', "invalid_field", /net/],
    ["/v1/vms", '{"ports": "80:80"}', "invalid_field", /ports: expected an array/],
    ["/v1/vms", '{"ports": ["80"]}', "invalid_field", /ports: \[0\]: expected "HOST:GUEST"/],
    ["/v1/vms", '{"ports": ["0:80"]}', "invalid_field", /ports/],
    ["/v1/vms", '{"ports": ["80:65536"]}', "invalid_field", /ports/],
    [
      "/v1/vms",
      '{"ports": ["80:80", "80:81"]}',
      "invalid_field",
      /host port 80 is forwarded twice/,
    ],
    ["/v1/vms", '{"cmd": ["ls"]}', "unknown_field", /cmd/],
    [`/v1/vms/${vm}/exec`, "{}", "invalid_body", /exactly one of "cmd" and "shell"/],
    [`/v1/vms/${vm}/exec`, '{"cmd": ["a"], "shell": "a"}', "invalid_body", /exactly one/],
    [`/v1/vms/${vm}/exec`, '{"cmd": []}', "invalid_field", /cmd: expected a program name/],
    [`/v1/vms/${vm}/exec`, '{"cmd": [""]}', "invalid_field", /cmd/],
    [`/v1/vms/${vm}/exec`, '{"cmd": ["a\\u0000b"]}', "invalid_field", /cmd: \[0\]: .*NUL/],
    [`/v1/vms/${vm}/exec`, '{"cmd": [1]}', "invalid_field", /cmd: \[0\]/],
    [`/v1/vms/${vm}/exec`, '{"shell": ""}', "invalid_field", /shell/],
    [`/v1/vms/${vm}/exec`, '{"shell": "a", "env": ["1A=b"]}', "invalid_field", /env: \[0\]/],
    [`/v1/vms/${vm}/exec`, '{"shell": "a", "env": ["A"]}', "invalid_field", /env/],
    [
      `/v1/vms/${vm}/exec`,
      '{"shell": "a", "cwd": "tmp"}',
      "invalid_field",
      /cwd: expected an absolute/,
    ],
    [`/v1/vms/${vm}/exec`, '{"shell": "a", "user": "a b"}', "invalid_field", /user/],
    [`/v1/vms/${vm}/exec`, '{"shell": "a", "user": "a:b:c"}', "invalid_field", /user/],
    [`/v1/vms/${vm}/exec`, '{"shell": "a", "stdin": 1}', "invalid_field", /stdin/],
    [`/v1/vms/${vm}/exec`, '{"shell": "a", "stdinBase64": "@@"}', "invalid_field", /stdinBase64/],
    [
      `/v1/vms/${vm}/exec`,
      '{"shell": "a", "stdin": "x", "stdinBase64": "eA=="}',
      "invalid_body",
      /not both/,
    ],
    [`/v1/vms/${vm}/exec`, '{"shell": "a", "timeoutS": 0}', "invalid_field", /timeoutS: expected/],
    [`/v1/vms/${vm}/exec`, '{"shell": "a", "timeoutS": 2073601}', "invalid_field", /timeoutS/],
    [`/v1/vms/${vm}/exec`, '{"shell": "a", "cpus": 1}', "unknown_field", /cpus/],
    ["/v1/run", '{"cpus": 1}', "invalid_body", /exactly one/],
    ["/v1/run", '{"shell": "a", "cpus": 0}', "invalid_field", /cpus/],
    ["/v1/run", '{"shell": "a", "extra": 0}', "unknown_field", /extra/],
  ];
  for (const [path, body, code, message] of cases) {
    await t.step(`${path} ${body.slice(0, 60)}`, async () => {
      const res = await h.fetch(path, post(body));
      assert.equal(res.status, 400);
      const error = await errorOf(res);
      assert.equal(error.code, code);
      assert.match(error.message, message);
      assert.match(error.message, /^Cannot read the request body: /);
    });
  }
  await t.step("not UTF-8", async () => {
    const res = await h.fetch("/v1/vms", { method: "POST", body: new Uint8Array([0x7b, 0xff]) });
    assert.equal(res.status, 400);
    assert.match((await errorOf(res)).message, /not UTF-8/);
  });
  await t.step("the bounds themselves are accepted", async () => {
    const body = { cpus: 1024, memoryMiB: 1, hostname: `${"a".repeat(62)}.b`, ports: ["1:65535"] };
    assert.equal((await h.fetch("/v1/vms", post(body))).status, 201);
    const exec = {
      cmd: ["a"],
      stdinBase64: "AAE=",
      timeoutS: 2073600,
      env: ["_A=b=c"],
      user: "app:1000",
    };
    assert.equal((await h.fetch(`/v1/vms/${vm}/exec`, post(exec))).status, 200);
  });
  assert.equal(h.backend.execs.length, 1, "no bad body reached the backend");
});

Deno.test("api: what the backend throws becomes a status, never a stack trace", async (t) => {
  await using h = await harness();
  const cases: [unknown, number, string, RegExp][] = [
    [new ApiError(409, "busy_vm", "do it", "not now"), 409, "busy_vm", /^Cannot do it: not now$/],
    [new SourceUnfitError("vmcache", "no server"), 503, "source_unavailable", /no server/],
    [new UsageError("use image x", "no such file"), 400, "bad_request", /^Cannot use image x/],
    [new VmfactoryError("boot QEMU", "it exited"), 500, "failed", /^Cannot boot QEMU: it exited$/],
    [new TypeError("secret /root/thing"), 500, "internal", /^Cannot create a VM: internal error/],
  ];
  for (const [error, status, code, message] of cases) {
    await t.step(`${(error as Error).constructor.name} → ${status}`, async () => {
      h.backend.fail = error;
      const res = await h.fetch("/v1/vms", post({}));
      assert.equal(res.status, status);
      const body = await errorOf(res);
      assert.equal(body.code, code);
      assert.match(body.message, message);
      assert.doesNotMatch(body.message, /secret/);
    });
  }
  assert.ok(h.logs.some((l) => l.includes("internal error in POST /v1/vms: secret /root/thing")));
  assert.ok(!h.logs.some((l) => /\n\s+at /.test(l)), "no stack trace in the log either");
  h.backend.fail = new TypeError("boom");
  assert.equal((await h.fetch("/v1/vms")).status, 500);
  assert.equal((await h.fetch("/healthz")).status, 500);
  h.backend.fail = undefined;
});

Deno.test("api: a body over the cap → 413, read no further than the cap", async () => {
  await using h = await harness({ maxBodyBytes: 1000 });
  const declared = await h.fetch("/v1/vms", post(`{"hostname": "${"a".repeat(2000)}"}`));
  assert.equal(declared.status, 413);
  assert.equal((await errorOf(declared)).code, "body_too_large");
  // no length declared: read in chunks, refused once past the cap; the client may go on sending
  let pulled = 0;
  const endless = new ReadableStream<Uint8Array>({
    pull(c) {
      pulled++;
      c.enqueue(encoder.encode(" ".repeat(300)));
    },
  });
  const chunked = await h.fetch("/v1/vms", { method: "POST", body: endless });
  assert.equal(chunked.status, 413);
  await chunked.body?.cancel();
  assert.ok(pulled >= 4);
  const exactly = await h.fetch("/v1/vms", post(`{"hostname":"a"}`.padEnd(1000)));
  assert.equal(exactly.status, 201);
  await exactly.body?.cancel();
});

Deno.test("api: more requests than maxConcurrent → 429; /healthz still answers", async () => {
  await using h = await harness({ maxConcurrent: 2 });
  const gate = Promise.withResolvers<void>();
  h.backend.gate = gate.promise;
  const held = [h.fetch("/v1/vms", post({})), h.fetch("/v1/vms", post({}))];
  while (h.backend.waiting < 2) await new Promise((r) => setTimeout(r, 5));
  const refused = await h.fetch("/v1/vms", post({}));
  assert.equal(refused.status, 429);
  assert.equal(refused.headers.get("retry-after"), "1");
  assert.equal((await errorOf(refused)).code, "too_many_requests");
  assert.equal((await h.fetch("/v1/vms")).status, 429);
  const health = await h.fetch("/healthz");
  assert.equal(health.status, 200);
  await health.body?.cancel();
  gate.resolve();
  for (const res of await Promise.all(held)) {
    assert.equal(res.status, 201);
    await res.body?.cancel();
  }
  const after = await h.fetch("/v1/vms", post({}));
  assert.equal(after.status, 201);
  await after.body?.cancel();
});

Deno.test("api: exec and run stream NDJSON", async (t) => {
  await using h = await harness();
  const vm = (await (await h.fetch("/v1/vms", post({}))).json()).id;

  await t.step("stdout and stderr chunks in base64, then the exit", async () => {
    h.backend.output = async (sink) => {
      await sink.stdout(encoder.encode("one\n"));
      await sink.stderr(new Uint8Array([0xff]));
      await sink.stdout(encoder.encode("two\n"));
      return { exitCode: 2, timedOut: false, truncated: true };
    };
    const lines = await ndjson(await h.fetch(`/v1/vms/${vm}/exec`, post({ cmd: ["x"] }, NDJSON)));
    assert.deepEqual(lines, [
      { type: "stdout", data: "b25lCg==" },
      { type: "stderr", data: "/w==" },
      { type: "stdout", data: "dHdvCg==" },
      { type: "exit", exitCode: 2, timedOut: false, truncated: true },
    ]);
    assert.equal(h.backend.sinks.at(-1)!.outputLimit, undefined, "a stream keeps everything");
  });

  await t.step("a failure before any output keeps its own status", async () => {
    const res = await h.fetch("/v1/vms/ffffff/exec", post({ cmd: ["x"] }, NDJSON));
    assert.equal(res.status, 404);
    assert.equal(res.headers.get("content-type"), "application/json");
    assert.equal((await errorOf(res)).code, "vm_not_found");
  });

  await t.step("a failure after output is the last line", async () => {
    h.backend.output = async (sink) => {
      await sink.stdout(encoder.encode("partial"));
      throw new VmfactoryError("run a command in the guest", "the agent closed the connection");
    };
    const lines = await ndjson(await h.fetch(`/v1/vms/${vm}/exec`, post({ cmd: ["x"] }, NDJSON)));
    assert.deepEqual(lines.at(-1), {
      type: "error",
      error: {
        code: "failed",
        message: "Cannot run a command in the guest: the agent closed the connection",
      },
    });
  });

  await t.step("run streams too, and its VM is gone afterwards", async () => {
    h.backend.output = hello;
    const before = h.backend.vms.size;
    const lines = await ndjson(await h.fetch("/v1/run", post({ shell: "echo" }, NDJSON)));
    assert.deepEqual(lines, [
      { type: "stdout", data: "aGVsbG8K" },
      { type: "exit", exitCode: 0, timedOut: false, truncated: false },
    ]);
    assert.equal(h.backend.vms.size, before);
  });
});

Deno.test("api: a stream waits for a client that does not read (backpressure)", async () => {
  await using h = await harness();
  const vm = (await (await h.fetch("/v1/vms", post({}))).json()).id;
  const CHUNKS = 64, SIZE = 256 << 10;
  let produced = 0;
  h.backend.output = async (sink) => {
    for (; produced < CHUNKS; produced++) await sink.stdout(new Uint8Array(SIZE).fill(120));
    return { exitCode: 0, timedOut: false, truncated: false };
  };
  const res = await h.fetch(`/v1/vms/${vm}/exec`, post({ cmd: ["yes"] }, NDJSON));
  // nothing is read: the producer must stop once the buffers between us are full
  for (let last = -1, still = 0; still < 5 && produced < CHUNKS;) {
    await new Promise((r) => setTimeout(r, 40));
    still = produced === last ? still + 1 : 0;
    last = produced;
  }
  assert.ok(produced < CHUNKS / 2, `${produced} of ${CHUNKS} chunks went out unread`);
  const lines = await ndjson(res);
  const bytes = lines.filter((l) => l.type === "stdout")
    .reduce((n, l) => n + Uint8Array.fromBase64(l.data as string).length, 0);
  assert.equal(bytes, CHUNKS * SIZE);
  assert.equal(lines.at(-1)!.type, "exit");
});

Deno.test("api: a client that leaves aborts its exec and run", async (t) => {
  await using h = await harness();
  const vm = (await (await h.fetch("/v1/vms", post({}))).json()).id;
  const entered = () => {
    const seen = Promise.withResolvers<AbortSignal>();
    h.backend.output = async (sink, signal) => {
      await sink.stdout(encoder.encode("started\n"));
      seen.resolve(signal);
      await new Promise((_, reject) =>
        signal.addEventListener("abort", () => reject(signal.reason))
      );
      throw new Error("unreachable");
    };
    return seen.promise;
  };

  await t.step("streamed exec", async () => {
    const seen = entered();
    const ac = new AbortController();
    const res = await h.fetch(`/v1/vms/${vm}/exec`, {
      ...post({ cmd: ["x"] }, NDJSON),
      signal: ac.signal,
    });
    const reader = res.body!.getReader();
    await reader.read();
    ac.abort();
    const signal = await seen;
    while (!signal.aborted) await new Promise((r) => setTimeout(r, 5));
  });

  await t.step("JSON exec: the event says 499", async () => {
    h.backend.output = (_sink, signal) => {
      return new Promise((_, reject) =>
        signal.addEventListener("abort", () => reject(signal.reason))
      );
    };
    const ac = new AbortController();
    const res = h.fetch(`/v1/vms/${vm}/exec`, { ...post({ cmd: ["x"] }), signal: ac.signal });
    while (h.backend.signals.length < 3) await new Promise((r) => setTimeout(r, 5));
    ac.abort();
    await assert.rejects(res);
    const signal = h.backend.signals.at(-1)!;
    while (!signal.aborted) await new Promise((r) => setTimeout(r, 5));
    while (h.events.at(-1)?.status !== 499) await new Promise((r) => setTimeout(r, 5));
    assert.equal(h.events.at(-1)!.route, "POST /v1/vms/{id}/exec");
  });

  await t.step("streamed run: its VM is destroyed", async () => {
    const seen = entered();
    const before = h.backend.vms.size;
    const ac = new AbortController();
    const res = await h.fetch("/v1/run", { ...post({ cmd: ["x"] }, NDJSON), signal: ac.signal });
    await res.body!.getReader().read();
    assert.equal(h.backend.vms.size, before + 1);
    ac.abort();
    await seen;
    while (h.backend.vms.size !== before) await new Promise((r) => setTimeout(r, 5));
  });
});

Deno.test("api: TCP needs the bearer token", async () => {
  const token = "t0k3n-".repeat(6);
  const backend = new FakeBackend();
  const server = await startApiServer(backend, {
    listen: { hostname: "127.0.0.1", port: 0 },
    token,
    log: () => {},
  });
  try {
    assert.ok(server.port! > 0);
    const url = `http://127.0.0.1:${server.port}`;
    const none = await fetch(`${url}/v1/vms`);
    assert.equal(none.status, 401);
    assert.equal(none.headers.get("www-authenticate"), "Bearer");
    assert.equal((await errorOf(none)).code, "unauthorized");
    for (const auth of [`Bearer ${token}x`, `Bearer ${token.slice(1)}`, `Basic ${token}`, token]) {
      const wrong = await fetch(`${url}/v1/vms`, { headers: { authorization: auth } });
      assert.equal(wrong.status, 401, auth);
      await wrong.body?.cancel();
    }
    const unknown = await fetch(`${url}/nowhere`);
    assert.equal(unknown.status, 401, "no route is revealed without the token");
    await unknown.body?.cancel();
    const right = await fetch(`${url}/v1/vms`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(right.status, 200);
    assert.deepEqual(await right.json(), { vms: [] });
    const health = await fetch(`${url}/healthz`, {
      headers: { authorization: `bearer ${token}` },
    });
    assert.equal(health.status, 200);
    await health.body?.cancel();
  } finally {
    await server.close();
  }
});

Deno.test("api: options that do not fit are refused", async () => {
  const backend = new FakeBackend();
  const refuse = (options: ApiServerOptions, message: RegExp) =>
    assert.rejects(startApiServer(backend, options), (err) => {
      assert.ok(err instanceof UsageError);
      assert.match(err.message, message);
      return true;
    });
  await refuse({}, /give a socket path, a TCP address, or both/);
  await refuse({ listen: { hostname: "127.0.0.1", port: 0 } }, /needs a bearer token/);
  await refuse({ listen: { hostname: "127.0.0.1", port: 0 }, token: "short" }, /at least 16/);
  await refuse({ listen: { hostname: "127.0.0.1", port: 70000 }, token: "x".repeat(16) }, /port/);
  await refuse({ socketPath: "/tmp/x.sock", socketMode: 0o666 }, /no bits for others/);
  await refuse({ socketPath: "/tmp/x.sock", socketMode: 0o400 }, /owner's read and write/);
  await refuse({ socketPath: "/tmp/x.sock", maxConcurrent: 0 }, /maxConcurrent/);
  await refuse({ socketPath: "relative.sock" }, /absolute/);
  await refuse({ socketPath: `/tmp/${"d".repeat(100)}/api.sock` }, /short enough/);
});

Deno.test("api: the socket is 0600, or 0660 with a group", async () => {
  {
    await using h = await harness();
    assert.ok(Deno.lstatSync(h.socket).isSocket);
    assert.equal(Deno.lstatSync(h.socket).mode! & 0o777, 0o600);
    assert.deepEqual([...Deno.readDirSync(h.dir)].map((e) => e.name), ["api.sock"]);
  }
  const gid = Deno.gid()!;
  const name = Deno.readTextFileSync("/etc/group").split("\n").map((l) => l.split(":"))
    .find((f) => f[2] === String(gid))?.[0];
  for (const group of [String(gid), name!]) {
    await using h = await harness({ socketGroup: group });
    const info = Deno.lstatSync(h.socket);
    assert.equal(info.mode! & 0o777, 0o660);
    assert.equal(info.gid, gid);
  }
  await assert.rejects(harness({ socketGroup: "no-such-group-here" }), /no group "no-such-group/);
});

Deno.test("api: a second server on the socket is refused; a stale socket is replaced", async () => {
  await using h = await harness();
  await assert.rejects(startApiServer(new FakeBackend(), { socketPath: h.socket }), (err) => {
    assert.ok(err instanceof UsageError);
    assert.match(err.message, /^Cannot start the API server: a server already answers on /);
    return true;
  });
  assert.equal((await h.fetch("/healthz")).status, 200, "the first one still serves");

  const stale = `${h.dir}/stale.sock`;
  await makeStaleSocket(stale);
  const logs: string[] = [];
  const second = await startApiServer(new FakeBackend(), {
    socketPath: stale,
    log: (l) => logs.push(l),
  });
  try {
    assert.deepEqual(logs, [`replacing stale socket ${stale} (nothing listens on it)`]);
    const res = await curl(stale, ["http://vmfactory/healthz"]);
    assert.equal(res.status, 200);
  } finally {
    await second.close();
  }
  assert.throws(() => Deno.lstatSync(stale), Deno.errors.NotFound, "closing removes the socket");

  const file = `${h.dir}/file.sock`, link = `${h.dir}/link.sock`;
  Deno.writeTextFileSync(file, "keep me");
  Deno.symlinkSync(h.socket, link);
  await assert.rejects(startApiServer(new FakeBackend(), { socketPath: file }), /is not a socket/);
  await assert.rejects(startApiServer(new FakeBackend(), { socketPath: link }), /symbolic link/);
  assert.equal(Deno.readTextFileSync(file), "keep me");
  assert.ok(Deno.lstatSync(link).isSymlink);
  Deno.removeSync(file);
  Deno.removeSync(link);
});

Deno.test("api: drain lets requests in flight finish; close aborts them", async (t) => {
  await t.step("drain", async () => {
    await using h = await harness();
    const gate = Promise.withResolvers<void>();
    h.backend.gate = gate.promise;
    const inFlight = h.fetch("/v1/vms", post({}));
    while (h.backend.waiting < 1) await new Promise((r) => setTimeout(r, 5));
    let drained = false;
    const draining = h.server.drain().then(() => drained = true);
    assert.throws(() => Deno.lstatSync(h.socket), Deno.errors.NotFound, "no new connections");
    const refused = await curl(h.socket, ["http://vmfactory/healthz"]);
    assert.notEqual(refused.status, 200);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(drained, false, "drain waits for the request in flight");
    gate.resolve();
    const res = await inFlight;
    assert.equal(res.status, 201);
    await res.body?.cancel();
    await draining;
  });

  await t.step("close", async () => {
    await using h = await harness();
    const vm = (await (await h.fetch("/v1/vms", post({}))).json()).id;
    h.backend.output = (_sink, signal) =>
      new Promise((_, reject) => signal.addEventListener("abort", () => reject(signal.reason)));
    const inFlight = h.fetch(`/v1/vms/${vm}/exec`, post({ cmd: ["sleep", "1000"] }));
    while (h.backend.signals.length < 2) await new Promise((r) => setTimeout(r, 5));
    const closed = h.server.close();
    const res = await inFlight;
    assert.equal(res.status, 503);
    assert.equal((await errorOf(res)).code, "closing");
    await closed;
  });
});

async function curl(socket: string, args: string[]): Promise<{ status: number; body: string }> {
  const out = await new Deno.Command(CURL, {
    args: ["-sS", "--unix-socket", socket, "-w", "\n%{http_code}", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = decoder.decode(out.stdout);
  const cut = text.lastIndexOf("\n");
  return { status: Number(text.slice(cut + 1)), body: text.slice(0, cut) };
}

/** http.client over AF_UNIX: one request per line of JSON on stdin, one answer per line out. */
const PYTHON_CLIENT = `
import http.client, json, socket, sys

class UnixConnection(http.client.HTTPConnection):
    def __init__(self, socket_path):
        super().__init__("vmfactory")
        self.socket_path = socket_path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.socket_path)

conn = UnixConnection(sys.argv[1])
for line in sys.stdin:
    method, path, body, headers = json.loads(line)
    if body is not None:
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=body, headers=headers)
    res = conn.getresponse()
    print(json.dumps({"status": res.status, "type": res.getheader("Content-Type"),
                      "body": res.read().decode()}), flush=True)
`;

type Exchange = [string, string, string | null, Record<string, string>];

async function python(socket: string, requests: Exchange[]) {
  const out = await new Deno.Command(PYTHON, {
    args: ["-c", PYTHON_CLIENT, socket],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = out.stdin.getWriter();
  await writer.write(encoder.encode(requests.map((r) => JSON.stringify(r)).join("\n") + "\n"));
  await writer.close();
  const done = await out.output();
  assert.equal(done.code, 0, decoder.decode(done.stderr));
  return decoder.decode(done.stdout).trim().split("\n").map((l) =>
    JSON.parse(l) as { status: number; type: string; body: string }
  );
}

Deno.test("api: curl as a client, every route", async () => {
  await using h = await harness({ metrics: () => "vmfactory_up 1\n" });
  const c = (...args: string[]) => curl(h.socket, args);
  const base = "http://vmfactory";
  const json = ["-H", "Content-Type: application/json"];
  assert.equal((await c(`${base}/healthz`)).status, 200);
  const created = await c(...json, "-d", '{"cpus": 1}', `${base}/v1/vms`);
  assert.equal(created.status, 201);
  const id = JSON.parse(created.body).id;
  assert.equal(JSON.parse((await c(`${base}/v1/vms`)).body).vms[0].id, id);
  assert.equal(JSON.parse((await c(`${base}/v1/vms/${id}`)).body).id, id);
  const exec = await c(...json, "-d", '{"cmd": ["echo", "hello"]}', `${base}/v1/vms/${id}/exec`);
  assert.deepEqual([exec.status, JSON.parse(exec.body).stdout], [200, "hello\n"]);
  const streamed = await c(
    ...json,
    "-N",
    "-H",
    "Accept: application/x-ndjson",
    "-d",
    '{"shell": "echo hello"}',
    `${base}/v1/vms/${id}/exec`,
  );
  assert.deepEqual(streamed.body.trim().split("\n").map((l) => JSON.parse(l).type), [
    "stdout",
    "exit",
  ]);
  const run = await c(...json, "-d", '{"shell": "echo hello"}', `${base}/v1/run`);
  assert.deepEqual([run.status, JSON.parse(run.body).vm.source], [200, "template"]);
  assert.equal((await c("-X", "DELETE", `${base}/v1/vms/${id}`)).status, 204);
  assert.equal((await c(`${base}/v1/vms/${id}`)).status, 404);
  assert.equal((await c(`${base}/metrics`)).body, "vmfactory_up 1\n");
  // curl -d sends application/x-www-form-urlencoded: the body counts, not its declared type
  assert.equal((await c("-d", '{"bogus": 1}', `${base}/v1/vms`)).status, 400);
  assert.equal((await c("-X", "PUT", `${base}/v1/vms`)).status, 405);
  Deno.writeTextFileSync(`${h.dir}/big.json`, `{"hostname": "${"a".repeat(2 << 20)}"}`);
  assert.equal(
    (await c(...json, "--data-binary", `@${h.dir}/big.json`, `${base}/v1/vms`)).status,
    413,
  );
});

Deno.test("api: Python's http.client over AF_UNIX as a client, every route", async () => {
  await using h = await harness({ metrics: () => "vmfactory_up 1\n" });
  const first = await python(h.socket, [
    ["GET", "/healthz", null, {}],
    ["POST", "/v1/vms", '{"memoryMiB": 256}', {}],
  ]);
  assert.deepEqual(first.map((r) => r.status), [200, 201]);
  const id = JSON.parse(first[1].body).id;
  const replies = await python(h.socket, [
    ["GET", "/v1/vms", null, {}],
    ["GET", `/v1/vms/${id}`, null, {}],
    ["POST", `/v1/vms/${id}/exec`, '{"cmd": ["echo", "hello"], "stdin": "x"}', {}],
    ["POST", `/v1/vms/${id}/exec`, '{"shell": "echo"}', { Accept: "application/x-ndjson" }],
    ["POST", "/v1/run", '{"shell": "echo hello", "cpus": 1}', {}],
    ["DELETE", `/v1/vms/${id}`, null, {}],
    ["GET", `/v1/vms/${id}`, null, {}],
    ["GET", "/metrics", null, {}],
    ["POST", "/v1/vms", "{oops", {}],
    ["PATCH", "/v1/vms", null, {}],
  ]);
  assert.deepEqual(replies.map((r) => r.status), [
    200,
    200,
    200,
    200,
    200,
    204,
    404,
    200,
    400,
    405,
  ]);
  assert.equal(JSON.parse(replies[0].body).vms[0].id, id);
  assert.equal(JSON.parse(replies[2].body).stdout, "hello\n");
  assert.equal(replies[3].type, "application/x-ndjson");
  assert.equal(JSON.parse(replies[3].body.split("\n")[1]).type, "exit");
  assert.equal(JSON.parse(replies[4].body).stdout, "hello\n");
  assert.equal(JSON.parse(replies[8].body).error.code, "invalid_json");
});

Deno.test("docs/openapi.json documents exactly the routes, with their statuses", () => {
  const spec = JSON.parse(
    Deno.readTextFileSync(new URL("../../docs/openapi.json", import.meta.url)),
  );
  assert.match(spec.openapi, /^3\.1\./);
  const documented: string[] = [];
  for (
    const [path, item] of Object.entries(spec.paths as Record<string, Record<string, unknown>>)
  ) {
    for (const [method, op] of Object.entries(item)) {
      if (!["get", "post", "delete", "put", "patch", "head", "options"].includes(method)) continue;
      const statuses = Object.keys((op as { responses: object }).responses).map(Number);
      documented.push(`${method.toUpperCase()} ${path} ${statuses.sort((a, b) => a - b)}`);
    }
  }
  const routes = API_ROUTES.map((r) => `${r.method} ${r.path} ${r.statuses}`);
  assert.deepEqual(documented.sort(), routes.sort());
});
