/**
 * Putting a read-only disk image into a running VM over QMP: as the medium of its CD drive
 * ({@link insertImage}; the guest sees it at once), or hot-plugged as a virtio-blk disk; and
 * hot-plugging a NIC (virtio-net); and unplugging them. Each attach is two steps (a backend, then the PCI device on the
 * `pc` machine's root bus, announced to the guest by ACPI); when the second fails, the first is
 * undone, so a failed attach leaves nothing behind. The guest needs a while to bring a new PCI
 * device up: measured 2026-12-01 under TCG on template clones, 0.35–1.5 s from `device_add` to
 * the NIC or disk in sysfs, 0.1–0.7 s with `acpi=noirq` on the guest's command line (its ACPI
 * interrupt routing is what takes the time; virtio devices use MSI-X and need none of it).
 *
 * QEMU opens a disk's file itself, after `-runas`: as its unprivileged user, so a file under the
 * 0700 state directory is out of its reach by absolute path. The host cannot hand it an open file
 * instead (QMP `add-fd` and `getfd` need SCM_RIGHTS, which Deno cannot send without FFI), so give
 * a path QEMU's user may open: relative to QEMU's working directory, a folder QEMU got at spawn
 * (like the template build's `save/`), which no other user can reach through the 0700 folders
 * above it. Likewise QEMU opens a tap device itself: a persistent tap owned by its user
 * (`lib/net/tap_device.ts`), with no ifup script (the sandbox forbids spawning one; QEMU would
 * die of SIGSYS).
 * @module
 */
import { withTimeout } from "../cheap_timer.ts";
import { errorMessage, VmfactoryError } from "../errors.ts";
import { isUnicastMac } from "../net/mac_address.ts";
import { ifnameProblem } from "../net/net_spec.ts";
import { isUserNet } from "../net/net_plan.ts";
import { isPortForward, type PortForward } from "../net/port_forward.ts";
import { type QmpClient, QmpError } from "./qmp_client.ts";

/** The part of a QMP session the helpers use: a {@link QmpClient}, or a fake in tests. */
export type QmpSession = Pick<QmpClient, "execute" | "on">;

/** A disk image to attach read-only. */
export interface DiskAttachment {
  /** Device id (a letter, then letters, digits, `-`, `_`; at most 26); the block node is `<id>-node`. */
  id: string;
  /** The image file as QEMU's user opens it: absolute, or relative to QEMU's working directory. */
  path: string;
  /** Only read-only images are attached. */
  readOnly: true;
  /** virtio-blk serial, 1–20 of `A-Za-z0-9._-`: the guest finds it in `/sys/block/vdX/serial`. */
  serial: string;
}

/** An image to put in a VM's CD drive. */
export interface CdInsertion {
  /** The drive's device id (same rules as a disk's), e.g. `IMAGE_CD_ID` of `qemu_command.ts`. */
  cdId: string;
  /** The image file as QEMU's user opens it: absolute, or relative to QEMU's working directory. */
  path: string;
}

/** A NIC's backend: user-mode networking (a NAT inside QEMU) or an existing tap device. */
export type NicBackend =
  | {
    kind: "user";
    /** Host sockets forwarded to the guest (to slirp's first DHCP address, `.15` of `net`). */
    hostForwards: readonly PortForward[];
    /** The slirp network, e.g. `"10.64.3.0/24"` (default QEMU's 10.0.2.0/24). */
    net?: string;
  }
  | {
    kind: "tap";
    /** An existing persistent tap QEMU's user owns (check it with `assertTapUsable`). */
    ifname: string;
  };

/** A NIC to attach. */
export interface NicAttachment {
  /** Device id (same rules as a disk's); the netdev is `<id>-net`. */
  id: string;
  /** Unicast MAC, lowercase `xx:xx:xx:xx:xx:xx`. */
  mac: string;
  /** What the NIC is connected to. */
  backend: NicBackend;
}

/** Options of the detach helpers. */
export interface DetachOptions {
  /** How long the guest may take to release the device (default 10 000 ms). */
  timeoutMs?: number;
}

const ID = /^[A-Za-z][A-Za-z0-9_-]{0,25}$/;

function check(ok: boolean, what: string, value: unknown): void {
  if (!ok) throw new RangeError(`${what} is not valid: ${JSON.stringify(value)}`);
}

function checkId(id: string): void {
  check(ID.test(id), "device id", id);
}

function checkPath(path: string): void {
  // deno-lint-ignore no-control-regex
  check(/^[^\x00-\x1f\x7f]{1,4095}$/.test(path), "disk path", path);
}

