/**
 * Payload encodings of the guest agent operations (the frames around them: agent_frame.ts).
 * All integers are big-endian, as in the frame header. The guest is not trusted: every decoder
 * checks sizes, types and ranges and throws {@link PayloadError}, never anything else.
 * @module
 */
import { VmfactoryError } from "../errors.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * A payload that cannot be encoded (a bad argument) or decoded (a malformed answer); the client
 * reports it as an AgentError.
 * @example
 * ```ts
 * try {
 *   decodeExit(new Uint8Array(3));
 * } catch (err) {
 *   if (err instanceof PayloadError) console.error(err.detail); // "exit payload of 3 bytes, not 10"
 * }
 * ```
 */
export class PayloadError extends VmfactoryError {
  /** Builds "Cannot <action>: <detail>"; `detail` is kept for the client's own message. */
  constructor(action: string, readonly detail: string) {
    super(action, detail);
  }
}

/** What the guest reports about itself (the `info` operation). */
export interface AgentInfo {
  /** Time since the guest kernel booted (CLOCK_BOOTTIME), in ms. */
  uptimeMs: number;
  /** MemTotal / MemFree / MemAvailable from /proc/meminfo, in bytes (negative when unknown). */
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

/** Largest value of a u32 field (timeouts, output limits). */
export const U32_MAX = 0xffff_ffff;

/** Encodes an exec request: flags, timeout, output limit, argv, stdin. */
export function encodeExec(
  command: ExecCommand,
  opts: { stdin?: Uint8Array; timeoutMs?: number; outputLimit?: number } = {},
): Uint8Array {
  const bad = (detail: string) => new PayloadError("encode the exec request", detail);
  const shell = "shell" in command;
  const args = ("shell" in command ? [command.shell] : [...command]).map((a) => encoder.encode(a));
  if (args.length === 0) throw bad("a command needs at least one argument");
  const timeoutMs = Math.ceil(opts.timeoutMs ?? 0), limit = opts.outputLimit ?? 0;
  if (!(timeoutMs >= 0 && timeoutMs <= U32_MAX)) throw bad(`timeout ${opts.timeoutMs} ms`);
  if (!(Number.isInteger(limit) && limit >= 0 && limit <= U32_MAX)) {
    throw bad(`output limit ${limit} is not an integer from 0 to ${U32_MAX}`);
  }
  const stdin = opts.stdin ?? new Uint8Array();
  const size = 16 + args.reduce((n, a) => n + 4 + a.length, 0) + 4 + stdin.length;
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  view.setUint32(0, shell ? 1 : 0);
  view.setUint32(4, timeoutMs);
  view.setUint32(8, limit);
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
  const bad = (detail: string) => new PayloadError("decode an exit answer", detail);
  if (payload.length !== 10) throw bad(`exit payload of ${payload.length} bytes, not 10`);
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const status = view.getUint32(0), signal = view.getUint32(4);
  if (signal > 127 || (signal ? status !== U32_MAX : status > 255)) {
    throw bad(`status ${status} with signal ${signal}`);
  }
  return {
    exitCode: signal ? 128 + signal : status,
    ...(signal ? { signal } : {}),
    truncated: payload[8] !== 0,
    timedOut: payload[9] !== 0,
  };
}

/** Decodes the `key=value` lines the info operation answers. */
export function decodeInfo(payload: Uint8Array): AgentInfo {
  const kv = keyValues(payload, "decode the info answer");
  const timeNs = kv.bigint("time_ns");
  const vmgenid = kv.text("vmgenid");
  return {
    uptimeMs: kv.int("uptime_ms"),
    memTotal: kv.int("mem_total_kib") * 1024,
    memFree: kv.int("mem_free_kib") * 1024,
    memAvailable: kv.int("mem_available_kib") * 1024,
    bootId: kv.text("boot_id"),
    hostname: kv.text("hostname"),
    kernelRelease: kv.text("kernel_release"),
    cpusOnline: kv.int("cpus_online"),
    ...(vmgenid ? { vmgenid } : {}),
    time: new Date(Number(timeNs / 1_000_000n)),
    timeNs,
  };
}

/** What the personalize operation sets in the guest, in this order. */
export interface Personalization {
  /** Host entropy (1 to 4096 bytes) mixed into the guest RNG and credited; the CRNG is then reseeded. */
  seed: Uint8Array;
  /** The wall clock to set. */
  time: Date;
  /** Hostname: 1 to 64 bytes, no control characters. */
  hostname: string;
  /** A new boot_id (lowercase UUID); the guest keeps its own when absent. */
  bootId?: string;
}

/** What the guest says it set (read back after setting it). */
export interface Personalized {
  /** The CRNG was reseeded after the seed was added (the agent answers an error otherwise). */
  reseeded: boolean;
  /** The guest's wall clock once set, in ns since the epoch. */
  timeNs: bigint;
  /** The hostname the guest now has. */
  hostname: string;
  /** The boot_id the guest's processes now see. */
  bootId: string;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * Encodes a personalize request: u64 wall clock in ns since the epoch, then three (u32 length,
 * bytes) fields: the RNG seed, the hostname, the boot_id (empty: keep the guest's).
 */
export function encodePersonalize(p: Personalization): Uint8Array {
  const bad = (detail: string) => new PayloadError("encode the personalize request", detail);
  const hostname = encoder.encode(p.hostname), bootId = encoder.encode(p.bootId ?? "");
  const ms = p.time.getTime();
  if (!(ms >= 0)) throw bad(`time ${p.time} is before the epoch or invalid`);
  if (p.seed.length < 1 || p.seed.length > 4096) throw bad(`seed of ${p.seed.length} bytes`);
  // deno-lint-ignore no-control-regex
  if (hostname.length < 1 || hostname.length > 64 || /[\x00-\x1f\x7f]/.test(p.hostname)) {
    throw bad(`hostname ${JSON.stringify(p.hostname)}: need 1 to 64 bytes, no control characters`);
  }
  if (p.bootId !== undefined && !UUID.test(p.bootId)) {
    throw bad(`boot_id ${JSON.stringify(p.bootId)} is not a lowercase UUID`);
  }
  const out = new Uint8Array(8 + 12 + p.seed.length + hostname.length + bootId.length);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(ms) * 1_000_000n);
  let off = 8;
  for (const field of [p.seed, hostname, bootId]) {
    view.setUint32(off, field.length);
    out.set(field, off + 4);
    off += 4 + field.length;
  }
  return out;
}

/** Decodes the personalize answer's `key=value` lines. */
export function decodePersonalized(payload: Uint8Array): Personalized {
  const kv = keyValues(payload, "decode the personalize answer");
  return {
    reseeded: kv.text("reseeded") === "1",
    timeNs: kv.bigint("time_ns"),
    hostname: kv.text("hostname"),
    bootId: kv.text("boot_id"),
  };
}

/** Decodes the online-hotplugged answer: u32 CPUs, u32 memory blocks brought online. */
export function decodeHotplugged(payload: Uint8Array): { cpus: number; memoryBlocks: number } {
  if (payload.length !== 8) {
    throw new PayloadError(
      "decode the online-hotplugged answer",
      `payload of ${payload.length} bytes, not 8`,
    );
  }
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  return { cpus: view.getUint32(0), memoryBlocks: view.getUint32(4) };
}

/** Longest value kept from a `key=value` answer. */
const MAX_VALUE = 256;

/** Typed, checked access to `key=value` lines; a missing or ill-typed key throws. */
function keyValues(payload: Uint8Array, action: string) {
  const kv = new Map<string, string>();
  for (const line of decoder.decode(payload).split("\n")) {
    const eq = line.indexOf("=");
    if (eq > 0) kv.set(line.slice(0, eq), line.slice(eq + 1));
  }
  const get = (key: string, pattern: RegExp, what: string) => {
    const value = kv.get(key);
    if (value === undefined) throw new PayloadError(action, `no ${key}`);
    if (!pattern.test(value)) {
      throw new PayloadError(action, `${key} ${JSON.stringify(value.slice(0, 40))} is not ${what}`);
    }
    return value;
  };
  return {
    int: (key: string) => Number(get(key, /^-?\d{1,15}$/, "an integer")),
    bigint: (key: string) => BigInt(get(key, /^\d{1,20}$/, "a non-negative integer")),
    text: (key: string) => get(key, new RegExp(`^[^\\n]{0,${MAX_VALUE}}$`), "a short line"),
  };
}
