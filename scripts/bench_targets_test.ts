import assert from "node:assert/strict";
import { checkTarget, figureAt, limitText, TARGETS } from "./bench_targets.ts";

const DOC = new URL("../docs/performance.md", import.meta.url);

Deno.test("every target has a row in docs/performance.md with its limit and figures", async () => {
  const doc = await Deno.readTextFile(DOC);
  const ids = TARGETS.map((t) => t.id);
  assert.equal(new Set(ids).size, ids.length, "target ids are unique");
  for (const t of TARGETS) {
    const row = doc.split("\n").find((l) => new RegExp(`^\\| \`${t.id}\` +\\|`).test(l));
    assert.ok(row, `docs/performance.md has no table row for ${t.id}`);
    assert.ok(row.includes(limitText(t)), `${t.id}: the row says ${limitText(t)}`);
    if (t.figure) assert.ok(row.includes(`\`${t.figure}\``), `${t.id}: the row names ${t.figure}`);
    else assert.ok(row.includes("not measured"), `${t.id}: the row says it is not measured`);
    if (t.peer) assert.ok(row.includes(`\`${t.peer}\``), `${t.id}: the row names ${t.peer}`);
    if (t.figure) assert.equal(t.unit === "×", t.peer !== undefined, `${t.id}: a peer iff ×`);
    else assert.equal(t.peer, undefined, `${t.id}: no peer without a figure`);
    assert.ok(doc.includes(`### \`${t.id}\``), `docs/performance.md explains ${t.id}`);
  }
  const rows = doc.split("\n").filter((l) => /^\| `[a-z0-9-]+` +\|/.test(l));
  assert.equal(rows.length, TARGETS.length, "the doc's table has no other target rows");
});

Deno.test("targets read figures and ratios from a run", () => {
  const run = {
    paths: { clonePool: { p50: 4 }, qemuFloor: { p50: 30 }, cacheFetch: { p50: 9 } },
    growth: [{ pool: { p50: 10 } }, { pool: { p50: 20 } }],
  };
  assert.equal(figureAt(run, "growth.-1.pool.p50"), 20);
  assert.equal(figureAt(run, "growth.0.pool.p50"), 10);
  assert.equal(figureAt(run, "paths.nothing.p50"), undefined);
  const byId = (id: string) => checkTarget(TARGETS.find((t) => t.id === id)!, run);
  assert.equal(byId("pool-clone-ms").met, true);
  assert.equal(byId("pool-clone-vs-qemu-start").compared, 4 / 30);
  assert.equal(byId("pool-clone-vs-qemu-start").met, true);
  assert.equal(byId("cache-fetch-ms").met, false);
  assert.equal(byId("growth-next-clone").compared, 2);
  assert.equal(byId("growth-next-clone").met, false);
  assert.equal(byId("clone-pss-mib").met, undefined, "a figure the run lacks is not judged");
  assert.equal(byId("api-create-ms").met, undefined);
  assert.equal(limitText(TARGETS.find((t) => t.id === "pool-clone-vs-qemu-start")!), "≤ 1/6×");
});
