/**
 * Finds where each key of an already-validated TOML document is written, without a full parser
 * (the CLI's fast paths must not load the linter's AST parser).
 * @module
 */

/** A key's span: 1-based line and column, end exclusive. */
export interface KeySpan {
  line: number;
  column: number;
  endLine: number;
  endColumn: number;
}

/** Joins a key path into a map key. */
export function pathKey(keyPath: readonly string[]): string {
  return keyPath.join("\u0000");
}

/**
 * Maps every key path of `text` (tables, dotted keys, inline-table keys; array tables as
 * `name, index`) to the span of the key that defines it. `text` must be valid TOML.
 */
export function locateKeys(text: string): Map<string, KeySpan> {
  return new Locator(text).run();
}

const BARE = /[A-Za-z0-9_-]/;

class Locator {
  #i = 0;
  #lineStarts: number[] = [0];
  #found = new Map<string, KeySpan>();
  #arrayCounts = new Map<string, number>();

  constructor(readonly text: string) {
    for (let i = 0; i < text.length; i++) if (text[i] === "\n") this.#lineStarts.push(i + 1);
  }

  run(): Map<string, KeySpan> {
    const t = this.text;
    let table: string[] = [];
    while (this.#i < t.length) {
      const c = t[this.#i];
      if (c === " " || c === "\t" || c === "\r" || c === "\n") this.#i++;
      else if (c === "#") this.#skipComment();
      else if (c === "[") {
        const array = t[this.#i + 1] === "[";
        this.#i += array ? 2 : 1;
        this.#spaces();
        const start = this.#i;
        const keys = this.#key();
        for (let n = 1; n <= keys.length; n++) this.#record(keys.slice(0, n), start, this.#i);
        this.#spaces();
        this.#i += array ? 2 : 1;
        if (array) {
          const n = (this.#arrayCounts.get(pathKey(keys)) ?? -1) + 1;
          this.#arrayCounts.set(pathKey(keys), n);
          table = [...keys, String(n)];
          this.#record(table, start, start);
        } else table = keys;
      } else this.#keyValue(table);
    }
    return this.#found;
  }

  #keyValue(prefix: string[] | undefined): void {
    const start = this.#i;
    const keys = this.#key();
    const end = this.#i;
    if (keys.length === 0) {
      this.#i++; // not a key: skip the character (never happens in valid TOML)
      return;
    }
    const path = prefix && [...prefix, ...keys];
    if (path) {
      for (let n = prefix.length + 1; n <= path.length; n++) {
        this.#record(path.slice(0, n), start, end);
      }
    }
    this.#spaces();
    if (this.text[this.#i] === "=") this.#i++;
    this.#spaces();
    this.#value(path);
  }

  #key(): string[] {
    const t = this.text;
    const keys: string[] = [];
    for (;;) {
      this.#spaces();
      const c = t[this.#i];
      if (c === '"' || c === "'") keys.push(this.#string());
      else {
        const start = this.#i;
        while (this.#i < t.length && BARE.test(t[this.#i])) this.#i++;
        if (this.#i === start) return keys;
        keys.push(t.slice(start, this.#i));
      }
      const save = this.#i;
      this.#spaces();
      if (t[this.#i] !== ".") {
        this.#i = save;
        return keys;
      }
      this.#i++;
    }
  }

  #value(path: string[] | undefined): void {
    const t = this.text;
    const c = t[this.#i];
    if (c === '"' || c === "'") this.#string();
    else if (c === "[") {
      this.#i++;
      for (;;) {
        this.#blank();
        if (this.#i >= t.length || t[this.#i] === "]") break;
        if (t[this.#i] === ",") this.#i++;
        else this.#value(undefined);
      }
      this.#i++;
    } else if (c === "{") {
      this.#i++;
      for (;;) {
        this.#spaces();
        if (this.#i >= t.length || t[this.#i] === "}") break;
        if (t[this.#i] === ",") this.#i++;
        else this.#keyValue(path);
      }
      this.#i++;
    } else {
      while (this.#i < t.length && !",]}\n\r#".includes(t[this.#i])) this.#i++;
    }
  }

  /** Reads a basic or literal string (single or multi-line) and returns its value (keys only). */
  #string(): string {
    const t = this.text;
    const q = t[this.#i];
    const multi = t.startsWith(q.repeat(3), this.#i);
    const start = this.#i;
    this.#i += multi ? 3 : 1;
    for (; this.#i < t.length; this.#i++) {
      const c = t[this.#i];
      if (c === "\\" && q === '"') this.#i++;
      else if (c === q && (!multi || t.startsWith(q.repeat(3), this.#i))) {
        if (multi) {
          this.#i += 3;
          while (t[this.#i] === q) this.#i++;
        } else this.#i++;
        break;
      }
    }
    const raw = t.slice(start, this.#i);
    if (q === "'") return raw.slice(1, -1);
    try {
      return JSON.parse(
        raw.replace(/\\U([0-9A-Fa-f]{8})/g, (_, h) => String.fromCodePoint(parseInt(h, 16))),
      );
    } catch {
      return raw.slice(1, -1);
    }
  }

  #spaces(): void {
    while (this.text[this.#i] === " " || this.text[this.#i] === "\t") this.#i++;
  }

  /** Skips whitespace, newlines and comments (inside arrays). */
  #blank(): void {
    for (;;) {
      const c = this.text[this.#i];
      if (c === " " || c === "\t" || c === "\r" || c === "\n") this.#i++;
      else if (c === "#") this.#skipComment();
      else return;
    }
  }

  #skipComment(): void {
    while (this.#i < this.text.length && this.text[this.#i] !== "\n") this.#i++;
  }

  #record(keyPath: string[], start: number, end: number): void {
    const k = pathKey(keyPath);
    if (this.#found.has(k)) return;
    const [line, column] = this.#pos(start);
    const [endLine, endColumn] = this.#pos(end);
    this.#found.set(k, { line, column, endLine, endColumn });
  }

  #pos(offset: number): [number, number] {
    let lo = 0, hi = this.#lineStarts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.#lineStarts[mid] <= offset) lo = mid;
      else hi = mid - 1;
    }
    return [lo + 1, offset - this.#lineStarts[lo] + 1];
  }
}
