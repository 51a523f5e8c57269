/**
 * The nesting cap of configuration files, checked before any parser sees the text: the parsers
 * and the code after them walk keys part by part, and a hostile file with one 8000-part dotted key
 * would overflow their stacks or make them quadratic. Kata's own keys are at most 4 levels deep.
 * @module
 */

/**
 * Most levels a value may sit below the top of a file: each part of a table header or dotted key,
 * each inline table key and each array level counts one (`[hypervisor.qemu.factory] x = 1` is 4).
 */
export const MAX_KEY_DEPTH = 32;

/** Where a file nests too deep: 1-based span (end exclusive) and why. */
export interface TooDeep {
  line: number;
  column: number;
  endLine: number;
  endColumn: number;
  message: string;
}

const SPACE = new Set([" ", "\t", "\r"]);
/** Characters that end a bare key part or a bare value (number, boolean, date). */
const DELIMITER = new Set([
  " ",
  "\t",
  "\r",
  "\n",
  "=",
  ".",
  ",",
  "[",
  "]",
  "{",
  "}",
  "#",
  '"',
  "'",
]);

type Frame = { kind: "array" | "table"; depth: number };

/**
 * Finds the first place `text` nests deeper than `max` levels, in one pass over the text (no
 * recursion, any input: invalid TOML is scanned as far as it makes sense and never throws).
 * @example
 * ```ts
 * findTooDeep("a.b.c = 1\n", 2)?.message; // "the key is 3 levels deep ..."
 * ```
 */
export function findTooDeep(text: string, max: number = MAX_KEY_DEPTH): TooDeep | undefined {
  const stack: Frame[] = [];
  let tableDepth = 0; // parts of the last [header]
  let keyDepth = 0; // depth of the key whose value is being read
  let expect: "key" | "value" | "after" = "key";
  let i = 0;

  const skipString = () => {
    const q = text[i];
    const multi = text.startsWith(q + q + q, i);
    i += multi ? 3 : 1;
    while (i < text.length) {
      const c = text[i];
      if (c === "\\" && q === '"') i += 2;
      else if (!multi && c === "\n") return; // unterminated: the line ends it
      else if (multi ? text.startsWith(q + q + q, i) : c === q) {
        i += multi ? 3 : 1;
        while (multi && text[i] === q) i++;
        return;
      } else i++;
    }
  };
  /** Reads a dotted key; returns its number of parts (0 when there is none here). */
  const readKey = () => {
    let parts = 0;
    for (;;) {
      while (SPACE.has(text[i])) i++;
      const c = text[i];
      if (c === '"' || c === "'") skipString();
      else {
        const start = i;
        while (i < text.length && !DELIMITER.has(text[i])) i++;
        if (i === start) return parts;
      }
      parts++;
      const save = i;
      while (SPACE.has(text[i])) i++;
      if (text[i] !== ".") {
        i = save;
        return parts;
      }
      i++;
    }
  };
  const tooDeep = (start: number, end: number, message: string): TooDeep => {
    const [line, column] = position(text, start);
    const [endLine, endColumn] = position(text, Math.max(end, start + 1));
    return { line, column, endLine, endColumn, message };
  };

  while (i < text.length) {
    const c = text[i];
    const top = stack.at(-1);
    if (SPACE.has(c)) i++;
    else if (c === "\n") {
      i++;
      if (!top) expect = "key";
    } else if (c === "#") {
      const eol = text.indexOf("\n", i); // comments are most of a Kata file: one search, not a loop
      i = eol < 0 ? text.length : eol;
    } else if (expect === "key") {
      if (!top && c === "[") {
        i += text[i + 1] === "[" ? 2 : 1;
        const start = i;
        tableDepth = readKey();
        if (tableDepth > max) {
          return tooDeep(start, i, `the table is ${tableDepth} levels deep; ${limit(max)}`);
        }
        expect = "after";
      } else if (c === "}" && top?.kind === "table") {
        i++;
        stack.pop();
        expect = "after";
      } else {
        const start = i;
        const parts = readKey();
        if (parts === 0) {
          i++; // not a key: skip the character
          continue;
        }
        keyDepth = (top ? top.depth : tableDepth) + parts;
        if (keyDepth > max) {
          return tooDeep(start, i, `the key is ${keyDepth} levels deep; ${limit(max)}`);
        }
        while (SPACE.has(text[i])) i++;
        if (text[i] === "=") i++;
        expect = "value";
      }
    } else if (expect === "value") {
      if (c === "]" && top?.kind === "array") {
        i++;
        stack.pop();
        expect = "after";
        continue;
      }
      const depth = top?.kind === "array" ? top.depth + 1 : keyDepth;
      if (depth > max) {
        return tooDeep(i, i + 1, `values are nested ${depth} levels deep; ${limit(max)}`);
      }
      if (c === "[" || c === "{") {
        i++;
        stack.push({ kind: c === "[" ? "array" : "table", depth });
        expect = c === "[" ? "value" : "key";
      } else if (c === '"' || c === "'") {
        skipString();
        expect = "after";
      } else {
        const start = i;
        while (i < text.length && !DELIMITER.has(text[i])) i++;
        if (i === start) i++; // a stray delimiter
        expect = "after";
      }
    } else {
      i++;
      if (c === "," && top) expect = top.kind === "array" ? "value" : "key";
      else if ((c === "]" && top?.kind === "array") || (c === "}" && top?.kind === "table")) {
        stack.pop();
      }
    }
  }
  return undefined;
}

function limit(max: number): string {
  return `vmfactory accepts at most ${max} (Kata's own keys need 4)`;
}

/** 1-based line and column of `offset` (one pass; called once per file). */
function position(text: string, offset: number): [number, number] {
  let line = 1, lineStart = 0;
  for (let i = text.indexOf("\n"); i >= 0 && i < offset; i = text.indexOf("\n", i + 1)) {
    line++;
    lineStart = i + 1;
  }
  return [line, offset - lineStart + 1];
}
