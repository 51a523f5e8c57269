/**
 * Hot-plugging an erofs disk and a user-mode NIC into template clones (real QEMU, TCG), the guest
 * configured with busybox through the agent: the guest reaches a server of the test through its
 * gateway, the test reaches a server in the guest through a forward, two VMs get different MACs
 * and addresses, and detaching frees it all. Network traffic stays on loopback.
 */
import assert from "node:assert/strict";
import { VmFactory } from "../lib/factory/vm_factory.ts";
import { AgentClient } from "../lib/guest/agent_client.ts";
import { planNetwork } from "../lib/net/net_plan.ts";
import { attachDisk, attachNic, detachDisk, detachNic } from "../lib/qemu/device_hotplug.ts";
import { QmpClient } from "../lib/qemu/qmp_client.ts";
import { TemplateManager } from "../lib/template/template_manager.ts";
import { vmEnv } from "./_vm_env.ts";

const MKFS_EROFS = "/usr/bin/mkfs.erofs";
const decoder = new TextDecoder();

/** Runs a shell line in the guest; its stdout, trimmed; fails the test on a non-zero exit. */
async function sh(agent: AgentClient, line: string): Promise<string> {
  const res = await agent.exec({ shell: line }, { timeoutMs: 60_000 });
  assert.equal(res.exitCode, 0, `${line}: ${decoder.decode(res.stderr)}`);
  return decoder.decode(res.stdout).trim();
}

/** A guest shell loop until `test` holds (30 s at most). */
const waitFor = (test: string) =>
  `i=0; until ${test}; do i=$((i+1)); [ $i -lt 1500 ] || exit 1; usleep 20000; done`;

/** A port nothing listens on now (the kernel's pick). */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** An erofs image holding `hello.txt`, in a folder QEMU's (unprivileged) user may read. */
async function erofsImage(dir: string): Promise<string> {
  await Deno.mkdir(`${dir}/src`);
  await Deno.writeTextFile(`${dir}/src/hello.txt`, "hello from the image\n");
  const out = await new Deno.Command(MKFS_EROFS, {
    args: [`${dir}/image.erofs`, `${dir}/src`],
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, decoder.decode(out.stderr));
  await Deno.chmod(dir, 0o755);
  await Deno.chmod(`${dir}/image.erofs`, 0o644);
  return `${dir}/image.erofs`;
}

Deno.test("hot-plug: an erofs disk and a user NIC with a forward into template clones", async (t) => {
  await using env = await vmEnv();
  const imageDir = await Deno.makeTempDir({ prefix: "vmft-image-" });
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => new Response("hello from the host\n"),
  );
  const factory = new VmFactory(new TemplateManager(env.settings, env.store).source());
  const opened: { close(): void }[] = [];
  try {
    const image = await erofsImage(imageDir);
    const a = await factory.getVm({});
    const b = await factory.getVm({});
    const planA = planNetwork(a.id, { kind: "user" });
    const planB = planNetwork(b.id, { kind: "user" }, { taken: [planA] });
    const qmpA = await QmpClient.connect(a.qmpSocket);
    const agentA = await AgentClient.connect(a.agentSocket, { timeoutMs: 20_000 });
    opened.push(qmpA, agentA);
    const hostPort = freePort();

    await t.step("the guest finds the disk by its serial and mounts it", async () => {
      await attachDisk(qmpA, { id: "img0", path: image, readOnly: true, serial: "img0" });
      await sh(agentA, waitFor("grep -qx img0 /sys/block/vd*/serial 2>/dev/null"));
      const dev = await sh(agentA, "grep -lx img0 /sys/block/vd*/serial | cut -d/ -f4");
      assert.match(dev, /^vd[a-z]$/);
      assert.equal(await sh(agentA, `cat /sys/block/${dev}/ro`), "1", "read-only to the guest");
      const text = await sh(
        agentA,
        `mkdir -p /mnt/img && mount -t erofs -o ro /dev/${dev} /mnt/img && cat /mnt/img/hello.txt`,
      );
      assert.equal(text, "hello from the image");
    });

    await t.step("the NIC has the planned MAC; busybox ip configures the plan", async () => {
      await attachNic(qmpA, {
        id: "hpnic0",
        mac: planA.mac,
        backend: {
          kind: "user",
          net: planA.net,
          hostForwards: [{ hostAddr: "127.0.0.1", hostPort, guestPort: 80, proto: "tcp" }],
        },
      });
      await sh(agentA, waitFor("[ -e /sys/class/net/eth1 ]"));
      assert.equal(await sh(agentA, "cat /sys/class/net/eth1/address"), planA.mac);
      await sh(
        agentA,
        `ip link set eth1 up && ip addr add ${planA.ip}/${planA.prefix} dev eth1 && ` +
          `ip route add default via ${planA.gateway}`,
      );
      assert.match(await sh(agentA, "ip -4 addr show eth1"), new RegExp(`inet ${planA.ip}/24`));
    });

    await t.step("the guest reaches the host's server through its gateway", async () => {
      const { port } = server.addr;
      const body = await sh(agentA, `timeout 20 wget -q -O- http://${planA.gateway}:${port}/`);
      assert.equal(body, "hello from the host");
    });

    await t.step("the host reaches the guest's server through the forward", async () => {
      await sh(
        agentA,
        "mkdir -p /www && echo hello from the guest > /www/index.html && httpd -p 80 -h /www",
      );
      let body = "";
      for (let i = 0; i < 100 && body === ""; i++) {
        try {
          const res = await fetch(`http://127.0.0.1:${hostPort}/index.html`);
          body = (await res.text()).trim();
        } catch {
          await new Promise((r) => setTimeout(r, 100)); // httpd not listening yet
        }
      }
      assert.equal(body, "hello from the guest");
    });

    await t.step("a second VM gets another MAC and address", async () => {
      assert.notEqual(planB.mac, planA.mac);
      assert.notEqual(planB.ip, planA.ip);
      const qmpB = await QmpClient.connect(b.qmpSocket);
      const agentB = await AgentClient.connect(b.agentSocket, { timeoutMs: 20_000 });
      opened.push(qmpB, agentB);
      await attachNic(qmpB, {
        id: "hpnic0",
        mac: planB.mac,
        backend: { kind: "user", net: planB.net, hostForwards: [] },
      });
      await sh(agentB, waitFor("[ -e /sys/class/net/eth1 ]"));
      await sh(agentB, `ip link set eth1 up && ip addr add ${planB.ip}/24 dev eth1`);
      assert.equal(await sh(agentB, "cat /sys/class/net/eth1/address"), planB.mac);
      assert.match(await sh(agentB, "ip -4 addr show eth1"), new RegExp(`inet ${planB.ip}/24`));
    });

    await t.step("detaching removes the devices and closes the forward", async () => {
      await sh(agentA, "umount /mnt/img");
      await detachDisk(qmpA, "img0");
      await detachNic(qmpA, "hpnic0");
      const left = "ls /sys/class/net; ! grep -qx img0 /sys/block/*/serial 2>/dev/null";
      assert.equal(await sh(agentA, left), "eth0\nlo"); // the built-in NIC stays
      await assert.rejects(fetch(`http://127.0.0.1:${hostPort}/index.html`));
    });
  } finally {
    for (const conn of opened) conn.close();
    await factory.close();
    await server.shutdown();
    await Deno.remove(imageDir, { recursive: true });
  }
});
