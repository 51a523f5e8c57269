/**
 * `vmfactory lint` as a subprocess: exit codes, output formats, --explain, --rule, suppression,
 * drop-ins, the built-in default and --probe.
 * @module
 */
import { runCli } from "./_cli.ts";
import assert from "node:assert/strict";
import { DEFAULT_QEMU_PATH } from "../lib/config/builtin_default.ts";
import { hostHasKataConfig, OWN_CONFIGS_DIR, tomlFiles, withFiles } from "./lint_helpers.ts";

const lint = (args: string[], env: Record<string, string> = {}) => runCli(["lint", ...args], env);

const CLEAN = '[hypervisor.qemu]\npath = "/usr/bin/qemu-lite-system-x86_64"\ninitrd = "/i"\n';
const BAD = CLEAN + 'image = "/img"\n[factory]\nenable_templates = true\n';

Deno.test("lint: exit 0 on a clean file, 1 on error findings, 2 on unreadable input", async () => {
  await withFiles({ "clean.toml": CLEAN, "bad.toml": BAD }, async (dir) => {
    const clean = await lint([`${dir}/clean.toml`]);
    assert.equal(clean.code, 0, clean.stderr);
    assert.match(clean.stdout, /No problems found in 1 file\./);

    const bad = await lint([`${dir}/bad.toml`]);
    assert.equal(bad.code, 1);
    assert.ok(
      bad.stdout.includes(`${dir}/bad.toml:3:1  error  having both an image and an initrd`),
    );
    assert.match(bad.stdout, /image-initrd-exclusive\n +3 \| initrd = "\/i"\n +\| \^{13}\n/);
    assert.match(
      bad.stdout,
      /unknown key "enable_templates" .*did you mean "enable_template"\? {2}unknown-key/,
    );
    assert.match(bad.stdout, /2 problems \(1 error, 1 warning\) in 1 file\./);
    assert.ok(!bad.stdout.includes("\x1b["), "no colours with NO_COLOR or without a TTY");

    const missing = await lint([`${dir}/clean.toml`, `${dir}/nope.toml`]);
    assert.equal(missing.code, 2);
    assert.ok(
      missing.stderr.includes(`Cannot lint ${dir}/nope.toml: no such file`),
      missing.stderr,
    );
    assert.ok(!missing.stderr.includes("    at "), "no stack trace");

    const directory = await lint([dir]);
    assert.equal(directory.code, 2);
    assert.match(directory.stderr, /Cannot lint .*: /);
  });
});

Deno.test("lint: json, sarif and github formats", async () => {
  await withFiles({ "bad.toml": BAD, "clean.toml": CLEAN }, async (dir) => {
    const json = await lint(["--format", "json", `${dir}/bad.toml`, `${dir}/clean.toml`]);
    assert.equal(json.code, 1);
    assert.deepEqual(JSON.parse(json.stdout), {
      files: [
        {
          path: `${dir}/bad.toml`,
          diagnostics: [
            {
              rule: "image-initrd-exclusive",
              severity: "error",
              message:
                "having both an image and an initrd defined in the configuration file is not supported: " +
                "remove one",
              line: 3,
              column: 1,
              endLine: 3,
              endColumn: 14,
            },
            {
              rule: "unknown-key",
              severity: "warning",
              message:
                'unknown key "enable_templates" in [factory]: Kata ignores it; did you mean "enable_template"?',
              line: 6,
              column: 1,
              endLine: 6,
              endColumn: 17,
            },
          ],
        },
        { path: `${dir}/clean.toml`, diagnostics: [] },
      ],
    });

    const sarif = await lint(["--format", "sarif", `${dir}/bad.toml`]);
    assert.equal(sarif.code, 1);
    const log = JSON.parse(sarif.stdout);
    assert.equal(log.version, "2.1.0");
    const run = log.runs[0];
    assert.equal(run.tool.driver.name, "vmfactory");
    assert.ok(run.tool.driver.rules.length >= 12);
    for (const r of run.tool.driver.rules) {
      assert.ok(r.id && r.shortDescription.text && r.help.text && r.help.markdown);
    }
    assert.equal(run.results.length, 2);
    const first = run.results[0];
    assert.equal(first.ruleId, "image-initrd-exclusive");
    assert.equal(run.tool.driver.rules[first.ruleIndex].id, first.ruleId);
    assert.equal(first.level, "error");
    assert.deepEqual(first.locations[0].physicalLocation.region, {
      startLine: 3,
      startColumn: 1,
      endLine: 3,
      endColumn: 14,
    });
    assert.equal(run.results[1].level, "warning");

    const gh = await lint(["--format", "github", `${dir}/bad.toml`]);
    assert.equal(gh.code, 1);
    const lines = gh.stdout.trim().split("\n");
    assert.equal(
      lines[0],
      `::error file=${dir}/bad.toml,line=3,col=1,endLine=3,endColumn=14,title=image-initrd-exclusive::` +
        "having both an image and an initrd defined in the configuration file is not supported: remove one",
    );
    assert.match(lines[1], /^::warning file=.*title=unknown-key::unknown key/);
  });
});

