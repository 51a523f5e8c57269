/**
 * Misuse of the command line, in every command: exit 2 with commander's message and the `--help`
 * hint, never a stack trace; operational errors get no hint. No QEMU is started.
 * @module
 */
import { runCli } from "./_cli.ts";
import assert from "node:assert/strict";
import { withFiles } from "./lint_helpers.ts";

const HINT = "(run with --help for usage)";
/** A line of a JavaScript stack trace. */
const STACK = /^\s+at /m;

const cli = runCli;

Deno.test("CLI: commander's usage errors exit 2 in every command, with the hint", async () => {
  const cases: [string[], RegExp][] = [
    [["lint", "--bogus"], /^error: unknown option '--bogus'$/m],
    [["vm", "create", "--bogus"], /^error: unknown option '--bogus'$/m],
    [["factory", "init", "--bogus"], /^error: unknown option '--bogus'$/m],
    [["vm", "list", "--bogus"], /^error: unknown option '--bogus'$/m],
    [["guest", "build", "--bogus"], /^error: unknown option '--bogus'$/m],
    [["demo", "--bogus"], /^error: unknown option '--bogus'$/m],
    [["bogus"], /^error: unknown command 'bogus'$/m],
    [["vm", "bogus"], /^error: unknown command 'bogus'$/m],
    [["vm", "exec"], /^error: missing required argument 'id'$/m],
    [
      ["lint", "--format", "yaml"],
      /^error: option .*--format <format>.* argument 'yaml' is invalid/m,
    ],
    [
      ["vm", "create", "--cpus", "0"],
      /argument '0' is invalid\. expected a whole number of vCPUs from 1 to 1024/,
    ],
    [["vm", "logs"], /^error: missing required argument 'id'$/m],
    [["vm", "create", "--memory"], /^error: option '--memory <MiB>' argument missing$/m],
  ];
  await Promise.all(cases.map(async ([args, message]) => {
    const r = await cli(args);
    const what = `vmfactory ${args.join(" ")}: ${r.stderr}`;
    assert.equal(r.code, 2, what);
    assert.match(r.stderr, message, what);
    assert.ok(r.stderr.trimEnd().endsWith(HINT), what);
    assert.doesNotMatch(r.stderr, STACK, what);
    assert.equal(r.stdout, "", what);
  }));
});

Deno.test("CLI: help and version exit 0; a command group without its subcommand is misuse", async () => {
  for (const args of [["--help"], ["lint", "--help"], ["vm", "create", "--help"], ["-V"]]) {
    const r = await cli(args);
    assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
    assert.ok(r.stdout.length > 0);
  }
  const group = await cli(["factory"]);
  assert.equal(group.code, 2);
  assert.match(group.stderr, /^Usage: vmfactory factory /m);
});

Deno.test("CLI: options that do not fit get the hint; failed operations do not", async () => {
  await withFiles({
    "clean.toml": '[hypervisor.qemu]\npath = "/usr/bin/qemu-lite-system-x86_64"\ninitrd = "/i"\n',
    "missing-qemu.toml":
      '[hypervisor.qemu]\npath = "/nonexistent/qemu-system-x86_64"\nshared_fs = "none"\n' +
      '[factory]\nenable_template = true\n[vmfactory]\nguest = "builtin"\n',
  }, async (dir) => {
    const env = { VMFACTORY_STATE_DIR: `${dir}/state` };
    const misuse: [string[], RegExp][] = [
      [
        ["lint", `${dir}/clean.toml`, "--config", `${dir}/clean.toml`],
        /give FILE arguments or --config, not both/,
      ],
      [
        ["lint", "--rule", "unknown-key=loud"],
        /the severity must be one of off, info, warning, error/,
      ],
      [["lint", "--rule", "no-such-rule=error"], /unknown rule "no-such-rule"/],
      [["lint", "--explain", "no-such-rule"], /Cannot explain rule "no-such-rule"/],
    ];
    for (const [args, message] of misuse) {
      const r = await cli(args, env);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, message);
      assert.ok(r.stderr.trimEnd().endsWith(HINT), r.stderr);
      assert.doesNotMatch(r.stderr, STACK);
    }

    const unreadable = await cli(["lint", `${dir}/nope.toml`], env);
    assert.equal(unreadable.code, 2);
    assert.match(unreadable.stderr, /Cannot lint .*nope\.toml: no such file/);

    const unknownVm = await cli(["vm", "exec", "nosuchvm", "--", "true"], {
      ...env,
      KATA_CONF_FILE: `${dir}/clean.toml`,
    });
    assert.equal(unknownVm.code, 2);
    assert.match(unknownVm.stderr, /Cannot find VM nosuchvm/);

    // factory init probes the configured QEMU: a missing binary is named as missing
    const noQemu = await cli(["factory", "init", "--config", `${dir}/missing-qemu.toml`], env);
    assert.equal(noQemu.code, 2);
    assert.match(
      noQemu.stderr,
      /\/nonexistent\/qemu-system-x86_64 is not found \(the Debian package qemu-system-x86 provides \/usr\/bin\/qemu-system-x86_64\)/,
    );
    assert.doesNotMatch(noQemu.stderr, /does not support/);

    for (const r of [unreadable, unknownVm, noQemu]) {
      assert.ok(!r.stderr.includes(HINT), r.stderr);
      assert.doesNotMatch(r.stderr, STACK);
    }
  });
});
