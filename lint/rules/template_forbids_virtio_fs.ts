/** Rule `template-forbids-virtio-fs`. @module */
import type { Rule } from "../types.ts";
import { spanOf } from "./_span.ts";

const VIRTIO_FS = new Set(["virtio-fs", "virtio-fs-nydus"]);
const WHY =
  "clones map the template's memory privately (copy-on-write), but virtio-fs needs guest " +
  "memory shared with virtiofsd";

/** Templating cannot work with virtio-fs (also Kata 2+'s default when `shared_fs` is unset). */
export const templateForbidsVirtioFs: Rule = {
  meta: {
    id: "template-forbids-virtio-fs",
    description: "VM templating does not work with shared_fs = virtio-fs (Kata 2+'s default).",
    defaultSeverity: "error",
    docs: {
      explanation:
        "virtio-fs needs the guest RAM mapped shared so that virtiofsd can reach it; a clone maps the " +
        "template's memory privately (copy-on-write), so Kata says \"VM templating has been enabled with " +
        'virtio-fs and this configuration will not work". Kata 2 and later default shared_fs to virtio-fs, ' +
        "so a Kata 2+ file (no [proxy], [shim] or [netmon] table) without shared_fs gets the finding too, " +
        'at its hypervisor table. Use shared_fs = "virtio-9p" or "none".',
      incorrect:
        '[hypervisor.qemu]\nshared_fs = "virtio-fs"\n\n[factory]\nenable_template = true\n',
      correct: '[hypervisor.qemu]\nshared_fs = "virtio-9p"\n\n[factory]\nenable_template = true\n',
    },
  },
  check(ctx) {
    const m = ctx.model;
    if (!m.templating || m.hypervisorName === undefined) return;
    const fs = m.hypervisor("shared_fs");
    if (fs && VIRTIO_FS.has(fs.value as string)) {
      ctx.report({
        range: spanOf(fs),
        message:
          `VM templating has been enabled with ${fs.value} and this configuration will not work: ${WHY}`,
      });
    } else if (!fs && !m.kata1Style) {
      ctx.report({
        range: m.table(["hypervisor", m.hypervisorName])!.at,
        message:
          `shared_fs is not set and Kata 2+ defaults it to virtio-fs, which VM templating cannot use: ${WHY}; ` +
          'set shared_fs = "virtio-9p" or "none"',
      });
    }
  },
};
