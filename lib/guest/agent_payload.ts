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

/**
 * Bytes of a streamed stdin a client may have sent and the agent not yet acknowledged (256 KiB):
 * the agent holds no more per command. Also the most stdin an exec request carries itself.
 */
export const STDIN_WINDOW = 256 * 1024;
/** Output credit each stdout or stderr frame costs beyond its payload. */
export const FRAME_COST = 256;
/** Flags of an exec request. */
export const ExecFlag = {
  /** The command is one line for `/bin/sh -c`. */
  shell: 1,
  /** Stdin comes in stdin requests, the last one flagged {@link StdinFlag.eof}. */
  stdinStream: 2,
  /** The request carries the command's whole environment. */
  env: 4,
} as const;
/** Flags of a stdin request. */
export const StdinFlag = { eof: 1 } as const;
/** Flags of a stdin acknowledgement. */
export const AckFlag = {
  /** The command closed its stdin: send no more. */
  closed: 1,
} as const;

/** Where and as whom an exec runs, and how its input and output flow. */
export interface ExecRequest {
  /** Stdin carried in the request (at most {@link STDIN_WINDOW} bytes). */
  stdin?: Uint8Array;
  /** Stdin follows in stdin requests instead (then `stdin` must be empty). */
  stdinStream?: boolean;
  /**
   * The command's whole environment, "NAME=value" each (default: the agent's: PATH and HOME).
   * Nothing is merged in.
   */
  env?: readonly string[];
  /** Working directory: absolute, inside `root` when given (default: `/`). */
  cwd?: string;
  /**
   * Run as "name", "uid", "name:group" or "uid:gid" (default: root), looked up in the guest in
   * `/etc/passwd` and `/etc/group` (of `root` when given): a name must be there (else the exec
   * fails, code "remote"), a uid without a line gets gid 0. Supplementary groups are dropped.
   */
  user?: string;
  /**
   * A folder of the guest the command is chrooted into before anything else (e.g. what
   * `AgentClient.mountImage` returns): it is the command's `/`.
   */
  root?: string;
  /** Kill the command's process group after this long; 0 = never. */
  timeoutMs?: number;
  /** Most output bytes, stdout and stderr together. */
  outputLimit?: number;
  /** Output credit the agent starts with; 0: output is not metered. */
  outputWindow?: number;
}

/** Most arguments or environment entries of one exec. */
const MAX_LIST = 4096;

/**
 * Encodes an exec request: u32 flags, u32 timeout, u32 output limit, u32 output window, argv,
 * the environment, cwd, user, root, stdin (lists as a u32 count of (u32 length, bytes) fields).
 */
