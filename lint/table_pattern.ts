/**
 * Names tables by their shape: `[hypervisor.qemu]` and `[hypervisor.clh]` are both
 * `hypervisor.*` (Kata reads every hypervisor table into the same structure).
 * @module
 */

/** Top-level tables whose second part is a component name (qemu, kata, ...). */
const NAMED = new Set(["hypervisor", "agent", "proxy", "shim"]);
const INDEX = /^\d+$/;

/**
 * The pattern of the table at `keyPath` (its first `length` parts), e.g.
 * `["hypervisor","qemu","factory"]` -> `hypervisor.*.factory`; array-of-tables indexes become `[]`.
 */
export function tablePattern(keyPath: readonly string[], length = keyPath.length): string {
  let pattern = "";
  for (let i = 0; i < length; i++) {
    const k = keyPath[i];
    const part = i === 1 && NAMED.has(keyPath[0]) ? "*" : INDEX.test(k) ? "[]" : k;
    pattern = i === 0 ? part : `${pattern}.${part}`;
  }
  return pattern;
}
