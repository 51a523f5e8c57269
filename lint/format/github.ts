/**
 * GitHub Actions workflow commands: one `::error file=…,line=…::message` line per finding.
 * @module
 */
import type { FileResult, Severity } from "../types.ts";

const COMMAND: Record<Severity, string> = { error: "error", warning: "warning", info: "notice" };

const escapeData = (s: string) =>
  s.replaceAll("%", "%25").replaceAll("\r", "%0D").replaceAll("\n", "%0A");
const escapeProperty = (s: string) => escapeData(s).replaceAll(":", "%3A").replaceAll(",", "%2C");

/** Formats `results` as GitHub annotations. */
export function formatGithub(results: readonly FileResult[]): string {
  const lines = results.flatMap((f) =>
    f.diagnostics.map((d) =>
      `::${COMMAND[d.severity]} file=${escapeProperty(f.path)},line=${d.line},col=${d.column},` +
      `endLine=${d.endLine},endColumn=${d.endColumn},title=${escapeProperty(d.rule)}::${
        escapeData(d.message)
      }`
    )
  );
  return lines.length === 0 ? "" : lines.join("\n") + "\n";
}
