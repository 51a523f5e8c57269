/**
 * `vmfactory run` through the CLI and `runCommand` through the library, on template clones (real
 * QEMU, TCG): exit codes, --timeout (124), Ctrl-C (no VM, no QEMU left), bad input refused before
 * any VM, a rootfs folder and an OCI layout as images (Entrypoint/Cmd, Env/WorkingDir/User, and
 * -e/-w/-u over them), --file, -i, and --net reaching a server of the host through the gateway.
 * Prints `run -- true` figures (library on a pool clone: plain, with an image, with a network;
 * the CLI to exit beside a bare `deno run`); asserts none.
 */
import assert from "node:assert/strict";
import { factoryFor } from "../lib/factory/factory_for.ts";
import { gnuTar, writeOciLayout } from "../lib/image/_testing.ts";
import { processesWhere } from "../lib/process_identity.ts";
import { runCommand } from "../lib/run/run_command.ts";
import { TemplateManager } from "../lib/template/template_manager.ts";
import type { VmRequest } from "../lib/factory/vm_source.ts";
import { qemuPidsWith, vmEnv } from "./_vm_env.ts";
import { cliWithStdin, md5, randomBytes, spawnCli, writeImageTree } from "./_workload_testing.ts";

const percentile = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))];
const fmt = (xs: number[]) =>
  `p50 ${percentile(xs, 0.5).toFixed(1)} ms, min ${Math.min(...xs).toFixed(1)} ms (n=${xs.length})`;

