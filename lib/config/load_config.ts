/**
 * Loads the effective Kata configuration: the main file plus its `config.d/` drop-ins, merged,
 * with the file and line that set each key. Uses smol-toml (cheap to import), not the linter.
 * @module
 */
import { parse, TomlError } from "smol-toml";
import { errorMessage, UsageError } from "../errors.ts";
import { BUILTIN_DEFAULT_TOML, BUILTIN_PATH } from "./builtin_default.ts";
import { type KeySpan, locateKeys, pathKey } from "./_locate_keys.ts";
import { findTooDeep } from "./key_depth.ts";
import { dropInPaths, resolveConfigPath } from "./resolve_config_path.ts";

/** Where something is written: a file and a 1-based span (end exclusive). */
export interface Location {
  path: string;
  line: number;
  column: number;
  endLine: number;
  endColumn: number;
}

/** One file that contributed to the configuration (`path` is `<builtin>` for the default). */
export interface ConfigSource {
  path: string;
  text: string;
}

/** The effective configuration. */
export interface LoadedConfig {
  /** The main file, then its drop-ins in order; only the built-in default when no file exists. */
  sources: ConfigSource[];
  /** Merged values (nested plain objects); later drop-ins win per key. */
  values: Record<string, unknown>;
  /** Where the winning value of `keyPath` was written; for a table, where it was first defined. */
  origin(keyPath: string[]): Location | undefined;
}

/**
 * The configuration is not valid TOML; `positions` lists where. The CLI exits 2.
 * @example
 * ```ts
 * try {
 *   await loadConfig({ config: "/nonexistent.toml" });
 * } catch (err) {
 *   if (err instanceof ConfigError) console.error(err.message); // exit code 2
 * }
 * ```
 */
export class ConfigError extends UsageError {
  /** Where the problems are. */
  readonly positions: Location[];
  /** Builds "Cannot read the configuration: <detail>". */
  constructor(detail: string, positions: Location[] = [], options?: { cause?: unknown }) {
    super("read the configuration", detail, options);
    this.positions = positions;
  }
}

/**
 * Finds the configuration file the way Kata does ({@link resolveConfigPath}), reads it and its
 * drop-ins and merges them; falls back to the built-in default when no file exists.
 * Rejects with {@link ConfigError} on a syntax error and {@link UsageError} on an unreadable file.
 * The files are small and read synchronously: Deno's first async file read of a process costs
 * more than the read, and `vm create` loads the configuration on its hot path.
 * @example
 * ```ts
 * const loaded = await loadConfig({ env: Deno.env.toObject() });
 * console.log(loaded.sources.map((s) => s.path)); // the files read, drop-ins included
 * ```
 */
export function loadConfig(
  opts: { config?: string; env?: Record<string, string | undefined> },
): Promise<LoadedConfig> {
  try {
    const main = resolveConfigPath(opts);
    const sources: ConfigSource[] = main === undefined
      ? [{ path: BUILTIN_PATH, text: BUILTIN_DEFAULT_TOML }]
      : [main, ...dropInPaths(main)].map(readSource);
    return Promise.resolve(mergeSources(sources));
  } catch (err) {
    return Promise.reject(err);
  }
}

/**
 * Merges already-read sources (later ones win per key); throws {@link ConfigError} on bad TOML and
 * on keys nested deeper than `MAX_KEY_DEPTH` (checked before parsing, see `key_depth.ts`).
 */
export function mergeSources(sources: ConfigSource[]): LoadedConfig {
  const values: Record<string, unknown> = {};
  const errors: Location[] = [];
  const messages: string[] = [];
  for (const source of sources) {
    const deep = findTooDeep(source.text);
    if (deep) {
      const { message, ...span } = deep;
      errors.push({ path: source.path, ...span });
      messages.push(`${source.path}:${span.line}:${span.column}: ${message}`);
      continue;
    }
    try {
      mergeInto(values, parse(source.text, { integersAsBigInt: "asNeeded" }));
    } catch (err) {
      if (!(err instanceof TomlError)) throw err;
      const at = { path: source.path, line: err.line, column: err.column };
      errors.push({ ...at, endLine: err.line, endColumn: err.column + 1 });
      messages.push(`${at.path}:${at.line}:${at.column}: ${err.message.split("\n")[0]}`);
    }
  }
  if (errors.length > 0) throw new ConfigError(messages.join("; "), errors);
  const spans: (Map<string, KeySpan> | undefined)[] = [];
  return {
    sources,
    values,
    origin(keyPath) {
      const k = pathKey(keyPath);
      // A value comes from the last file that set it; a table from the first that defined it.
      let v: unknown = values;
      for (const p of keyPath) v = isTable(v) ? v[p] : undefined;
      const order = sources.map((_, i) => i);
      if (!isTable(v)) order.reverse();
      for (const i of order) {
        spans[i] ??= locateKeys(sources[i].text);
        const span = spans[i]!.get(k);
        if (span) return { path: sources[i].path, ...span };
      }
      return undefined;
    },
  };
}

function readSource(path: string): ConfigSource {
  try {
    return { path, text: Deno.readTextFileSync(path) };
  } catch (err) {
    throw new UsageError(`read ${path}`, errorMessage(err), { cause: err });
  }
}

function isTable(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

/**
 * Merges `src` into `target` (tables key by key, anything else replaced) and copies arrays and
 * tables into plain objects (smol-toml makes null-prototype ones; the contract promises plain
 * ones). Iterative: the depth of the input costs no stack.
 */
function mergeInto(target: Record<string, unknown>, src: Record<string, unknown>): void {
  const work: [Record<string, unknown> | unknown[], string | number, unknown][] = [];
  const push = (into: Record<string, unknown> | unknown[], from: Record<string, unknown>) => {
    // pushed last to first, so each object gets its keys in the source's order
    for (const [k, v] of Object.entries(from).reverse()) work.push([into, k, v]);
  };
  push(target, src);
  for (let item; (item = work.pop());) {
    const [into, k, v] = item;
    const slot = into as Record<string | number, unknown>;
    if (Array.isArray(v)) {
      const copy: unknown[] = new Array(v.length);
      slot[k] = copy;
      for (let i = v.length - 1; i >= 0; i--) work.push([copy, i, v[i]]);
    } else if (isTable(v)) {
      // merge into an existing table only at the top (drop-ins); copies start empty
      if (!isTable(slot[k])) slot[k] = {};
      push(slot[k] as Record<string, unknown>, v);
    } else slot[k] = v;
  }
}
