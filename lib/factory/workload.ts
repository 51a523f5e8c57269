/**
 * The workload step of the one factory: what a request asks for beyond a size — a container
 * image to run in, a network — planned before a VM is taken (an image is converted once and
 * cached) and attached after it runs (over QMP the image goes into the VM's CD drive and a
 * backend is connected to its built-in NIC's hub — nothing for the guest to discover — then the
 * guest mounts the image and gives the NIC the VM's MAC and address in the same round of agent
 * calls as personalization).
 * Nothing here is called outside {@link VmFactory}; the VM's record keeps what was attached.
 * @module
 */
import { UsageError } from "../errors.ts";
import type { AgentClient } from "../guest/agent_client.ts";
import { CD_SERIAL } from "../guest/agent_payload.ts";
import type { PreparedImage } from "../image/prepare_image.ts";
import type { NetSpec } from "../net/net_spec.ts";
import type { PortForward } from "../net/port_forward.ts";
import type { VmPaths } from "../vm/vm_paths.ts";
import type { VmImage, VmNetwork } from "../vm/vm_record.ts";

/** What a request may ask for beyond its size. */
export interface WorkloadRequest {
  /** A container image: a rootfs folder, a `.tar`, or `oci:PATH[:TAG]`. */
  image?: string;
  /** A network: "user" (QEMU's NAT) or "tap:NAME". */
  net?: string;
  /** Host ports forwarded to the guest with user networking, "HOST:GUEST" (loopback only). */
  ports?: readonly string[];
}

/** How the factory prepares workloads (from the settings). */
export interface WorkloadOptions {
  /** The image cache, `<state_dir>/images`. */
  imageCacheDir: string;
  /** Largest unpacked image, bytes (default the image module's). */
  maxImageBytes?: number;
  /** Range the user-mode subnets are picked from (default the net module's). */
  userNetRange?: string;
  /** The networks of the host's other VMs, so that MACs and addresses differ. */
  takenNetworks?: () => Promise<readonly { mac?: string; ip?: string }[]>;
  /** Progress of an image conversion (one line each). */
  onProgress?: (line: string) => void;
}

/** A request's workload, checked and with its image converted: ready to attach. */
export interface WorkloadPlan {
  /** The converted image. */
  image?: PreparedImage;
  /** The network asked for. */
  net?: NetSpec;
  /** Its port forwards. */
  forwards: PortForward[];
}

/** The guest-side name of a VM's image (`/run/vmf/<name>/root`). */
const IMAGE_NAME = "image";
/** Id of the backend connected to the built-in NIC's hub (its netdev is `net0-net`). */
const NIC_BACKEND_ID = "net0";
/** Phases of an image's conversion (the others are what a cache hit does too). */
const CONVERSION_PHASES = new Set(["read", "unpack", "convert"]);
/** The image file's name in QEMU's working folder while QEMU opens it. */
const IMAGE_LINK = "image.erofs";

/** Whether `request` asks for an image, a network or port forwards. */
export function wantsWorkload(request: WorkloadRequest): boolean {
  return Boolean(request.image || request.net || request.ports?.length);
}

/**
 * Checks a request's workload and converts its image (a cache hit after the first time); undefined
 * when it asks for none. Throws a {@link UsageError} for bad input (an unknown REF, `--port`
 * without user networking, a bad forward). Call before taking a VM: a conversion can take seconds.
 */
export async function planWorkload(
  request: WorkloadRequest,
  options: WorkloadOptions,
): Promise<WorkloadPlan | undefined> {
  if (!wantsWorkload(request)) return undefined;
  const [{ parseNetSpec }, { parsePortForward }] = await Promise.all([
    import("../net/net_spec.ts"),
    import("../net/port_forward.ts"),
  ]);
  const net = request.net ? parseNetSpec(request.net) : undefined;
  const forwards = (request.ports ?? []).map((p) => parsePortForward(p));
  if (forwards.length && net?.kind !== "user") {
    throw new UsageError("forward a port", "port forwards need user networking (--net user)");
  }
  let image: PreparedImage | undefined;
  if (request.image) {
    const { prepareImage } = await import("../image/prepare_image.ts");
    let last = "", converting = false;
    image = await prepareImage(request.image, {
      cacheDir: options.imageCacheDir,
      maxBytes: options.maxImageBytes,
      onProgress: options.onProgress &&
        ((p) => {
          // a cache hit only scans or hashes its REF: say nothing until the work is a conversion
          if (!converting && !CONVERSION_PHASES.has(p.phase)) return;
          if (!converting) options.onProgress!(`image: converting ${request.image}`);
          converting = true;
          const line = `image: ${p.phase}${
            p.totalBytes ? ` ${Math.floor(100 * (p.bytes ?? 0) / p.totalBytes)}%` : ""
          }`;
          if (line !== last) options.onProgress!(last = line);
        }),
    });
  }
  return { image, net, forwards };
}

