/** Rule `invalid-value`. @module */
import {
  FACTORY_CHECKS,
  HYPERVISOR_CHECKS,
  LINT_SEVERITY_CHECK,
  MAX_KEPT_VMS,
  MAX_MEMORY_SLOTS,
  type ValueCheck,
  VMFACTORY_CHECKS,
} from "../../lib/config/key_checks.ts";
import type { Entry, ValueKind } from "../parse_document.ts";
import { tablePattern } from "../table_pattern.ts";
import type { Rule, RuleContext } from "../types.ts";
import { knownKinds } from "./_known.ts";
import { spanOf, tableName } from "./_span.ts";

const CHECKS: Record<string, Readonly<Record<string, ValueCheck>>> = {
  "hypervisor.*": HYPERVISOR_CHECKS,
  "factory": FACTORY_CHECKS,
  "hypervisor.*.factory": FACTORY_CHECKS,
  "vmfactory": VMFACTORY_CHECKS,
};

const ARTICLE: Record<ValueKind, string> = {
  string: "a string",
  integer: "an integer",
  float: "a number",
  boolean: "true or false",
  datetime: "a date-time",
  array: "an array",
  table: "a table",
};

function kindFits(kind: ValueKind, allowed: readonly ValueKind[]): boolean {
  return allowed.includes(kind) || (kind === "integer" && allowed.includes("float"));
}

function problemOf(entry: Entry, ruleIds: readonly string[]): string | undefined {
  const key = entry.keyPath.at(-1)!;
  const pattern = tablePattern(entry.keyPath, entry.keyPath.length - 1);
  if (pattern === "vmfactory.lint") {
    return ruleIds.includes(key) ? LINT_SEVERITY_CHECK(entry.value) : undefined;
  }
  const check = Object.hasOwn(CHECKS, pattern) && Object.hasOwn(CHECKS[pattern], key)
    ? CHECKS[pattern][key]
    : undefined;
  if (check) return check(entry.value);
  const allowed = knownKinds(pattern, key);
  if (allowed && !kindFits(entry.kind, allowed)) {
    return `must be ${[...new Set(allowed.map((k) => ARTICLE[k]))].join(" or ")}, not ${
      ARTICLE[entry.kind]
    }`;
  }
  return undefined;
}

function checkEntry(ctx: RuleContext, entry: Entry): void {
  const problem = problemOf(entry, ctx.ruleIds);
  if (!problem) return;
  ctx.report({
    range: spanOf(entry),
    message: `${entry.keyPath.at(-1)} in ${tableName(entry.keyPath)} ${problem} (got ${
      JSON.stringify(entry.value)
    })`,
  });
}

/** Wrong types and out-of-range values. */
export const invalidValue: Rule = {
  meta: {
    id: "invalid-value",
    description: "A value has the wrong type or is out of range.",
    defaultSeverity: "error",
    docs: {
      explanation:
        "Checks the type of every key Kata knows (as seen in Kata's own configuration files) and the range of " +
        "the keys templating and VMCache depend on: booleans, absolute paths for template_path and " +
        "vm_cache_endpoint, shared_fs in virtio-fs, virtio-fs-nydus, virtio-9p, inline-virtio-fs or none, " +
        "default_memory of 256 MiB to 1 TiB (Kata silently replaces smaller values with 2048 MiB), " +
        `default_vcpus finite, default_maxvcpus a uint32, memory_slots 0 to ${MAX_MEMORY_SLOTS} (QEMU's ` +
        `limit), vm_cache_number 0 to ${MAX_KEPT_VMS}, and vmfactory's own [vmfactory] keys (accel ` +
        `auto|kvm|tcg, state_dir absolute, guest builtin|config, pool_size, pool_min and pool_max 0 to ${MAX_KEPT_VMS}) and ` +
        "[vmfactory.lint] severities (off|info|warning|error).",
      incorrect:
        '[hypervisor.qemu]\ndefault_memory = "2G"\n\n[factory]\nenable_template = "yes"\n' +
        'template_path = "run/vc/vm/template"\n',
      correct: "[hypervisor.qemu]\ndefault_memory = 2048\n\n[factory]\nenable_template = true\n" +
        'template_path = "/run/vc/vm/template"\n',
    },
  },
  check(ctx) {
    for (const entry of ctx.model.entries()) checkEntry(ctx, entry);
  },
};
