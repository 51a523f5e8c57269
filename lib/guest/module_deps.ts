/**
 * Kernel module dependency resolution from `/lib/modules/<release>/modules.dep`.
 * @module
 */
import { UsageError } from "../errors.ts";

/** "kernel/drivers/virtio/virtio_pci.ko.xz" or "virtio-pci" -> "virtio_pci". */
export function moduleName(pathOrName: string): string {
  const base = pathOrName.slice(pathOrName.lastIndexOf("/") + 1);
  return base.replace(/\.ko(\.(xz|zst|gz))?$/, "").replaceAll("-", "_");
}

/**
 * Returns the module files (paths as written in modules.dep) that `names` need, each after the
 * modules it depends on, without duplicates. Names listed in `modulesBuiltin` (the text of
 * modules.builtin) are built into the kernel and skipped. Throws {@link UsageError} for a name
 * that is neither.
 */
export function resolveModules(
  modulesDep: string,
  names: readonly string[],
  modulesBuiltin = "",
): string[] {
  const deps = new Map<string, { path: string; needs: string[] }>();
  for (const line of modulesDep.split("\n")) {
    const colon = line.indexOf(":");
    if (colon < 0) continue;
    const path = line.slice(0, colon).trim();
    const needs = line.slice(colon + 1).trim().split(/\s+/).filter(Boolean);
    deps.set(moduleName(path), { path, needs: needs.map(moduleName) });
  }
  const builtin = new Set(modulesBuiltin.split("\n").filter(Boolean).map(moduleName));
  const order: string[] = [];
  const done = new Set<string>();
  const visit = (name: string, chain: string[]) => {
    if (done.has(name) || builtin.has(name)) return;
    const mod = deps.get(name);
    if (!mod) {
      const via = chain.length ? ` (needed by ${chain.join(" <- ")})` : "";
      throw new UsageError(
        "collect guest kernel modules",
        `module ${name}${via} is neither in modules.dep nor built in`,
      );
    }
    if (chain.includes(name)) return;
    // modules.dep lists the deepest dependency last; modprobe loads from the end.
    for (const need of [...mod.needs].reverse()) visit(need, [name, ...chain]);
    done.add(name);
    order.push(mod.path);
  };
  for (const name of names) visit(moduleName(name), []);
  return order;
}

/**
 * The `names` the kernel has, as a module (listed in `modulesDep`) or built in (listed in
 * `modulesBuiltin`): for modules the guest uses when the kernel offers them.
 */
export function availableModules(
  modulesDep: string,
  names: readonly string[],
  modulesBuiltin = "",
): string[] {
  const listed = new Set(
    [
      ...modulesDep.split("\n").map((line) => line.slice(0, line.indexOf(":"))),
      ...modulesBuiltin
        .split("\n"),
    ].filter(Boolean).map(moduleName),
  );
  return names.filter((name) => listed.has(moduleName(name)));
}