export function encodeExec(command: ExecCommand, opts: ExecRequest = {}): Uint8Array {
  const bad = (detail: string) => new PayloadError("encode the exec request", detail);
  const shell = "shell" in command;
  const argv = "shell" in command ? [command.shell] : [...command];
  if (argv.length === 0) throw bad("a command needs at least one argument");
  if (argv.length > MAX_LIST) throw bad(`${argv.length} arguments (at most ${MAX_LIST})`);
  if (argv.some((a) => a.includes("\0"))) throw bad("an argument holds a NUL character");
  const env = opts.env ?? [];
  if (env.length > MAX_LIST) throw bad(`${env.length} environment entries (at most ${MAX_LIST})`);
  const badEntry = env.find((e) => !(e.indexOf("=") > 0) || e.includes("\0"));
  if (badEntry !== undefined) {
    throw bad(`environment entry ${JSON.stringify(badEntry.slice(0, 40))} is not "NAME=value"`);
  }
  const [cwd, root] = [opts.cwd, opts.root].map((path, i) => {
    if (path === undefined) return new Uint8Array();
    const bytes = encoder.encode(path);
    if (!path.startsWith("/") || path.includes("\0") || bytes.length > 4095) {
      throw bad(
        `${["cwd", "root"][i]} ${JSON.stringify(path.slice(0, 60))}: need an absolute path`,
      );
    }
    return bytes;
  });
  const user = encoder.encode(opts.user ?? "");
  if (opts.user !== undefined && (!USER.test(opts.user) || user.length > 255)) {
    throw bad(
      `user ${
        JSON.stringify(opts.user.slice(0, 60))
      }: need "name", "uid", "name:group" or "uid:gid"`,
    );
  }
  const timeoutMs = Math.ceil(opts.timeoutMs ?? 0);
  if (!(timeoutMs >= 0 && timeoutMs <= U32_MAX)) throw bad(`timeout ${opts.timeoutMs} ms`);
  const limit = u32(opts.outputLimit ?? 0, "output limit", bad);
  const window = u32(opts.outputWindow ?? 0, "output window", bad);
  const stdin = opts.stdin ?? new Uint8Array();
  if (stdin.length > STDIN_WINDOW) {
    throw bad(`stdin of ${stdin.length} bytes in the request (at most ${STDIN_WINDOW}; stream it)`);
  }
  if (opts.stdinStream && stdin.length) throw bad("stdin is both in the request and streamed");
  const flags = (shell ? ExecFlag.shell : 0) | (opts.stdinStream ? ExecFlag.stdinStream : 0) |
    (opts.env ? ExecFlag.env : 0);
  return new Writer()
    .u32(flags, timeoutMs, limit, window)
    .list(argv.map((a) => encoder.encode(a)))
    .list(env.map((e) => encoder.encode(e)))
    .fields(cwd, user, root, stdin)
    .done();
}

// deno-lint-ignore no-control-regex
const USER = /^[^:\x00-\x20\x7f]+(:[^:\x00-\x20\x7f]+)?$/;

/** Encodes a chunk of a streamed stdin: u32 flags ({@link StdinFlag}), the bytes. */
export function encodeStdin(data: Uint8Array, eof: boolean): Uint8Array {
  const out = new Uint8Array(4 + data.length);
  new DataView(out.buffer).setUint32(0, eof ? StdinFlag.eof : 0);
  out.set(data, 4);
  return out;
}

/** Encodes output credit: u32 bytes consumed. */
export function encodeCredit(bytes: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(
    0,
    u32(bytes, "credit", (d) => new PayloadError("encode credit", d)),
  );
  return out;
}

/** What a stdin acknowledgement says. */
export interface StdinAck {
  /** Bytes written to the command since the previous acknowledgement. */
  bytes: number;
  /** The command closed its stdin: the rest is not wanted. */
  closed: boolean;
}

