/**
 * The layering rules of lib/, checked on the source: no import cycle between its files (type
 * imports and dynamic imports included), no FFI, and each step of a VM's life in one place.
 */
import assert from "node:assert/strict";
import { dirname, join, relative } from "node:path";

const LIB = new URL("../lib/", import.meta.url).pathname;

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const entry of Deno.readDirSync(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) out.push(...sources(path));
    else if (entry.name.endsWith(".ts") && !entry.name.endsWith("_test.ts")) out.push(path);
  }
  return out;
}

/** Every relative import (static, type-only, re-export or dynamic) of each file under lib/. */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  const specifier = /(?:from|import)\s*\(?\s*"(\.{1,2}\/[^"]+\.ts)"/g;
  for (const file of sources(LIB)) {
    const text = Deno.readTextFileSync(file);
    const deps = [...text.matchAll(specifier)]
      .map((m) => join(dirname(file), m[1]))
      .filter((dep) => dep.startsWith(LIB));
    graph.set(file, deps);
  }
  return graph;
}

Deno.test("no import cycle between files under lib/", () => {
  const graph = importGraph();
  const state = new Map<string, "visiting" | "done">();
  const cycles: string[] = [];
  const visit = (file: string, path: string[]) => {
    if (state.get(file) === "done") return;
    if (state.get(file) === "visiting") {
      cycles.push(
        [...path.slice(path.indexOf(file)), file].map((f) => relative(LIB, f)).join(" → "),
      );
      return;
    }
    state.set(file, "visiting");
    for (const dep of graph.get(file) ?? []) visit(dep, [...path, file]);
    state.set(file, "done");
  };
  for (const file of graph.keys()) visit(file, []);
  assert.deepEqual(cycles, []);
  assert.ok(graph.size > 40, "the graph was read");
});

Deno.test("no FFI under lib/", () => {
  const offenders = sources(LIB).filter((f) =>
    /Deno\.dlopen|UnsafePointer/.test(Deno.readTextFileSync(f))
  );
  assert.deepEqual(offenders.map((f) => relative(LIB, f)), []);
});

Deno.test("each step of a VM's life is written once: personalize and hot-add from the factory", () => {
  const callers = (name: string) =>
    sources(LIB).filter((f) =>
      new RegExp(`\\b${name}\\(`).test(
        Deno.readTextFileSync(f).replace(new RegExp(`export (async )?function ${name}\\(`), ""),
      )
    ).map((f) => relative(LIB, f));
  assert.deepEqual(callers("personalize"), ["factory/vm_factory.ts"]);
  assert.deepEqual(callers("hotAdd"), ["factory/vm_factory.ts"]);
  assert.deepEqual(callers("onlineHotAdded"), ["factory/vm_factory.ts"]);
});
