/** Rule `vm-cache-requires-qemu`. @module */
import { DEFAULT_QEMU_PATH } from "../../lib/config/builtin_default.ts";
import type { Rule } from "../types.ts";
import { spanOf } from "./_span.ts";

/** VMCache works only with the QEMU hypervisor. */
export const vmCacheRequiresQemu: Rule = {
  meta: {
    id: "vm-cache-requires-qemu",
    description: "VMCache (vm_cache_number > 0) works only with [hypervisor.qemu].",
    defaultSeverity: "error",
    docs: {
      explanation:
        'Kata says "VM cache just support qemu": the cached VMs are handed over with QEMU-specific state. ' +
        "Use [hypervisor.qemu] or turn VMCache off.",
      incorrect:
        '[hypervisor.firecracker]\npath = "/usr/bin/firecracker"\n\n[factory]\nvm_cache_number = 3\n',
      correct:
        `[hypervisor.qemu]\npath = "${DEFAULT_QEMU_PATH}"\n\n[factory]\nvm_cache_number = 3\n`,
    },
  },
  check(ctx) {
    const m = ctx.model;
    if (!m.vmCache || m.hypervisorName === "qemu") return;
    const what = m.hypervisorName === undefined
      ? "no hypervisor is configured"
      : `the hypervisor is ${m.hypervisorName}`;
    ctx.report({ range: spanOf(m.vmCache), message: `VM cache just support qemu, but ${what}` });
  },
};
