/**
 * A streaming reader of tar archives (ustar, GNU long names, pax headers) as image layers and
 * `docker save` archives hold them. The archive is hostile input: every header's checksum is
 * checked, numbers are bounded, long-name and pax records are capped, and entry types an image
 * has no use for (GNU sparse files, multi-volume parts) are refused. Names stay binary strings
 * (see `_tar_names.ts`); they are not sanitised here.
 * @module
 */
import { ImageInputError } from "./_image_input_error.ts";
import { binaryString, displayName, MAX_PATH_BYTES } from "./_tar_names.ts";

/** The kinds of entry an image may hold. */
export type TarEntryType = "file" | "link" | "symlink" | "char" | "block" | "dir" | "fifo";

/** One archive member (its data, for a file, follows and is read with {@link TarReader.data}). */
export interface TarEntry {
  /** Member name as written (binary string, not sanitised). */
  name: string;
  /** Entry type. */
  type: TarEntryType;
  /** Permission bits and set-id/sticky bits (0o7777). */
  mode: number;
  /** Owner. */
  uid: number;
  /** Group. */
  gid: number;
  /** Modification time, seconds since the epoch. */
  mtime: number;
  /** Data bytes (files only; 0 for every other type). */
  size: number;
  /** Target of a hard link (a member name) or a symbolic link. */
  linkname: string;
  /** Device numbers (char and block devices). */
  devmajor: number;
  /** Device numbers (char and block devices). */
  devminor: number;
  /** Extended attributes from pax `SCHILY.xattr.NAME` records. */
  xattrs: Map<string, Uint8Array>;
}

const BLOCK = 512;
const MAX_LONG_NAME = MAX_PATH_BYTES + 1;
const MAX_PAX = 1 << 20;
const MAX_XATTRS = 128;
const MAX_XATTR_VALUE = 64 << 10; // Linux's own limit

const TYPES: Record<string, TarEntryType> = {
  "0": "file",
  "\0": "file",
  "7": "file",
  "1": "link",
  "2": "symlink",
  "3": "char",
  "4": "block",
  "5": "dir",
  "6": "fifo",
};

const UNSUPPORTED: Record<string, string> = {
  S: "a GNU sparse file",
  M: "a multi-volume continuation",
  D: "a GNU dump directory",
};

/** Where a {@link TarReader} gets its bytes: a stream, or a file it may seek in. */
interface ByteSource {
  /** Bytes consumed so far. */
  position: number;
  /** Exactly `n` bytes; undefined at the end; throws when it ends within them. */
  read(n: number): Promise<Uint8Array | undefined>;
  /** Hands the next `n` bytes to `sink` in pieces (or skips them); throws when it ends first. */
  pass(n: number, sink?: (part: Uint8Array) => void | Promise<void>): Promise<void>;
  /** Skips up to `n` bytes; false when the end came first. */
  skip(n: number): Promise<boolean>;
  /** Reads the rest and drops it. */
  drain(): Promise<void>;
  /** Stops reading. */
  cancel(): Promise<void>;
}

/** Pulls exact byte counts out of a stream of chunks, without copying data it passes on. */
/** `n` bytes of `source` in one buffer, through its `pass`. */
async function gather(source: ByteSource, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let got = 0;
  await source.pass(n, (part) => {
    out.set(part, got);
    got += part.length;
  });
  return out;
}

