/**
 * A shortcut for the plain TOML that Kata's configuration files are written in: comment lines,
 * `[table]` and `[[array]]` headers of bare keys, and `key = value` lines whose value is a string
 * without escapes, a decimal number, a boolean or a one-line array of such strings. Such a file is
 * read line by line with a few regular expressions, many times faster than the full parser on a
 * cold start (and without loading it). Anything else (indentation, escapes, quoted or dotted keys,
 * inline tables, values over several lines, trailing comments, CRLF, a last line without a
 * newline, a key or table defined twice...) is declined, and the full parser reads the file. What
 * the shortcut accepts, it reads exactly as the full parser does.
 * @module
 */
import { ignoreComments } from "./ignore_comments.ts";
import type { Entry, ParsedDocument, TableDef, ValueKind } from "./parse_document.ts";
import type { Location } from "./types.ts";

/** Control characters other than tab and LF: errors even in comments, or CR (CRLF files). */
// deno-lint-ignore no-control-regex -- finding control characters is the point
const UNSAFE = /[\x00-\x08\x0b-\x1f\x7f]/;
const BLANK_OR_COMMENT = /^[ \t]*(?:#|$)/;
/** At most 8 parts, so that no accepted file comes near `MAX_KEY_DEPTH`. */
const HEADER = /^(\[\[?)([A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+){0,7})(\]\]?)[ \t]*$/;
/** No backtracking over the value (`s`: `.` is any character): its trailing blanks are cut after. */
const KEY_VALUE = /^([A-Za-z0-9_-]+)([ \t]*=[ \t]*)(.*)$/s;
/** A basic string of printable ASCII without escapes. */
const STRING = /^"[ !#-[\]-~]*"$/;
/** Not "-0", which the full parser reads as 0; the values are computed as it does. */
const INTEGER = /^(?:0|-?[1-9][0-9]*)$/;
const FLOAT = /^-?(?:0|[1-9][0-9]*)\.[0-9]+$/;
const STRINGS = /^\[[ \t]*(?:"[ !#-[\]-~]*"[ \t]*(?:,[ \t]*"[ !#-[\]-~]*"[ \t]*)*(?:,[ \t]*)?)?\]$/;
const ELEMENT = /"([ !#-[\]-~]*)"/g;

/** What a key names so far, and the keys below it. */
interface Node {
  /** A value, a table only implied by a header below it, a table, an array of tables. */
  kind: "value" | "implied" | "table" | "array";
  /** The keys of the table (of an array's last element: the only one later headers reach). */
  children: Map<string, Node>;
  /** How many elements an array of tables has. */
  length: number;
}

const node = (kind: Node["kind"]): Node => ({ kind, children: new Map(), length: 0 });

/**
 * Parses `text` (the contents of `path`) as the full parser would (`parseFully`, same entries and
 * tables in the same order), or returns undefined when `text` is not plain: then the full parser
 * must read it, and reports any error. Never throws.
 */
export function parsePlainToml(path: string, text: string): ParsedDocument | undefined {
  // a lone surrogate is an error too, in a comment as anywhere
  if (UNSAFE.test(text) || !text.isWellFormed()) return undefined;
  const entries: Entry[] = [];
  const tables: TableDef[] = [];
  const root = node("table");
  let table: { keyPath: string[]; node: Node } = { keyPath: [], node: root };
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line === "" || line[0] === "#") continue;
    if (line[0] === " " || line[0] === "\t") {
      if (BLANK_OR_COMMENT.test(line)) continue;
      return undefined; // indented
    }
    if (i === lines.length - 1) return undefined; // no newline after it: the full parser's spans differ
    if (line[0] === "[") {
      const header = HEADER.exec(line);
      if (!header) return undefined;
      const [, open, name, close] = header;
      if (open.length !== close.length) return undefined;
      const resolved = resolveTable(root, name.split("."), open.length === 2);
      if (!resolved) return undefined;
      const { keyPath } = resolved;
      const at = span(path, i + 1, open.length, name.length);
      for (let n = 1; n < keyPath.length; n++) {
        tables.push({ keyPath: keyPath.slice(0, n), at, header: false });
      }
      tables.push({ keyPath, at, header: true });
      table = resolved;
      continue;
    }
    const kv = KEY_VALUE.exec(line);
    const raw = kv && withoutTrailingBlanks(kv[3]);
    const value = raw && valueOf(raw);
    if (!value) return undefined;
    const [, key, equals] = kv;
    if (table.node.children.has(key)) return undefined;
    table.node.children.set(key, VALUE);
    entries.push({
      keyPath: [...table.keyPath, key],
      kind: value.kind,
      value: value.value,
      key: span(path, i + 1, 0, key.length),
      valueRange: span(path, i + 1, key.length + equals.length, raw.length),
    });
  }
  return { path, text, entries, tables, ignores: ignoreComments(text) };
}

/** Every key set to a value (nothing is ever defined below it). */
const VALUE: Node = node("value");

/**
 * The key path of a `[parts]` (or `[[parts]]` when `array`) header as the full parser resolves
 * it (through the last element of arrays of tables, an element's index as a part) and its node,
 * recording what it defines below `root`; undefined when it redefines something (the full parser
 * knows whether that is valid).
 */
function resolveTable(
  root: Node,
  parts: string[],
  array: boolean,
): { keyPath: string[]; node: Node } | undefined {
  const keyPath: string[] = [];
  let parent = root;
  for (let n = 0; n < parts.length; n++) {
    keyPath.push(parts[n]);
    let child = parent.children.get(parts[n]);
    if (n < parts.length - 1) {
      if (child?.kind === "value") return undefined;
      if (!child) parent.children.set(parts[n], child = node("implied"));
      if (child.kind === "array") keyPath.push(String(child.length - 1));
    } else if (array) {
      if (child && child.kind !== "array") return undefined;
      if (!child) parent.children.set(parts[n], child = node("array"));
      keyPath.push(String(child.length++));
      child.children = new Map();
    } else {
      if (child && child.kind !== "implied") return undefined;
      if (child) child.kind = "table";
      else parent.children.set(parts[n], child = node("table"));
    }
    parent = child;
  }
  return { keyPath, node: parent };
}

/** The kind and value of a plain value as written, or undefined for any other value. */
function valueOf(raw: string): { kind: ValueKind; value: unknown } | undefined {
  if (raw[0] === '"') {
    return STRING.test(raw) ? { kind: "string", value: raw.slice(1, -1) } : undefined;
  }
  if (raw === "true" || raw === "false") return { kind: "boolean", value: raw === "true" };
  if (INTEGER.test(raw)) return { kind: "integer", value: parseInt(raw, 10) };
  if (FLOAT.test(raw)) return { kind: "float", value: Number(raw) };
  if (STRINGS.test(raw)) {
    return {
      kind: "array",
      value: [...raw.matchAll(ELEMENT)].map((m) => m[1]),
    };
  }
  return undefined;
}

/** `text` without the spaces and tabs it ends with (a loop: a regex would be quadratic). */
function withoutTrailingBlanks(text: string): string {
  let end = text.length;
  while (end > 0 && (text[end - 1] === " " || text[end - 1] === "\t")) end--;
  return text.slice(0, end);
}

/** `length` characters from the 0-based `column` of `line`. */
function span(path: string, line: number, column: number, length: number): Location {
  return { path, line, column: column + 1, endLine: line, endColumn: column + length + 1 };
}
