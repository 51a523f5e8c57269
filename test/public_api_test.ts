/** The public API (mod.ts): every export documented, every function, class and value with an @example. */
import assert from "node:assert/strict";

interface DocSymbol {
  name: string;
  declarations: { kind: string; jsDoc?: { doc?: string; tags?: { kind: string }[] } }[];
}

Deno.test("every export of mod.ts has a summary, and every value an @example", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["doc", "--json", new URL("../mod.ts", import.meta.url).pathname],
    stdout: "piped",
    stderr: "null",
  }).output();
  assert.ok(out.success, "deno doc failed");
  const doc = JSON.parse(new TextDecoder().decode(out.stdout));
  const symbols: DocSymbol[] = Object.values(doc.nodes as Record<string, { symbols: DocSymbol[] }>)
    .flatMap((n) => n.symbols);
  assert.ok(symbols.length > 20, `${symbols.length} symbols`);
  const undocumented: string[] = [];
  const noExample: string[] = [];
  for (const s of symbols) {
    const decl = s.declarations[0];
    if (!decl.jsDoc?.doc?.trim()) undocumented.push(s.name);
    const isValue = ["class", "function", "variable"].includes(decl.kind);
    if (isValue && !decl.jsDoc?.tags?.some((t) => t.kind === "example")) noExample.push(s.name);
  }
  assert.deepEqual(undocumented, [], "exports without a summary");
  assert.deepEqual(noExample, [], "functions, classes and values without an @example");
});
