/** Rule `template-forbids-image`. @module */
import type { Rule } from "../types.ts";
import { spanOf } from "./_span.ts";

/** Templating cannot boot from a disk image. */
export const templateForbidsImage: Rule = {
  meta: {
    id: "template-forbids-image",
    description: "VM templating cannot boot from a disk image (image =).",
    defaultSeverity: "error",
    docs: {
      explanation:
        "Clones share the template's memory but not a disk: a guest booted from a rootfs image would see its " +
        "block device state diverge from the template's. Kata supports templating with initrd only. " +
        'Not applicable with [vmfactory] guest = "builtin".',
      incorrect: '[hypervisor.qemu]\nimage = "/usr/share/kata-containers/kata-containers.img"\n\n' +
        "[factory]\nenable_template = true\n",
      correct:
        '[hypervisor.qemu]\ninitrd = "/usr/share/kata-containers/kata-containers-initrd.img"\n\n' +
        "[factory]\nenable_template = true\n",
    },
  },
  check(ctx) {
    const m = ctx.model;
    const image = m.hypervisor("image");
    if (!m.templating || m.builtinGuest || !m.text(image)) return;
    ctx.report({
      range: spanOf(image!),
      message:
        "VM templating boots from initrd only: remove image (Kata: Factory option enable_template " +
        "requires an initrd image)",
    });
  },
};
