/**
 * The CLI as a client of the daemon: with a (fake) daemon answering on `<state_dir>/vmfactory.sock`,
 * `vm create|list|exec|destroy` go through it (the fake records the calls) with the output and
 * exit codes of the standalone CLI; `--no-daemon`, `--strict` and a missing daemon work without
 * it. No QEMU there: the standalone cases stop before they would boot one. Last, once end to end
 * with the real `vmfactory serve` and a cold-booted VM under TCG.
 */
import assert from "node:assert/strict";
import { daemonFor } from "../lib/server/api_client.ts";
import { ROOT, runCli } from "./_cli.ts";
import { startFakeDaemon } from "./fake_daemon.ts";
import { qemuPidsWith, vmEnv } from "./_vm_env.ts";

/** A temp state dir with a fake daemon on its default socket, and the CLI pointed at it. */
async function daemonEnv() {
  const dir = await Deno.makeTempDir({ prefix: "vmf-clid-" });
  const stateDir = `${dir}/state`;
  await Deno.mkdir(stateDir, { mode: 0o700 });
  const daemon = await startFakeDaemon({ socketPath: `${stateDir}/vmfactory.sock`, stateDir });
  // a configuration the linter rejects: a standalone `vm create` stops at the lint, exit 2
  const rejected = `${dir}/rejected.toml`;
  await Deno.writeTextFile(
    rejected,
    `[hypervisor.qemu]\npath = "/usr/bin/qemu-system-x86_64"\n[factory]\nenable_template = true\n` +
      `template_path = "${dir}/template"\nvm_cache_number = 1\n[vmfactory]\nstate_dir = "${stateDir}"\n`,
  );
  const env = { VMFACTORY_STATE_DIR: stateDir, VMFACTORY_SOCKET: "" };
  return {
    dir,
    stateDir,
    daemon,
    rejected,
    cli: (args: string[]) => runCli(args, env),
    routes: () => daemon.calls.map((c) => c.route).filter((r) => r !== "GET /healthz"),
    async [Symbol.asyncDispose]() {
      await daemon.close();
      // a CLI that missed the daemon made a VM of its own: never leave its QEMU behind
      for (const pid of qemuPidsWith(dir)) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch { /* gone */ }
      }
      await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test("CLI through the daemon: create, list, exec and destroy are its calls", async (t) => {
  await using env = await daemonEnv();

  await t.step(
    "vm create --json: the daemon's record; no lint, no factory, no refill here",
    async () => {
      const res = await env.cli(["vm", "create", "--json", "--cpus", "2", "--hostname", "web1"]);
      assert.equal(res.code, 0, res.stderr);
      const record = JSON.parse(res.stdout);
      assert.equal(record.cpus, 2);
      assert.equal(record.hostname, "web1");
      assert.deepEqual(env.daemon.calls.map((c) => c.route), ["GET /healthz", "POST /v1/vms"]);
      assert.deepEqual(env.daemon.calls[1].body, { cpus: 2, hostname: "web1" });
      assert.equal(res.stderr, "", "nothing said about the path taken");
      // the CLI made nothing in the state directory: no lint marker, no guest, no template
      assert.deepEqual([...Deno.readDirSync(env.stateDir)].map((e) => e.name), ["vmfactory.sock"]);
    },
  );

  await t.step("vm create: the id on stdout and the usual summary on stderr", async () => {
    const res = await env.cli(["vm", "create", "--memory", "512"]);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /^fake0+2\n$/);
    assert.match(
      res.stderr,
      /^template VM fake0+2 \(pid \d+, 1 vCPU, 512 MiB\) ready in 12\.5 ms \(claim 0\.5 ms, personalize 12\.0 ms\)\n$/,
    );
    assert.deepEqual(env.daemon.calls.at(-1)?.body, { memoryMiB: 512 });
  });

  await t.step("vm list: the daemon's VMs, in text and JSON", async () => {
    const text = await env.cli(["vm", "list"]);
    assert.equal(text.code, 0, text.stderr);
    const lines = text.stdout.trimEnd().split("\n");
    assert.match(lines[0], /^ID\s+STATE\s+SOURCE\s+PID\s+CPUS\s+MEMORY\s+HOSTNAME\s+CREATED$/);
    assert.match(lines[1], /^fake0+1\s+running\s+template\s+\d+\s+2\s+256 MiB\s+web1\s+2030-/);
    assert.equal(lines.length, 3);
    const json = JSON.parse((await env.cli(["vm", "ls", "--json"])).stdout);
    assert.deepEqual(json.vms.map((v: { id: string; state: string }) => v.state), [
      "running",
      "running",
    ]);
    assert.deepEqual(env.routes().slice(-2), ["GET /v1/vms", "GET /v1/vms"]);
  });

  await t.step("vm exec: streamed output, the command's exit code, errors exit 2", async () => {
    const res = await env.cli(["vm", "exec", "fake000001", "--", "uname", "-r"]);
    assert.equal(res.code, 0, res.stderr);
    assert.equal(res.stdout, 'ran ["uname","-r"]\n');
    assert.equal(res.stderr, "fake stderr\n");
    assert.deepEqual(env.daemon.calls.at(-1), {
      route: "POST /v1/vms/fake000001/exec",
      accept: "application/x-ndjson",
      body: { cmd: ["uname", "-r"] },
    });
    const failing = await env.cli([
      "vm",
      "exec",
      "fake000001",
      "--shell",
      "exit 3",
      "--timeout",
      "5",
    ]);
    assert.equal(failing.code, 3);
    assert.deepEqual(env.daemon.calls.at(-1)?.body, { shell: "exit 3", timeoutS: 5 });
    const unknown = await env.cli(["vm", "exec", "nosuchvm", "--", "true"]);
    assert.equal(unknown.code, 2);
    assert.equal(unknown.stderr, "vmfactory: Cannot find VM nosuchvm: no such VM (fake daemon)\n");
  });

  await t.step("vm destroy: every id looked up first, then deleted; --all", async () => {
    const unknown = await env.cli(["vm", "destroy", "fake000001", "nosuchvm"]);
    assert.equal(unknown.code, 2);
    assert.equal(env.daemon.vms.size, 2, "an unknown id destroys none");
    const one = await env.cli(["vm", "rm", "fake000001"]);
    assert.equal(one.code, 0, one.stderr);
    assert.equal(one.stderr, "destroyed 1 VM(s)\n");
    assert.deepEqual(env.routes().slice(-2), [
      "GET /v1/vms/fake000001",
      "DELETE /v1/vms/fake000001",
    ]);
    const all = await env.cli(["vm", "destroy", "--all"]);
    assert.equal(all.stderr, "destroyed 1 VM(s)\n");
    assert.deepEqual(env.routes().slice(-2), ["GET /v1/vms", "DELETE /v1/vms/fake000002"]);
    assert.equal(env.daemon.vms.size, 0);
  });

  await t.step("the daemon's configuration counts: the CLI's own is not linted", async () => {
    const res = await env.cli(["vm", "create", "--config", env.rejected]);
    assert.equal(res.code, 0, res.stderr);
    assert.equal(env.routes().at(-1), "POST /v1/vms");
  });
});

Deno.test("CLI without the daemon: --no-daemon, --strict, or no daemon listening", async (t) => {
  await using env = await daemonEnv();
  const before = () => env.daemon.calls.length;

  await t.step("--no-daemon: not even a health check", async () => {
    const n = before();
    const list = await env.cli(["vm", "list", "--no-daemon"]);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stderr, /^no VMs/);
    const exec = await env.cli(["vm", "exec", "--no-daemon", "fake000001", "--", "true"]);
    assert.equal(exec.code, 2);
    assert.match(exec.stderr, /Cannot find VM fake000001: no such VM \(`vmfactory vm list`/);
    const destroy = await env.cli(["vm", "destroy", "--all", "--no-daemon"]);
    assert.equal(destroy.code, 0, destroy.stderr);
    // the fast path of vm create (no commander) knows --no-daemon: the standalone lint refuses
    const create = await env.cli(["vm", "create", "--no-daemon", "--config", env.rejected]);
    assert.equal(create.code, 2);
    assert.match(create.stderr, /the linter rejects it:[\s\S]*template-cache-exclusive/);
    assert.equal(before(), n, "the daemon heard nothing");
  });

  await t.step("--strict and --fallback are not in the API: standalone", async () => {
    const n = before();
    for (const flag of ["--strict", "--fallback"]) {
      const res = await env.cli(["vm", "create", flag, "--config", env.rejected]);
      assert.equal(res.code, 2, flag);
      assert.match(res.stderr, /the linter rejects it/);
    }
    assert.equal(before(), n);
  });

  await t.step("a daemon gone (stale socket or none): standalone, silently", async () => {
    await env.daemon.close();
    const res = await env.cli(["vm", "list"]);
    assert.equal(res.code, 0, res.stderr);
    assert.equal(res.stderr, "no VMs (create one with `vmfactory vm create`)\n");
  });
});

/** The parent pid of `pid` (`/proc/PID/stat` field 4). */
function parentOf(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
}

Deno.test("CLI through the real daemon: create, exec, list, destroy; SIGTERM stops it", async () => {
  await using env = await vmEnv({ enableTemplate: false });
  const noSocketEnv = { VMFACTORY_SOCKET: "" };
  const serve = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}cmd/main.ts`, "serve", "--config", env.configPath],
    env: { NO_COLOR: "1", KATA_CONF_FILE: "", ...noSocketEnv },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const log = new Response(serve.stderr).text();
  // `--config` before a `--`
  const cli = (args: string[]) => {
    const at = args.includes("--") ? args.indexOf("--") : args.length;
    return runCli(
      [...args.slice(0, at), "--config", env.configPath, ...args.slice(at)],
      noSocketEnv,
    );
  };
  try {
    for (let i = 0;; i++) {
      const client = await daemonFor(env.settings, { env: noSocketEnv });
      if (client) {
        client.close();
        break;
      }
      if (i === 1200) throw new Error("the daemon did not answer within 2 minutes");
      await new Promise((r) => setTimeout(r, 100));
    }

    const created = await cli(["vm", "create", "--json"]);
    assert.equal(created.code, 0, created.stderr);
    const record = JSON.parse(created.stdout);
    assert.equal(record.source, "direct");
    assert.equal(parentOf(record.pid), serve.pid, "the daemon started the VM's QEMU");
    assert.doesNotMatch(created.stderr, /refill/);

    const uname = await cli(["vm", "exec", record.id, "--", "uname", "-r"]);
    assert.equal(uname.code, 0, uname.stderr);
    assert.match(uname.stdout, /^\d+\.\d+\.\d+/);
    const failing = await cli(["vm", "exec", record.id, "--shell", "echo oops >&2; exit 3"]);
    assert.equal(failing.code, 3);
    assert.match(failing.stderr, /oops/);
    const unknown = await cli(["vm", "exec", "nosuchvm", "--", "true"]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /^vmfactory: Cannot find VM nosuchvm: no such VM/);

    const listed = JSON.parse((await cli(["vm", "list", "--json"])).stdout);
    assert.deepEqual(listed.vms.map((v: { id: string }) => v.id), [record.id]);
    const destroyed = await cli(["vm", "destroy", record.id.slice(0, 6)]);
    assert.equal(destroyed.code, 0, destroyed.stderr);
    assert.equal(destroyed.stderr, "destroyed 1 VM(s)\n");
    assert.deepEqual(qemuPidsWith(record.dir), []);
    assert.deepEqual(
      JSON.parse((await cli(["vm", "list", "--json", "--no-daemon"])).stdout).vms,
      [],
    );

    // run: one POST /v1/run, streamed; the daemon makes the VM, runs the command, destroys it
    const ran = await cli(["run", "--", "sh", "-c", "echo ran; echo err >&2; exit 7"]);
    assert.equal(ran.code, 7, ran.stderr);
    assert.equal(ran.stdout, "ran\n");
    assert.match(ran.stderr, /err/);
    assert.deepEqual(
      JSON.parse((await cli(["vm", "list", "--json", "--no-daemon"])).stdout).vms,
      [],
    );

    serve.kill("SIGTERM");
    const status = await serve.status;
    assert.equal(status.code, 0, await log);
    const socketLeft = await Deno.lstat(`${env.settings.stateDir}/vmfactory.sock`).then(
      () => true,
      () => false,
    );
    assert.equal(socketLeft, false, "the daemon removed its socket");
  } finally {
    try {
      serve.kill("SIGKILL");
    } catch {
      // exited
    }
    await serve.status;
    await log;
  }
});
