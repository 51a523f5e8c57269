/**
 * `vm cp`, `vm exec -i -e -w -u` and a forwarded port through the CLI, on one template clone made
 * with `vm create --image DIR --net -p HOST:80` (real QEMU, TCG): a 20 MiB file and a folder tree
 * both ways (checksums, modes, a link), docker cp's naming, a hostile guest whose tar sends `../`
 * or a link out (refused, nothing placed), stdin streamed into md5sum, and the guest's httpd
 * reached from the host. Prints the copy rates; asserts none.
 */
import assert from "node:assert/strict";
import { AgentClient } from "../lib/guest/agent_client.ts";
import { rawTar } from "../lib/image/_testing.ts";
import { copyFromVm } from "../lib/run/vm_copy.ts";
import type { VmRecord } from "../lib/vm/vm_record.ts";
import { qemuPidsWith, vmEnv } from "./_vm_env.ts";
import { cliWithStdin, freePort, md5, randomBytes, writeImageTree } from "./_workload_testing.ts";

const MIB = 1 << 20;

Deno.test("vm cp, vm exec -i -e -w -u and -p on a VM with an image and a network", async (t) => {
  await using env = await vmEnv({ poolSize: 0 });
  const dir = env.dir;
  writeImageTree(`${dir}/image`);
  const hostPort = freePort();
  const created = await env.cli([
    "vm",
    "create",
    "--image",
    `${dir}/image`,
    "--net",
    "-p",
    `${hostPort}:80`,
    "--json",
  ]);
  assert.equal(created.code, 0, created.stderr);
  const vm: VmRecord = JSON.parse(created.stdout);
  assert.ok(vm.image && vm.network, "the record keeps the image and the network");
  const ok = async (args: string[]) => {
    const res = await env.cli(args);
    assert.equal(res.code, 0, `${args.join(" ")}: ${res.stderr}`);
    return res.stdout;
  };
  const inVm = (...cmd: string[]) => ok(["vm", "exec", vm.id, "--", ...cmd]);

  try {
    await t.step("a 20 MiB random file, in and out: the same bytes", async () => {
      const data = randomBytes(20 * MIB);
      Deno.writeFileSync(`${dir}/big.bin`, data);
      let start = performance.now();
      await ok(["vm", "cp", `${dir}/big.bin`, `${vm.id}:/tmp/`]);
      const inMs = performance.now() - start;
      assert.equal((await inVm("md5sum", "/tmp/big.bin")).split(" ")[0], await md5(data));
      Deno.mkdirSync(`${dir}/out`);
      start = performance.now();
      await ok(["vm", "cp", `${vm.id}:/tmp/big.bin`, `${dir}/out/copy.bin`]);
      const outMs = performance.now() - start;
      assert.equal(await md5(Deno.readFileSync(`${dir}/out/copy.bin`)), await md5(data));
      console.log(
        `vm cp 20 MiB (CLI, with Deno start-up): in ${inMs.toFixed(0)} ms ` +
          `(${(20_000 / inMs).toFixed(1)} MiB/s), out ${outMs.toFixed(0)} ms ` +
          `(${(20_000 / outMs).toFixed(1)} MiB/s)`,
      );
    });

    await t.step("a folder tree both ways: modes, a link and docker cp's names", async () => {
      const tree = `${dir}/tree`;
      Deno.mkdirSync(`${tree}/sub/empty`, { recursive: true });
      Deno.writeTextFileSync(`${tree}/secret`, "s");
      Deno.chmodSync(`${tree}/secret`, 0o600);
      Deno.writeTextFileSync(`${tree}/sub/run.sh`, "#!/bin/sh\necho ran\n");
      Deno.chmodSync(`${tree}/sub/run.sh`, 0o755);
      Deno.chmodSync(`${tree}/sub`, 0o750);
      Deno.symlinkSync("../secret", `${tree}/sub/link`);
      // into an existing folder: /srv/tree; to a new name: /tmp/copy is the tree
      await ok(["vm", "cp", tree, `${vm.id}:/srv`]);
      await ok(["vm", "cp", tree, `${vm.id}:/tmp/copy`]);
      assert.match(await inVm("ls", "-l", "/srv/tree/secret"), /^-rw------- /);
      assert.match(await inVm("ls", "-ld", "/srv/tree/sub"), /^drwxr-x--- /);
      assert.equal(await inVm("cat", "/tmp/copy/sub/link"), "s");
      assert.equal(await inVm("/tmp/copy/sub/run.sh"), "ran\n");

      await ok(["vm", "cp", `${vm.id}:/srv/tree`, `${dir}/back`]); // a new name: back is the tree
      await ok(["vm", "cp", `${vm.id}:/tmp/copy/.`, `${dir}/out`]); // the content into out/
      for (const root of [`${dir}/back`, `${dir}/out`]) {
        const mode = (p: string) => Deno.lstatSync(`${root}/${p}`).mode! & 0o7777;
        assert.equal(mode("secret"), 0o600);
        assert.equal(mode("sub"), 0o750);
        assert.equal(mode("sub/run.sh"), 0o755);
        assert.ok(Deno.statSync(`${root}/sub/empty`).isDirectory);
        assert.equal(Deno.readLinkSync(`${root}/sub/link`), "../secret");
        assert.equal(Deno.readTextFileSync(`${root}/sub/link`), "s");
      }
      assert.ok(
        Deno.statSync(`${dir}/out/copy.bin`).isFile,
        "the content merged with what was there",
      );
      assert.deepEqual(
        [...Deno.readDirSync(dir)].filter((e) => e.name.startsWith(".vmfactory-cp")),
        [],
        "no staging folder left",
      );
    });

    await t.step("bad copies exit 2 with a reason (1 over the size limit)", async () => {
      const cases: [string[], number, RegExp][] = [
        [["vm", "cp", `${dir}/tree`, `${vm.id}:/srv/tree/secret`], 2, /cannot copy a folder onto/],
        [["vm", "cp", `${vm.id}:/nowhere`, dir], 2, /\/nowhere does not exist in VM/],
        [["vm", "cp", `${dir}/tree`, `${dir}/x`], 2, /exactly one side must be in a VM/],
        [["vm", "cp", `${vm.id}:/srv`, `${dir}/no/such/dir`], 2, /folder .*\/no\/such does not/],
        [["vm", "cp", `${vm.id}:relative`, dir], 2, /must be absolute/],
        [["vm", "cp", "--max-size", "1K", `${dir}/big.bin`, `${vm.id}:/tmp/x`], 1, /than 1024/],
      ];
      for (const [args, code, pattern] of cases) {
        const res = await env.cli(args);
        assert.equal(res.code, code, `${args.join(" ")}: ${res.stderr}`);
        assert.match(res.stderr, pattern);
        assert.doesNotMatch(res.stderr, /at .*\.ts:\d+/, "no stack trace");
      }
    });

    await t.step("exec -i streams stdin; -e, -w and -u set the command's", async () => {
      const data = randomBytes(3 * MIB);
      const res = await cliWithStdin(env, ["vm", "exec", "-i", vm.id, "--", "md5sum"], data);
      assert.equal(res.code, 0, res.stderr);
      assert.equal(res.stdout.split(" ")[0], await md5(data));
      const noStdin = await inVm("cat");
      assert.equal(noStdin, "", "without -i the command reads /dev/null");
      const as = await ok([
        "vm",
        "exec",
        vm.id,
        "-e",
        "GREETING=hi",
        "-w",
        "/home/app",
        "-u",
        "app",
        "--",
        "sh",
        "-c",
        'echo "$GREETING $(pwd) $(id -u)"',
      ]);
      assert.equal(as, "hi /home/app 1000\n");
      const bad = await env.cli(["vm", "exec", vm.id, "-e", "1X=y", "--", "true"]);
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /Cannot set an environment variable/);
    });

    await t.step("a forwarded port reaches the guest's httpd from the host", async () => {
      await inVm(
        "sh",
        "-c",
        "echo served > /srv/index.html; httpd -f -p 80 -h /srv </dev/null >/dev/null 2>&1 &",
      );
      let body = "";
      for (let i = 0; i < 50 && body === ""; i++) {
        body = await fetch(`http://127.0.0.1:${hostPort}/index.html`)
          .then((r) => r.ok ? r.text() : "", () => "");
        if (!body) await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(body, "served\n");
    });

    await t.step(
      "a guest whose tar sends ../ or a link out is refused; nothing placed",
      async () => {
        const agent = await AgentClient.connect(vm.agentSocket);
        const initrd = (shell: string) => agent.exec(["/bin/sh", "-c", shell]);
        try {
          const tmp = { name: "./tmp/", mode: 0o755 };
          const hostile = {
            "dotdot.tar": rawTar([{ name: "../evil", data: "evil" }]),
            "link.tar": rawTar([tmp, { name: "./tmp/etc", type: "symlink", linkname: "/etc" }]),
            "device.tar": rawTar([tmp, { name: "./tmp/disk", type: "block", devmajor: 8 }]),
          };
          for (const [name, bytes] of Object.entries(hostile)) {
            // the guest's "tar" prints the hostile archive, whatever it is asked
            await agent.exec(["/bin/sh", "-c", `cat > /${name}`], { stdin: bytes });
            await initrd(
              `rm /bin/tar; printf '#!/bin/sh\\ncat /${name}\\n' > /bin/tar; chmod 755 /bin/tar`,
            );
            const dest = `${dir}/hostile-${name}`;
            Deno.mkdirSync(dest);
            await assert.rejects(copyFromVm(agent, vm, "/tmp", dest), /refused/);
            assert.deepEqual([...Deno.readDirSync(dest)], [], `${name}: nothing placed`);
          }
          assert.ok(!Deno.lstatSync(dir).isSymlink);
          assert.throws(() => Deno.lstatSync(`${dir}/evil`), Deno.errors.NotFound);
        } finally {
          await initrd("rm -f /bin/tar; ln -s busybox /bin/tar");
          agent.close();
        }
      },
    );
  } finally {
    const destroyed = await env.cli(["vm", "destroy", "--all"]);
    assert.equal(destroyed.code, 0, destroyed.stderr);
    assert.deepEqual(qemuPidsWith(vm.dir), []);
  }
});
