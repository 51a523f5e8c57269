/**
 * Types shared by the linter, its rules and its formatters.
 * @module
 */
import type { Location } from "../lib/config/load_config.ts";
import type { ConfigModel } from "./config_model.ts";

export type { Location };

/** How serious a finding is. */
export type Severity = "error" | "warning" | "info";
/** A rule's configured severity; "off" disables it. */
export type SeveritySetting = Severity | "off";

/** One finding in one file: 1-based positions, end exclusive. */
export interface Diagnostic {
  rule: string;
  severity: Severity;
  message: string;
  line: number;
  column: number;
  endLine: number;
  endColumn: number;
}

/** The findings of one linted file, with its text (for code frames). */
export interface FileResult {
  path: string;
  text: string;
  diagnostics: Diagnostic[];
}

/** What `--probe` found out about a QEMU binary. */
export type ProbeResult = "capable" | "incapable" | "absent";

/** Options of {@link lintText} and friends. */
export interface LintOptions {
  /** Severity overrides by rule id (win over `[vmfactory.lint]` and the defaults). */
  rules?: Record<string, SeveritySetting>;
  /** Query binaries on this host (only the async entry points probe). */
  probe?: boolean;
  /** Probe results by binary path, for the synchronous {@link lintText}. */
  probeResults?: ReadonlyMap<string, ProbeResult>;
}

/** A rule's documentation, shown by `--explain` and in SARIF help. */
export interface RuleDocs {
  /** Why the rule exists and what to do. */
  explanation: string;
  /** A configuration that gets the finding. */
  incorrect: string;
  /** The same configuration fixed. */
  correct: string;
}

/** What a rule is. */
export interface RuleMeta {
  id: string;
  description: string;
  defaultSeverity: Severity;
  docs: RuleDocs;
}

/** What a rule reports: where and why; `severity` when this finding differs from the default. */
export interface Finding {
  rule: string;
  message: string;
  range: Location;
  severity?: Severity;
}

/** What a rule's `check` sees. */
export interface RuleContext {
  model: ConfigModel;
  /** Probe results by binary path (present only with `--probe`). */
  probeResults?: ReadonlyMap<string, ProbeResult>;
  /** Every rule id (for `[vmfactory.lint]` checks). */
  ruleIds: readonly string[];
  report(finding: Omit<Finding, "rule">): void;
}

/** A lint rule. */
export interface Rule {
  meta: RuleMeta;
  check(ctx: RuleContext): void;
}
