/**
 * HPACK (RFC 7541), as much as a unary gRPC client needs: header blocks are encoded as literals
 * without indexing or Huffman coding (always valid, and a request is a few short fields), and
 * decoded in full (static and dynamic table, Huffman-coded strings), since a server may use all
 * of it. A decoding error is a {@link HpackError}: the connection's compression state is lost.
 * @module
 */

/** A header block that is not valid HPACK (a COMPRESSION_ERROR of the connection). */
export class HpackError extends Error {
  /** Builds the error with `message`. */
  constructor(message: string) {
    super(message);
    this.name = "HpackError";
  }
}

/** A header field: lowercase name, value. */
export type HeaderField = [name: string, value: string];

const utf8 = new TextEncoder();
const latin1 = new TextDecoder("latin1");

/** Literal header fields without indexing, new names, no Huffman coding (RFC 7541 6.2.2). */
export function encodeHeaderBlock(fields: HeaderField[]): Uint8Array {
  const out: number[] = [];
  const string = (s: string) => {
    const bytes = utf8.encode(s);
    integer(out, 0, 7, bytes.length);
    for (const b of bytes) out.push(b);
  };
  for (const [name, value] of fields) {
    out.push(0);
    string(name);
    string(value);
  }
  return new Uint8Array(out);
}

/** Appends `value` as an integer with an `n`-bit prefix after the bits `flags` (RFC 7541 5.1). */
function integer(out: number[], flags: number, n: number, value: number): void {
  const max = (1 << n) - 1;
  if (value < max) return void out.push(flags | value);
  out.push(flags | max);
  for (value -= max; value >= 128; value = Math.floor(value / 128)) out.push((value % 128) | 128);
  out.push(value);
}

/** RFC 7541 Appendix A; index 1 is the first entry. */
const STATIC_TABLE: readonly HeaderField[] = [
  [":authority", ""],
  [":method", "GET"],
  [":method", "POST"],
  [":path", "/"],
  [":path", "/index.html"],
  [":scheme", "http"],
  [":scheme", "https"],
  [":status", "200"],
  [":status", "204"],
  [":status", "206"],
  [":status", "304"],
  [":status", "400"],
  [":status", "404"],
  [":status", "500"],
  ["accept-charset", ""],
  ["accept-encoding", "gzip, deflate"],
  ...[
    "accept-language",
    "accept-ranges",
    "accept",
    "access-control-allow-origin",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-range",
    "content-type",
    "cookie",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "link",
    "location",
    "max-forwards",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "refresh",
    "retry-after",
    "server",
    "set-cookie",
    "strict-transport-security",
    "transfer-encoding",
    "user-agent",
    "vary",
    "via",
    "www-authenticate",
  ].map((name): HeaderField => [name, ""]),
];

/**
 * The Huffman code's lengths in bits for symbols 0…256 (256 is EOS), RFC 7541 Appendix B, one
 * letter each: A = 5 bits … Z = 30. The code is canonical (codes of one length are consecutive,
 * in symbol order, after those of shorter lengths), so the lengths define it.
 */
const HUFFMAN_LENGTHS =
  "ISXXXXXXXTZXXZXXXXXXXXZXXXXXXXXXBFFHIBDGFFDGDBBBAAABBBBBBBCDKBHFIBCCCCCCCCCCCCCCCCCCCCCCDCDIOI" +
  "JBKABABABBBACCBBBABCBAABCCCCCKGJIXPRPPRRRSRSSSSSTSTTRSTSSSSQRSRSSTRQPRRSSQSRRTQRSSQQRQSRSSPRRRSRR" +
  "SVVPORSRUVVVWWVTUOQVWWVWTQQVVXWWWPTPQRQQSRRUUTTVSVWVVWWWWWXWWWWWVZ";

const EOS = 256;

/** Canonical decoding tables: per length, the first code and where its symbols start. */
const huffman = (() => {
  const lengths = [...HUFFMAN_LENGTHS].map((c) => c.charCodeAt(0) - 65 + 5);
  const symbols = lengths.map((_, s) => s).sort((a, b) => lengths[a] - lengths[b] || a - b);
  const first = new Array<number>(31).fill(0), count = new Array<number>(31).fill(0);
  const start = new Array<number>(31).fill(0);
  let code = 0, prev = 0;
  symbols.forEach((s, i) => {
    const len = lengths[s];
    code = i === 0 ? 0 : (code + 1) * 2 ** (len - prev);
    if (count[len]++ === 0) [first[len], start[len]] = [code, i];
    prev = len;
  });
  return { symbols, first, count, start };
})();

