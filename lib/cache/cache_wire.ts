/**
 * A hand-written protobuf codec for the few messages of Kata's `cache.proto` (see `cache.proto`
 * for the field numbers), and gRPC's length-prefixed message framing.
 *
 * It lets the VMCache client speak gRPC over its own HTTP/2 connection without importing grpc-js
 * and proto-loader (~140 ms of start-up for the CLI). `cache_wire_test.ts` checks every message against
 * proto-loader's serializers built from `cache.proto`, both ways.
 *
 * Decoding follows proto3: absent fields take their default, unknown fields are skipped, a repeated
 * scalar field keeps its last value. Integers are JavaScript numbers (an `int64` pid or a `uint32`
 * fits one exactly); a negative `int64` is its ten-byte two's complement varint.
 * @module
 */

/** The gRPC status codes the VMCache client and server use. */
export const enum GrpcCode {
  Ok = 0,
  Cancelled = 1,
  Unknown = 2,
  DeadlineExceeded = 4,
  PermissionDenied = 7,
  ResourceExhausted = 8,
  Unimplemented = 12,
  Internal = 13,
  Unavailable = 14,
  Unauthenticated = 16,
}

/** `cache.GrpcVM`. */
export interface GrpcVM {
  /** 1: VM id. */
  id: string;
  /** 2: JSON telling how to take the VM over. */
  hypervisor: Uint8Array;
  /** 3: unused by vmfactory (Kata's proxy pid). */
  proxyPid: number;
  /** 4: unused by vmfactory (Kata's proxy URL). */
  proxyURL: string;
  /** 5: vCPUs. */
  cpu: number;
  /** 6: memory in MiB. */
  memory: number;
  /** 7: vCPUs to hot-add (always 0 from vmfactory's server). */
  cpuDelta: number;
}

/** `cache.GrpcVMStatus`. */
export interface GrpcVMStatus {
  /** 1 */
  pid: number;
  /** 2 */
  cpu: number;
  /** 3 */
  memory: number;
}

/** `cache.GrpcStatus`. */
export interface GrpcStatus {
  /** 1: the server's pid. */
  pid: number;
  /** 2: one entry per cached VM. */
  vmstatus: GrpcVMStatus[];
}

/** `cache.GrpcVMConfig`. */
export interface GrpcVMConfig {
  /** 1 */
  Data: Uint8Array;
  /** 2 */
  AgentConfig: Uint8Array;
}

/** A message that is not valid protobuf (or not the expected one). */
export class WireError extends Error {
  /** Builds the error with `message`. */
  constructor(message: string) {
    super(message);
    this.name = "WireError";
  }
}

const enum WireType {
  Varint = 0,
  Fixed64 = 1,
  Bytes = 2,
  Fixed32 = 5,
}

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder();

/** Appends protobuf fields to a growing list of chunks. */
class Writer {
  readonly #bytes: number[] = [];
  readonly #chunks: Uint8Array[] = [];
  #length = 0;

  varint(value: number): void {
    if (value < 0) { // int64 two's complement: ten bytes
      let b = BigInt.asUintN(64, BigInt(value));
      for (let i = 0; i < 9; i++, b >>= 7n) this.#bytes.push(Number(b & 0x7fn) | 0x80);
      this.#bytes.push(Number(b));
      return;
    }
    let v = value;
    while (v >= 0x80) {
      this.#bytes.push((v % 0x80) | 0x80);
      v = Math.floor(v / 0x80);
    }
    this.#bytes.push(v);
  }

  tag(field: number, type: WireType): void {
    this.varint(field * 8 + type);
  }

  /** A varint field, omitted when 0 (the proto3 default). */
  uint(field: number, value: number): void {
    if (!value) return;
    if (!Number.isInteger(value)) throw new WireError(`field ${field}: ${value} is not an integer`);
    this.tag(field, WireType.Varint);
    this.varint(value);
  }

  /** A length-delimited field, omitted when empty. */
  bytes(field: number, value: Uint8Array): void {
    if (value.length === 0) return;
    this.tag(field, WireType.Bytes);
    this.varint(value.length);
    this.#flush();
    this.#chunks.push(value);
    this.#length += value.length;
  }

  string(field: number, value: string): void {
    this.bytes(field, utf8.encode(value));
  }

