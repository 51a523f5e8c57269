/**
 * Parses one TOML file into the keys, tables and suppression comments the rules need, with
 * positions. A syntax error (including a duplicate key) or a key nested too deep becomes
 * `syntaxError`, never an exception.
 * @module
 */
import { findTooDeep } from "../lib/config/key_depth.ts";
import { errorMessage } from "../lib/errors.ts";
import { type AST, getStaticTOMLValue, ParseError, parseTOML } from "toml-eslint-parser";
import { ignoreComments } from "./ignore_comments.ts";
import { parsePlainToml } from "./parse_plain_toml.ts";
import type { Location } from "./types.ts";

/** The TOML type of a value ("table" for an inline table). */
export type ValueKind = "string" | "integer" | "float" | "boolean" | "datetime" | "array" | "table";

/** One `key = value` (also each key inside an inline table). */
export interface Entry {
  keyPath: string[];
  kind: ValueKind;
  value: unknown;
  /** The key as written (all dotted parts). */
  key: Location;
  /** The value. */
  valueRange: Location;
}

/** A table: from a `[header]` (`header` true) or implied by a dotted key (its location). */
export interface TableDef {
  keyPath: string[];
  at: Location;
  header: boolean;
}

/** A parsed file. */
export interface ParsedDocument {
  path: string;
  text: string;
  entries: Entry[];
  tables: TableDef[];
  /**
   * Why the file could not be read: not TOML (`toml-syntax`), or nested deeper than vmfactory
   * accepts (`key-too-deep`, found before parsing). No other rule runs on such a file.
   */
  syntaxError?: { rule: "toml-syntax" | "key-too-deep"; message: string; at: Location };
  /** Suppressions by the line they apply to: rule ids, or "all". */
  ignores: Map<number, Set<string> | "all">;
}

// deno-lint-ignore no-control-regex -- finding control characters is the point
const CONTROL = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)/;
const COMMENT_LINE = /^[ \t]*#[^\r\n]*/gm;

/**
 * Parses `text` (the contents of `path`): plain TOML through {@link parsePlainToml}, anything
 * else through {@link parseFully}. Never throws.
 */
export function parseDocument(path: string, text: string): ParsedDocument {
  return parsePlainToml(path, text) ?? parseFully(path, text);
}

/**
 * Parses `text` (the contents of `path`) with the full TOML parser, plain or not (for a file
 * {@link parsePlainToml} declines; tests compare the two on plain files). Never throws.
 */
export function parseFully(path: string, text: string): ParsedDocument {
  const doc: ParsedDocument = {
    path,
    text,
    entries: [],
    tables: [],
    ignores: ignoreComments(text),
  };
  const deep = findTooDeep(text);
  if (deep) {
    const { message, ...span } = deep;
    doc.syntaxError = { rule: "key-too-deep", message, at: { path, ...span } };
    return doc;
  }
  // Comment-only lines carry nothing the rules need; blanking them (same line numbers, same
  // columns elsewhere) halves parse time. Not when a multi-line string could hold a "#" line or
  // a control character would make the comment itself invalid.
  const fast = text.includes("'''") || text.includes('"""') || CONTROL.test(text)
    ? text
    : text.replace(COMMENT_LINE, "");
  let ast: AST.TOMLProgram;
  try {
    ast = parseTOML(fast);
  } catch (err) {
    doc.syntaxError = syntaxErrorOf(path, fast, err);
    return doc;
  }
  const loc = (n: AST.HasLocs): Location => ({
    path,
    line: n.loc.start.line,
    column: n.loc.start.column + 1,
    endLine: n.loc.end.line,
    endColumn: n.loc.end.column + 1,
  });
  const keysOf = (k: AST.TOMLKey) => k.keys.map((p) => (p.type === "TOMLBare" ? p.name : p.value));
  const walk = (body: AST.TOMLKeyValue[], prefix: string[]) => {
    for (const kv of body) {
      const keys = keysOf(kv.key);
      const keyPath = [...prefix, ...keys];
      for (let n = prefix.length + 1; n < keyPath.length; n++) {
        doc.tables.push({ keyPath: keyPath.slice(0, n), at: loc(kv.key), header: false });
      }
      const v = kv.value;
      const kind: ValueKind = v.type === "TOMLArray"
        ? "array"
        : v.type === "TOMLInlineTable"
        ? "table"
        : v.kind.endsWith("time") || v.kind === "local-date"
        ? "datetime"
        : (v.kind as ValueKind);
      doc.entries.push({
        keyPath,
        kind,
        value: getStaticTOMLValue(v),
        key: loc(kv.key),
        valueRange: loc(v),
      });
      if (v.type === "TOMLInlineTable") {
        doc.tables.push({ keyPath, at: loc(kv.key), header: false });
        walk(v.body, keyPath);
      }
    }
  };
  for (const node of ast.body[0].body) {
    if (node.type === "TOMLKeyValue") walk([node], []);
    else {
      const keyPath = node.resolvedKey.map(String);
      for (let n = 1; n < keyPath.length; n++) {
        doc.tables.push({ keyPath: keyPath.slice(0, n), at: loc(node.key), header: false });
      }
      doc.tables.push({ keyPath, at: loc(node.key), header: true });
      walk(node.body, keyPath);
    }
  }
  return doc;
}

function syntaxErrorOf(
  path: string,
  text: string,
  err: unknown,
): ParsedDocument["syntaxError"] & object {
  if (err instanceof ParseError) {
    let message = err.message;
    const word = /^[A-Za-z0-9_."'-]+/.exec(text.slice(err.index))?.[0];
    if (message.includes("multiple times") && word) message += ` (\`${word}\`)`;
    const line = err.lineNumber, column = err.column + 1;
    return {
      rule: "toml-syntax",
      message,
      at: { path, line, column, endLine: line, endColumn: column + (word?.length || 1) },
    };
  }
  const message = `Cannot parse: ${errorMessage(err)}`;
  return {
    rule: "toml-syntax",
    message,
    at: { path, line: 1, column: 1, endLine: 1, endColumn: 1 },
  };
}
