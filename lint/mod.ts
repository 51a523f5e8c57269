/**
 * The Kata configuration linter as a library.
 *
 * ```ts
 * import { lintText } from "./lint/mod.ts";
 * const findings = lintText("configuration.toml", "[factory]\nenable_templates = true\n");
 * ```
 * @module
 */
export { lintDocuments } from "./lint_documents.ts";
export { lintText } from "./lint_text.ts";
export { type ConfigLintResult, lintConfig, lintFiles } from "./lint_files.ts";
export { ruleById, ruleIds, rules } from "./rules/mod.ts";
export { parseRuleOptions } from "./rule_severities.ts";
export { probeIgnoreShared, probeQemu } from "./probe_qemu.ts";
export { formatText } from "./format/text.ts";
export { formatJson } from "./format/json.ts";
export { formatSarif } from "./format/sarif.ts";
export { formatGithub } from "./format/github.ts";
export type {
  Diagnostic,
  FileResult,
  Finding,
  LintOptions,
  ProbeResult,
  Rule,
  RuleContext,
  RuleDocs,
  RuleMeta,
  Severity,
  SeveritySetting,
} from "./types.ts";