/** Decodes a stdin acknowledgement: u32 bytes written, u32 flags ({@link AckFlag}). */
export function decodeStdinAck(payload: Uint8Array): StdinAck {
  const bad = (detail: string) => new PayloadError("decode a stdin acknowledgement", detail);
  if (payload.length !== 8) throw bad(`payload of ${payload.length} bytes, not 8`);
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const flags = view.getUint32(4);
  if (flags & ~AckFlag.closed) throw bad(`flags 0x${flags.toString(16)}`);
  return { bytes: view.getUint32(0), closed: flags !== 0 };
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

/** A disk serial as QEMU and virtio-blk carry it (at most 20 bytes). */
const SERIAL = /^[A-Za-z0-9_-]{1,20}$/;
/**
 * The {@link MountImageRequest.serial} that names the VM's CD drive (`IMAGE_CD_ID` in
 * `qemu_command.ts`) instead of a virtio disk: the guest mounts the medium the host inserted.
 */
export const CD_SERIAL = "cd";
/** An image name: one path component under /run/vmf, never "." or "..". */
const IMAGE_NAME = /^[A-Za-z0-9_-]{1,64}$/;
/** Longest wait for a device the agent accepts (10 minutes). */
export const MAX_DEVICE_WAIT_MS = 600_000;

/** What {@link encodeMountImage} asks for. */
export interface MountImageRequest {
  /** Serial of the hot-plugged virtio disk holding the erofs image, or {@link CD_SERIAL}. */
  serial: string;
  /** The image's name in the guest: it is mounted under `/run/vmf/<name>/`. */
  name: string;
  /** Size cap of the writable layer (a tmpfs), and of the image's /tmp, in bytes. */
  writableBytes: number;
  /** How long the guest waits for the disk to appear, in ms. */
  waitMs: number;
}

/**
 * Encodes a mountImage request: u32 wait ms, u64 bytes of the writable layer, then the serial
 * and the name as (u32 length, bytes) fields.
 */
export function encodeMountImage(req: MountImageRequest): Uint8Array {
  const bad = (detail: string) => new PayloadError("encode the mountImage request", detail);
  if (!SERIAL.test(req.serial)) {
    throw bad(`disk serial ${JSON.stringify(req.serial)}: need 1 to 20 of A-Z a-z 0-9 _ -`);
  }
  checkName(req.name, bad);
  const size = req.writableBytes;
  if (!(Number.isSafeInteger(size) && size >= 1 << 20 && size <= 2 ** 40)) {
    throw bad(`writable layer of ${size} bytes (1 MiB to 1 TiB)`);
  }
  return new Writer()
    .u32(waitOf(req.waitMs, bad), Math.floor(size / 2 ** 32), size % 2 ** 32)
    .fields(encoder.encode(req.serial), encoder.encode(req.name))
    .done();
}

/** Encodes an unmountImage request: the name. */
export function encodeUnmountImage(name: string): Uint8Array {
  checkName(name, (detail) => new PayloadError("encode the unmountImage request", detail));
  return encoder.encode(name);
}

/** What the guest mounted. */
export interface MountedImage {
  /** The image's root in the guest: `/run/vmf/<name>/root`. */
  root: string;
  /** The disk it found, e.g. `/dev/vdb`, or the CD drive, e.g. `/dev/sr0`. */
  device: string;
}

/** Decodes the mountImage answer's `key=value` lines. */
export function decodeMountedImage(payload: Uint8Array): MountedImage {
  const kv = keyValues(payload, "decode the mountImage answer");
  const root = kv.text("root"), device = kv.text("device");
  if (!/^\/run\/vmf\/[A-Za-z0-9_-]{1,64}\/root$/.test(root)) {
    throw new PayloadError("decode the mountImage answer", `root ${JSON.stringify(root)}`);
  }
  if (!/^\/dev\/(vd[a-z]{1,4}|sr\d{1,3})$/.test(device)) {
    throw new PayloadError("decode the mountImage answer", `device ${JSON.stringify(device)}`);
  }
  return { root, device };
}

/** The network a hot-plugged NIC gets. */
export interface NetConfig {
  /** MAC of the NIC, "aa:bb:cc:dd:ee:ff". */
  mac: string;
  /** IPv4 address and prefix length, "10.0.2.15/24". */
  address: string;
  /** Default gateway (none: the routes are left alone). */
  gateway?: string;
  /** DNS servers (at most 3) for /etc/resolv.conf (none: resolv.conf is left alone). */
  dns?: readonly string[];
  /** A mounted image whose /etc/resolv.conf is written too. */
  image?: string;
}

/**
 * Encodes a configureNet request: u32 wait ms, the MAC in 6 bytes + 2 bytes 0, u32 address, u32
 * prefix length, u32 gateway (0: none), u32 count + the DNS servers, (u32 length, image name).
 */
export function encodeConfigureNet(net: NetConfig, waitMs: number): Uint8Array {
  const bad = (detail: string) => new PayloadError("encode the configureNet request", detail);
  const mac = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(net.mac)
    ? net.mac.split(":").map((h) => parseInt(h, 16))
    : undefined;
  if (!mac) throw bad(`MAC ${JSON.stringify(net.mac)}: need aa:bb:cc:dd:ee:ff`);
  const slash = net.address.indexOf("/");
  const prefix = /^\d{1,2}$/.test(net.address.slice(slash + 1))
    ? Number(net.address.slice(slash + 1))
    : NaN;
  const address = slash > 0 ? ipv4(net.address.slice(0, slash)) : undefined;
  if (!address || !(prefix >= 1 && prefix <= 32)) {
    throw bad(
      `address ${JSON.stringify(net.address)}: need an IPv4 address/prefix like 10.0.2.15/24`,
    );
  }
  const gateway = net.gateway === undefined ? 0 : ipv4(net.gateway);
  if (gateway === undefined) throw bad(`gateway ${JSON.stringify(net.gateway)} is not IPv4`);
  const dns = (net.dns ?? []).map((d) => ipv4(d) ?? Number.NaN);
  if (dns.length > 3 || dns.some(Number.isNaN)) {
    throw bad(`DNS servers ${JSON.stringify(net.dns)}: need at most 3 IPv4 addresses`);
  }
  if (net.image !== undefined) checkName(net.image, bad);
  const macWords = [
    (mac[0] << 24 | mac[1] << 16 | mac[2] << 8 | mac[3]) >>> 0,
    mac[4] << 24 | mac[5] << 16,
  ];
  return new Writer()
    .u32(waitOf(waitMs, bad), macWords[0], macWords[1] >>> 0, address, prefix, gateway)
    .u32(dns.length, ...dns)
    .fields(encoder.encode(net.image ?? ""))
    .done();
}

/** Decodes the configureNet answer: the interface's name. */
export function decodeConfiguredNet(payload: Uint8Array): string {
  const name = keyValues(payload, "decode the configureNet answer").text("interface");
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(name)) {
    throw new PayloadError("decode the configureNet answer", `interface ${JSON.stringify(name)}`);
  }
  return name;
}

