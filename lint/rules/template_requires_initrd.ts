/** Rule `template-requires-initrd`. @module */
import type { Rule } from "../types.ts";
import { spanOf } from "./_span.ts";

/** Templating boots kernel + initrd only: `initrd` must be set. */
export const templateRequiresInitrd: Rule = {
  meta: {
    id: "template-requires-initrd",
    description: "VM templating needs an initrd (boot from kernel + initrd).",
    defaultSeverity: "error",
    docs: {
      explanation:
        "A template VM is booted from kernel + initrd so that every clone starts from the same memory image; " +
        'Kata refuses with "Factory option enable_template requires an initrd image". Not applicable with ' +
        '[vmfactory] guest = "builtin", where vmfactory supplies its own kernel and initrd.',
      incorrect:
        '[hypervisor.qemu]\nkernel = "/usr/share/kata-containers/vmlinuz.container"\n\n[factory]\nenable_template = true\n',
      correct: '[hypervisor.qemu]\nkernel = "/usr/share/kata-containers/vmlinuz.container"\n' +
        'initrd = "/usr/share/kata-containers/kata-containers-initrd.img"\n\n[factory]\nenable_template = true\n',
    },
  },
  check(ctx) {
    const m = ctx.model;
    const tpl = m.templating;
    if (!tpl || m.builtinGuest || m.text(m.hypervisor("initrd"))) return;
    ctx.report({
      range: spanOf(tpl),
      message: "Factory option enable_template requires an initrd image: set initrd in " +
        `[hypervisor.${m.hypervisorName ?? "qemu"}]`,
    });
  },
};
