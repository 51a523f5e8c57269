/**
 * The network plan of one VM: its MAC, address, prefix, gateway and DNS servers, which the host
 * hands to QEMU (MAC, user-mode network) and to the guest (address, default route, resolver).
 *
 * User-mode networking (slirp) is a NAT of its own in each QEMU, so addresses never clash; each
 * VM still gets a /24 of its own inside {@link DEFAULT_USER_NET_RANGE} (picked at random, avoiding
 * the subnets of the host's other VMs), so its address names it in logs and records. In subnet
 * N.0/24 the guest is N.15 (slirp's first DHCP address, where a forward without a guest address
 * lands), the gateway (the host, NATed) N.2 and the DNS server (slirp's forwarder to the host's
 * resolver) N.3. A guest cannot reach a host-side network that overlaps its own /24, so the range
 * avoids common ones (10.0.0.0/16, Kubernetes' 10.96.0.0/12, GCP's 10.128.0.0/9) and is a setting.
 * With more VMs than subnets, subnets are reused (harmless: each NAT is private).
 *
 * A tap device joins the host's network: its address is the operator's. The plan carries a
 * static address when one is given; otherwise `ip` is "" and the guest is left unaddressed
 * (the operator's DHCP, if any, is not waited for).
 * @module
 */
import { UsageError } from "../errors.ts";
import { formatIpv4, hostMask, parseIpv4, parseIpv4Net } from "./_ipv4.ts";
import { macForVm } from "./mac_address.ts";
import type { NetSpec } from "./net_spec.ts";

/** Where user-mode VMs get their /24 subnets: 8192 of them. */
export const DEFAULT_USER_NET_RANGE = "10.64.0.0/11";

/** How one VM is addressed. */
export interface NetPlan {
  /** MAC of its NIC (see `mac_address.ts`). */
  mac: string;
  /** Its IPv4 address; "" when the guest is not addressed (a tap without a static address). */
  ip: string;
  /** Prefix length of its network (0 without an address). */
  prefix: number;
  /** Default gateway; "" for none. */
  gateway: string;
  /** DNS servers, in order. */
  dns: string[];
  /** User-mode only: the slirp network (`"10.64.3.0/24"`) to give QEMU's user netdev. */
  net?: string;
}

/** An address the operator gives a VM on a tap device. */
export interface StaticAddress {
  /** IPv4 address. */
  ip: string;
  /** Prefix length, 1–32. */
  prefix: number;
  /** Default gateway, inside the network. */
  gateway?: string;
  /** DNS servers. */
  dns?: string[];
}

/** Options of {@link planNetwork}. */
export interface NetPlanOptions {
  /** The networks of the host's other VMs (from their records): their MACs and addresses. */
  taken?: readonly { mac?: string; ip?: string }[];
  /** Range of user-mode subnets (a setting; default {@link DEFAULT_USER_NET_RANGE}), /24 or wider. */
  userRange?: string;
  /** The tap VM's address; without it a tap VM's `ip` is "". */
  tapAddress?: StaticAddress;
  /** Uniform in [0, 1) (tests). */
  random?: () => number;
}

/** Offsets inside a user-mode /24 (slirp's defaults). */
const GATEWAY = 2, DNS = 3, GUEST = 15;

/**
 * The plan of VM `vmId` on `spec`. Throws a {@link UsageError} for a `userRange` that is not an
 * IPv4 network of prefix 8–24, or a `tapAddress` that is not a valid address.
 */
export function planNetwork(vmId: string, spec: NetSpec, options: NetPlanOptions = {}): NetPlan {
  const taken = options.taken ?? [];
  const mac = macForVm(vmId, taken.flatMap((t) => t.mac ? [t.mac] : []));
  if (spec.kind === "tap") {
    const address = options.tapAddress;
    if (!address) return { mac, ip: "", prefix: 0, gateway: "", dns: [] };
    checkStatic(address);
    return {
      mac,
      ip: address.ip,
      prefix: address.prefix,
      gateway: address.gateway ?? "",
      dns: [...address.dns ?? []],
    };
  }
  const base = userSubnet(options.userRange ?? DEFAULT_USER_NET_RANGE, taken, options.random);
  return {
    mac,
    ip: formatIpv4(base + GUEST),
    prefix: 24,
    gateway: formatIpv4(base + GATEWAY),
    dns: [formatIpv4(base + DNS)],
    net: `${formatIpv4(base)}/24`,
  };
}

/** True when `net` is an IPv4 network from /8 to /24 without host bits (a slirp net, a range). */
export function isUserNet(net: string): boolean {
  const parsed = parseIpv4Net(net);
  return parsed !== undefined && parsed.prefix >= 8 && parsed.prefix <= 24;
}

/** A /24 of `range` not used by `taken`, starting at a random one; its first address. */
function userSubnet(
  range: string,
  taken: readonly { ip?: string }[],
  random: () => number = Math.random,
): number {
  const net = parseIpv4Net(range);
  if (!net || !isUserNet(range)) {
    throw new UsageError(
      `use the user network range ${JSON.stringify(range)}`,
      "expected an IPv4 network from /8 to /24 with no host bits, e.g. 10.64.0.0/11",
    );
  }
  const count = 2 ** (24 - net.prefix);
  const used = new Set(taken.flatMap((t) => {
    const ip = t.ip ? parseIpv4(t.ip) : undefined;
    return ip === undefined ? [] : [ip >>> 8];
  }));
  const start = Math.floor(random() * count) % count;
  for (let i = 0; i < count; i++) {
    const base = net.base + ((start + i) % count) * 256;
    if (!used.has(base >>> 8)) return base;
  }
  return net.base + start * 256;
}

function checkStatic(address: StaticAddress): void {
  const fail = (detail: string) =>
    new UsageError(`use the address ${JSON.stringify(address.ip)}/${address.prefix}`, detail);
  const ip = parseIpv4(address.ip);
  if (ip === undefined) throw fail("it is not an IPv4 address");
  if (!Number.isInteger(address.prefix) || address.prefix < 1 || address.prefix > 32) {
    throw fail("the prefix length must be 1–32");
  }
  if (address.gateway !== undefined) {
    const gateway = parseIpv4(address.gateway);
    const mask = ~hostMask(address.prefix);
    if (gateway === undefined || ((gateway ^ ip) & mask) !== 0 || gateway === ip) {
      throw fail(`the gateway ${address.gateway} is not another address of its network`);
    }
  }
  for (const server of address.dns ?? []) {
    if (parseIpv4(server) === undefined) throw fail(`DNS server ${server} is not an IPv4 address`);
  }
}
