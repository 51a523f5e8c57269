/** Rule `image-initrd-exclusive`. @module */
import type { Rule } from "../types.ts";
import { spanOf } from "./_span.ts";

/** Kata refuses a hypervisor table with both `image` and `initrd`. */
export const imageInitrdExclusive: Rule = {
  meta: {
    id: "image-initrd-exclusive",
    description: "image and initrd cannot both be set.",
    defaultSeverity: "error",
    docs: {
      explanation:
        'Kata refuses to start: "having both an image and an initrd defined in the configuration file is not ' +
        'supported". Keep initrd for VM templating, image otherwise. Not applicable with [vmfactory] guest = "builtin".',
      incorrect: '[hypervisor.qemu]\nimage = "/usr/share/kata-containers/kata-containers.img"\n' +
        'initrd = "/usr/share/kata-containers/kata-containers-initrd.img"\n',
      correct:
        '[hypervisor.qemu]\ninitrd = "/usr/share/kata-containers/kata-containers-initrd.img"\n',
    },
  },
  check(ctx) {
    const m = ctx.model;
    const initrd = m.hypervisor("initrd");
    if (m.builtinGuest || !m.text(initrd) || !m.text(m.hypervisor("image"))) return;
    ctx.report({
      range: spanOf(initrd!),
      message:
        "having both an image and an initrd defined in the configuration file is not supported: remove one",
    });
  },
};
