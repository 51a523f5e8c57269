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

/** Splits `id=severity` (both trimmed; severity "" without `=`). */
function split(spec: string): [string, string] {
  const eq = spec.indexOf("=");
  return eq < 0 ? [spec.trim(), ""] : [spec.slice(0, eq).trim(), spec.slice(eq + 1).trim()];
}

/** Why `spec` is not a valid `id=severity` setting, or undefined when it is. */
export function ruleOptionProblem(spec: string): string | undefined {
  const [id, severity] = split(spec);
  if (!ruleById(id)) return unknownRule(id);
  if (!(SEVERITY_SETTINGS as readonly string[]).includes(severity)) {
    return `the severity must be one of ${SEVERITY_SETTINGS.join(", ")} (write --rule ${id}=error)`;
  }
  return undefined;
}

/** Parses `id=severity` strings; throws {@link UsageError} for an unknown rule or severity. */
export function parseRuleOptions(specs: readonly string[]): Record<string, SeveritySetting> {
  const out: Record<string, SeveritySetting> = {};
  for (const spec of specs) {
    const problem = ruleOptionProblem(spec);
    if (problem) throw new UsageError(`set rule "${spec}"`, problem);
    const [id, severity] = split(spec);
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
