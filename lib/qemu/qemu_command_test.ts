import { DEFAULT_QEMU_PATH } from "../config/builtin_default.ts";
import assert from "node:assert/strict";
import {
  buildQemuArgs,
  BUILTIN_NIC_ID,
  BUILTIN_NIC_MAC,
  consoleRingSize,
  IMAGE_CD_ID,
  NIC_HUB_ID,
  type QemuSpec,
  sandboxArgs,
} from "./qemu_command.ts";

const base: QemuSpec = {
  binary: DEFAULT_QEMU_PATH,
  accel: "tcg",
  cpus: 1,
  memoryMiB: 256,
  memory: { kind: "anonymous" },
  kernel: "/boot/vmlinuz",
  initrd: "/var/lib/vmf/initrd.img",
  append: "console=ttyS0 quiet",
  qmpSocket: "/run/vmf/vm1/qmp.sock",
  agentSocket: "/run/vmf/vm1/agent.sock",
  consoleRingBytes: 1024 * 1024,
};

const head = [
  DEFAULT_QEMU_PATH,
  "-nodefaults",
  "-no-user-config",
  "-display",
  "none",
  "-vga",
  "none",
  "-no-reboot",
  "-sandbox",
  "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
];

const guest = [
  "-kernel",
  "/boot/vmlinuz",
  "-initrd",
  "/var/lib/vmf/initrd.img",
  "-append",
  "console=ttyS0 quiet",
  "-chardev",
  "socket,id=qmp,path=/run/vmf/vm1/qmp.sock,server=on,wait=off",
  "-mon",
  "chardev=qmp,mode=control",
  "-chardev",
  "ringbuf,id=console,size=1048576",
  "-serial",
  "chardev:console",
  "-device",
  "virtio-serial-pci,id=vser0",
  "-chardev",
  "socket,id=agent,path=/run/vmf/vm1/agent.sock,server=on,wait=off",
  "-device",
  "virtserialport,bus=vser0.0,chardev=agent,name=org.vmfactory.agent",
  "-device",
  "virtio-scsi-pci,id=scsi0",
  "-device",
  `scsi-cd,bus=scsi0.0,id=${IMAGE_CD_ID}`,
  "-netdev",
  `hubport,id=${BUILTIN_NIC_ID}-port,hubid=${NIC_HUB_ID}`,
  "-device",
  `virtio-net-pci,netdev=${BUILTIN_NIC_ID}-port,id=${BUILTIN_NIC_ID},mac=${BUILTIN_NIC_MAC},romfile=`,
];

const templateSpec: QemuSpec = {
  ...base,
  maxCpus: 4,
  maxMemoryMiB: 1024,
  slots: 4,
  memory: { kind: "file", path: "/run/vc/vm/template/memory", share: true },
  vmgenid: "auto",
};

const fileMachine = [
  "-machine",
  "type=pc,memory-backend=mem0",
  "-accel",
  "tcg",
  "-smp",
  "cpus=1,maxcpus=4",
  "-m",
  "size=256M,slots=4,maxmem=1024M",
  "-object",
];

Deno.test("template: shared file RAM with hotplug headroom and vmgenid", () => {
  assert.deepEqual(buildQemuArgs(templateSpec), [
    ...head,
    ...fileMachine,
    "memory-backend-file,id=mem0,size=256M,mem-path=/run/vc/vm/template/memory,share=on",
    ...guest,
    "-device",
    "vmgenid,guid=auto",
  ]);
});

Deno.test("clone: private mapping of the same file, own GUID, incoming defer", () => {
  const guid = "5a0d7c5e-3c1e-4a53-9b7e-1d2f3a4b5c6d";
  const args = buildQemuArgs({
    ...templateSpec,
    memory: { kind: "file", path: "/run/vc/vm/template/memory", share: false },
    vmgenid: guid,
    incoming: "defer",
    name: "clone-1",
  });
  assert.deepEqual(args, [
    ...head,
    ...fileMachine,
    "memory-backend-file,id=mem0,size=256M,mem-path=/run/vc/vm/template/memory,share=off",
    ...guest,
    "-device",
    `vmgenid,guid=${guid}`,
    "-name",
    "clone-1",
    "-incoming",
    "defer",
  ]);
});

