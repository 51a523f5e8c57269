/** Rule `template-requires-qemu-lite`. @module */
import { DEFAULT_QEMU_PATH, QEMU_PACKAGE } from "../../lib/config/builtin_default.ts";
import type { ConfigModel } from "../config_model.ts";
import type { Rule } from "../types.ts";
import { spanOf } from "./_span.ts";

const UPSTREAM = /^(qemu-system-|qemu-kvm$)/;

/** The QEMU binary templating would use, when it is an upstream QEMU that `--probe` can check. */
export function probeCandidate(model: ConfigModel): string | undefined {
  if (!model.templating) return undefined;
  const path = binaryOf(model);
  return path && UPSTREAM.test(basename(path)) ? path : undefined;
}

function binaryOf(model: ConfigModel): string | undefined {
  return model.text(model.hypervisor("path")) ??
    (model.hypervisorName === "qemu" ? DEFAULT_QEMU_PATH : undefined);
}

function basename(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

/** Templating needs qemu-lite, or an upstream QEMU with the `x-ignore-shared` capability. */
export const templateRequiresQemuLite: Rule = {
  meta: {
    id: "template-requires-qemu-lite",
    description:
      "VM templating needs qemu-lite or upstream QEMU >= 4.1 (migration capability x-ignore-shared).",
    defaultSeverity: "error",
    docs: {
      explanation:
        "A template is saved and restored with QEMU's migration capability x-ignore-shared, which skips the guest " +
        "RAM (it already is in the template's memory file). Kata documents qemu-lite for this; upstream QEMU has " +
        "the capability since 4.1. A non-QEMU binary cannot be templated at all (error). An upstream " +
        "qemu-system-* binary gets a warning, because its version is unknown: run with --probe to start it on " +
        "this host and ask it (query-migrate-capabilities); a binary that has the capability gives no finding, " +
        "one that lacks it an error.",
      incorrect:
        '[hypervisor.qemu]\npath = "/usr/bin/firecracker"\n\n[factory]\nenable_template = true\n',
      correct:
        '[hypervisor.qemu]\npath = "/usr/bin/qemu-lite-system-x86_64"\n\n[factory]\nenable_template = true\n',
    },
  },
  check(ctx) {
    const m = ctx.model;
    const tpl = m.templating;
    if (!tpl) return;
    const pathEntry = m.hypervisor("path");
    const table = m.hypervisorName === undefined
      ? undefined
      : m.table(["hypervisor", m.hypervisorName]);
    const range = pathEntry ? spanOf(pathEntry) : table?.at ?? spanOf(tpl);
    const path = binaryOf(m);
    const need =
      "VM templating needs qemu-lite or upstream QEMU >= 4.1 (migration capability x-ignore-shared)";
    if (!path) {
      ctx.report({
        range,
        message: `${need}, but the hypervisor is ${m.hypervisorName ?? "not configured"}`,
      });
      return;
    }
    const which = pathEntry ? path : `path is not set, so Kata uses ${path}, which`;
    const base = basename(path);
    if (base.includes("qemu-lite")) return;
    if (!UPSTREAM.test(base)) {
      ctx.report({ range, message: `${need}; ${path} is not QEMU` });
      return;
    }
    const probed = ctx.probeResults?.get(path);
    if (probed === "capable") return;
    if (probed === "incapable") {
      ctx.report({
        range,
        message: `${need}; ${which} lacks x-ignore-shared (probed on this host)`,
      });
    } else if (probed === "absent") {
      ctx.report({
        range,
        severity: "warning",
        message:
          `${which} is not found on this host (the Debian package ${QEMU_PACKAGE} provides ` +
          `${DEFAULT_QEMU_PATH}), so --probe could not check it; ${need}`,
      });
    } else {
      ctx.report({
        range,
        severity: "warning",
        message:
          `${which} is not qemu-lite; upstream QEMU >= 4.1 also works (migration capability ` +
          "x-ignore-shared): run with --probe to verify the binary on this host",
      });
    }
  },
};
