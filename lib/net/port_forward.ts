/**
 * Port forwards from the host into a VM (`-p [HOSTADDR:]HOSTPORT:GUESTPORT[/PROTO]`), as QEMU's
 * user-mode networking forwards them (a host socket on `hostAddr:hostPort`, connected through to
 * the guest's `guestPort`).
 * @module
 */
import { UsageError } from "../errors.ts";
import { formatIpv4, isLoopback, parseIpv4 } from "./_ipv4.ts";

/** One forward from a host address and port to a guest port. */
export interface PortForward {
  /** IPv4 address the host socket binds, e.g. `127.0.0.1`. */
  hostAddr: string;
  /** Host port, 1–65535. */
  hostPort: number;
  /** Guest port, 1–65535. */
  guestPort: number;
  /** Transport protocol. */
  proto: "tcp" | "udp";
}

/** Options of {@link parsePortForward}. */
export interface PortForwardOptions {
  /**
   * Accept a host address outside 127.0.0.0/8 (e.g. `0.0.0.0`, which lets other machines reach
   * the guest). Default false: only loopback, so a forward is reachable from this host only.
   */
  allowNonLoopback?: boolean;
}

/** `text` as a port number when it is one (1–65535, decimal, no sign or leading zero). */
function port(text: string): number | undefined {
  if (!/^[1-9][0-9]{0,4}$/.test(text)) return undefined;
  const n = Number(text);
  return n <= 65535 ? n : undefined;
}

/**
 * Parses `HOSTPORT:GUESTPORT`, `HOSTADDR:HOSTPORT:GUESTPORT`, either with `/tcp` or `/udp`
 * (default tcp; the host address defaults to 127.0.0.1). Throws a {@link UsageError}
 * "Cannot use the port forward "…": …" for anything else, and for a host address outside
 * loopback unless `allowNonLoopback`.
 * @example
 * ```ts
 * parsePortForward("8080:80"); // { hostAddr: "127.0.0.1", hostPort: 8080, guestPort: 80, proto: "tcp" }
 * ```
 */
export function parsePortForward(text: string, options: PortForwardOptions = {}): PortForward {
  const fail = (detail: string) =>
    new UsageError(`use the port forward ${JSON.stringify(text.slice(0, 100))}`, detail);
  const [ports, protoText, ...extra] = text.split("/");
  const proto = protoText ?? "tcp";
  if (extra.length > 0 || (proto !== "tcp" && proto !== "udp")) {
    throw fail("the protocol after / must be tcp or udp");
  }
  const parts = ports.split(":");
  if (parts.length < 2 || parts.length > 3) {
    throw fail("expected HOSTPORT:GUESTPORT or HOSTADDR:HOSTPORT:GUESTPORT, e.g. 8080:80");
  }
  const [hostPortText, guestPortText] = parts.slice(-2);
  const address = parseIpv4(parts.length === 3 ? parts[0] : "127.0.0.1");
  if (address === undefined) throw fail(`${JSON.stringify(parts[0])} is not an IPv4 address`);
  if (!isLoopback(address) && !options.allowNonLoopback) {
    throw fail(`the host address must be a loopback address (127.x.x.x), not ${parts[0]}`);
  }
  const hostPort = port(hostPortText), guestPort = port(guestPortText);
  if (hostPort === undefined) throw fail(`host port ${hostPortText} is not a number 1–65535`);
  if (guestPort === undefined) throw fail(`guest port ${guestPortText} is not a number 1–65535`);
  return { hostAddr: formatIpv4(address), hostPort, guestPort, proto };
}

/**
 * True when `value` is a well-formed {@link PortForward} (ports 1–65535, a canonical IPv4 host
 * address, tcp or udp), loopback or not: checks a forward built elsewhere before it is used.
 */
export function isPortForward(value: PortForward): boolean {
  const p = (n: number) => Number.isInteger(n) && n >= 1 && n <= 65535;
  return parseIpv4(value.hostAddr) !== undefined && p(value.hostPort) && p(value.guestPort) &&
    (value.proto === "tcp" || value.proto === "udp");
}
