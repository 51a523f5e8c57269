/**
 * Lints every Kata configuration file of the test corpora (the own one in test/configs always, the
 * real Kata files when present): no crash, no unknown key, no syntax finding, and the findings we
 * expect on the interesting ones.
 * @module
 */
import assert from "node:assert/strict";
import { lintConfig, lintFiles, lintText } from "../lint/mod.ts";
import { corpora, type Corpus, OWN_CONFIGS_DIR, tomlFiles } from "./lint_helpers.ts";

const CORPORA = corpora();

/** Per corpus: how many files at least, and the findings expected per file (`rule@line`). */
const EXPECTED: Record<Corpus["name"], { min: number; findings: Record<string, string[]> }> = {
  own: {
    min: 10,
    findings: {
      "kata1-qemu-lite.toml": ["image-initrd-exclusive@7"],
      "qemu-template.toml": ["template-requires-qemu-lite@5", "template-shares-memory@21"],
      "quoted-crlf.toml": ["template-shares-memory@10"],
    },
  },
  kata: {
    min: 30,
    findings: {
      "kata-1/configuration-qemu.toml": ["image-initrd-exclusive@16"],
      "kata-1.7/configuration-qemu.toml": ["image-initrd-exclusive@16"],
    },
  },
};

/** The corpus files a test looks at, per corpus: `[corpus, file relative to it]`. */
function pick(files: Record<Corpus["name"], string[]>): [Corpus, string][] {
  return CORPORA.flatMap((c) => files[c.name].map((f) => [c, f] as [Corpus, string]));
}

const read = (c: Corpus, file: string) => Deno.readTextFileSync(`${c.dir}/${file}`);
const found = (path: string, text: string) =>
  lintText(path, text).map((d) => `${d.rule}@${d.line}`);

Deno.test("every Kata configuration of the corpora lints without unknown keys or syntax findings", async () => {
  for (const corpus of CORPORA) {
    const { min, findings } = EXPECTED[corpus.name];
    const files = tomlFiles(corpus.dir);
    assert.ok(files.length >= min, `${corpus.name}: only ${files.length} files`);
    for (const r of await lintFiles(files)) {
      const rel = r.path.slice(corpus.dir.length + 1);
      const got = r.diagnostics.map((d) => `${d.rule}@${d.line}`);
      assert.deepEqual(got, findings[rel] ?? [], `${corpus.name}: ${rel}`);
    }
  }
});

Deno.test("Kata 1.x qemu (qemu-lite) with templating on: only image and memory findings", () => {
  const cases = pick({ own: ["kata1-qemu-lite.toml"], kata: ["kata-1.7/configuration-qemu.toml"] });
  const want: Record<Corpus["name"], string[]> = {
    own: ["image-initrd-exclusive@7", "template-forbids-image@8", "template-shares-memory@17"],
    kata: ["image-initrd-exclusive@16", "template-forbids-image@17", "template-shares-memory@246"],
  };
  for (const [corpus, file] of cases) {
    const text = read(corpus, file);
    assert.match(text, /path = "\/usr\/bin\/qemu-lite-system-x86_64"/);
    const on = text.replace("#enable_template = true", "enable_template = true");
    // qemu-lite satisfies the QEMU rule; Kata 1.x has virtio-9p; image + initrd both set.
    assert.deepEqual(found("q.toml", on), want[corpus.name], file);
  }
});

Deno.test("Kata 3 qemu (Go layout) and runtime-rs qemu ([hypervisor.qemu.factory]) with templating on", () => {
  const cases = pick({
    own: ["qemu-image.toml", "qemu-runtime-rs.toml"],
    kata: ["kata-3/configuration-qemu.toml", "kata-3-rs/configuration-qemu-runtime-rs.toml"],
  });
  const templateLine: Record<string, number> = {
    "qemu-image.toml": 16,
    "qemu-runtime-rs.toml": 15,
    "kata-3/configuration-qemu.toml": 507,
    "kata-3-rs/configuration-qemu-runtime-rs.toml": 511,
  };
  for (const [corpus, file] of cases) {
    const text = read(corpus, file);
    const lines = text.split("\n");
    const line = templateLine[file];
    assert.equal(lines[line - 1], "enable_template = false", file);
    const on = text.replace(/^enable_template = false$/m, "enable_template = true");
    const diags = lintText(file, on);
    const pathLine = lines.findIndex((l) => l.startsWith("path = ")) + 1;
    const imageLine = lines.findIndex((l) => l.startsWith("image = ")) + 1;
    const fsLine = lines.findIndex((l) => l.startsWith("shared_fs = ")) + 1;
    assert.deepEqual(
      diags.map((d) => `${d.rule}:${d.severity}@${d.line}`),
      [
        `template-requires-qemu-lite:warning@${pathLine}`,
        `template-forbids-image:error@${imageLine}`,
        `template-forbids-virtio-fs:error@${fsLine}`,
        `template-requires-initrd:error@${line}`,
        `template-shares-memory:info@${line}`,
      ].sort((a, b) => Number(a.split("@")[1]) - Number(b.split("@")[1])),
      `${corpus.name}: ${file}`,
    );
  }
});

Deno.test("confidential and remote configurations need no image or initrd", () => {
  const cases = pick({
    own: ["qemu-confidential.toml", "remote.toml"],
    kata: [
      "kata-3/configuration-qemu-se.toml",
      "kata-3-rs/configuration-qemu-se-runtime-rs.toml",
      "kata-3/configuration-remote.toml",
    ],
  });
  for (const [corpus, file] of cases) {
    assert.deepEqual(found(file, read(corpus, file)), [], `${corpus.name}: ${file}`);
  }
});

Deno.test("a main file with config.d drop-ins lints as one configuration", async () => {
  const { results, builtin } = await lintConfig({
    config: `${OWN_CONFIGS_DIR}/dropin/configuration.toml`,
  });
  assert.equal(builtin, false);
  // alone, each drop-in would lack a hypervisor; merged, the first only turns templating on
  assert.deepEqual(
    results.map((r) => [
      r.path.slice(OWN_CONFIGS_DIR.length + 1),
      r.diagnostics.map((d) => `${d.rule}@${d.line}`),
    ]),
    [
      ["dropin/configuration.toml", []],
      ["dropin/config.d/10-template.toml", ["template-shares-memory@3"]],
      ["dropin/config.d/20-memory.toml", []],
    ],
  );
});
