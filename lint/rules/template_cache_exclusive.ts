/** Rule `template-cache-exclusive`. @module */
import type { Rule } from "../types.ts";
import { spanOf } from "./_span.ts";

/** Templating and VMCache cannot both be on. */
export const templateCacheExclusive: Rule = {
  meta: {
    id: "template-cache-exclusive",
    description: "enable_template and vm_cache_number > 0 cannot be used together.",
    defaultSeverity: "error",
    docs: {
      explanation:
        'Kata refuses a configuration with both: "VM factory cannot work together with VM cache". Choose ' +
        "templating (clones share memory, start in tens of milliseconds) or VMCache (a server keeps booted VMs).",
      incorrect: "[factory]\nenable_template = true\nvm_cache_number = 3\n",
      correct: "[factory]\nenable_template = true\nvm_cache_number = 0\n",
    },
  },
  check(ctx) {
    const { templating, vmCache } = ctx.model;
    if (!templating || !vmCache) return;
    ctx.report({
      range: spanOf(vmCache),
      message:
        "VM factory cannot work together with VM cache: set vm_cache_number = 0 or enable_template = false",
    });
  },
};
