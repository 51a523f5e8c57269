/**
 * The machine format of the contract:
 * `{"files":[{"path":…,"diagnostics":[{"rule","severity","message","line","column","endLine","endColumn"}]}]}`.
 * @module
 */
import type { FileResult } from "../types.ts";

/**
 * Formats `results` as one JSON object (one line).
 * @example
 * ```ts
 * console.log(formatJson(await lintFiles(["configuration.toml"])));
 * ```
 */
export function formatJson(results: readonly FileResult[]): string {
  return JSON.stringify({
    files: results.map((f) => ({
      path: f.path,
      diagnostics: f.diagnostics.map((d) => ({
        rule: d.rule,
        severity: d.severity,
        message: d.message,
        line: d.line,
        column: d.column,
        endLine: d.endLine,
        endColumn: d.endColumn,
      })),
    })),
  }) + "\n";
}