Deno.test("cold boot: anonymous RAM, no hotplug, kvm, q35", () => {
  assert.deepEqual(buildQemuArgs({ ...base, accel: "kvm", machine: "q35", cpus: 2 }), [
    ...head,
    "-machine",
    "type=q35",
    "-accel",
    "kvm",
    "-smp",
    "cpus=2,maxcpus=2",
    "-m",
    "size=256M",
    ...guest,
  ]);
});

Deno.test("bare: no kernel, agent or console, paused", () => {
  const args = buildQemuArgs({
    binary: "qemu",
    accel: "tcg",
    cpus: 1,
    memoryMiB: 64,
    memory: { kind: "anonymous" },
    qmpSocket: "/tmp/q.sock",
    paused: true,
  });
  assert.deepEqual(args.slice(head.length), [
    "-machine",
    "type=pc",
    "-accel",
    "tcg",
    "-smp",
    "cpus=1,maxcpus=1",
    "-m",
    "size=64M",
    "-chardev",
    "socket,id=qmp,path=/tmp/q.sock,server=on,wait=off",
    "-mon",
    "chardev=qmp,mode=control",
    "-S",
  ]);
});

Deno.test("tcgTbSizeMiB sizes the TCG translation buffer and is left out under kvm", () => {
  const at = (args: string[]) => args[args.indexOf("-accel") + 1];
  assert.equal(at(buildQemuArgs({ ...base, accel: "tcg", tcgTbSizeMiB: 16 })), "tcg,tb-size=16");
  assert.equal(at(buildQemuArgs({ ...base, accel: "kvm", tcgTbSizeMiB: 16 })), "kvm");
  assert.throws(() => buildQemuArgs({ ...base, tcgTbSizeMiB: 0 }), RangeError);
  assert.throws(() => buildQemuArgs({ ...base, tcgTbSizeMiB: 1.5 }), RangeError);
});

Deno.test("commas in option values are doubled; -append and -kernel are not options", () => {
  const args = buildQemuArgs({
    ...base,
    qmpSocket: "/tmp/a,b/qmp.sock",
    append: "a=1,2",
    name: "x,y",
  });
  assert.ok(args.includes("socket,id=qmp,path=/tmp/a,,b/qmp.sock,server=on,wait=off"));
  assert.ok(args.includes("a=1,2"));
  assert.deepEqual(args.slice(-2), ["-name", "x,,y"]);
});

Deno.test("as root, QEMU switches user: set*id must stay allowed for -runas", () => {
  assert.deepEqual(sandboxArgs("nobody"), [
    "-sandbox",
    "on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny",
    "-runas",
    "nobody",
  ]);
  const args = buildQemuArgs({ ...base, runAs: "vmfactory-qemu" });
  assert.deepEqual(args.slice(head.length - 2, head.length + 2), [
    "-sandbox",
    "on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny",
    "-runas",
    "vmfactory-qemu",
  ]);
});

Deno.test("the console ring is a power of two within the configured bytes", () => {
  assert.equal(consoleRingSize(1024 * 1024), 1024 * 1024);
  assert.equal(consoleRingSize(1_000_000), 524_288);
  assert.equal(consoleRingSize(4096), 4096);
});

Deno.test("invalid sizes are rejected", () => {
  const bad: Partial<QemuSpec>[] = [
    { cpus: 0 },
    { cpus: 2, maxCpus: 1 },
    { memoryMiB: 1.5 },
    { maxMemoryMiB: 1024 },
    { slots: 2 },
    { maxMemoryMiB: 128, slots: 2 },
    { kernel: undefined },
    { consoleRingBytes: 1_000_000 },
    { consoleRingBytes: 0.5 },
    { runAs: "-nobody" },
    { runAs: "a b" },
  ];
  for (const change of bad) {
    assert.throws(() => buildQemuArgs({ ...base, ...change }), RangeError, JSON.stringify(change));
  }
});

Deno.test("the built-in NIC's first MAC is the one the guest agent looks for", async () => {
  const agent = await Deno.readTextFile(new URL("../guest/agent.c", import.meta.url));
  assert.match(agent, new RegExp(`#define BUILTIN_NIC_MAC "${BUILTIN_NIC_MAC}"`));
});
