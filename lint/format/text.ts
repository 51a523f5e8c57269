/**
 * The human format: `file:line:col  severity  message  rule`, a code frame with a caret
 * underline, and a summary line.
 * @module
 */
import type { Diagnostic, FileResult, Severity } from "../types.ts";

const COLORS: Record<Severity | "dim" | "bold", [string, string]> = {
  error: ["\x1b[31m", "\x1b[39m"],
  warning: ["\x1b[33m", "\x1b[39m"],
  info: ["\x1b[36m", "\x1b[39m"],
  dim: ["\x1b[2m", "\x1b[22m"],
  bold: ["\x1b[1m", "\x1b[22m"],
};

/** Formats `results` for a terminal (`color`: ANSI colours). */
export function formatText(results: readonly FileResult[], opts: { color: boolean }): string {
  const paint = (style: keyof typeof COLORS, s: string) =>
    opts.color ? COLORS[style][0] + s + COLORS[style][1] : s;
  const out: string[] = [];
  const counts: Record<Severity, number> = { error: 0, warning: 0, info: 0 };
  for (const file of results) {
    const lines = file.text.split("\n");
    for (const d of file.diagnostics) {
      counts[d.severity]++;
      out.push(
        `${paint("bold", `${file.path}:${d.line}:${d.column}`)}  ${
          paint(d.severity, d.severity)
        }  ${d.message}  ${paint("dim", d.rule)}`,
      );
      out.push(...codeFrame(lines, d, (s) => paint(d.severity, s), (s) => paint("dim", s)), "");
    }
  }
  const total = counts.error + counts.warning + counts.info;
  const files = `${results.length} file${results.length === 1 ? "" : "s"}`;
  if (total === 0) out.push(`No problems found in ${files}.`);
  else {
    const parts = (["error", "warning", "info"] as const).filter((s) => counts[s] > 0)
      .map((s) => `${counts[s]} ${s === "info" ? "info" : s + (counts[s] === 1 ? "" : "s")}`);
    out.push(
      paint(
        counts.error > 0 ? "error" : "bold",
        `${total} problem${total === 1 ? "" : "s"} (${parts.join(", ")}) in ${files}.`,
      ),
    );
  }
  return out.join("\n") + "\n";
}

function codeFrame(
  lines: string[],
  d: Diagnostic,
  mark: (s: string) => string,
  dim: (s: string) => string,
): string[] {
  const text = (lines[d.line - 1] ?? "").replace(/\r$/, "").replaceAll("\t", " ");
  const gutter = String(d.line).padStart(5);
  const end = d.endLine === d.line ? d.endColumn : text.length + 1;
  const width = Math.max(1, Math.min(end, text.length + 1) - d.column);
  return [
    `${dim(`${gutter} |`)} ${text}`,
    `${dim(`${" ".repeat(gutter.length)} |`)} ${" ".repeat(Math.max(0, d.column - 1))}${
      mark("^".repeat(width))
    }`,
  ];
}
