/**
 * Reads rule severity settings: `--rule id=severity` options.
 * @module
 */
import { UsageError } from "../lib/errors.ts";
import { ruleById, ruleIds } from "./rules/mod.ts";
import { suggest } from "./suggest.ts";
import type { SeveritySetting } from "./types.ts";

/** The severities a rule can be set to. */
export const SEVERITY_SETTINGS: readonly SeveritySetting[] = ["off", "info", "warning", "error"];

/** Parses `id=severity` strings; throws {@link UsageError} for an unknown rule or severity. */
export function parseRuleOptions(specs: readonly string[]): Record<string, SeveritySetting> {
  const out: Record<string, SeveritySetting> = {};
  for (const spec of specs) {
    const eq = spec.indexOf("=");
    const id = spec.slice(0, eq < 0 ? undefined : eq).trim();
    const severity = eq < 0 ? "" : spec.slice(eq + 1).trim();
    if (!ruleById(id)) throw new UsageError(`set rule "${spec}"`, unknownRule(id));
    if (!(SEVERITY_SETTINGS as readonly string[]).includes(severity)) {
      throw new UsageError(
        `set rule "${spec}"`,
        `the severity must be one of ${SEVERITY_SETTINGS.join(", ")} (write --rule ${id}=error)`,
      );
    }
    out[id] = severity as SeveritySetting;
  }
  return out;
}

/** "unknown rule …" with a suggestion, for usage errors. */
export function unknownRule(id: string): string {
  const close = suggest(id, ruleIds);
  return `unknown rule "${id}"${
    close ? ` (did you mean "${close}"?)` : ""
  }; --list-rules lists them`;
}
