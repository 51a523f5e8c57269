/**
 * Seeded mutations of the corpus files (the own ones, plus the real Kata files when present): the
 * linter never crashes and every result is well-formed (a syntax finding alone, or rule findings,
 * or nothing).
 * @module
 */
import assert from "node:assert/strict";
import { lintText, ruleIds } from "../lint/mod.ts";
import { corpora, tomlFiles } from "./lint_helpers.ts";

const MUTATIONS = 3000;
const CHARS = [
  "[",
  "]",
  "{",
  "}",
  "=",
  '"',
  "'",
  "#",
  ".",
  ",",
  "\n",
  "\r\n",
  "\t",
  " ",
  "x",
  "0",
  "-",
  "_",
  "\\",
  "é",
];

/** mulberry32: a small deterministic PRNG. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function mutate(text: string, rnd: () => number): string {
  const at = Math.floor(rnd() * text.length);
  switch (Math.floor(rnd() * 5)) {
    case 0:
      return text.slice(0, at); // truncate
    case 1:
      return text.slice(0, at) + text.slice(at + 1 + Math.floor(rnd() * 3)); // delete characters
    case 2:
      return text.slice(0, at) + CHARS[Math.floor(rnd() * CHARS.length)] + text.slice(at); // insert
    case 3: { // swap two lines
      const lines = text.split("\n");
      const a = Math.floor(rnd() * lines.length), b = Math.floor(rnd() * lines.length);
      [lines[a], lines[b]] = [lines[b], lines[a]];
      return lines.join("\n");
    }
    default: { // uncomment or duplicate a line
      const lines = text.split("\n");
      const i = Math.floor(rnd() * lines.length);
      lines.splice(i, 0, lines[i].replace(/^#\s?/, ""));
      return lines.join("\n");
    }
  }
}

Deno.test({
  name: `fuzz: ${MUTATIONS} seeded mutations of the corpus files never crash`,
  fn() {
    const texts = corpora().flatMap((c) => tomlFiles(c.dir)).map((f) => Deno.readTextFileSync(f));
    const rnd = prng(20261126);
    let syntax = 0, findings = 0, clean = 0;
    for (let n = 0; n < MUTATIONS; n++) {
      let text = texts[Math.floor(rnd() * texts.length)];
      for (let k = 1 + Math.floor(rnd() * 3); k > 0; k--) text = mutate(text, rnd);
      const lines = text.split("\n").length;
      const diags = lintText("fuzz.toml", text);
      for (const d of diags) {
        assert.ok(ruleIds.includes(d.rule), d.rule);
        assert.ok(d.line >= 1 && d.line <= lines && d.column >= 1, JSON.stringify(d));
        assert.ok(
          d.endLine > d.line || (d.endLine === d.line && d.endColumn >= d.column),
          JSON.stringify(d),
        );
        assert.ok(d.message.length > 0);
      }
      if (diags.some((d) => d.rule === "toml-syntax")) {
        assert.equal(diags.length, 1, "a syntax error comes alone");
        syntax++;
      } else if (diags.length > 0) findings++;
      else clean++;
    }
    assert.equal(syntax + findings + clean, MUTATIONS);
    assert.ok(syntax > 0 && clean > 0, `syntax ${syntax}, findings ${findings}, clean ${clean}`);
  },
});
