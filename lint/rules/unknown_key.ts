/** Rule `unknown-key`. @module */
import { suggest } from "../suggest.ts";
import { tablePattern } from "../table_pattern.ts";
import type { Location, Rule } from "../types.ts";
import { KEYS, knownKinds, TABLES } from "./_known.ts";
import { tableName } from "./_span.ts";

const didYouMean = (s: string | undefined) => (s === undefined ? "" : `; did you mean "${s}"?`);

/** The known table names by the pattern of their parent table (`hypervisor.*` → qemu, clh...). */
const CHILDREN = new Map<string, string[]>();
for (const p of TABLES) {
  const parts = p.split(".");
  const parent = tablePattern(parts, parts.length - 1);
  CHILDREN.set(parent, [...(CHILDREN.get(parent) ?? []), parts.at(-1)!]);
}

/** Keys and tables Kata does not know (it ignores them silently). */
export const unknownKey: Rule = {
  meta: {
    id: "unknown-key",
    description: "A key or table Kata does not know (and silently ignores).",
    defaultSeverity: "warning",
    docs: {
      explanation:
        "Kata ignores keys it does not know, so a typo silently keeps the default: enable_templates = true " +
        "leaves templating off. The known keys are learned from Kata's own configuration files (Kata 1.x to " +
        "4.x, Go runtime and runtime-rs, including commented-out keys); the finding suggests the closest one. " +
        "[vmfactory] and [vmfactory.lint] are vmfactory's own tables.",
      incorrect: "[factory]\nenable_templates = true\n",
      correct: "[factory]\nenable_template = true\n",
    },
  },
  check(ctx) {
    const unknownTables = new Set<string>();
    /** A table of `keyPath[0..upTo)` (at least one part) is an unknown table already reported. */
    const inUnknown = (keyPath: readonly string[], upTo: number) => {
      if (unknownTables.size === 0) return false;
      // one lookup per level (keys are at most MAX_KEY_DEPTH deep), not one per reported table
      for (let n = 1; n <= upTo; n++) {
        if (unknownTables.has(tablePattern(keyPath, n))) return true;
      }
      return false;
    };
    for (const t of ctx.model.tables()) {
      const pattern = tablePattern(t.keyPath);
      if (TABLES.has(pattern) || inUnknown(t.keyPath, t.keyPath.length - 1)) continue;
      unknownTables.add(pattern);
      const siblings = CHILDREN.get(tablePattern(t.keyPath, t.keyPath.length - 1)) ?? [];
      const name = t.keyPath.join(".");
      report(
        t.at,
        `unknown table [${name}]: Kata ignores it${
          didYouMean(suggest(t.keyPath.at(-1)!, siblings))
        }`,
      );
    }
    for (const e of ctx.model.entries()) {
      if (e.kind === "table") continue; // checked as a table above
      const depth = e.keyPath.length - 1; // of its table
      if (inUnknown(e.keyPath, depth)) continue;
      const pattern = tablePattern(e.keyPath, depth);
      const key = e.keyPath[depth];
      const lint = pattern === "vmfactory.lint";
      if (lint ? ctx.ruleIds.includes(key) : knownKinds(pattern, key)) continue;
      const hint = didYouMean(suggest(key, lint ? ctx.ruleIds : Object.keys(KEYS[pattern] ?? {})));
      if (lint) {
        report(e.key, `unknown rule "${key}" in [vmfactory.lint]${hint}`);
      } else {
        const where = depth === 0 ? "at the top level" : `in ${tableName(e.keyPath)}`;
        report(e.key, `unknown key "${key}" ${where}: Kata ignores it${hint}`);
      }
    }

    function report(range: Location, message: string) {
      ctx.report({ range, message });
    }
  },
};