class StreamSource implements ByteSource {
  position = 0;
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #chunk: Uint8Array = new Uint8Array(0);
  #pos = 0;
  #done = false;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.getReader();
  }

  async #fill(): Promise<boolean> {
    while (this.#pos >= this.#chunk.length) {
      if (this.#done) return false;
      const { done, value } = await this.#reader.read();
      if (done) {
        this.#done = true;
        return false;
      }
      this.#chunk = value;
      this.#pos = 0;
    }
    return true;
  }

  async read(n: number): Promise<Uint8Array | undefined> {
    if (!await this.#fill()) return undefined;
    if (this.#chunk.length - this.#pos >= n) {
      const out = this.#chunk.subarray(this.#pos, this.#pos + n);
      this.#pos += n;
      this.position += n;
      return out;
    }
    return await gather(this, n);
  }

  async pass(n: number, sink?: (part: Uint8Array) => void | Promise<void>): Promise<void> {
    while (n > 0) {
      if (!await this.#fill()) throw new ImageInputError("the tar archive is truncated");
      const take = Math.min(n, this.#chunk.length - this.#pos);
      const part = this.#chunk.subarray(this.#pos, this.#pos + take);
      this.#pos += take;
      this.position += take;
      n -= take;
      if (sink) await sink(part);
    }
  }

  async skip(n: number): Promise<boolean> {
    while (n > 0) {
      if (!await this.#fill()) return false;
      const take = Math.min(n, this.#chunk.length - this.#pos);
      this.#pos += take;
      this.position += take;
      n -= take;
    }
    return true;
  }

  async drain(): Promise<void> {
    this.#pos = this.#chunk.length;
    while (!this.#done) {
      const { done } = await this.#reader.read();
      this.#done = done;
    }
  }

  async cancel(): Promise<void> {
    this.#done = true;
    await this.#reader.cancel().catch(() => {});
  }
}

/** Reads headers from a file and seeks over data it is not asked for. */
class FileSource implements ByteSource {
  position = 0;
  #file: Deno.FsFile;
  #size: number;

  constructor(file: Deno.FsFile, size: number) {
    this.#file = file;
    this.#size = size;
  }

  async read(n: number): Promise<Uint8Array | undefined> {
    if (this.position >= this.#size) return undefined;
    return await gather(this, n);
  }

  async pass(n: number, sink?: (part: Uint8Array) => void | Promise<void>): Promise<void> {
    if (this.position + n > this.#size) throw new ImageInputError("the tar archive is truncated");
    if (!sink) {
      this.position += n;
      return;
    }
    await this.#file.seek(this.position, Deno.SeekMode.Start);
    while (n > 0) {
      const buffer = new Uint8Array(Math.min(n, 1 << 20));
      const got = await this.#file.read(buffer);
      if (!got) throw new ImageInputError("the tar archive is truncated");
      this.position += got;
      n -= got;
      await sink(buffer.subarray(0, got));
    }
  }

  skip(n: number): Promise<boolean> {
    const ok = this.position + n <= this.#size;
    this.position = Math.min(this.#size, this.position + n);
    return Promise.resolve(ok);
  }

  drain(): Promise<void> {
    this.position = this.#size;
    return Promise.resolve();
  }

  cancel(): Promise<void> {
    return this.drain();
  }
}

function cString(block: Uint8Array, start: number, length: number): string {
  const field = block.subarray(start, start + length);
  const end = field.indexOf(0);
  return binaryString(end < 0 ? field : field.subarray(0, end));
}

/** An octal (or GNU base-256) number field; NaN when malformed. */
function numberField(block: Uint8Array, start: number, length: number): number {
  const field = block.subarray(start, start + length);
  if (field[0] & 0x80) {
    if (field[0] !== 0x80) return NaN; // negative, or beyond 2^53
    let value = 0;
    for (const byte of field.subarray(1)) value = value * 256 + byte;
    return Number.isSafeInteger(value) ? value : NaN;
  }
  const text = binaryString(field).replace(/[\0 ]+$/, "").replace(/^ +/, "");
  if (text === "") return 0;
  return /^[0-7]+$/.test(text) ? parseInt(text, 8) : NaN;
}

function checksumOk(block: Uint8Array): boolean {
  const stored = numberField(block, 148, 8);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const byte = i >= 148 && i < 156 ? 0x20 : block[i];
    unsigned += byte;
    signed += byte > 127 ? byte - 256 : byte;
  }
  return stored === unsigned || stored === signed;
}

/** The records of a pax extended header. */
function paxRecords(data: Uint8Array): Map<string, Uint8Array> {
  const records = new Map<string, Uint8Array>();
  let pos = 0;
  while (pos < data.length) {
    const space = data.indexOf(0x20, pos);
    const length = space > pos && space - pos <= 8
      ? Number(binaryString(data.subarray(pos, space)))
      : NaN;
    if (!Number.isSafeInteger(length) || length <= space - pos || pos + length > data.length) {
      if (data.subarray(pos).every((b) => b === 0)) break; // padding some writers leave
      throw new ImageInputError("the tar archive has a malformed pax header");
    }
    const record = data.subarray(space + 1, pos + length);
    const equals = record.indexOf(0x3d);
    if (equals <= 0 || record[record.length - 1] !== 0x0a) {
      throw new ImageInputError("the tar archive has a malformed pax record");
    }
    records.set(binaryString(record.subarray(0, equals)), record.subarray(equals + 1, -1));
    pos += length;
  }
  return records;
}

function paxNumber(value: Uint8Array, what: string): number {
  const text = binaryString(value);
  const number = /^-?\d+(\.\d*)?$/.test(text) ? Math.floor(Number(text)) : NaN;
  if (!Number.isSafeInteger(number)) {
    throw new ImageInputError(`the tar archive has a malformed pax ${what}`);
  }
  return number;
}

/**
 * Reads the entries of one tar stream in order. Call {@link next} for each entry; its data is
 * skipped unless {@link data} is called before the next {@link next}.
 * @example
 * ```ts
 * const tar = new TarReader(stream);
 * for (let e; (e = await tar.next());) if (e.type === "file") await tar.data((part) => use(part));
 * ```
 */
export class TarReader {
  #bytes: ByteSource;
  #pending = 0;
  #ended = false;

  /**
   * Reads from a stream, or from a file of `size` bytes, seeking over the data of entries whose
   * {@link data} is not asked for (listing a big archive then reads its headers only).
   */
  constructor(input: ReadableStream<Uint8Array> | { file: Deno.FsFile; size: number }) {
    this.#bytes = input instanceof ReadableStream
      ? new StreamSource(input)
      : new FileSource(input.file, input.size);
  }

  /** Where the data of the entry {@link next} returned last starts (bytes into the archive). */
  get dataOffset(): number {
    return this.#bytes.position;
  }

  /** The next entry; undefined at the end of the archive (the stream is then read to its end). */
  async next(): Promise<TarEntry | undefined> {
    await this.#skipPending();
    let longName: string | undefined;
    let longLink: string | undefined;
    let pax: Map<string, Uint8Array> | undefined;
    while (!this.#ended) {
      const block = await this.#bytes.read(BLOCK);
      if (!block || block.every((b) => b === 0)) {
        this.#ended = true;
        await this.#bytes.drain(); // the end blocks and the padding of the last record
        break;
      }
      if (!checksumOk(block)) {
        throw new ImageInputError("the tar archive has a header with a bad checksum");
      }
      const flag = String.fromCharCode(block[156]);
      let size = numberField(block, 124, 12);
      if (Number.isNaN(size)) throw new ImageInputError("the tar archive has a malformed size");
      const paxSize = pax?.get("size");
      if (paxSize && (flag in TYPES)) size = paxNumber(paxSize, "size");
      if (flag === "L" || flag === "K" || flag === "x") {
        if (size > (flag === "x" ? MAX_PAX : MAX_LONG_NAME)) {
          throw new ImageInputError("the tar archive has an over-long name or pax header");
        }
        const data = await this.#bytes.read(size) ?? new Uint8Array(0);
        await this.#bytes.pass(padding(size));
        if (flag === "x") pax = paxRecords(data);
        else if (flag === "L") longName = cString(data, 0, data.length);
        else longLink = cString(data, 0, data.length);
        continue;
      }
      const type = TYPES[flag];
      if (!type) {
        if (UNSUPPORTED[flag]) {
          throw new ImageInputError(`the tar archive holds ${UNSUPPORTED[flag]}, not supported`);
        }
        if (flag !== "g" && flag !== "V" && flag !== "N") {
          throw new ImageInputError(
            `the tar archive has an entry of unknown type ${JSON.stringify(flag)}`,
          );
        }
        await this.#bytes.pass(size + padding(size)); // global pax header, volume label: ignored
        pax = undefined;
        continue;
      }
      const entry = this.#entry(block, type, size, longName, longLink, pax);
      this.#pending = entry.type === "file" ? size : 0;
      // header-only types carry no data whatever their size field says (as Go's archive/tar)
      if (entry.type !== "file") await this.#bytes.pass(size + padding(size));
      return entry;
    }
    return undefined;
  }

  /**
   * Hands the current file entry's data to `sink`, in pieces; call once, before {@link next}.
   * An archive that ends right after the data, without padding or end blocks, ends there (as Go's
   * archive/tar reads it, and as umoci 0.4 writes layers).
   */
  async data(sink: (part: Uint8Array) => void | Promise<void>): Promise<void> {
    const size = this.#pending;
    this.#pending = 0;
    await this.#bytes.pass(size, sink);
    if (!await this.#bytes.skip(padding(size))) this.#ended = true;
  }

  /** Stops reading: the underlying stream is cancelled. */
  async cancel(): Promise<void> {
    await this.#bytes.cancel();
  }

  /** Skips the data of the last entry that was not read (a file source seeks over it). */
  async #skipPending(): Promise<void> {
    const size = this.#pending;
    this.#pending = 0;
    await this.#bytes.pass(size);
    if (!await this.#bytes.skip(padding(size))) this.#ended = true;
  }

  #entry(
    block: Uint8Array,
    type: TarEntryType,
    size: number,
    longName: string | undefined,
    longLink: string | undefined,
    pax: Map<string, Uint8Array> | undefined,
  ): TarEntry {
    const ustar = cString(block, 257, 6) === "ustar" && cString(block, 263, 2) === "00";
    const prefix = ustar ? cString(block, 345, 155) : "";
    let name = longName ?? (prefix ? `${prefix}/` : "") + cString(block, 0, 100);
    let linkname = longLink ?? cString(block, 157, 100);
    const numbers = {
      mode: numberField(block, 100, 8),
      uid: numberField(block, 108, 8),
      gid: numberField(block, 116, 8),
      mtime: numberField(block, 136, 12),
      devmajor: numberField(block, 329, 8),
      devminor: numberField(block, 337, 8),
    };
    const xattrs = new Map<string, Uint8Array>();
    for (const [key, value] of pax ?? []) {
      if (key === "path") name = binaryString(value);
      else if (key === "linkpath") linkname = binaryString(value);
      else if (key === "uid" || key === "gid" || key === "mtime") {
        numbers[key] = paxNumber(value, key);
      } else if (key.startsWith("SCHILY.xattr.")) {
        if (key.length > 13 + 255 || value.length > MAX_XATTR_VALUE) {
          throw new ImageInputError(`the member ${displayName(name)} has an over-long xattr`);
        }
        xattrs.set(key.slice(13), value);
      } else if (key.startsWith("GNU.sparse.")) {
        throw new ImageInputError("the tar archive holds a GNU sparse file, not supported");
      }
    }
    if (xattrs.size > MAX_XATTRS) {
      throw new ImageInputError(`the member ${displayName(name)} has too many xattrs`);
    }
    for (const [key, value] of Object.entries(numbers)) {
      if (Number.isNaN(value) || (key !== "mtime" && value > 0xffffffff)) {
        throw new ImageInputError(`the member ${displayName(name)} has a malformed ${key}`);
      }
    }
    if (name.length > MAX_PATH_BYTES || linkname.length > MAX_PATH_BYTES) {
      throw new ImageInputError(`the member ${displayName(name)} has an over-long name`);
    }
    // old tars mark folders by a trailing slash only
    const realType = type === "file" && name.endsWith("/") ? "dir" : type;
    return {
      name,
      type: realType,
      mode: numbers.mode & 0o7777,
      uid: numbers.uid,
      gid: numbers.gid,
      mtime: Math.max(0, numbers.mtime),
      size: realType === "file" ? size : 0,
      linkname,
      devmajor: numbers.devmajor,
      devminor: numbers.devminor,
      xattrs,
    };
  }
}

/** Bytes that pad `size` to a whole block. */
export function padding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}
