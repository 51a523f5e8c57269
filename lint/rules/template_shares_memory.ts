/** Rule `template-shares-memory`. @module */
import type { Rule } from "../types.ts";
import { spanOf } from "./_span.ts";

/** A reminder that clones share memory (side channels). */
export const templateSharesMemory: Rule = {
  meta: {
    id: "template-shares-memory",
    description: "VM templating shares memory between clones (CVE-2015-2877 class side channels).",
    defaultSeverity: "info",
    docs: {
      explanation:
        "Every clone maps the template's memory copy-on-write, so clones share physical pages until they write " +
        "them. Page sharing between tenants enables side channels of the CVE-2015-2877 class (a tenant can tell " +
        "whether another touched a shared page). Use templating for VMs of one trust domain, or turn this note " +
        "off with --rule template-shares-memory=off once you have decided.",
      incorrect: "[factory]\nenable_template = true\n",
      correct:
        "[factory]\n# vmfactory-lint-ignore template-shares-memory\nenable_template = true\n",
    },
  },
  check(ctx) {
    const tpl = ctx.model.templating;
    if (!tpl) return;
    ctx.report({
      range: spanOf(tpl),
      message:
        "VM templating shares the template's memory between all clones: tenants can observe each other " +
        "through page-sharing side channels (CVE-2015-2877 class); use it within one trust domain",
    });
  },
};