/** Runs `first`, then `second`; when `second` fails, runs `undo` (its own failure is dropped). */
async function twoSteps(
  action: string,
  first: () => Promise<unknown>,
  second: () => Promise<unknown>,
  undo: () => Promise<unknown>,
): Promise<void> {
  const fail = (err: unknown) =>
    new VmfactoryError(action, err instanceof QmpError ? err.desc : errorMessage(err), {
      cause: err,
    });
  try {
    await first();
  } catch (err) {
    throw fail(err);
  }
  try {
    await second();
  } catch (err) {
    await undo().catch(() => {});
    throw fail(err);
  }
}

/**
 * Attaches `disk` read-only to the running VM behind `qmp`: `blockdev-add` (a raw node over a
 * read-only file node), then `device_add virtio-blk-pci` with its serial. Throws a
 * {@link VmfactoryError} "Cannot attach disk <id>: <QEMU's reason>" (the node removed again when
 * the device failed), a `RangeError` for a malformed attachment. Call it on a running or paused VM.
 */
export async function attachDisk(qmp: QmpSession, disk: DiskAttachment): Promise<void> {
  checkId(disk.id);
  check(disk.readOnly === true, "readOnly", disk.readOnly);
  check(/^[A-Za-z0-9._-]{1,20}$/.test(disk.serial), "disk serial", disk.serial);
  checkPath(disk.path);
  const node = `${disk.id}-node`;
  await twoSteps(
    `attach disk ${disk.id}`,
    () =>
      qmp.execute("blockdev-add", {
        driver: "raw",
        "node-name": node,
        "read-only": true,
        file: { driver: "file", filename: disk.path, "read-only": true, "auto-read-only": true },
      }),
    () =>
      qmp.execute("device_add", {
        driver: "virtio-blk-pci",
        id: disk.id,
        drive: node,
        serial: disk.serial,
      }),
    () => qmp.execute("blockdev-del", { "node-name": node }),
  );
}

/**
 * Puts the image `insertion.path` read-only into the CD drive `insertion.cdId` of the VM behind
 * `qmp`: one `blockdev-change-medium` (raw format; QEMU opens the tray, inserts, closes it). The
 * guest sees the medium at its next open of the drive: no device to discover, unlike
 * {@link attachDisk}. Throws a {@link VmfactoryError} "Cannot insert an image into <cdId>:
 * <QEMU's reason>" (the drive keeps what it had), a `RangeError` for a malformed insertion. Call
 * it on a running or paused VM started with the drive (`buildQemuArgs` gives every VM with an
 * agent one).
 */
export async function insertImage(qmp: QmpSession, insertion: CdInsertion): Promise<void> {
  checkId(insertion.cdId);
  checkPath(insertion.path);
  await asAction(`insert an image into ${insertion.cdId}`, async () => {
    await qmp.execute("blockdev-change-medium", {
      id: insertion.cdId,
      filename: insertion.path,
      format: "raw",
      "read-only-mode": "read-only",
    });
  });
}

/** QEMU's `hostfwd` rule for `forward`: `tcp:127.0.0.1:8080-:80` (the guest side is slirp's). */
function hostForwardRule(forward: PortForward): string {
  check(isPortForward(forward), "port forward", forward);
  return `${forward.proto}:${forward.hostAddr}:${forward.hostPort}-:${forward.guestPort}`;
}

function netdevArgs(id: string, backend: NicBackend): Record<string, unknown> {
  if (backend.kind === "tap") {
    check(ifnameProblem(backend.ifname) === undefined, "tap device name", backend.ifname);
    return { type: "tap", id, ifname: backend.ifname, script: "no", downscript: "no" };
  }
  check(backend.net === undefined || isUserNet(backend.net), "user network", backend.net);
  return {
    type: "user",
    id,
    ...(backend.net ? { net: backend.net } : {}),
    ipv6: false,
    hostfwd: backend.hostForwards.map((f) => ({ str: hostForwardRule(f) })),
  };
}

/**
 * Attaches `nic` to the running VM behind `qmp`: `netdev_add` (user-mode with IPv4 only and its
 * forwards, or the tap), then `device_add virtio-net-pci` with its MAC and no option ROM. Throws
 * a {@link VmfactoryError} "Cannot attach NIC <id>: <QEMU's reason>" (the netdev removed again
 * when the device failed; a forward's host port in use fails the netdev), a `RangeError` for a
 * malformed attachment. Call it on a running or paused VM.
 */
