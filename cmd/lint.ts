/**
 * `vmfactory lint`: checks Kata configuration files and prints the findings.
 * @module
 */
import { formatGithub } from "../lint/format/github.ts";
import { formatJson } from "../lint/format/json.ts";
import { formatSarif } from "../lint/format/sarif.ts";
import { formatText } from "../lint/format/text.ts";
import { lintConfig, lintFiles } from "../lint/lint_files.ts";
import { parseRuleOptions, ruleOptionProblem, unknownRule } from "../lint/rule_severities.ts";
import { ruleById, rules } from "../lint/rules/mod.ts";
import type { FileResult, Rule } from "../lint/types.ts";
import { OptionError } from "./_usage.ts";

/** The options `cmd/program.ts` declares for `lint`. */
export interface LintCommandOptions {
  config?: string;
  format?: "text" | "json" | "sarif" | "github";
  rule?: string[];
  probe?: boolean;
  explain?: string;
  listRules?: boolean;
}

/**
 * Runs `vmfactory lint`: lints `files`, or the effective configuration when there are none, prints
 * the findings and returns the exit code (0 no error finding, 1 error findings). Throws
 * {@link OptionError} (exit 2, with the `--help` hint) for options that do not fit, and a
 * `UsageError` (exit 2) for unreadable files.
 */
export async function runLint(files: string[], opts: LintCommandOptions): Promise<number> {
  if (opts.listRules) {
    const width = Math.max(...rules.map((r) => r.meta.id.length));
    for (const r of rules) {
      console.log(
        `${r.meta.id.padEnd(width)}  ${r.meta.defaultSeverity.padEnd(7)}  ${r.meta.description}`,
      );
    }
    return 0;
  }
  if (opts.explain !== undefined) {
    const rule = ruleById(opts.explain);
    if (!rule) throw new OptionError(`explain rule "${opts.explain}"`, unknownRule(opts.explain));
    console.log(explain(rule));
    return 0;
  }
  for (const spec of opts.rule ?? []) {
    const problem = ruleOptionProblem(spec);
    if (problem) throw new OptionError(`set rule "${spec}"`, problem);
  }
  if (files.length > 0 && opts.config !== undefined) {
    throw new OptionError("lint", "give FILE arguments or --config, not both");
  }
  const options = { rules: parseRuleOptions(opts.rule ?? []), probe: opts.probe };
  let results: FileResult[];
  if (files.length > 0) results = await lintFiles(files, options);
  else {
    const linted = await lintConfig({ ...options, config: opts.config });
    if (linted.builtin) {
      console.error(
        "vmfactory: no Kata configuration file found; linting the built-in default configuration",
      );
    }
    results = linted.results;
  }
  const format = opts.format ?? "text";
  const color = format === "text" && Deno.stdout.isTerminal() && !Deno.env.get("NO_COLOR");
  const output = format === "json"
    ? formatJson(results)
    : format === "sarif"
    ? formatSarif(results)
    : format === "github"
    ? formatGithub(results)
    : formatText(results, { color });
  await writeAll(output);
  return results.some((r) => r.diagnostics.some((d) => d.severity === "error")) ? 1 : 0;
}

/** A rule's documentation for `--explain`. */
function explain(rule: Rule): string {
  const { id, description, defaultSeverity, docs } = rule.meta;
  const indent = (s: string) => s.trimEnd().split("\n").map((l) => `    ${l}`).join("\n");
  return `${id} (default severity: ${defaultSeverity})\n${description}\n\n${
    wrap(docs.explanation)
  }\n\n` +
    `Incorrect:\n${indent(docs.incorrect)}\n\nCorrect:\n${indent(docs.correct)}\n\n` +
    `Set its severity with --rule ${id}=off|info|warning|error or in [vmfactory.lint]; ` +
    `suppress one finding with "# vmfactory-lint-ignore ${id}" on the line before it.`;
}

function wrap(text: string, width = 88): string {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(/\s+/)) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  return [...lines, line].join("\n");
}

async function writeAll(text: string): Promise<void> {
  const data = new TextEncoder().encode(text);
  let written = 0;
  while (written < data.length) written += await Deno.stdout.write(data.subarray(written));
}
