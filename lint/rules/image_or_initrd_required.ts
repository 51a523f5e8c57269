/** Rule `image-or-initrd-required`. @module */
import type { Rule } from "../types.ts";

/** Kata needs boot media: `image` or `initrd`. */
export const imageOrInitrdRequired: Rule = {
  meta: {
    id: "image-or-initrd-required",
    description: "The hypervisor table needs image or initrd.",
    defaultSeverity: "error",
    docs: {
      explanation:
        'Kata refuses to start: "image or initrd must be defined in the configuration file". Not applicable to ' +
        "the remote hypervisor, to confidential guests (confidential_guest = true, e.g. IBM Secure Execution " +
        'boots one image given as kernel) or with [vmfactory] guest = "builtin".',
      incorrect: '[hypervisor.qemu]\nkernel = "/usr/share/kata-containers/vmlinuz.container"\n',
      correct: '[hypervisor.qemu]\nkernel = "/usr/share/kata-containers/vmlinuz.container"\n' +
        'initrd = "/usr/share/kata-containers/kata-containers-initrd.img"\n',
    },
  },
  check(ctx) {
    const m = ctx.model;
    const name = m.hypervisorName;
    if (name === undefined || name === "remote" || m.builtinGuest) return;
    if (m.hypervisor("confidential_guest")?.value === true) return;
    if (m.text(m.hypervisor("image")) || m.text(m.hypervisor("initrd"))) return;
    ctx.report({
      range: m.table(["hypervisor", name])!.at,
      message: `image or initrd must be defined in the configuration file ([hypervisor.${name}])`,
    });
  },
};
