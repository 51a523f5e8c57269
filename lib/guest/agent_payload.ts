/**
 * Payload encodings of the guest agent operations (the frames around them: agent_frame.ts).
 * All integers are big-endian, as in the frame header.
 * @module
 */

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** What the guest reports about itself (the `info` operation). */
export interface AgentInfo {
  /** Time since the guest kernel booted (CLOCK_BOOTTIME), in ms. */
  uptimeMs: number;
  /** MemTotal / MemFree / MemAvailable from /proc/meminfo, in bytes. */
  memTotal: number;
  memFree: number;
  memAvailable: number;
  /** /proc/sys/kernel/random/boot_id as the guest's processes see it. */
  bootId: string;
  hostname: string;
  kernelRelease: string;
  cpusOnline: number;
  /** The VM generation ID (UUID) when the guest can read it (`-device vmgenid`). */
  vmgenid?: string;
  /** The guest's wall clock when it answered. */
  time: Date;
  /** The same in nanoseconds since the epoch. */
  timeNs: bigint;
}

/** The command of an exec: an argv (searched in PATH) or a line for `/bin/sh -c`. */
export type ExecCommand = readonly string[] | { shell: string };

/** How a command ended. */
export interface ExecExit {
  /** Exit status; 128 + signal when a signal killed it. */
  exitCode: number;
  /** The signal that killed it, if one did. */
  signal?: number;
  /** Output beyond the limit was dropped. */
  truncated: boolean;
  /** The timeout expired and the process group was killed. */
  timedOut: boolean;
}

/** Encodes an exec request: flags, timeout, output limit, argv, stdin. */
export function encodeExec(
  command: ExecCommand,
  opts: { stdin?: Uint8Array; timeoutMs?: number; outputLimit?: number } = {},
): Uint8Array {
  const shell = "shell" in command;
  const args = ("shell" in command ? [command.shell] : [...command]).map((a) => encoder.encode(a));
  if (args.length === 0) throw new RangeError("exec needs at least one argument");
  const stdin = opts.stdin ?? new Uint8Array();
  const size = 16 + args.reduce((n, a) => n + 4 + a.length, 0) + 4 + stdin.length;
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  view.setUint32(0, shell ? 1 : 0);
  view.setUint32(4, Math.max(0, Math.ceil(opts.timeoutMs ?? 0)));
  view.setUint32(8, opts.outputLimit ?? 0);
  view.setUint32(12, args.length);
  let off = 16;
  for (const a of [...args, stdin]) {
    view.setUint32(off, a.length);
    out.set(a, off + 4);
    off += 4 + a.length;
  }
  return out;
}

/** Decodes the 10-byte exit payload: u32 status (or 0xffffffff), u32 signal, u8 truncated, u8 timed out. */
export function decodeExit(payload: Uint8Array): ExecExit {
  if (payload.length !== 10) throw new RangeError(`exit payload of ${payload.length} bytes`);
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const status = view.getUint32(0), signal = view.getUint32(4);
  return {
    exitCode: signal ? 128 + signal : status,
    ...(signal ? { signal } : {}),
    truncated: payload[8] !== 0,
    timedOut: payload[9] !== 0,
  };
}

/** Decodes the `key=value` lines the info operation answers. */
export function decodeInfo(payload: Uint8Array): AgentInfo {
  const kv = new Map<string, string>();
  for (const line of decoder.decode(payload).split("\n")) {
    const eq = line.indexOf("=");
    if (eq > 0) kv.set(line.slice(0, eq), line.slice(eq + 1));
  }
  const num = (key: string) => Number(kv.get(key) ?? NaN);
  const timeNs = BigInt(kv.get("time_ns") || "0");
  return {
    uptimeMs: num("uptime_ms"),
    memTotal: num("mem_total_kib") * 1024,
    memFree: num("mem_free_kib") * 1024,
    memAvailable: num("mem_available_kib") * 1024,
    bootId: kv.get("boot_id") ?? "",
    hostname: kv.get("hostname") ?? "",
    kernelRelease: kv.get("kernel_release") ?? "",
    cpusOnline: num("cpus_online"),
    ...(kv.get("vmgenid") ? { vmgenid: kv.get("vmgenid") } : {}),
    time: new Date(Number(timeNs / 1_000_000n)),
    timeNs,
  };
}

/** Encodes a wall-clock time as u64 nanoseconds since the epoch. */
export function encodeClock(date: Date): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(date.getTime()) * 1_000_000n);
  return out;
}

/** Decodes the online-hotplugged answer: u32 CPUs, u32 memory blocks brought online. */
export function decodeHotplugged(payload: Uint8Array): { cpus: number; memoryBlocks: number } {
  if (payload.length !== 8) throw new RangeError(`hotplug payload of ${payload.length} bytes`);
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  return { cpus: view.getUint32(0), memoryBlocks: view.getUint32(4) };
}
