/**
 * Lints every real Kata configuration file: no crash, no unknown key, no syntax finding, and the
 * findings we expect on the interesting ones.
 * @module
 */
import assert from "node:assert/strict";
import { lintFiles, lintText } from "../lint/mod.ts";
import { kataConfigsDir, tomlFiles } from "./lint_helpers.ts";

const dir = kataConfigsDir();

/** Findings expected per file (relative path): `rule@line`. Every other file lints clean. */
const EXPECTED: Record<string, string[]> = {
  "kata-1/configuration-qemu.toml": ["image-initrd-exclusive@16"],
  "kata-1.7/configuration-qemu.toml": ["image-initrd-exclusive@16"],
};

const found = (path: string, text: string) =>
  lintText(path, text).map((d) => `${d.rule}@${d.line}`);

Deno.test({
  name: "every real Kata configuration lints without unknown keys or syntax findings",
  ignore: !dir,
  async fn() {
    const files = tomlFiles(dir!);
    assert.ok(files.length >= 30, `only ${files.length} files`);
    const results = await lintFiles(files);
    for (const r of results) {
      const rel = r.path.slice(dir!.length + 1);
      const got = r.diagnostics.map((d) => `${d.rule}@${d.line}`);
      assert.deepEqual(got, EXPECTED[rel] ?? [], rel);
    }
  },
});

Deno.test({
  name: "kata-1.7 qemu (qemu-lite) with templating on: only image and memory findings",
  ignore: !dir,
  fn() {
    const text = Deno.readTextFileSync(`${dir}/kata-1.7/configuration-qemu.toml`);
    assert.match(text, /path = "\/usr\/bin\/qemu-lite-system-x86_64"/);
    const on = text.replace("#enable_template = true", "enable_template = true");
    // qemu-lite satisfies the QEMU rule; Kata 1.x has virtio-9p; image + initrd both set.
    assert.deepEqual(found("q.toml", on), [
      "image-initrd-exclusive@16",
      "template-forbids-image@17",
      "template-shares-memory@246",
    ]);
  },
});

Deno.test({
  name:
    "kata-3 qemu (Go layout) and runtime-rs qemu ([hypervisor.qemu.factory]) with templating on",
  ignore: !dir,
  fn() {
    for (
      const [file, line] of [
        ["kata-3/configuration-qemu.toml", 507],
        ["kata-3-rs/configuration-qemu-runtime-rs.toml", 511],
      ] as const
    ) {
      const text = Deno.readTextFileSync(`${dir}/${file}`);
      const lines = text.split("\n");
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
        file,
      );
    }
  },
});

Deno.test({
  name: "confidential and remote configurations need no image or initrd",
  ignore: !dir,
  fn() {
    for (
      const file of [
        "kata-3/configuration-qemu-se.toml",
        "kata-3-rs/configuration-qemu-se-runtime-rs.toml",
        "kata-3/configuration-remote.toml",
      ]
    ) {
      const text = Deno.readTextFileSync(`${dir}/${file}`);
      assert.deepEqual(found(file, text), [], file);
    }
  },
});
