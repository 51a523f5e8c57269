import assert from "node:assert/strict";
import { VmfactoryError } from "../errors.ts";
import {
  attachDisk,
  attachNic,
  connectNic,
  detachDisk,
  detachNic,
  insertImage,
  type NicAttachment,
  type QmpSession,
} from "./device_hotplug.ts";
import { QmpError, type QmpEvent } from "./qmp_client.ts";

/** A QMP session that records commands, fails the ones told to, and can release devices. */
class FakeQmp implements QmpSession {
  sent: [string, unknown][] = [];
  failures = new Map<string, QmpError>();
  /** Emit DEVICE_DELETED (with a virtio backend's event first) after each device_del. */
  releases = true;
  #listeners = new Map<string, Set<(event: QmpEvent) => void>>();

  execute<T>(command: string, args?: Record<string, unknown>): Promise<T> {
    this.sent.push([command, args]);
    const failure = this.failures.get(command);
    if (failure) return Promise.reject(failure);
    if (command === "device_del" && this.releases) {
      const id = args?.id as string;
      setTimeout(() => {
        this.#emit({ path: `/machine/peripheral/${id}/virtio-backend` });
        this.#emit({ device: id, path: `/machine/peripheral/${id}` });
      }, 5);
    }
    return Promise.resolve({} as T);
  }

  on(event: string, listener: (event: QmpEvent) => void): () => void {
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, set = new Set());
    set.add(listener);
    return () => set.delete(listener);
  }

  listeners(event: string): number {
    return this.#listeners.get(event)?.size ?? 0;
  }

  #emit(data: Record<string, unknown>): void {
    const event = { event: "DEVICE_DELETED", data, timestamp: { seconds: 0, microseconds: 0 } };
    for (const listener of this.#listeners.get("DEVICE_DELETED") ?? []) listener(event);
  }
}

const DISK = { id: "img0", path: "img0.erofs", readOnly: true as const, serial: "img0" };
const FWD = { hostAddr: "127.0.0.1", hostPort: 8080, guestPort: 80, proto: "tcp" as const };

Deno.test("attachDisk: a read-only raw node over a file, then virtio-blk with the serial", async () => {
  const qmp = new FakeQmp();
  await attachDisk(qmp, DISK);
  assert.deepEqual(qmp.sent, [
    ["blockdev-add", {
      driver: "raw",
      "node-name": "img0-node",
      "read-only": true,
      file: {
        driver: "file",
        filename: "img0.erofs",
        "read-only": true,
        "auto-read-only": true,
      },
    }],
    ["device_add", { driver: "virtio-blk-pci", id: "img0", drive: "img0-node", serial: "img0" }],
  ]);
});

Deno.test("attachDisk: a failed device_add removes the node again", async () => {
  const qmp = new FakeQmp();
  qmp.failures.set("device_add", new QmpError("device_add", "GenericError", "no free slot"));
  await assert.rejects(attachDisk(qmp, DISK), (err: Error) => {
    assert.ok(err instanceof VmfactoryError);
    assert.equal(err.message, "Cannot attach disk img0: no free slot");
    assert.ok(err.cause instanceof QmpError);
    return true;
  });
  assert.deepEqual(qmp.sent.map(([c]) => c), ["blockdev-add", "device_add", "blockdev-del"]);
  assert.deepEqual(qmp.sent[2][1], { "node-name": "img0-node" });
});

Deno.test("attachDisk: a failed blockdev-add stops there; a failed cleanup keeps the first error", async () => {
  const qmp = new FakeQmp();
  qmp.failures.set(
    "blockdev-add",
    new QmpError("blockdev-add", "GenericError", "Permission denied"),
  );
  await assert.rejects(
    attachDisk(qmp, DISK),
    /: Cannot attach disk img0: Permission denied$/,
  );
  assert.deepEqual(qmp.sent.map(([c]) => c), ["blockdev-add"]);

  const both = new FakeQmp();
  both.failures.set("device_add", new QmpError("device_add", "GenericError", "bus full"));
  both.failures.set("blockdev-del", new QmpError("blockdev-del", "GenericError", "in use"));
  await assert.rejects(attachDisk(both, DISK), /Cannot attach disk img0: bus full/);
});

Deno.test("attachDisk: malformed attachments are refused before QEMU sees them", async () => {
  const bad = [
    { ...DISK, id: "0img" },
    { ...DISK, id: "img,x" },
    { ...DISK, id: "a".repeat(27) },
    { ...DISK, id: "" },
    { ...DISK, serial: "" },
    { ...DISK, serial: "s".repeat(21) },
    { ...DISK, serial: "a b" },
    { ...DISK, path: "" },
    { ...DISK, path: "a\nb" },
    { ...DISK, readOnly: false as true },
  ];
  for (const disk of bad) {
    const qmp = new FakeQmp();
    await assert.rejects(attachDisk(qmp, disk), RangeError, JSON.stringify(disk));
    assert.deepEqual(qmp.sent, []);
  }
});

