import assert from "node:assert/strict";
import { corpora, tomlFiles } from "../test/lint_helpers.ts";
import { parseDocument, parseFully } from "./parse_document.ts";
import { parsePlainToml } from "./parse_plain_toml.ts";

/** The shortcut reads `text` exactly as the full parser, or declines it; returns whether it read it. */
function sameAsFull(text: string): boolean {
  const plain = parsePlainToml("t.toml", text);
  assert.deepEqual(parseDocument("t.toml", text), parseFully("t.toml", text), JSON.stringify(text));
  if (plain) assert.deepEqual(plain, parseFully("t.toml", text), JSON.stringify(text));
  return plain !== undefined;
}

Deno.test("plain TOML: every corpus file reads as with the full parser, the Kata files all plain", () => {
  for (const { name, dir } of corpora()) {
    for (const file of tomlFiles(dir)) {
      const plain = sameAsFull(Deno.readTextFileSync(file));
      if (name === "kata") assert.ok(plain, `${file} is not read as plain TOML`);
    }
  }
});

Deno.test("plain TOML: tables, arrays of tables, values and positions", () => {
  const text =
    '# c\ntop = 1\n\n[a.b]\nx = "s"\n  # indented comment\n[[a.b.t]]\ny = ["p", "q",]\n' +
    "[[a.b.t]]\ny = -2.5\n[a.b.t.u]\nz = 9223372036854775807\n[a]\nw = false\n";
  assert.ok(sameAsFull(text));
  const doc = parsePlainToml("t.toml", text)!;
  assert.deepEqual(doc.entries.map((e) => [e.keyPath.join("."), e.kind, e.value]), [
    ["top", "integer", 1],
    ["a.b.x", "string", "s"],
    ["a.b.t.0.y", "array", ["p", "q"]],
    ["a.b.t.1.y", "float", -2.5],
    ["a.b.t.1.u.z", "integer", 2 ** 63],
    ["a.w", "boolean", false],
  ]);
  const y = doc.entries[2];
  assert.deepEqual([y.key.line, y.key.column, y.valueRange.column, y.valueRange.endColumn], [
    8,
    1,
    5,
    16,
  ]);
});

Deno.test("plain TOML: declines what the full parser must read (errors included)", () => {
  const declined = [
    "a = 1", // no newline at the end
    "a = 1\r\n",
    "  a = 1\n",
    "a = 1 # trailing\n",
    'a = "\\n"\n',
    "a = -0\n",
    "a = 1e3\n",
    "a.b = 1\n",
    '"a" = 1\n',
    "a = { b = 1 }\n",
    "a = [\n  1,\n]\n",
    "a = 1\na = 2\n",
    "[a]\n[a]\n",
    "[a]\nb = 1\n[a.b]\n",
    "[a.b]\n[a]\nb = 1\n",
    "[a]\n[[a]]\n",
    "[[a]]\n[a]\n",
    "[a.b]\n[[a]]\n",
    "[ a ]\n",
    "[a]]\n",
    "# bad \x01 comment\n",
    "# lone \ud800 surrogate\n",
    `[${Array(9).fill("a").join(".")}]\n`,
    `a = x${" ".repeat(100_000)}y\n`, // hangs if the line's blanks are backtracked over
  ];
  for (const text of declined) assert.equal(sameAsFull(text), false, JSON.stringify(text));
});

Deno.test("plain TOML: seeded random files of colliding tables and keys read as with the full parser", () => {
  let seed = 20261201;
  const rnd = () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const pick = <T>(a: readonly T[]) => a[Math.floor(rnd() * a.length)];
  const names = ["a", "b", "0", "c-d"];
  const path = () => Array.from({ length: 1 + Math.floor(rnd() * 3) }, () => pick(names)).join(".");
  const values = ['"s"', "1", "-0", "-12", "1.5", "true", "[]", '["a", "b",]', "01", "[1]"];
  const line = () => {
    const r = rnd();
    if (r < 0.25) return `[${path()}]`;
    if (r < 0.4) return `[[${path()}]]`;
    if (r < 0.9) return `${pick(names)}${pick([" = ", "="])}${pick(values)}${pick(["", " "])}`;
    return pick(["", "# c", "  "]);
  };
  let plain = 0;
  for (let n = 0; n < 3000; n++) {
    const lines = Array.from({ length: 1 + Math.floor(rnd() * 6) }, line);
    if (sameAsFull(lines.join("\n") + "\n")) plain++;
  }
  assert.ok(plain > 500, `only ${plain} plain`);
});
