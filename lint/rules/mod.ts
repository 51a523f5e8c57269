/**
 * Every lint rule, in the order `--list-rules` shows them.
 * @module
 */
import type { Rule } from "../types.ts";
import { imageInitrdExclusive } from "./image_initrd_exclusive.ts";
import { imageOrInitrdRequired } from "./image_or_initrd_required.ts";
import { invalidValue } from "./invalid_value.ts";
import { keyTooDeep } from "./key_too_deep.ts";
import { templateCacheExclusive } from "./template_cache_exclusive.ts";
import { templateForbidsImage } from "./template_forbids_image.ts";
import { templateForbidsVirtioFs } from "./template_forbids_virtio_fs.ts";
import { templateRequiresInitrd } from "./template_requires_initrd.ts";
import { templateRequiresQemuLite } from "./template_requires_qemu_lite.ts";
import { templateSharesMemory } from "./template_shares_memory.ts";
import { tomlSyntax } from "./toml_syntax.ts";
import { unknownKey } from "./unknown_key.ts";
import { vmCacheRequiresQemu } from "./vm_cache_requires_qemu.ts";

/**
 * All rules.
 * @example
 * ```ts
 * for (const rule of rules) console.log(rule.meta.id, rule.meta.severity);
 * ```
 */
export const rules: readonly Rule[] = [
  tomlSyntax,
  keyTooDeep,
  templateRequiresQemuLite,
  templateRequiresInitrd,
  templateForbidsImage,
  templateForbidsVirtioFs,
  templateCacheExclusive,
  vmCacheRequiresQemu,
  imageInitrdExclusive,
  imageOrInitrdRequired,
  invalidValue,
  unknownKey,
  templateSharesMemory,
];

/** Rule ids. */
export const ruleIds: readonly string[] = rules.map((r) => r.meta.id);

/** The rule with `id`, if any. */
export function ruleById(id: string): Rule | undefined {
  return rules.find((r) => r.meta.id === id);
}
