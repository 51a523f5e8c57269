/**
 * Lints files from disk, or the effective configuration Kata would use.
 * @module
 */
import { BUILTIN_DEFAULT_TOML, BUILTIN_PATH } from "../lib/config/builtin_default.ts";
import { dropInPaths, resolveConfigPath } from "../lib/config/resolve_config_path.ts";
import { UsageError } from "../lib/errors.ts";
import { ConfigModel } from "./config_model.ts";
import { lintDocuments } from "./lint_documents.ts";
import type { ParsedDocument } from "./parse_document.ts";
import { parsePlainToml } from "./parse_plain_toml.ts";
import { probeCandidate } from "./rules/template_requires_qemu_lite.ts";
import type { FileResult, LintOptions, ProbeResult } from "./types.ts";

/**
 * Lints each file on its own. Throws {@link UsageError} ("Cannot lint <path>: …") if one cannot be read.
 * @example
 * ```ts
 * const results = await lintFiles(["/etc/kata-containers/configuration.toml"]);
 * for (const d of results[0].diagnostics) console.log(d.line, d.ruleId, d.message);
 * ```
 */
export async function lintFiles(
  paths: readonly string[],
  options: LintOptions = {},
): Promise<FileResult[]> {
  const docs = await Promise.all(paths.map(async (p) => parse(p, await read(p))));
  const probes = new Map<string, Promise<ProbeResult>>();
  const results: FileResult[] = [];
  for (const doc of docs) {
    results.push(...lintDocuments([doc], await withProbes([doc], options, probes)));
  }
  return results;
}

/** What {@link lintConfig} linted. */
export interface ConfigLintResult {
  /** One result per file: the main file, then its drop-ins; or the built-in default alone. */
  results: FileResult[];
  /** No configuration file exists: the built-in default was linted. */
  builtin: boolean;
}

/**
 * Lints the effective configuration: the file Kata would use (`config`, `KATA_CONF_FILE`, the
 * default paths) merged with its `config.d/` drop-ins, or the built-in default when there is none.
 * @example
 * ```ts
 * const { results } = await lintConfig({ env: Deno.env.toObject() }); // Kata's lookup + config.d/
 * const errors = results.flatMap((r) => r.diagnostics).filter((d) => d.severity === "error");
 * ```
 */
export async function lintConfig(
  opts: LintOptions & { config?: string; env?: Record<string, string | undefined> },
): Promise<ConfigLintResult> {
  const main = resolveConfigPath(opts);
  const docs = main === undefined
    ? [await parse(BUILTIN_PATH, BUILTIN_DEFAULT_TOML)]
    : await Promise.all([main, ...dropInPaths(main)].map(async (p) => parse(p, await read(p))));
  return {
    results: lintDocuments(docs, await withProbes(docs, opts, new Map())),
    builtin: main === undefined,
  };
}

/** Plain files need no full TOML parser: it is loaded for the first file that does. */
async function parse(path: string, text: string): Promise<ParsedDocument> {
  return parsePlainToml(path, text) ??
    (await import("./parse_document.ts")).parseFully(path, text);
}

async function read(path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (err) {
    const reason = err instanceof Deno.errors.NotFound
      ? "no such file"
      : err instanceof Deno.errors.IsADirectory
      ? "it is a directory"
      : err instanceof Error
      ? err.message
      : String(err);
    throw new UsageError(`lint ${path}`, reason);
  }
}

/** Adds `--probe` results for the QEMU binary `docs` would template with. */
async function withProbes(
  docs: ParsedDocument[],
  options: LintOptions,
  probes: Map<string, Promise<ProbeResult>>,
): Promise<LintOptions> {
  if (!options.probe || docs.some((d) => d.syntaxError)) return options;
  const path = probeCandidate(new ConfigModel(docs));
  if (!path) return options;
  if (!probes.has(path)) {
    probes.set(path, import("./probe_qemu.ts").then(({ probeQemu }) => probeQemu(path)));
  }
  return {
    ...options,
    probeResults: new Map([...(options.probeResults ?? []), [path, await probes.get(path)!]]),
  };
}