  /** A nested message, always written (a repeated element may be empty). */
  message(field: number, value: Uint8Array): void {
    this.tag(field, WireType.Bytes);
    this.varint(value.length);
    this.#flush();
    this.#chunks.push(value);
    this.#length += value.length;
  }

  #flush(): void {
    if (this.#bytes.length === 0) return;
    this.#chunks.push(Uint8Array.from(this.#bytes));
    this.#length += this.#bytes.length;
    this.#bytes.length = 0;
  }

  finish(): Uint8Array {
    this.#flush();
    if (this.#chunks.length === 1) return this.#chunks[0];
    const out = new Uint8Array(this.#length);
    let at = 0;
    for (const c of this.#chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
}

/** Calls `field(number, reader)` for each field of `buf`; skips what the callback leaves unread. */
class Reader {
  at = 0;
  constructor(readonly buf: Uint8Array) {}

  varint(): number {
    let value = 0;
    let scale = 1;
    const start = this.at;
    for (let i = 0; i < 10; i++) {
      if (this.at >= this.buf.length) throw new WireError("truncated varint");
      const b = this.buf[this.at++];
      value += (b & 0x7f) * scale;
      if (b < 0x80) return i < 7 ? value : this.#wide(start);
      scale *= 0x80;
    }
    throw new WireError("varint longer than 10 bytes");
  }

  /** A varint of 8 bytes or more, read exactly: as a signed int64 (a negative value is ten bytes). */
  #wide(start: number): number {
    let v = 0n;
    for (let at = this.at - 1; at >= start; at--) v = (v << 7n) | BigInt(this.buf[at] & 0x7f);
    return Number(BigInt.asIntN(64, v));
  }

  bytes(): Uint8Array {
    const length = this.varint();
    const end = this.at + length;
    if (length < 0 || end > this.buf.length) {
      throw new WireError("truncated length-delimited field");
    }
    const out = this.buf.subarray(this.at, end);
    this.at = end;
    return out;
  }

  skip(type: number): void {
    const need = (n: number) => {
      if (this.at + n > this.buf.length) throw new WireError("truncated fixed-width field");
      this.at += n;
    };
    if (type === WireType.Varint) this.varint();
    else if (type === WireType.Fixed64) need(8);
    else if (type === WireType.Bytes) this.bytes();
    else if (type === WireType.Fixed32) need(4);
    else throw new WireError(`unsupported wire type ${type}`);
  }

  /** Reads every field; `on` returns false for a field it does not know (then skipped). */
  each(on: (field: number, type: number) => boolean): void {
    while (this.at < this.buf.length) {
      const tag = this.varint();
      const field = Math.floor(tag / 8);
      const type = tag % 8;
      if (field === 0) throw new WireError("field number 0");
      if (!on(field, type)) this.skip(type);
    }
  }
}

function expect(field: number, type: number, want: WireType): void {
  if (type !== want) throw new WireError(`field ${field} has wire type ${type}, not ${want}`);
}

/** A uint32 field: protobuf truncates a wider varint to its low 32 bits. */
function uint32(value: number): number {
  return value >>> 0 === value ? value : ((value % 2 ** 32) + 2 ** 32) % 2 ** 32;
}

/** Encodes a `GrpcVM` (missing fields: defaults). */
export function encodeGrpcVM(vm: Partial<GrpcVM>): Uint8Array {
  const w = new Writer();
  w.string(1, vm.id ?? "");
  w.bytes(2, vm.hypervisor ?? new Uint8Array());
  w.uint(3, vm.proxyPid ?? 0);
  w.string(4, vm.proxyURL ?? "");
  w.uint(5, vm.cpu ?? 0);
  w.uint(6, vm.memory ?? 0);
  w.uint(7, vm.cpuDelta ?? 0);
  return w.finish();
}

/** Decodes a `GrpcVM`; `hypervisor` is a view into `buf`. */
export function decodeGrpcVM(buf: Uint8Array): GrpcVM {
  const vm: GrpcVM = {
    id: "",
    hypervisor: new Uint8Array(),
    proxyPid: 0,
    proxyURL: "",
    cpu: 0,
    memory: 0,
    cpuDelta: 0,
  };
  const r = new Reader(buf);
  r.each((field, type) => {
    switch (field) {
      case 1:
        expect(field, type, WireType.Bytes);
        vm.id = utf8Decoder.decode(r.bytes());
        return true;
      case 2:
        expect(field, type, WireType.Bytes);
        vm.hypervisor = r.bytes();
        return true;
      case 3:
        expect(field, type, WireType.Varint);
        vm.proxyPid = r.varint();
        return true;
      case 4:
        expect(field, type, WireType.Bytes);
        vm.proxyURL = utf8Decoder.decode(r.bytes());
        return true;
      case 5:
      case 6:
      case 7: {
        expect(field, type, WireType.Varint);
        const v = uint32(r.varint());
        if (field === 5) vm.cpu = v;
        else if (field === 6) vm.memory = v;
        else vm.cpuDelta = v;
        return true;
      }
    }
    return false;
  });
  return vm;
}

function encodeVMStatus(s: GrpcVMStatus): Uint8Array {
  const w = new Writer();
  w.uint(1, s.pid);
  w.uint(2, s.cpu);
  w.uint(3, s.memory);
  return w.finish();
}

function decodeVMStatus(buf: Uint8Array): GrpcVMStatus {
  const s: GrpcVMStatus = { pid: 0, cpu: 0, memory: 0 };
  const r = new Reader(buf);
  r.each((field, type) => {
    if (field < 1 || field > 3) return false;
    expect(field, type, WireType.Varint);
    const v = r.varint();
    if (field === 1) s.pid = v;
    else if (field === 2) s.cpu = uint32(v);
    else s.memory = uint32(v);
    return true;
  });
  return s;
}

/** Encodes a `GrpcStatus`. */
export function encodeGrpcStatus(status: GrpcStatus): Uint8Array {
  const w = new Writer();
  w.uint(1, status.pid);
  for (const s of status.vmstatus) w.message(2, encodeVMStatus(s));
  return w.finish();
}

/** Decodes a `GrpcStatus`. */
export function decodeGrpcStatus(buf: Uint8Array): GrpcStatus {
  const status: GrpcStatus = { pid: 0, vmstatus: [] };
  const r = new Reader(buf);
  r.each((field, type) => {
    if (field === 1) {
      expect(field, type, WireType.Varint);
      status.pid = r.varint();
      return true;
    }
    if (field === 2) {
      expect(field, type, WireType.Bytes);
      status.vmstatus.push(decodeVMStatus(r.bytes()));
      return true;
    }
    return false;
  });
  return status;
}

/** Encodes a `GrpcVMConfig`. */
export function encodeGrpcVMConfig(config: GrpcVMConfig): Uint8Array {
  const w = new Writer();
  w.bytes(1, config.Data);
  w.bytes(2, config.AgentConfig);
  return w.finish();
}

/** Decodes a `GrpcVMConfig`; both fields are views into `buf`. */
export function decodeGrpcVMConfig(buf: Uint8Array): GrpcVMConfig {
  const config: GrpcVMConfig = { Data: new Uint8Array(), AgentConfig: new Uint8Array() };
  const r = new Reader(buf);
  r.each((field, type) => {
    if (field !== 1 && field !== 2) return false;
    expect(field, type, WireType.Bytes);
    if (field === 1) config.Data = r.bytes();
    else config.AgentConfig = r.bytes();
    return true;
  });
  return config;
}

/** Checks `buf` is a valid `google.protobuf.Empty` (any unknown fields are skipped). */
export function decodeEmpty(buf: Uint8Array): Record<string, never> {
  new Reader(buf).each(() => false);
  return {};
}

/** `message` as one uncompressed gRPC length-prefixed message (flag byte 0, 4-byte length). */
export function frameMessage(message: Uint8Array): Uint8Array<ArrayBuffer> {
  const frame = new Uint8Array(5 + message.length);
  new DataView(frame.buffer).setUint32(1, message.length);
  frame.set(message, 5);
  return frame;
}

/**
 * The message of a unary gRPC body: exactly one uncompressed length-prefixed message, whole.
 * Throws a {@link WireError} otherwise (a truncated, compressed or multi-message body).
 */
export function unframeMessage(body: Uint8Array): Uint8Array {
  if (body.length < 5) throw new WireError(`a ${body.length}-byte body holds no gRPC message`);
  if (body[0] !== 0) throw new WireError(`compressed gRPC message (flag ${body[0]})`);
  const length = new DataView(body.buffer, body.byteOffset, body.byteLength).getUint32(1);
  if (length !== body.length - 5) {
    throw new WireError(`the gRPC message says ${length} bytes; the body has ${body.length - 5}`);
  }
  return body.subarray(5);
}
