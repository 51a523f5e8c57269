/**
 * Hostile input on the command line: a configuration nested 8000 levels deep, values out of range
 * and option values that overflow or carry control characters. Every one is a clear error with
 * exit 2 (the linter: a finding), found quickly, never a stack trace; no QEMU is started.
 * @module
 */
import assert from "node:assert/strict";
import { lintFiles } from "../lint/mod.ts";
import { runCli } from "./_cli.ts";
import { withFiles } from "./lint_helpers.ts";

const STACK = /^\s+at /m;
const HINT = "(run with --help for usage)";
const dotted = (n: number) => Array(n).fill("a").join(".");

Deno.test("hostile input: an 8000-part key is refused by every command and linted quickly", async () => {
  await withFiles({ "deep.toml": `${dotted(8000)} = 1\n` }, async (dir) => {
    const env = { VMFACTORY_STATE_DIR: `${dir}/state` };
    const config = `${dir}/deep.toml`;
    for (const args of [["vm", "list"], ["vm", "create"], ["factory", "status"]]) {
      const r = await runCli([...args, "--config", config], env);
      const what = `${args.join(" ")}: ${r.stderr}`;
      assert.equal(r.code, 2, what);
      assert.equal(
        r.stderr,
        `vmfactory: Cannot read the configuration: ${config}:1:1: the key is 8000 levels deep; ` +
          "vmfactory accepts at most 32 (Kata's own keys need 4)\n",
        what,
      );
    }
    const lint = await runCli(["lint", "--format", "json", config], env);
    assert.equal(lint.code, 1, lint.stderr);
    assert.deepEqual(
      JSON.parse(lint.stdout).files[0].diagnostics.map((d: { rule: string }) => d.rule),
      ["key-too-deep"],
    );
  });
  // twice as deep, in-process: the old quadratic walk took over 15 s here
  await withFiles({ "deeper.toml": `[factory]\n${dotted(16_000)} = 1\n` }, async (dir) => {
    const start = performance.now();
    const [result] = await lintFiles([`${dir}/deeper.toml`]);
    assert.ok(performance.now() - start < 2000, "a hang, not a slow machine");
    assert.deepEqual(result.diagnostics.map((d) => [d.rule, d.line]), [["key-too-deep", 2]]);
  });
});

Deno.test("hostile input: out-of-range counts in the configuration are exit 2 with file and line", async () => {
  await withFiles({
    "cache.toml": "[factory]\nvm_cache_number = 100000\n",
    "pool.toml": "[vmfactory]\npool_size = 99999999999999999999\n",
    "slots.toml": "[hypervisor.qemu]\nmemory_slots = 4294967297\n",
  }, async (dir) => {
    const env = { VMFACTORY_STATE_DIR: `${dir}/state` };
    const cases: [string, RegExp][] = [
      ["cache.toml", /cache\.toml:2:1: vm_cache_number must be an integer from 0 to 1024$/m],
      ["pool.toml", /pool\.toml:2:1: pool_size must be an integer from 0 to 1024$/m],
      ["slots.toml", /slots\.toml:2:1: memory_slots must be an integer from 0 to 256/m],
    ];
    for (const [file, message] of cases) {
      const r = await runCli(["vm", "list", "--config", `${dir}/${file}`], env);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, message);
      assert.doesNotMatch(r.stderr, STACK);
    }
  });
});

Deno.test("hostile input: option values that overflow or carry control characters are misuse", async () => {
  // --config names no file: should a value slip through, the command fails before doing anything
  const none = ["--config", "/nonexistent/vmfactory.toml"];
  const cases: [string[], RegExp][] = [
    [["vm", "create", "--cpus", "4096"], /expected a whole number of vCPUs from 1 to 1024/],
    [["vm", "create", "--cpus", "1e9"], /expected a whole number of vCPUs from 1 to 1024/],
    [["vm", "create", "--memory", "99999999999999999999"], /of MiB from 1 to 1048576/],
    [["vm", "create", "--hostname", "web\nroot"], /expected 1 to 64 characters/],
    [["vm", "create", "--hostname", "x".repeat(65)], /expected 1 to 64 characters/],
    [["vm", "create", "--hostname", "\x1b]0;owned\x07"], /expected 1 to 64 characters/],
    [["vm", "exec", "abc", "--timeout", String(2 ** 31), "--", "true"], /from 1 to 2073600/],
    [["demo", "--clones", "100000"], /expected a whole number of clones from 1 to 1024/],
  ];
  await Promise.all(cases.map(async ([args, message]) => {
    const r = await runCli([...args, ...none]);
    const what = `${JSON.stringify(args)}: ${r.stderr}`;
    assert.equal(r.code, 2, what);
    assert.match(r.stderr, message, what);
    assert.ok(r.stderr.trimEnd().endsWith(HINT), what);
    assert.doesNotMatch(r.stderr, STACK, what);
  }));
});