Deno.test("lint: --explain, --list-rules, --rule, suppression comments", async () => {
  const explain = await lint(["--explain", "template-forbids-virtio-fs"]);
  assert.equal(explain.code, 0);
  assert.match(explain.stdout, /^template-forbids-virtio-fs \(default severity: error\)/);
  assert.match(explain.stdout, /Incorrect:\n {4}\[hypervisor\.qemu\]\n {4}shared_fs = "virtio-fs"/);
  assert.match(explain.stdout, /Correct:\n/);

  const unknown = await lint(["--explain", "template-forbid-virtio-fs"]);
  assert.equal(unknown.code, 2);
  assert.match(
    unknown.stderr,
    /unknown rule "template-forbid-virtio-fs" \(did you mean "template-forbids-virtio-fs"\?\)/,
  );

  const list = await lint(["--list-rules"]);
  assert.equal(list.code, 0);
  assert.match(list.stdout, /^unknown-key +warning +/m);

  await withFiles({
    "typo.toml": CLEAN + "[factory]\nenable_templates = true\n",
    "ignored.toml": CLEAN +
      "[factory]\n# vmfactory-lint-ignore unknown-key\nenable_templates = true\n",
  }, async (dir) => {
    assert.equal((await lint([`${dir}/typo.toml`])).code, 0);
    const strict = await lint(["--rule", "unknown-key=error", `${dir}/typo.toml`]);
    assert.equal(strict.code, 1);
    assert.match(strict.stdout, /typo\.toml:5:1 {2}error {2}unknown key/);
    const off = await lint(["-r", "unknown-key=off", "--format", "json", `${dir}/typo.toml`]);
    assert.deepEqual(JSON.parse(off.stdout).files[0].diagnostics, []);
    const ignored = await lint([
      "--format",
      "json",
      "--rule",
      "unknown-key=error",
      `${dir}/ignored.toml`,
    ]);
    assert.equal(ignored.code, 0);
    assert.deepEqual(JSON.parse(ignored.stdout).files[0].diagnostics, []);

    const badSeverity = await lint(["--rule", "unknown-key=fatal", `${dir}/typo.toml`]);
    assert.equal(badSeverity.code, 2);
    assert.match(badSeverity.stderr, /severity must be one of off, info, warning, error/);
    const badRule = await lint(["--rule", "no-such-rule=error", `${dir}/typo.toml`]);
    assert.equal(badRule.code, 2);
    assert.match(badRule.stderr, /unknown rule "no-such-rule"/);
  });
});

Deno.test("lint --config: drop-ins in config.d; findings point at the drop-in that set the key", async () => {
  await withFiles({
    "configuration.toml": CLEAN + 'shared_fs = "virtio-9p"\n[factory]\nenable_template = false\n',
    "config.d/10-template.toml": "[factory]\nenable_template = true\nvm_cache_number = 2\n",
    "config.d/20-memory.toml": "[hypervisor.qemu]\ndefault_memory = 64\n",
  }, async (dir) => {
    const r = await lint(["--format", "json", "--config", `${dir}/configuration.toml`]);
    assert.equal(r.code, 1, r.stderr);
    const files = JSON.parse(r.stdout).files;
    assert.deepEqual(files.map((f: { path: string }) => f.path), [
      `${dir}/configuration.toml`,
      `${dir}/config.d/10-template.toml`,
      `${dir}/config.d/20-memory.toml`,
    ]);
    const rules = (i: number) =>
      files[i].diagnostics.map((d: { rule: string; line: number }) => `${d.rule}@${d.line}`);
    assert.deepEqual(rules(0), []);
    assert.deepEqual(rules(1), ["template-shares-memory@2", "template-cache-exclusive@3"]);
    assert.deepEqual(rules(2), ["invalid-value@2"]);

    const viaEnv = await lint(["--format", "json"], {
      KATA_CONF_FILE: `${dir}/configuration.toml`,
    });
    assert.equal(JSON.parse(viaEnv.stdout).files.length, 3);
  });
});

