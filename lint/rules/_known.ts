/**
 * The keys the linter accepts per table pattern: Kata's (generated) plus vmfactory's own.
 * @module
 */
import { KNOWN_KEYS, KNOWN_TABLES } from "../known_keys.ts";
import type { ValueKind } from "../parse_document.ts";

const FACTORY_TABLES = ["factory", "hypervisor.*.factory"];
const factoryKeys = Object.assign({}, ...FACTORY_TABLES.map((t) => KNOWN_KEYS[t] ?? {}));

/** Known keys with their value types by table pattern (both factory layouts know the same keys). */
export const KEYS: Readonly<Record<string, Readonly<Record<string, readonly ValueKind[]>>>> = {
  ...KNOWN_KEYS,
  ...Object.fromEntries(FACTORY_TABLES.map((t) => [t, factoryKeys])),
  vmfactory: {
    accel: ["string"],
    state_dir: ["string"],
    guest: ["string"],
    pool_size: ["integer"],
    pool_min: ["integer"],
    pool_max: ["integer"],
    console_log_max: ["integer"],
    lint: ["table"],
  },
};

/** Known table patterns, ours included. */
export const TABLES: ReadonlySet<string> = new Set([
  ...KNOWN_TABLES,
  "vmfactory",
  "vmfactory.lint",
]);

/**
 * The value types of `key` in a table of `pattern`, or undefined when Kata does not know the key
 * (own properties only: a key named `constructor` is not known).
 */
export function knownKinds(pattern: string, key: string): readonly ValueKind[] | undefined {
  return Object.hasOwn(KEYS, pattern) && Object.hasOwn(KEYS[pattern], key)
    ? KEYS[pattern][key]
    : undefined;
}
