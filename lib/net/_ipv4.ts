/** IPv4 addresses as 32-bit numbers, for the modules of lib/net. @module */

/** `text` as an unsigned 32-bit number when it is a dotted quad (no leading zeros), else undefined. */
export function parseIpv4(text: string): number | undefined {
  const parts = text.split(".");
  if (parts.length !== 4 || !parts.every((p) => /^(0|[1-9][0-9]{0,2})$/.test(p))) return undefined;
  const bytes = parts.map(Number);
  if (bytes.some((b) => b > 255)) return undefined;
  return ((bytes[0] << 24) | (bytes[1] << 16) | (bytes[2] << 8) | bytes[3]) >>> 0;
}

/** The dotted quad of the unsigned 32-bit number `address`. */
export function formatIpv4(address: number): string {
  return [24, 16, 8, 0].map((shift) => (address >>> shift) & 255).join(".");
}

/** True for 127.0.0.0/8. */
export function isLoopback(address: number): boolean {
  return address >>> 24 === 127;
}

/** A network: its first address and its prefix length. */
export interface Ipv4Net {
  /** First address (host bits zero). */
  base: number;
  /** Prefix length, 0–32. */
  prefix: number;
}

/** `text` ("10.64.0.0/11") as a network when it is one with no host bits set, else undefined. */
export function parseIpv4Net(text: string): Ipv4Net | undefined {
  const match = /^([0-9.]+)\/(0|[1-9][0-9]?)$/.exec(text);
  const base = match ? parseIpv4(match[1]) : undefined;
  const prefix = match ? Number(match[2]) : 33;
  if (base === undefined || prefix > 32) return undefined;
  return (base & ~hostMask(prefix)) >>> 0 === base ? { base, prefix } : undefined;
}

/** The host bits of a `prefix`-long network as a mask. */
export function hostMask(prefix: number): number {
  return prefix === 0 ? 0xffffffff : (2 ** (32 - prefix) - 1) >>> 0;
}