Deno.test("lint with no configuration file lints the built-in default and says so", async () => {
  if (hostHasKataConfig()) {
    console.warn("skipping: this host has a Kata configuration file");
    return;
  }
  const r = await lint(["--format", "json"]);
  assert.equal(r.code, 0);
  assert.equal(r.stderr.trim().split("\n").length, 1);
  assert.match(r.stderr, /no Kata configuration file found; linting the built-in default/);
  const [file] = JSON.parse(r.stdout).files;
  assert.equal(file.path, "<builtin>");
  assert.deepEqual(file.diagnostics.map((d: { rule: string }) => d.rule), [
    "template-shares-memory",
  ]);
});

const TEMPLATING = `[hypervisor.qemu]\npath = "${DEFAULT_QEMU_PATH}"\ninitrd = "/i"\n` +
  'shared_fs = "none"\n[factory]\nenable_template = true\n';
const rulesOf = (out: string) =>
  JSON.parse(out).files[0].diagnostics.map((d: { rule: string; severity: string }) =>
    `${d.rule}:${d.severity}`
  );

Deno.test("lint --probe: a QEMU that is not on this host is named as missing, with its package", async () => {
  const absent = TEMPLATING.replace(DEFAULT_QEMU_PATH, "/nonexistent/qemu-system-x86_64");
  await withFiles({ "absent.toml": absent }, async (dir) => {
    const r = await lint(["--probe", "--format", "json", `${dir}/absent.toml`]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(rulesOf(r.stdout), [
      "template-requires-qemu-lite:warning",
      "template-shares-memory:info",
    ]);
    assert.match(
      JSON.parse(r.stdout).files[0].diagnostics[0].message,
      /^\/nonexistent\/qemu-system-x86_64 is not found on this host \(the Debian package qemu-system-x86 provides \/usr\/bin\/qemu-system-x86_64\)/,
    );
  });
});

Deno.test({
  name: "lint --probe: this host's QEMU proves x-ignore-shared",
  ignore: !(() => {
    try {
      return Deno.statSync(DEFAULT_QEMU_PATH).isFile;
    } catch {
      return false;
    }
  })(),
  async fn() {
    await withFiles({ "up.toml": TEMPLATING }, async (dir) => {
      const plain = await lint(["--format", "json", `${dir}/up.toml`]);
      assert.deepEqual(rulesOf(plain.stdout), [
        "template-requires-qemu-lite:warning",
        "template-shares-memory:info",
      ]);
      const probed = await lint(["--probe", "--format", "json", `${dir}/up.toml`]);
      assert.equal(probed.code, 0, probed.stderr);
      assert.deepEqual(rulesOf(probed.stdout), ["template-shares-memory:info"]);
    });
  },
});

Deno.test("lint: the own corpus through the CLI, files and a configuration with drop-ins", async () => {
  const files = tomlFiles(OWN_CONFIGS_DIR);
  const all = await lint(["--format", "json", ...files]);
  assert.equal(all.code, 1, "kata1-qemu-lite.toml sets both an image and an initrd");
  const errors = JSON.parse(all.stdout).files.flatMap((
    f: { path: string; diagnostics: { severity: string }[] },
  ) => f.diagnostics.filter((d) => d.severity === "error").map(() => f.path));
  assert.deepEqual(errors, [`${OWN_CONFIGS_DIR}/kata1-qemu-lite.toml`]);
  const dropins = await lint(["--config", `${OWN_CONFIGS_DIR}/dropin/configuration.toml`]);
  assert.equal(dropins.code, 0, dropins.stdout);
  assert.match(dropins.stdout, /10-template\.toml:3:1 {2}info {2}/);
});
