/**
 * Lints one file's text (the synchronous entry point; it loads the full TOML parser).
 * @module
 */
import { lintDocuments } from "./lint_documents.ts";
import { parseDocument } from "./parse_document.ts";
import type { Diagnostic, LintOptions } from "./types.ts";

/** The engine, also reachable from here: see `lint_documents.ts`. */
export { lintDocuments };

/**
 * Lints one file's `text` (its path is `path`) and returns its findings. Never throws on bad input.
 * @example
 * ```ts
 * const findings = lintText("configuration.toml", "[factory]\nenable_template = true\n");
 * console.log(findings.map((d) => d.rule));
 * ```
 */
export function lintText(path: string, text: string, options: LintOptions = {}): Diagnostic[] {
  return lintDocuments([parseDocument(path, text)], options)[0].diagnostics;
}
