/**
 * A fake `vmfactory serve` daemon on a Unix socket: just enough of the HTTP API v1 (healthz, VMs
 * kept in memory, a streamed exec that runs nothing) for the tests of the API client and of the
 * CLI through a daemon, recording every request. No QEMU.
 * @module
 */
import { vmPaths } from "../lib/vm/vm_paths.ts";
import type { VmRecord } from "../lib/vm/vm_record.ts";

/** A request the fake answered. */
export interface FakeCall {
  /** "METHOD /path", e.g. "POST /v1/vms". */
  route: string;
  /** The JSON body, if one was sent. */
  body?: unknown;
  /** The `accept` header. */
  accept?: string;
}

/** A running fake daemon; dispose of it (or `close`) to stop it and remove its socket. */
export interface FakeDaemon extends AsyncDisposable {
  /** Its socket. */
  readonly socketPath: string;
  /** Every request, in order. */
  readonly calls: FakeCall[];
  /** The VMs it holds, by id. */
  readonly vms: Map<string, VmRecord & { state: "running" | "dead" }>;
  /** Stops serving (in-flight streams are cut) and removes the socket. */
  close(): Promise<void>;
}

/** Options of {@link startFakeDaemon}. */
export interface FakeDaemonOptions {
  /** Where to listen. */
  socketPath: string;
  /** The state directory its VM records name (`<stateDir>/vms/<id>`). */
  stateDir: string;
  /** Answers a request itself when it returns a Response (tests of odd replies). */
  handle?: (req: Request, call: FakeCall) => Response | Promise<Response> | undefined;
}

/** An API error reply. */
export function errorReply(status: number, code: string, message: string): Response {
  return Response.json({ error: { code, message } }, { status });
}

/** Starts a fake daemon on `options.socketPath`. */
export async function startFakeDaemon(options: FakeDaemonOptions): Promise<FakeDaemon> {
  const calls: FakeCall[] = [];
  const vms = new Map<string, VmRecord & { state: "running" | "dead" }>();
  let serial = 0;
  const notFound = (id: string) =>
    errorReply(404, "vm_not_found", `Cannot find VM ${id}: no such VM (fake daemon)`);
  const find = (id: string) =>
    vms.get(id) ??
      ([...vms.values()].filter((v) => v.id.startsWith(id)).length === 1
        ? [...vms.values()].find((v) => v.id.startsWith(id))
        : undefined);

  const answer = (req: Request, call: FakeCall, path: string): Response => {
    const vm = /^\/v1\/vms\/([^/]+)(\/exec)?$/.exec(path);
    if (call.route === "GET /healthz") return Response.json({ ok: true, fake: true });
    if (call.route === "POST /v1/vms") {
      const body = (call.body ?? {}) as { cpus?: number; memoryMiB?: number; hostname?: string };
      const id = `fake${String(++serial).padStart(6, "0")}`;
      const { dir, qmpSocket, agentSocket, consoleLog } = vmPaths(
        `${options.stateDir}/vms/${id}`,
        id,
      );
      const record: VmRecord = {
        id,
        dir,
        qmpSocket,
        agentSocket,
        consoleLog,
        pid: 4242 + serial,
        startTime: 1000 + serial,
        source: "template",
        cpus: body.cpus ?? 1,
        memoryMiB: body.memoryMiB ?? 256,
        hostname: body.hostname ?? `vm-${id}`,
        createdAt: new Date(Date.UTC(2030, 0, 1, 0, 0, serial)).toISOString(),
        accel: "tcg",
        templateId: "faketemplate",
        timings: { totalMs: 12.5, phases: { claimMs: 0.5, personalizeMs: 12 } },
      };
      vms.set(id, { ...record, state: "running" });
      return Response.json(record, { status: 201 });
    }
    if (call.route === "GET /v1/vms") return Response.json({ vms: [...vms.values()] });
    if (!vm) return errorReply(404, "not_found", `Cannot serve ${path}: no such route`);
    const id = decodeURIComponent(vm[1]);
    const found = find(id);
    if (!found) return notFound(id);
    if (req.method === "GET" && !vm[2]) return Response.json(found);
    if (req.method === "DELETE" && !vm[2]) {
      vms.delete(found.id);
      return new Response(null, { status: 204 });
    }
    if (req.method === "POST" && vm[2]) return fakeExec(call.body as { shell?: string });
    return errorReply(405, "method_not_allowed", `Cannot ${req.method} ${path}: not allowed`);
  };

  const listening = Promise.withResolvers<void>();
  const server = Deno.serve({
    path: options.socketPath,
    transport: "unix",
    onListen: () => listening.resolve(),
  }, async (req) => {
    const path = new URL(req.url).pathname;
    const text = await req.text();
    const call: FakeCall = {
      route: `${req.method} ${path}`,
      accept: req.headers.get("accept") ?? undefined,
    };
    if (text) call.body = JSON.parse(text);
    calls.push(call);
    return await options.handle?.(req, call) ?? answer(req, call, path);
  });
  await listening.promise;
  const close = async () => {
    await server.shutdown();
    await Deno.remove(options.socketPath).catch(() => {});
  };
  return { socketPath: options.socketPath, calls, vms, close, [Symbol.asyncDispose]: close };
}

/**
 * A streamed exec that runs nothing: "ran <cmd or shell as JSON>" on stdout, "fake stderr" on
 * stderr, and the exit code N of a shell line `exit N` (else 0).
 */
function fakeExec(body: { cmd?: string[]; shell?: string }): Response {
  const enc = new TextEncoder();
  const line = (event: unknown) => enc.encode(JSON.stringify(event) + "\n");
  const data = (text: string) => btoa(text);
  const exitCode = Number(/^exit (\d+)$/.exec(body.shell ?? "")?.[1] ?? 0);
  const events = [
    { type: "stdout", data: data(`ran ${JSON.stringify(body.cmd ?? body.shell)}\n`) },
    { type: "stderr", data: data("fake stderr\n") },
    { type: "exit", exitCode, timedOut: false, truncated: false },
  ];
  return new Response(
    new ReadableStream({
      start(c) {
        for (const e of events) c.enqueue(line(e));
        c.close();
      },
    }),
    { headers: { "content-type": "application/x-ndjson" } },
  );
}
