/**
 * A MAC address per VM: `02:` (locally administered, unicast) followed by the VM's id. VM ids
 * are 10 random hex digits, unique on the host (each is a folder name), so a VM's MAC is unique
 * among the host's VMs and tells which VM a frame came from (`02:b4:f9:8b:1e:be` is VM
 * `b4f98b1ebe`). An id of another form, or a MAC another VM already has, gets 40 random bits
 * instead. Across hosts sharing one Ethernet segment (tap devices on a bridge) two of n VMs
 * collide with probability about n²/2⁴¹ (1 in 4.5 million for 1000 VMs).
 * @module
 */
import { VmfactoryError } from "../errors.ts";

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** True when `mac` is six lowercase hex pairs joined by `:` naming one station (unicast). */
export function isUnicastMac(mac: string): boolean {
  return MAC.test(mac) && (parseInt(mac.slice(0, 2), 16) & 1) === 0;
}

/** Five random bytes. */
function randomBytes(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(5));
}

function macOf(bytes: Uint8Array): string {
  return ["02", ...Array.from(bytes, (b) => b.toString(16).padStart(2, "0"))].join(":");
}

/** The bytes of a 10-hex-digit id, else undefined. */
function idBytes(vmId: string): Uint8Array | undefined {
  if (!/^[0-9a-f]{10}$/.test(vmId)) return undefined;
  return Uint8Array.from({ length: 5 }, (_, i) => parseInt(vmId.slice(2 * i, 2 * i + 2), 16));
}

/**
 * The MAC address of VM `vmId`: `02:` and the id's five bytes, or five random bytes when the id
 * is not 10 hex digits or that MAC is in `taken` (the MACs of the host's other VMs, any case).
 * `random` is for tests.
 */
export function macForVm(
  vmId: string,
  taken: Iterable<string> = [],
  random: () => Uint8Array = randomBytes,
): string {
  const used = new Set(Array.from(taken, (mac) => mac.toLowerCase()));
  const fromId = idBytes(vmId);
  let mac = fromId ? macOf(fromId) : undefined;
  for (let tries = 0; mac === undefined || used.has(mac); tries++) {
    if (tries === 32) {
      throw new VmfactoryError("pick a MAC address", "every random pick was already taken");
    }
    mac = macOf(random());
  }
  return mac;
}
