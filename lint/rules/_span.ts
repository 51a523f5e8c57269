/**
 * Where a finding about an entry points.
 * @module
 */
import type { Entry } from "../parse_document.ts";
import type { Location } from "../types.ts";

/** The key of `entry` through the end of its value (just the key when the value spans lines). */
export function spanOf(entry: Entry): Location {
  const v = entry.valueRange;
  return v.endLine === entry.key.line
    ? { ...entry.key, endLine: v.endLine, endColumn: v.endColumn }
    : entry.key;
}

/** The `[table]` a key belongs to, for messages: `[hypervisor.qemu]`. */
export function tableName(keyPath: readonly string[]): string {
  return `[${keyPath.slice(0, -1).join(".")}]`;
}
