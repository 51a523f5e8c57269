import assert from "node:assert/strict";
import { BUILTIN_DEFAULT_TOML, BUILTIN_PATH } from "../lib/config/builtin_default.ts";
import { lintDocuments, lintText } from "./lint_text.ts";
import { parseDocument } from "./parse_document.ts";

const summary = (code: string, options = {}) =>
  lintText("t.toml", code, options).map((d) =>
    `${d.rule}@${d.line}:${d.column}-${d.endLine}:${d.endColumn}`
  );

Deno.test("tables, dotted keys, quoted keys, inline tables, CRLF and runtime-rs layout resolve alike", () => {
  const hv =
    '[hypervisor."qemu"]\npath = "/usr/bin/qemu-lite-system-x86_64"\ninitrd = "/i"\nshared_fs = "none"\n';
  const layouts = [
    hv + "[factory]\nenable_template = true\n",
    hv + "[hypervisor.qemu.factory]\nenable_template = true\n",
    "factory.enable_template = true\n" + hv,
    "factory = { enable_template = true }\n" + hv,
    '"factory".enable_template = true\n' + hv,
  ];
  for (const code of layouts) {
    for (const text of [code, code.replaceAll("\n", "\r\n")]) {
      const found = lintText("t.toml", text);
      assert.deepEqual(found.map((d) => d.rule), ["template-shares-memory"], text);
    }
  }
  const inline = lintText("t.toml", layouts[3])[0];
  assert.deepEqual([inline.line, inline.column, inline.endColumn], [1, 13, 35]);
});

Deno.test("a finding keeps its columns when comment lines are blanked for speed", () => {
  const code =
    "# a comment\n  # indented comment\n[factory]\n# x = 1\nenable_templates = true # trailing\n";
  assert.deepEqual(summary(code), ["unknown-key@5:1-5:17"]);
  // A control character in a comment is a syntax error (the fast path must not hide it).
  assert.deepEqual(summary("# bad \x01 comment\n[factory]\n").map((s) => s.split("@")[0]), [
    "toml-syntax",
  ]);
  // "#" lines inside multi-line strings are content, not comments.
  assert.deepEqual(
    summary('[hypervisor.qemu]\nkernel_params = """\n# not a comment\n"""\ninitrd = "/i"\n'),
    [],
  );
});

Deno.test("suppression comments: one rule, a list, or all, on the line before", () => {
  const base = "[factory]\nenable_templates = true\n";
  assert.deepEqual(
    summary("[factory]\n# vmfactory-lint-ignore unknown-key\nenable_templates = true\n"),
    [],
  );
  assert.deepEqual(
    summary(
      "[factory]\n# vmfactory-lint-ignore invalid-value, unknown-key\nenable_templates = 1\n",
    ),
    [],
  );
  assert.deepEqual(summary("[factory]\n# vmfactory-lint-ignore\nenable_templates = 1\n"), []);
  assert.deepEqual(
    summary("[factory]\n# vmfactory-lint-ignore invalid-value\nenable_templates = 1\n"),
    [
      "unknown-key@3:1-3:17",
    ],
  );
  assert.deepEqual(summary("# vmfactory-lint-ignore unknown-key\n" + base), [
    "unknown-key@3:1-3:17",
  ]);
});

Deno.test("severities: defaults, [vmfactory.lint], then options.rules", () => {
  const code = '[vmfactory.lint]\nunknown-key = "error"\ntemplate-shares-memory = "off"\n' +
    "[factory]\nenable_templates = true\n";
  assert.deepEqual(lintText("t.toml", code).map((d) => [d.rule, d.severity]), [[
    "unknown-key",
    "error",
  ]]);
  const overridden = lintText("t.toml", code, { rules: { "unknown-key": "info" } });
  assert.deepEqual(overridden.map((d) => [d.rule, d.severity]), [["unknown-key", "info"]]);
  assert.deepEqual(lintText("t.toml", code, { rules: { "unknown-key": "off" } }), []);
});

Deno.test("merged drop-ins: later files win and findings point at the file that set the key", () => {
  const main = parseDocument(
    "/etc/kata-containers/configuration.toml",
    '[hypervisor.qemu]\npath = "/usr/bin/qemu-lite-system-x86_64"\ninitrd = "/i"\nshared_fs = "none"\n' +
      "[factory]\nenable_template = false\n",
  );
  const dropIn = parseDocument(
    "/etc/kata-containers/config.d/50-tpl.toml",
    "[factory]\n\nenable_template = true\n",
  );
  const dropIn2 = parseDocument(
    "/etc/kata-containers/config.d/60-fs.toml",
    '[hypervisor.qemu]\nshared_fs = "virtio-fs"\n',
  );
  const results = lintDocuments([main, dropIn, dropIn2]);
  assert.deepEqual(results.map((r) => r.path), [main.path, dropIn.path, dropIn2.path]);
  assert.deepEqual(results[0].diagnostics, []);
  assert.deepEqual(results[1].diagnostics.map((d) => [d.rule, d.line]), [[
    "template-shares-memory",
    3,
  ]]);
  assert.deepEqual(results[2].diagnostics.map((d) => [d.rule, d.line]), [[
    "template-forbids-virtio-fs",
    2,
  ]]);
});

Deno.test("the built-in default lints clean except the shared-memory note", () => {
  const found = lintText(BUILTIN_PATH, BUILTIN_DEFAULT_TOML);
  assert.deepEqual(found.map((d) => [d.rule, d.severity]), [["template-shares-memory", "info"]]);
  // Without the suppression comment, the upstream QEMU path is a warning, never an error.
  const bare = BUILTIN_DEFAULT_TOML.replace(/^# vmfactory-lint-ignore.*\n/m, "");
  assert.deepEqual(
    lintText(BUILTIN_PATH, bare).map((d) => [d.rule, d.severity]),
    [["template-requires-qemu-lite", "warning"], ["template-shares-memory", "info"]],
  );
});