Deno.test("insertImage: one blockdev-change-medium, read-only raw, into the CD drive", async () => {
  const qmp = new FakeQmp();
  await insertImage(qmp, { cdId: "cd0", path: "image.erofs" });
  assert.deepEqual(qmp.sent, [
    ["blockdev-change-medium", {
      id: "cd0",
      filename: "image.erofs",
      format: "raw",
      "read-only-mode": "read-only",
    }],
  ]);
  const failing = new FakeQmp();
  failing.failures.set(
    "blockdev-change-medium",
    new QmpError("blockdev-change-medium", "GenericError", "Could not open 'image.erofs'"),
  );
  await assert.rejects(insertImage(failing, { cdId: "cd0", path: "image.erofs" }), (err: Error) => {
    assert.ok(err instanceof VmfactoryError);
    assert.equal(err.message, "Cannot insert an image into cd0: Could not open 'image.erofs'");
    assert.ok(err.cause instanceof QmpError);
    return true;
  });
  for (
    const bad of [{ cdId: "0cd", path: "a" }, { cdId: "cd0", path: "" }, {
      cdId: "cd0",
      path: "a\nb",
    }]
  ) {
    const q = new FakeQmp();
    await assert.rejects(insertImage(q, bad), RangeError, JSON.stringify(bad));
    assert.deepEqual(q.sent, []);
  }
});

Deno.test("attachNic: user-mode netdev with IPv4 only and the forwards, then virtio-net", async () => {
  const qmp = new FakeQmp();
  await attachNic(qmp, {
    id: "nic0",
    mac: "02:b4:f9:8b:1e:be",
    backend: {
      kind: "user",
      net: "10.64.3.0/24",
      hostForwards: [FWD, {
        ...FWD,
        hostAddr: "127.0.0.2",
        hostPort: 5353,
        guestPort: 53,
        proto: "udp",
      }],
    },
  });
  assert.deepEqual(qmp.sent, [
    ["netdev_add", {
      type: "user",
      id: "nic0-net",
      net: "10.64.3.0/24",
      ipv6: false,
      hostfwd: [{ str: "tcp:127.0.0.1:8080-:80" }, { str: "udp:127.0.0.2:5353-:53" }],
    }],
    ["device_add", {
      driver: "virtio-net-pci",
      id: "nic0",
      netdev: "nic0-net",
      mac: "02:b4:f9:8b:1e:be",
      romfile: "",
    }],
  ]);
});

Deno.test("connectNic: the backend, then a hub port with it on the built-in NIC's hub", async () => {
  const qmp = new FakeQmp();
  await connectNic(qmp, {
    id: "net0",
    hubId: 0,
    backend: { kind: "user", net: "10.64.3.0/24", hostForwards: [FWD] },
  });
  assert.deepEqual(qmp.sent, [
    ["netdev_add", {
      type: "user",
      id: "net0-net",
      net: "10.64.3.0/24",
      ipv6: false,
      hostfwd: [{ str: "tcp:127.0.0.1:8080-:80" }],
    }],
    ["netdev_add", { type: "hubport", id: "net0-port", hubid: 0, netdev: "net0-net" }],
  ]);
  // a port that cannot be made takes its backend with it
  const failing = new FakeQmp();
  let calls = 0;
  const execute = failing.execute.bind(failing);
  failing.execute = <T>(command: string, args?: Record<string, unknown>) =>
    command === "netdev_add" && ++calls === 2
      ? Promise.reject(new QmpError("netdev_add", "GenericError", "no such hub"))
      : execute<T>(command, args);
  await assert.rejects(
    connectNic(failing, { id: "net0", hubId: 0, backend: { kind: "tap", ifname: "tap0" } }),
    (err: unknown) => err instanceof VmfactoryError && /connect NIC backend net0/.test(err.message),
  );
  assert.deepEqual(failing.sent.at(-1), ["netdev_del", { id: "net0-net" }]);
  await assert.rejects(
    connectNic(qmp, { id: "net0", hubId: -1, backend: { kind: "tap", ifname: "t" } }),
    RangeError,
  );
});

