import assert from "node:assert/strict";
import { UsageError, VmfactoryError } from "../errors.ts";
import { errorReply, type FakeCall, startFakeDaemon } from "../../test/fake_daemon.ts";
import {
  ApiCallError,
  ApiClient,
  ApiUsageError,
  daemonFor,
  daemonSocketPath,
  MAX_LINE_BYTES,
  MAX_REPLY_BYTES,
} from "./api_client.ts";

/** A temp state dir with a fake daemon on `<dir>/vmfactory.sock`, answering with `handle`. */
async function fake(
  handle?: (req: Request, call: FakeCall) => Response | Promise<Response> | undefined,
) {
  const dir = await Deno.makeTempDir({ prefix: "vmf-api-" });
  const daemon = await startFakeDaemon({
    socketPath: `${dir}/vmfactory.sock`,
    stateDir: dir,
    handle,
  });
  const client = new ApiClient(daemon.socketPath, { timeoutMs: 5000 });
  return {
    dir,
    daemon,
    client,
    async [Symbol.asyncDispose]() {
      client.close();
      await daemon.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** An NDJSON reply streamed in `chunks` (strings, sent as given). */
function ndjson(...chunks: string[]): Response {
  const enc = new TextEncoder();
  return new Response(
    new ReadableStream({
      start(c) {
        for (const chunk of chunks) c.enqueue(enc.encode(chunk));
        c.close();
      },
    }),
    { headers: { "content-type": "application/x-ndjson" } },
  );
}

/** Runs an exec and gathers its output. */
async function execAll(client: ApiClient, id = "fake000001") {
  const out: string[] = [];
  const dec = new TextDecoder();
  const end = await client.exec(id, { cmd: ["true"] }, {
    stdout: (c) => void out.push(`1:${dec.decode(c)}`),
    stderr: (c) => void out.push(`2:${dec.decode(c)}`),
  });
  return { end, out };
}

Deno.test("ApiClient: create, list, get, destroy, exec against the fake daemon", async () => {
  await using f = await fake();
  assert.equal(await f.client.healthy(1000), true);
  const record = await f.client.createVm({ cpus: 2, hostname: "web1" });
  assert.equal(record.cpus, 2);
  assert.equal(record.hostname, "web1");
  assert.equal(record.dir, `${f.dir}/vms/${record.id}`);
  assert.deepEqual(f.daemon.calls.at(-1), {
    route: "POST /v1/vms",
    accept: "application/json",
    body: { cpus: 2, hostname: "web1" },
  });
  const listed = await f.client.listVms();
  assert.deepEqual(listed.map((v) => [v.id, v.state]), [[record.id, "running"]]);
  assert.equal((await f.client.getVm(record.id.slice(0, 6))).id, record.id);

  const { end, out } = await execAll(f.client, record.id);
  assert.deepEqual(end, { exitCode: 0, timedOut: false, truncated: false });
  assert.deepEqual(out, ['1:ran ["true"]\n', "2:fake stderr\n"]);
  assert.equal(f.daemon.calls.at(-1)?.accept, "application/x-ndjson");

  await f.client.destroyVm(record.id);
  assert.deepEqual(await f.client.listVms(), []);
});

Deno.test("ApiClient: error replies become UsageError (400, 404, 409, 413) or VmfactoryError", async () => {
  let reply: Response = new Response();
  await using f = await fake(() => reply);
  const cases: [Response, typeof ApiUsageError | typeof ApiCallError, number, string][] = [
    [
      errorReply(404, "vm_not_found", "Cannot find VM abc: no such VM"),
      ApiUsageError,
      2,
      "Cannot find VM abc: no such VM",
    ],
    [
      errorReply(400, "invalid_field", "Cannot read the request body: cpus: expected…"),
      ApiUsageError,
      2,
      "Cannot read the request body: cpus: expected…",
    ],
    [
      errorReply(409, "vm_not_running", "Cannot run a command in VM abc: its QEMU is not running"),
      ApiUsageError,
      2,
      "Cannot run a command in VM abc: its QEMU is not running",
    ],
    [
      errorReply(503, "draining", "Cannot create a VM: the daemon is stopping"),
      ApiCallError,
      1,
      "Cannot create a VM: the daemon is stopping",
    ],
    [
      errorReply(429, "too_many_requests", "not in the usual form"),
      ApiCallError,
      1,
      "Cannot list VMs through the daemon: not in the usual form",
    ],
    [
      new Response("<html>oops</html>", { status: 500 }),
      ApiCallError,
      1,
      "Cannot list VMs through the daemon: the daemon answered HTTP 500",
    ],
    // a hostile message loses its terminal escapes
    [
      errorReply(500, "internal", "Cannot x: \x1b[2Jgone\x07"),
      ApiCallError,
      1,
      "Cannot x: ?[2Jgone?",
    ],
  ];
  for (const [response, kind, exitCode, message] of cases) {
    reply = response;
    const err = await f.client.listVms().then(() => undefined, (e) => e);
    assert.ok(err instanceof kind, `${response.status}: ${err}`);
    assert.ok(err instanceof VmfactoryError);
    assert.equal(err instanceof UsageError, exitCode === 2);
    assert.equal(err.exitCode, exitCode);
    assert.equal(err.message, message);
    assert.equal(err.status, response.status);
  }
});

Deno.test("ApiClient: a reply that is not what the API defines fails the call", async () => {
  let reply: Response = new Response();
  await using f = await fake(() => reply);
  const record = {
    id: "abc123",
    dir: `${f.dir}/vms/abc123`,
    qmpSocket: `${f.dir}/vms/abc123/qmp.sock`,
    agentSocket: `${f.dir}/vms/abc123/agent.sock`,
    consoleLog: `${f.dir}/vms/abc123/console.log`,
    pid: 10,
    startTime: 1,
    source: "template",
    cpus: 1,
    memoryMiB: 256,
    hostname: "vm-abc123",
    createdAt: "2030-01-01T00:00:00.000Z",
    accel: "tcg",
    timings: { totalMs: 1, phases: { claimMs: 1 } },
  };
  reply = Response.json(record, { status: 201 });
  assert.equal((await f.client.createVm({})).id, "abc123");
  const bad = [
    "not json",
    JSON.stringify([record]),
    JSON.stringify({ ...record, agentSocket: "/run/other/agent.sock" }), // not its folder's
    JSON.stringify({ ...record, id: "../x" }),
    JSON.stringify({ ...record, pid: -1 }),
    JSON.stringify({ ...record, hostname: "a\x1b[31mb" }),
    JSON.stringify({ ...record, timings: { totalMs: "fast", phases: {} } }),
    JSON.stringify({ ...record, timings: { totalMs: 1, phases: { x: "1" } } }),
  ];
  for (const body of bad) {
    reply = new Response(body, { status: 201 });
    await assert.rejects(f.client.createVm({}), (err) => {
      assert.ok(err instanceof ApiCallError, String(err));
      assert.equal(err.exitCode, 1);
      assert.equal(err.code, "malformed_reply");
      return true;
    }, body);
  }
  // a listed VM needs its state
  reply = Response.json({ vms: [record] });
  await assert.rejects(f.client.listVms(), /without its state/);
  // a reply over the cap is not read whole
  reply = new Response(new Uint8Array(MAX_REPLY_BYTES + 1).fill(32));
  await assert.rejects(f.client.listVms(), /over 8388608 bytes/);
});

Deno.test("ApiClient.exec: NDJSON lines split or joined anyhow; malformed streams fail", async () => {
  let reply: Response = new Response();
  await using f = await fake(() => reply);
  const b64 = (s: string) => btoa(s);
  const out = (s: string) => JSON.stringify({ type: "stdout", data: b64(s) });
  const exit = (extra = {}) =>
    JSON.stringify({ type: "exit", exitCode: 3, timedOut: false, truncated: true, ...extra });

  // lines cut mid-way, several in one chunk, blank lines, a last line without its newline
  const whole = `${out("a")}\n\n${out("bc")}\n${
    JSON.stringify({ type: "stderr", data: b64("e") })
  }\n`;
  reply = ndjson(whole.slice(0, 5), whole.slice(5, 40), whole.slice(40), exit({ signal: 9 }));
  assert.deepEqual(await execAll(f.client), {
    end: { exitCode: 3, signal: 9, timedOut: false, truncated: true },
    out: ["1:a", "1:bc", "2:e"],
  });

  const failing: [Response, RegExp][] = [
    [ndjson(`${out("a")}\n`), /ended the output before the exit/],
    [
      ndjson(`{"type":"error","error":{"code":"agent_gone","message":"the agent left"}}\n`),
      /the agent left/,
    ],
    [ndjson(`${exit({ exitCode: 300 })}\n`), /malformed exit event/],
    [ndjson(`${exit({ exitCode: 1.5 })}\n`), /malformed exit event/],
    [ndjson(`{"type":"stdout","data":"%%%"}\n`), /not base64/],
    [ndjson(`{"type":"launch"}\n`), /unknown type/],
    [ndjson("[1]\n"), /not an object/],
    [ndjson("{oops\n"), /not JSON/],
    [Response.json({ exitCode: 0 }), /is not application\/x-ndjson/],
    [ndjson(`{"type":"stdout","data":"${"A".repeat(MAX_LINE_BYTES)}"}\n`), /a line too long/],
  ];
  for (const [response, message] of failing) {
    reply = response;
    await assert.rejects(execAll(f.client), (err) => {
      assert.ok(err instanceof ApiCallError, String(err));
      assert.match(err.message, message);
      return true;
    });
  }
});

Deno.test("ApiClient.exec: an endless line is cut at the cap, not buffered", async () => {
  let sent = 0;
  await using f = await fake(() =>
    new Response(
      new ReadableStream({
        pull(c) {
          sent += 65536;
          c.enqueue(new Uint8Array(65536).fill(65)); // never a newline
        },
      }),
      { headers: { "content-type": "application/x-ndjson" } },
    )
  );
  await assert.rejects(execAll(f.client), /a line too long/);
  assert.ok(sent < 64 * MAX_LINE_BYTES, `the client stopped reading (${sent} bytes sent)`);
});

Deno.test("ApiClient: an output sink's own error is passed on as it is", async () => {
  await using f = await fake();
  const { id } = await f.client.createVm({});
  const broken = new Deno.errors.BrokenPipe("stdout closed");
  await assert.rejects(
    f.client.exec(id, { shell: "yes" }, {
      stdout: () => {
        throw broken;
      },
      stderr: () => {},
    }),
    (err) => err === broken,
  );
});

Deno.test("ApiClient: deadlines, close, and no daemon", async () => {
  const never = Promise.withResolvers<Response>();
  await using f = await fake(() => undefined);
  await using slow = await fake(() => never.promise);
  const client = new ApiClient(slow.daemon.socketPath, { timeoutMs: 50 });
  await assert.rejects(client.listVms(), (err) => {
    assert.ok(err instanceof ApiCallError);
    assert.match(err.message, /^Cannot list VMs through the daemon: no answer within 50 ms$/);
    return true;
  });
  assert.equal(await client.healthy(50), false, "a daemon that does not answer is not healthy");
  const pending = client.listVms();
  client.close();
  await assert.rejects(pending, /the client was closed/);
  await assert.rejects(client.listVms(), /the client was closed/);
  never.resolve(new Response());

  const gone = new ApiClient(`${f.dir}/nothing.sock`);
  await assert.rejects(gone.listVms(), (err) => {
    assert.ok(err instanceof ApiCallError && err.exitCode === 1);
    assert.match(err.message, /did not answer/);
    return true;
  });
  assert.equal(await gone.healthy(200), false);
  gone.close();
});

Deno.test("daemonSocketPath: VMFACTORY_SOCKET, else <state_dir>/vmfactory.sock", () => {
  assert.equal(daemonSocketPath({ stateDir: "/run/vmf" }, {}), "/run/vmf/vmfactory.sock");
  assert.equal(
    daemonSocketPath({ stateDir: "/run/vmf" }, { VMFACTORY_SOCKET: "/x.sock" }),
    "/x.sock",
  );
});

Deno.test("daemonFor: a client only when a trusted socket answers healthz", async () => {
  const env = { VMFACTORY_SOCKET: undefined };
  const warnings: string[] = [];
  const warn = (line: string) => void warnings.push(line);
  const dir = await Deno.makeTempDir({ prefix: "vmf-daemonfor-" });
  try {
    // nothing there: undefined, silently
    assert.equal(await daemonFor({ stateDir: dir }, { env, warn }), undefined);
    assert.deepEqual(warnings, []);

    // not a socket
    await Deno.writeTextFile(`${dir}/vmfactory.sock`, "");
    assert.equal(await daemonFor({ stateDir: dir }, { env, warn }), undefined);
    assert.match(warnings.pop() ?? "", /not using the daemon socket .*: it is not a socket/);
    await Deno.remove(`${dir}/vmfactory.sock`);

    // a stale socket (nothing listens; Deno removes the one it bound, not a link to it)
    const bound = Deno.listen({ transport: "unix", path: `${dir}/bound.sock` });
    await Deno.link(`${dir}/bound.sock`, `${dir}/vmfactory.sock`);
    bound.close();
    assert.equal(await daemonFor({ stateDir: dir }, { env, warn }), undefined);
    assert.deepEqual(warnings, []);
    await Deno.remove(`${dir}/vmfactory.sock`);

    // a daemon that answers 503 (draining, not ready) is not used
    let health = () => errorReply(503, "draining", "Cannot serve: draining");
    const daemon = await startFakeDaemon({
      socketPath: `${dir}/vmfactory.sock`,
      stateDir: dir,
      handle: (_req, call) => call.route === "GET /healthz" ? health() : undefined,
    });
    try {
      assert.equal(await daemonFor({ stateDir: dir }, { env, warn }), undefined);
      health = () => Response.json({ ok: true });
      const client = await daemonFor({ stateDir: dir }, { env, warn });
      assert.ok(client instanceof ApiClient);
      assert.equal(client.socketPath, `${dir}/vmfactory.sock`);
      client.close();

      // VMFACTORY_SOCKET names it from anywhere
      const other = await daemonFor({ stateDir: "/nonexistent" }, {
        env: { VMFACTORY_SOCKET: `${dir}/vmfactory.sock` },
      });
      assert.ok(other);
      other.close();

      // a folder others may write to could have its socket swapped: not trusted
      await Deno.chmod(dir, 0o777);
      assert.equal(await daemonFor({ stateDir: dir }, { env, warn }), undefined);
      assert.match(warnings.pop() ?? "", /its folder .* is not this user's or root's alone/);
      await Deno.chmod(dir, 0o700);

      if (Deno.uid() === 0) {
        // another user's socket: not trusted
        await Deno.chown(`${dir}/vmfactory.sock`, 65534, 65534);
        assert.equal(await daemonFor({ stateDir: dir }, { env, warn }), undefined);
        assert.match(warnings.pop() ?? "", /belongs to uid 65534, neither this user nor root/);
      }
    } finally {
      await daemon.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