/** A dotted IPv4 address as a u32, or undefined (also for 0.0.0.0). */
function ipv4(text: string): number | undefined {
  const parts = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text)?.slice(1).map(Number);
  if (!parts || parts.some((p) => p > 255)) return undefined;
  const value = parts.reduce((n, p) => n * 256 + p, 0);
  return value || undefined;
}

function checkName(name: string, bad: (detail: string) => PayloadError): void {
  if (!IMAGE_NAME.test(name)) {
    throw bad(`image name ${JSON.stringify(name)}: need 1 to 64 of A-Z a-z 0-9 _ -`);
  }
}

function waitOf(ms: number, bad: (detail: string) => PayloadError): number {
  const wait = Math.ceil(ms);
  if (!(wait >= 0 && wait <= MAX_DEVICE_WAIT_MS)) {
    throw bad(`wait of ${ms} ms (0 to ${MAX_DEVICE_WAIT_MS})`);
  }
  return wait;
}

function u32(value: number, what: string, bad: (detail: string) => PayloadError): number {
  if (!(Number.isInteger(value) && value >= 0 && value <= U32_MAX)) {
    throw bad(`${what} ${value} is not an integer from 0 to ${U32_MAX}`);
  }
  return value;
}

/** Builds a big-endian payload of u32s and (u32 length, bytes) fields. */
class Writer {
  #parts: Uint8Array[] = [];
  #size = 0;

  u32(...values: number[]): this {
    const bytes = new Uint8Array(4 * values.length), view = new DataView(bytes.buffer);
    values.forEach((v, i) => view.setUint32(4 * i, v));
    return this.#add(bytes);
  }

  /** Each field as (u32 length, bytes). */
  fields(...fields: Uint8Array[]): this {
    for (const field of fields) this.u32(field.length).#add(field);
    return this;
  }

  /** A u32 count, then the fields. */
  list(fields: Uint8Array[]): this {
    return this.u32(fields.length).fields(...fields);
  }

  done(): Uint8Array {
    const out = new Uint8Array(this.#size);
    let at = 0;
    for (const part of this.#parts) {
      out.set(part, at);
      at += part.length;
    }
    return out;
  }

  #add(bytes: Uint8Array): this {
    this.#parts.push(bytes);
    this.#size += bytes.length;
    return this;
  }
}