function huffmanDecode(bytes: Uint8Array): string {
  const out: number[] = [];
  let code = 0, len = 0;
  for (const byte of bytes) {
    for (let bit = 7; bit >= 0; bit--) {
      code = code * 2 + ((byte >> bit) & 1);
      len++;
      const offset = code - huffman.first[len];
      if (len >= 5 && offset >= 0 && offset < huffman.count[len]) {
        const symbol = huffman.symbols[huffman.start[len] + offset];
        if (symbol === EOS) throw new HpackError("EOS in a Huffman-coded string");
        out.push(symbol);
        code = len = 0;
      } else if (len >= 30) throw new HpackError("invalid Huffman code");
    }
  }
  // the padding is the most significant bits of EOS (all ones), shorter than a byte
  if (len > 7 || code !== 2 ** len - 1) throw new HpackError("invalid Huffman padding");
  return latin1.decode(new Uint8Array(out));
}

/**
 * Decodes the header blocks of one connection, in order (they share the dynamic table). A header
 * list over `maxListBytes` (as HTTP/2 counts it: name + value + 32 per field) is an error: a small
 * block can name large table entries many times.
 */
export class HpackDecoder {
  #table: HeaderField[] = []; // newest first
  #size = 0;
  #max: number;

  /** A decoder whose dynamic table may hold `maxSize` bytes (SETTINGS_HEADER_TABLE_SIZE). */
  constructor(readonly maxSize = 4096, readonly maxListBytes = 64 * 1024) {
    this.#max = maxSize;
  }

  /** The dynamic table's size as RFC 7541 4.1 counts it. */
  get tableSize(): number {
    return this.#size;
  }

  /** The fields of `block` (a whole header block: HEADERS and CONTINUATION fragments joined). */
  decode(block: Uint8Array): HeaderField[] {
    const fields: HeaderField[] = [];
    let at = 0, listBytes = 0;
    const push = (f: HeaderField) => {
      listBytes += f[0].length + f[1].length + 32;
      if (listBytes > this.maxListBytes) {
        throw new HpackError(`a header list over ${this.maxListBytes} bytes`);
      }
      fields.push(f);
    };
    const int = (n: number): number => {
      if (at >= block.length) throw new HpackError("truncated integer");
      const max = (1 << n) - 1;
      let value = block[at++] & max;
      if (value < max) return value;
      for (let scale = 1;; scale *= 128) {
        if (at >= block.length) throw new HpackError("truncated integer");
        if (scale > 2 ** 21) throw new HpackError("integer too large");
        const b = block[at++];
        value += (b & 127) * scale;
        if (b < 128) return value;
      }
    };
    const string = (): string => {
      const huffmanCoded = at < block.length && (block[at] & 0x80) !== 0;
      const length = int(7);
      if (at + length > block.length) throw new HpackError("truncated string");
      const bytes = block.subarray(at, at += length);
      return huffmanCoded ? huffmanDecode(bytes) : latin1.decode(bytes);
    };
    const field = (index: number): HeaderField => {
      const entry = index <= STATIC_TABLE.length
        ? STATIC_TABLE[index - 1]
        : this.#table[index - STATIC_TABLE.length - 1];
      if (index === 0 || !entry) throw new HpackError(`no header table entry ${index}`);
      return entry;
    };
    const literal = (n: number): HeaderField => {
      const index = int(n);
      const name = index === 0 ? string() : field(index)[0];
      return [name, string()];
    };
    while (at < block.length) {
      const b = block[at];
      if (b & 0x80) push(field(int(7)));
      else if (b & 0x40) {
        const f = literal(6);
        push(f);
        this.#add(f);
      } else if (b & 0x20) {
        if (fields.length > 0) throw new HpackError("table size update after a header field");
        const size = int(5);
        if (size > this.maxSize) throw new HpackError(`table size ${size} over ${this.maxSize}`);
        this.#max = size;
        this.#evict(0);
      } else push(literal(4)); // without indexing, or never indexed
    }
    return fields;
  }

  #add(f: HeaderField): void {
    const size = f[0].length + f[1].length + 32;
    this.#evict(size);
    if (size > this.#max) return; // larger than the table: it empties it (RFC 7541 4.4)
    this.#table.unshift(f);
    this.#size += size;
  }

  /** Evicts the oldest entries until `room` more bytes fit. */
  #evict(room: number): void {
    while (this.#table.length > 0 && this.#size + room > this.#max) {
      const [name, value] = this.#table.pop()!;
      this.#size -= name.length + value.length + 32;
    }
  }
}
