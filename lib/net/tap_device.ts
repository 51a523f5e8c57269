/**
 * Checks of a tap device before QEMU is asked to open it. QEMU runs as an unprivileged user
 * (`qemu_user.ts`) and may not spawn programs, so it cannot create a tap or run an ifup script:
 * it can only attach to a persistent tap the operator made for its user, brought up and
 * connected (bridge, routes) beforehand:
 *
 * ```sh
 * ip tuntap add vmf0 mode tap user vmfactory-qemu
 * ip link set vmf0 up          # then: ip link set vmf0 master br0, or an address and routes
 * ```
 *
 * A tap with neither owner nor group may be opened by any local user (until QEMU holds it), so
 * it is refused. The host cannot open the tap and pass it to QEMU instead: that needs QMP
 * `getfd` with SCM_RIGHTS, which Deno cannot send (no FFI under lib/).
 * @module
 */
import { UsageError } from "../errors.ts";

const IFF_UP = 0x1;
const IFF_TAP = 0x2;
const IFF_PERSIST = 0x800;

/** Why the tap `ifname` is not ready for a QEMU running as `uid`, or undefined when it is. */
export function tapDeviceProblem(
  ifname: string,
  uid: number,
  sysfsNet = "/sys/class/net",
): string | undefined {
  const read = (file: string) => {
    try {
      return Deno.readTextFileSync(`${sysfsNet}/${ifname}/${file}`).trim();
    } catch {
      return undefined;
    }
  };
  const make = `ip tuntap add ${ifname} mode tap user <QEMU's user>`;
  const tunFlags = read("tun_flags");
  if (tunFlags === undefined) return `there is no tap device ${ifname} (${make})`;
  const flags = Number(tunFlags);
  if (!(flags & IFF_TAP)) return `${ifname} is a tun device, not a tap (${make})`;
  if (!(flags & IFF_PERSIST)) return `${ifname} is not persistent: the process that made it has it`;
  const owner = Number(read("owner")), group = Number(read("group"));
  if (owner === -1 && group === -1) {
    return `${ifname} has no owner, so any local user may open it (${make})`;
  }
  if (owner !== uid) return `${ifname} is not owned by QEMU's user, uid ${uid} (${make})`;
  if (!(Number(read("flags")) & IFF_UP)) return `${ifname} is down (ip link set ${ifname} up)`;
  return undefined;
}

/**
 * Throws a {@link UsageError} "Cannot use the tap device NAME: …" unless a QEMU running as `uid`
 * can attach to it (see {@link tapDeviceProblem}). Call it before `attachNic` with a tap backend.
 */
export function assertTapUsable(ifname: string, uid: number, sysfsNet?: string): void {
  const problem = tapDeviceProblem(ifname, uid, sysfsNet);
  if (problem) throw new UsageError(`use the tap device ${ifname}`, problem);
}
