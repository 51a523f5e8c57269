import assert from "node:assert/strict";
import { UsageError } from "../errors.ts";
import { availableModules, moduleName, resolveModules } from "./module_deps.ts";

const DEP = `kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko.xz:
kernel/drivers/virtio/virtio_pci.ko.xz: kernel/drivers/virtio/virtio_pci_legacy_dev.ko.xz kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
`;

Deno.test("resolveModules orders dependencies first, without duplicates", () => {
  assert.deepEqual(resolveModules(DEP, ["virtio_pci", "virtio_console"]).map(moduleName), [
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_console",
  ]);
  assert.deepEqual(resolveModules(DEP, ["virtio-rng"]), [
    "kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/char/hw_random/virtio-rng.ko",
  ]);
});

Deno.test("resolveModules skips built-in modules and rejects unknown ones", () => {
  assert.deepEqual(
    resolveModules(
      DEP,
      ["virtio_console"],
      "kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_ring.ko\n",
    ),
    ["kernel/drivers/char/virtio_console.ko"],
  );
  assert.throws(() => resolveModules(DEP, ["nope"]), UsageError);
  assert.throws(() => resolveModules("a.ko: b.ko\n", ["a"]), /module b \(needed by a\)/);
});

Deno.test("availableModules keeps the names the kernel has, as a module or built in", () => {
  const builtin = "kernel/drivers/virt/vmgenid.ko\n";
  assert.deepEqual(availableModules(DEP, ["vmgenid", "virtio-rng", "nope"], builtin), [
    "vmgenid",
    "virtio-rng",
  ]);
  assert.deepEqual(availableModules(DEP, ["vmgenid"]), []);
});