Deno.test("attachNic: QEMU's default network when none is given; a tap without scripts", async () => {
  const qmp = new FakeQmp();
  await attachNic(qmp, {
    id: "n",
    mac: "02:00:00:00:00:01",
    backend: { kind: "user", hostForwards: [] },
  });
  await attachNic(qmp, {
    id: "t",
    mac: "02:00:00:00:00:02",
    backend: { kind: "tap", ifname: "vmf0" },
  });
  assert.deepEqual(qmp.sent[0], ["netdev_add", {
    type: "user",
    id: "n-net",
    ipv6: false,
    hostfwd: [],
  }]);
  assert.deepEqual(qmp.sent[2], [
    "netdev_add",
    { type: "tap", id: "t-net", ifname: "vmf0", script: "no", downscript: "no" },
  ]);
});

Deno.test("attachNic: a failed device_add removes the netdev again", async () => {
  const qmp = new FakeQmp();
  qmp.failures.set("device_add", new QmpError("device_add", "GenericError", "Duplicate ID"));
  const nic = {
    id: "nic0",
    mac: "02:00:00:00:00:01",
    backend: { kind: "user" as const, hostForwards: [FWD] },
  };
  await assert.rejects(attachNic(qmp, nic), /: Cannot attach NIC nic0: Duplicate ID$/);
  assert.deepEqual(qmp.sent.slice(1).map(([c, a]) => [c, a && (a as { id?: string }).id]), [
    ["device_add", "nic0"],
    ["netdev_del", "nic0-net"],
  ]);
});

Deno.test("attachNic: malformed attachments are refused before QEMU sees them", async () => {
  const ok: NicAttachment = {
    id: "nic0",
    mac: "02:00:00:00:00:01",
    backend: { kind: "user", hostForwards: [] },
  };
  const bad: NicAttachment[] = [
    { ...ok, id: "nic 0" },
    { ...ok, mac: "03:00:00:00:00:01" },
    { ...ok, mac: "02:00:00:00:00" },
    { ...ok, backend: { kind: "tap", ifname: "a,b" } },
    { ...ok, backend: { kind: "tap", ifname: "x".repeat(16) } },
    { ...ok, backend: { kind: "user", hostForwards: [], net: "10.0.2.1/24" } },
    { ...ok, backend: { kind: "user", hostForwards: [], net: "10.0.2.0/24,restrict=on" } },
    { ...ok, backend: { kind: "user", hostForwards: [{ ...FWD, hostPort: 0 }] } },
    { ...ok, backend: { kind: "user", hostForwards: [{ ...FWD, hostAddr: "127.0.0.1-:22,x" }] } },
  ];
  for (const nic of bad) {
    const qmp = new FakeQmp();
    await assert.rejects(attachNic(qmp, nic), RangeError, JSON.stringify(nic));
    assert.deepEqual(qmp.sent, []);
  }
});

Deno.test("detachDisk / detachNic: device_del, wait for DEVICE_DELETED, then the backend", async () => {
  const qmp = new FakeQmp();
  await detachDisk(qmp, "img0");
  await detachNic(qmp, "nic0");
  assert.deepEqual(qmp.sent, [
    ["device_del", { id: "img0" }],
    ["blockdev-del", { "node-name": "img0-node" }],
    ["device_del", { id: "nic0" }],
    ["netdev_del", { id: "nic0-net" }],
  ]);
  assert.equal(qmp.listeners("DEVICE_DELETED"), 0, "listeners removed");
});

Deno.test("detach: a device already gone still frees its backend", async () => {
  const qmp = new FakeQmp();
  qmp.failures.set(
    "device_del",
    new QmpError("device_del", "DeviceNotFound", "Device 'img0' not found"),
  );
  await detachDisk(qmp, "img0");
  assert.deepEqual(qmp.sent.map(([c]) => c), ["device_del", "blockdev-del"]);
});

Deno.test("detach: a guest that keeps the device fails after the timeout, backend kept", async () => {
  const qmp = new FakeQmp();
  qmp.releases = false;
  await assert.rejects(
    detachNic(qmp, "nic0", { timeoutMs: 20 }),
    /: Cannot detach NIC nic0: the guest did not release it within 20 ms$/,
  );
  assert.deepEqual(qmp.sent.map(([c]) => c), ["device_del"]);
  assert.equal(qmp.listeners("DEVICE_DELETED"), 0);
});

Deno.test("detach: QEMU's refusal is reported with its reason", async () => {
  const qmp = new FakeQmp();
  qmp.failures.set(
    "blockdev-del",
    new QmpError("blockdev-del", "GenericError", "Node img0-node is in use"),
  );
  await assert.rejects(
    detachDisk(qmp, "img0"),
    /: Cannot detach disk img0: Node img0-node is in use$/,
  );
  await assert.rejects(detachDisk(qmp, "bad id"), RangeError);
});
