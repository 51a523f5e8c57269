/**
 * SARIF 2.1.0 (for GitHub code scanning and other tools): every rule with its documentation,
 * every finding with its region.
 * @module
 */
import denoJson from "../../deno.json" with { type: "json" };
import { BUILTIN_PATH } from "../../lib/config/builtin_default.ts";
import { rules } from "../rules/mod.ts";
import type { FileResult, Rule, Severity } from "../types.ts";

const LEVEL: Record<Severity, string> = { error: "error", warning: "warning", info: "note" };

function uriOf(path: string): string {
  if (path === BUILTIN_PATH) return "vmfactory-builtin-configuration.toml";
  return path.startsWith("/") ? `file://${encodeURI(path)}` : encodeURI(path.replace(/^\.\//, ""));
}

function ruleDescriptor(rule: Rule) {
  const { id, description, defaultSeverity, docs } = rule.meta;
  const text = `${docs.explanation}\n\nIncorrect:\n${docs.incorrect}\nCorrect:\n${docs.correct}`;
  const markdown =
    `${docs.explanation}\n\nIncorrect:\n\n\`\`\`toml\n${docs.incorrect}\`\`\`\n\nCorrect:\n\n` +
    `\`\`\`toml\n${docs.correct}\`\`\`\n`;
  return {
    id,
    name: id.replace(/(^|-)([a-z])/g, (_, __, c: string) => c.toUpperCase()),
    shortDescription: { text: description },
    fullDescription: { text: docs.explanation },
    defaultConfiguration: { level: LEVEL[defaultSeverity] },
    help: { text, markdown },
  };
}

/**
 * Formats `results` as a SARIF 2.1.0 log (pretty-printed JSON).
 * @example
 * ```ts
 * await Deno.writeTextFile("lint.sarif", formatSarif(await lintFiles(["configuration.toml"])));
 * ```
 */
export function formatSarif(results: readonly FileResult[]): string {
  const ids = rules.map((r) => r.meta.id);
  const log = {
    $schema: "https://json.schemastore.org/sarif-2.1.0.json",
    version: "2.1.0",
    runs: [{
      tool: {
        driver: {
          name: "vmfactory",
          version: denoJson.version,
          rules: rules.map(ruleDescriptor),
        },
      },
      artifacts: results.map((f) => ({ location: { uri: uriOf(f.path) } })),
      results: results.flatMap((f, fileIndex) =>
        f.diagnostics.map((d) => ({
          ruleId: d.rule,
          ruleIndex: ids.indexOf(d.rule),
          level: LEVEL[d.severity],
          message: { text: d.message },
          locations: [{
            physicalLocation: {
              artifactLocation: { uri: uriOf(f.path), index: fileIndex },
              region: {
                startLine: d.line,
                startColumn: d.column,
                endLine: d.endLine,
                endColumn: d.endColumn,
              },
            },
          }],
        }))
      ),
    }],
  };
  return JSON.stringify(log, null, 2) + "\n";
}