Deno.test("run: exit codes, timeout, Ctrl-C, images, env, files, stdin, network", async (t) => {
  await using env = await vmEnv({ poolSize: 0 });
  const dir = env.dir;
  writeImageTree(`${dir}/image`, 'NAME="run test image"\n');
  await writeOciLayout(`${dir}/oci`, {
    layers: [{ tar: await gnuTar(`${dir}/image`, `${dir}/layer.tar`) }],
    config: {
      Env: ["GREETING=hello", "PATH=/bin"],
      WorkingDir: "/home/app",
      User: "app",
      Entrypoint: ["/bin/sh", "-c"],
      Cmd: ["echo from Cmd"],
    },
    tags: ["v1"],
  });
  const run = async (args: string[], code = 0) => {
    const res = await env.cli(["run", ...args]);
    assert.equal(res.code, code, `run ${args.join(" ")}: ${res.stderr}`);
    return res;
  };
  const noVmLeft = async () => {
    assert.deepEqual((await env.store.list()).map((e) => e.record.id), [], "no VM is left");
    assert.deepEqual(qemuPidsWith(`${dir}/state/vms`), [], "no QEMU is left");
  };

  await t.step("exit codes: the command's, 124 after --timeout; the VM is gone", async () => {
    assert.equal((await run(["--", "true"])).stdout, "");
    assert.equal(
      (await run(["--", "sh", "-c", "echo out; echo err >&2; exit 7"], 7)).stdout,
      "out\n",
    );
    const timedOut = await run(["--timeout", "1", "--", "sleep", "30"], 124);
    assert.match(timedOut.stderr, /killed after 1 s/);
    await noVmLeft();
  });

  await t.step("bad input exits 2 before any VM is made", async () => {
    const cases: [string[], RegExp][] = [
      [["-p", "8080:80", "--", "true"], /Cannot forward a port: .*--net user/],
      [["--image", `${dir}/nothing`, "--", "true"], /Cannot use image .*does not exist/],
      [["--net", "bogus", "--", "true"], /Cannot use the network "bogus"/],
      [["-e", "=x", "--", "true"], /Cannot set an environment variable/],
      [["--file", "nothing", "--", "true"], /Cannot read --file/],
      [["--file", `${dir}/nothing:/x`, "--", "true"], /does not exist/],
      [["-w", "relative", "--", "true"], /must be absolute/],
    ];
    for (const [args, pattern] of cases) {
      const res = await run(args, 2);
      assert.match(res.stderr, pattern);
      assert.doesNotMatch(res.stderr, /at .*\.ts:\d+/, "no stack trace");
    }
    const create = await env.cli(["vm", "create", "-p", "8080:80"]);
    assert.equal(create.code, 2);
    assert.match(create.stderr, /Cannot forward a port/);
    await noVmLeft();
  });

  await t.step("--image DIR: the command runs in the image", async () => {
    const res = await run(["--image", `${dir}/image`, "--", "cat", "/etc/os-release"]);
    assert.equal(res.stdout, 'NAME="run test image"\n');
    assert.match(res.stderr, /image: /, "the conversion reports progress");
  });

  await t.step("--image oci:: Entrypoint, Cmd, Env, WorkingDir, User; -e -w -u win", async () => {
    const image = `oci:${dir}/oci:v1`;
    assert.equal((await run(["--image", image])).stdout, "from Cmd\n");
    const line = 'echo "$GREETING $(pwd) $(id -u)"';
    assert.equal((await run(["--image", image, "--", line])).stdout, "hello /home/app 1000\n");
    const over = await run([
      "--image",
      image,
      "-e",
      "GREETING=bye",
      "-w",
      "/",
      "-u",
      "0",
      "--",
      line,
    ]);
    assert.equal(over.stdout, "bye / 0\n");
  });

  await t.step("--file copies in first; -i streams stdin", async () => {
    Deno.writeTextFileSync(`${dir}/job.sh`, "echo job ran in $(pwd)\n");
    const job = await run(["--file", `${dir}/job.sh:/tmp/`, "-w", "/tmp", "--", "sh", "job.sh"]);
    assert.equal(job.stdout, "job ran in /tmp\n");
    const data = randomBytes(1 << 20);
    const piped = await cliWithStdin(env, ["run", "-i", "--", "md5sum"], data);
    assert.equal(piped.code, 0, piped.stderr);
    assert.equal(piped.stdout.split(" ")[0], await md5(data));
  });

  await t.step("--net reaches a server on the host's 127.0.0.1 through the gateway", async () => {
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      () => new Response("hello from the host\n"),
    );
    try {
      const res = await run([
        "--net",
        "--",
        "sh",
        "-c",
        `gw=$(ip route | awk '/^default/ {print $3}'); ` +
        `timeout 20 wget -q -O- http://$gw:${server.addr.port}/`,
      ]);
      assert.equal(res.stdout, "hello from the host\n");
    } finally {
      await server.shutdown();
    }
  });

  await t.step(
    "three clones with --net: three MACs and addresses, each on its own NIC",
    async () => {
      const made = [];
      try {
        for (let i = 0; i < 3; i++) {
          const res = await env.cli(["vm", "create", "--net", "--json"]);
          assert.equal(res.code, 0, res.stderr);
          made.push(JSON.parse(res.stdout));
        }
        const nets = made.map((r) => r.network);
        assert.equal(new Set(nets.map((n) => n.mac)).size, 3, JSON.stringify(nets));
        assert.equal(new Set(nets.map((n) => n.ip)).size, 3, JSON.stringify(nets));
        for (const r of made) {
          const shown = await env.cli([
            "vm",
            "exec",
            r.id,
            "--",
            "sh",
            "-c",
            "ip -o -4 addr; cat /sys/class/net/eth0/address",
          ]);
          assert.equal(shown.code, 0, shown.stderr);
          assert.match(shown.stdout, new RegExp(`inet ${r.network.ip.replaceAll(".", "\\.")}/`));
          assert.match(shown.stdout, new RegExp(r.network.mac));
        }
        const listed = JSON.parse((await env.cli(["vm", "list", "--json"])).stdout).vms;
        assert.deepEqual(
          listed.map((v: { network: { mac: string } }) => v.network.mac).sort(),
          nets.map((n) => n.mac).sort(),
        );
      } finally {
        await Promise.all(made.map((r) => env.store.remove(r.id, ["owned"])));
      }
    },
  );

  await t.step("Ctrl-C while the command runs: exit 130, no VM, no QEMU left", async () => {
    const child = spawnCli(env, ["run", "--", "sleep", "60"]);
    for (let i = 0; i < 600 && (await env.store.list()).length === 0; i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal((await env.store.list()).length, 1, "the run's VM is up");
    await new Promise((r) => setTimeout(r, 300)); // and its command started
    child.kill("SIGINT");
    const out = await child.output();
    assert.equal(out.code, 130, new TextDecoder().decode(out.stderr));
    assert.match(new TextDecoder().decode(out.stderr), /interrupted by SIGINT/);
    await noVmLeft();
    const list = await env.cli(["vm", "list", "--json"]);
    assert.deepEqual(JSON.parse(list.stdout).vms, []);
  });

  await t.step("figures: run -- true on a pool clone (library) and through the CLI", async () => {
    const settings = env.reconfigure({ poolSize: 1 });
    const factory = await factoryFor(settings, env.store, { log: () => {} });
    const template = new TemplateManager(settings, env.store);
    const library = async (request: VmRequest, n: number) => {
      const total: number[] = [], exec: number[] = [], create: number[] = [];
      let phases = {};
      for (let i = 0; i < n; i++) {
        await template.refill();
        const res = await runCommand(factory, env.store, { request, command: ["true"] });
        assert.equal(res.exitCode, 0);
        assert.ok("claimMs" in res.vm.timings.phases, "a pool clone");
        total.push(res.timings.totalMs);
        exec.push(res.timings.execMs);
        create.push(res.timings.createMs);
        phases = res.vm.timings.phases;
      }
      return `${fmt(total)}; create p50 ${percentile(create, 0.5)} ms, exec p50 ${
        percentile(exec, 0.5)
      } ms; last VM's phases ${JSON.stringify(phases)}`;
    };
    const plain = await library({}, 7);
    const image = await library({ image: `${dir}/image` }, 7);
    const net = await library({ net: "user" }, 7);
    // the CLI beside a bare `deno run` of an empty file, alternately
    Deno.writeTextFileSync(`${dir}/empty.ts`, "");
    const cli: number[] = [], bare: number[] = [];
    for (let i = 0; i < 5; i++) {
      await template.refill();
      let start = performance.now();
      await run(["--", "true"]);
      cli.push(performance.now() - start);
      start = performance.now();
      await new Deno.Command(Deno.execPath(), { args: ["run", `${dir}/empty.ts`] }).output();
      bare.push(performance.now() - start);
    }
    await factory.close();
    console.log(
      [
        `run -- true, library, pool clone:          ${plain}`,
        `run -- true, library, pool clone + image:  ${image}`,
        `run -- true, library, pool clone + --net:  ${net}`,
        `CLI run -- true to exit:                   ${fmt(cli)}`,
        `bare deno run of an empty file:            ${fmt(bare)}`,
        `CLI / bare p50: ${(percentile(cli, 0.5) / percentile(bare, 0.5)).toFixed(2)}x`,
      ].join("\n"),
    );
    // the CLI runs topped the pool up in the background: let those refills finish
    const refills = () =>
      processesWhere((argv) => argv.includes("refill") && argv.includes(env.configPath));
    for (let i = 0; i < 300 && refills().length > 0; i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
  });
});
