/**
 * Reads `# vmfactory-lint-ignore [rule...]` comments: each suppresses findings on the next line.
 * @module
 */

const IGNORE = /#\s*vmfactory-lint-ignore\b([^\r\n]*)/;

/** The suppressions of `text` by the line they apply to: rule ids, or "all" when none is named. */
export function ignoreComments(text: string): Map<number, Set<string> | "all"> {
  const ignores = new Map<number, Set<string> | "all">();
  if (!text.includes("vmfactory-lint-ignore")) return ignores;
  text.split("\n").forEach((line, i) => {
    const m = IGNORE.exec(line);
    if (!m) return;
    const ids = m[1].split(/[\s,]+/).filter(Boolean);
    ignores.set(i + 2, ids.length === 0 ? "all" : new Set(ids));
  });
  return ignores;
}
