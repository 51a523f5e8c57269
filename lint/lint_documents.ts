/**
 * The lint engine: runs the rules on parsed files, applies severities and suppressions.
 * @module
 */
import { ConfigModel } from "./config_model.ts";
import type { ParsedDocument } from "./parse_document.ts";
import { ruleById, ruleIds, rules } from "./rules/mod.ts";
import type { Diagnostic, FileResult, Finding, LintOptions, SeveritySetting } from "./types.ts";
import { SEVERITY_SETTINGS } from "./rule_severities.ts";

/**
 * Lints parsed files as one configuration (a main file then its drop-ins: later files win per
 * key); returns one result per file, each finding in the file that set the key.
 */
export function lintDocuments(
  docs: readonly ParsedDocument[],
  options: LintOptions = {},
): FileResult[] {
  const results = docs.map((d) => ({
    path: d.path,
    text: d.text,
    diagnostics: [] as Diagnostic[],
  }));
  const findings: Finding[] = docs.flatMap((d) =>
    d.syntaxError
      ? [{ rule: d.syntaxError.rule, message: d.syntaxError.message, range: d.syntaxError.at }]
      : []
  );
  let configured: Record<string, SeveritySetting> = { ...options.rules };
  if (findings.length === 0) {
    const model = new ConfigModel(docs);
    configured = { ...fromConfig(model), ...options.rules };
    for (const rule of rules) {
      if (configured[rule.meta.id] === "off") continue;
      rule.check({
        model,
        probeResults: options.probeResults,
        ruleIds,
        report: (f) => findings.push({ ...f, rule: rule.meta.id }),
      });
    }
  }
  for (const f of findings) {
    const setting = configured[f.rule];
    if (setting === "off") continue;
    const i = docs.findIndex((d) => d.path === f.range.path);
    const ignored = docs[i]?.ignores.get(f.range.line);
    if (ignored === "all" || ignored?.has(f.rule)) continue;
    const { line, column, endLine, endColumn } = f.range;
    results[Math.max(i, 0)].diagnostics.push({
      rule: f.rule,
      severity: setting ?? f.severity ?? ruleById(f.rule)!.meta.defaultSeverity,
      message: f.message,
      line,
      column,
      endLine,
      endColumn,
    });
  }
  for (const r of results) r.diagnostics.sort((a, b) => a.line - b.line || a.column - b.column);
  return results;
}

/** The valid `[vmfactory.lint]` severities of `model` (invalid ones are `invalid-value` findings). */
function fromConfig(model: ConfigModel): Record<string, SeveritySetting> {
  const out: Record<string, SeveritySetting> = {};
  for (const e of model.entries()) {
    const [a, b, id] = e.keyPath;
    if (e.keyPath.length !== 3 || a !== "vmfactory" || b !== "lint" || !ruleIds.includes(id)) {
      continue;
    }
    if ((SEVERITY_SETTINGS as readonly unknown[]).includes(e.value)) {
      out[id] = e.value as SeveritySetting;
    }
  }
  return out;
}