/** What {@link attachWorkload} attached, for the record, and the guest's part still to do. */
export interface AttachedWorkload {
  /** The image the VM's commands run in. */
  image?: VmImage;
  /** The VM's network. */
  network?: VmNetwork;
  /** Mounts the image and addresses the NIC in the guest (run beside personalization). */
  inGuest(agent: AgentClient): Promise<void>;
}

/**
 * Puts `plan`'s image into the CD drive of the running VM in `paths` and connects its network to
 * the built-in NIC over QMP (the image linked into QEMU's working folder for QEMU to open, then unlinked); returns what
 * the guest must do next. The image stays in until the VM ends.
 * Call after the VM resumed and before its record is committed; a failure leaves the VM to the
 * factory's cleanup.
 */
export async function attachWorkload(
  plan: WorkloadPlan,
  paths: VmPaths,
  options: WorkloadOptions,
): Promise<AttachedWorkload> {
  const [{ QmpClient }, hotplug, { planNetwork }, { IMAGE_CD_ID, NIC_HUB_ID }] = await Promise.all([
    import("../qemu/qmp_client.ts"),
    import("../qemu/device_hotplug.ts"),
    import("../net/net_plan.ts"),
    import("../qemu/qemu_command.ts"),
  ]);
  const network = plan.net &&
    planNetwork(paths.id, plan.net, {
      taken: await options.takenNetworks?.() ?? [],
      userRange: options.userNetRange,
    });
  const qmp = await QmpClient.connect(paths.qmpSocket, { timeoutMs: 5000 });
  const link = `${paths.qemuDir}/${IMAGE_LINK}`;
  try {
    if (plan.image) {
      await Deno.link(plan.image.path, link).catch(async (err) => {
        // another filesystem (a state dir split across mounts): a copy does
        if (
          !(err instanceof Deno.errors.NotSupported) && !/EXDEV|cross-device/i.test(String(err))
        ) {
          throw err;
        }
        await Deno.copyFile(plan.image!.path, link);
      });
      await Deno.chmod(link, 0o644); // QEMU's own user reads it; the cache above stays 0700
      await hotplug.insertImage(qmp, { cdId: IMAGE_CD_ID, path: IMAGE_LINK });
    }
    if (plan.net && network) {
      await hotplug.connectNic(qmp, {
        id: NIC_BACKEND_ID,
        hubId: NIC_HUB_ID,
        backend: plan.net.kind === "user"
          ? { kind: "user", hostForwards: plan.forwards, net: network.net }
          : { kind: "tap", ifname: plan.net.ifname },
      });
    }
  } finally {
    qmp.close();
    await Deno.remove(link).catch(() => {}); // QEMU holds the file open
  }
  const image: VmImage | undefined = plan.image && {
    ref: plan.image.ref,
    digest: plan.image.digest,
    root: `/run/vmf/${IMAGE_NAME}/root`,
    ...plan.image.config,
  };
  const vmNetwork: VmNetwork | undefined = plan.net && network && {
    kind: plan.net.kind,
    mac: network.mac,
    ip: network.ip,
    gateway: network.gateway,
    ports: plan.forwards.map((f) => `${f.hostAddr}:${f.hostPort}:${f.guestPort}/${f.proto}`),
  };
  return {
    image,
    network: vmNetwork,
    async inGuest(agent) {
      const mounted = image ? agent.mountImage(CD_SERIAL, IMAGE_NAME) : undefined;
      if (network?.ip) {
        // resolv.conf goes into the image's root too, so wait for its mount first
        await mounted;
        await agent.configureNet({
          mac: network.mac,
          address: `${network.ip}/${network.prefix}`,
          ...(network.gateway ? { gateway: network.gateway } : {}),
          dns: network.dns,
          ...(image ? { image: IMAGE_NAME } : {}),
        });
      }
      await mounted;
    },
  };
}
