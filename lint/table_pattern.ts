/**
 * Names tables by their shape: `[hypervisor.qemu]` and `[hypervisor.clh]` are both
 * `hypervisor.*` (Kata reads every hypervisor table into the same structure).
 * @module
 */

/** Top-level tables whose second part is a component name (qemu, kata, ...). */
const NAMED = new Set(["hypervisor", "agent", "proxy", "shim"]);

/**
 * The pattern of the table at `keyPath`, e.g. `["hypervisor","qemu","factory"]` ->
 * `hypervisor.*.factory`; array-of-tables indexes become `[]`.
 */
export function tablePattern(keyPath: readonly string[]): string {
  return keyPath
    .map((k, i) => (i === 1 && NAMED.has(keyPath[0]) ? "*" : /^\d+$/.test(k) ? "[]" : k))
    .join(".");
}