export async function attachNic(qmp: QmpSession, nic: NicAttachment): Promise<void> {
  checkId(nic.id);
  check(isUnicastMac(nic.mac), "MAC address", nic.mac);
  const netdev = `${nic.id}-net`;
  const args = netdevArgs(netdev, nic.backend);
  await twoSteps(
    `attach NIC ${nic.id}`,
    () => qmp.execute("netdev_add", args),
    () =>
      qmp.execute("device_add", {
        driver: "virtio-net-pci",
        id: nic.id,
        netdev,
        mac: nic.mac,
        romfile: "",
      }),
    () => qmp.execute("netdev_del", { id: netdev }),
  );
}

/** What {@link connectNic} connects to the built-in NIC's hub. */
export interface HubConnection {
  /** Id of the backend (a letter, then letters, digits, `-`, `_`); its netdev is `<id>-net`. */
  id: string;
  /** QEMU network hub of the NIC (`NIC_HUB_ID` of `qemu_command.ts`). */
  hubId: number;
  /** What the NIC gets connected to. */
  backend: NicBackend;
}

/**
 * Connects a backend to the network hub of a NIC the VM has from boot: `netdev_add` (user-mode or
 * the tap, as {@link attachNic}), then a `hubport` on the hub with that netdev, so the NIC reaches
 * it at once (nothing is hot-plugged; the guest sees only its link carry traffic). Throws a
 * {@link VmfactoryError} "Cannot connect NIC backend <id>: <QEMU's reason>" (the netdev removed
 * again when the port failed), a `RangeError` for a malformed connection.
 */
export async function connectNic(qmp: QmpSession, hub: HubConnection): Promise<void> {
  checkId(hub.id);
  check(Number.isInteger(hub.hubId) && hub.hubId >= 0 && hub.hubId < 1024, "hub id", hub.hubId);
  const netdev = `${hub.id}-net`;
  const args = netdevArgs(netdev, hub.backend);
  await twoSteps(
    `connect NIC backend ${hub.id}`,
    () => qmp.execute("netdev_add", args),
    () =>
      qmp.execute("netdev_add", {
        type: "hubport",
        id: `${hub.id}-port`,
        hubid: hub.hubId,
        netdev,
      }),
    () => qmp.execute("netdev_del", { id: netdev }),
  );
}

/**
 * Asks the guest to release device `id` (`device_del`) and waits for QEMU's `DEVICE_DELETED`;
 * a device that is already gone counts as released.
 */
async function unplug(qmp: QmpSession, action: string, id: string, timeoutMs: number) {
  const released = Promise.withResolvers<void>();
  const stop = qmp.on("DEVICE_DELETED", (event) => {
    if (event.data?.device === id) released.resolve();
  });
  try {
    try {
      await qmp.execute("device_del", { id });
    } catch (err) {
      if (err instanceof QmpError && err.errorClass === "DeviceNotFound") return;
      throw err;
    }
    await withTimeout(
      released.promise,
      timeoutMs,
      () => new VmfactoryError(action, `the guest did not release it within ${timeoutMs} ms`),
    );
  } finally {
    stop();
  }
}

/** Runs `body`, reporting a QMP failure as "Cannot <action>: <QEMU's reason>". */
async function asAction(action: string, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (err) {
    if (!(err instanceof QmpError)) throw err;
    throw new VmfactoryError(action, err.desc, { cause: err });
  }
}

/**
 * Detaches the disk `id` attached by {@link attachDisk}: unplugs the device (the guest must
 * release it: unmount first), then removes its block node. Throws a {@link VmfactoryError} when
 * the guest does not release it in time or QEMU refuses. Call it on a running VM.
 */
export async function detachDisk(
  qmp: QmpSession,
  id: string,
  options: DetachOptions = {},
): Promise<void> {
  checkId(id);
  const action = `detach disk ${id}`;
  await asAction(action, async () => {
    await unplug(qmp, action, id, options.timeoutMs ?? 10_000);
    await qmp.execute("blockdev-del", { "node-name": `${id}-node` });
  });
}

/**
 * Detaches the NIC `id` attached by {@link attachNic}: unplugs the device, then removes its
 * netdev (closing its forwards or the tap). Throws a {@link VmfactoryError} when the guest does
 * not release it in time or QEMU refuses. Call it on a running VM.
 */
export async function detachNic(
  qmp: QmpSession,
  id: string,
  options: DetachOptions = {},
): Promise<void> {
  checkId(id);
  const action = `detach NIC ${id}`;
  await asAction(action, async () => {
    await unplug(qmp, action, id, options.timeoutMs ?? 10_000);
    await qmp.execute("netdev_del", { id: `${id}-net` });
  });
}
