import assert from "node:assert/strict";
import type { CommandUnknownOpts } from "@commander-js/extra-typings";
import {
  COMMANDER_ONLY_OPTIONS,
  type FastOption,
  parseRun,
  parseVmCreate,
  RUN_OPTIONS,
  VM_CREATE_OPTIONS,
} from "./_fast_args.ts";
import { buildProgram } from "./program.ts";

/** `vm create` as `program.ts` declares it, with its action replaced and its output silenced. */
function vmCreate(onAction: (opts: unknown) => void): {
  program: CommandUnknownOpts;
  create: CommandUnknownOpts;
} {
  const program = buildProgram() as unknown as CommandUnknownOpts;
  const create = program.commands.find((c) => c.name() === "vm")?.commands
    .find((c) => c.name() === "create");
  assert.ok(create, "program.ts declares vm create");
  create.action((...args) => onAction(args[0]));
  create.configureOutput({ writeOut: () => {}, writeErr: () => {}, outputError: () => {} });
  return { program, create };
}

/** What commander makes of `vm create ...args`: the action's options, or its error code. */
async function commanderParse(args: string[]): Promise<{ opts?: unknown; error?: string }> {
  let opts: unknown;
  const { program } = vmCreate((o) => opts = o);
  try {
    await program.parseAsync(["vm", "create", ...args], { from: "user" });
    return { opts };
  } catch (err) {
    return { error: (err as { code?: string }).code ?? String(err) };
  }
}

Deno.test("parseVmCreate knows exactly the flags program.ts declares for vm create", () => {
  const { create } = vmCreate(() => {});
  const declared: Record<string, { key: FastOption["key"]; value: string }> = {};
  for (const option of create.options) {
    if (COMMANDER_ONLY_OPTIONS.includes(option.long!)) continue;
    assert.ok(!option.optional, `${option.flags}: the fast parser has no optional values`);
    assert.equal(
      option.defaultValue,
      undefined,
      `${option.flags}: the fast parser sets no defaults (but a --no-* flag's true)`,
    );
    const value = option.negate
      ? "negate"
      : !option.required
      ? "none"
      : option.parseArg
      ? "checked"
      : "string";
    const key = option.attributeName() as FastOption["key"];
    for (const flag of [option.long, option.short]) if (flag) declared[flag] = { key, value };
  }
  const fast = Object.fromEntries(
    Object.entries(VM_CREATE_OPTIONS).map((
      [flag, { key, value }],
    ) => [flag, { key, value: typeof value === "function" ? "checked" : value }]),
  );
  assert.deepEqual(fast, declared);
});

Deno.test("parseVmCreate: the options vm create declares, nothing else", () => {
  const cases: [string[], unknown][] = [
    [["vm", "create"], { daemon: true }],
    [["vm", "create", "--json", "--cpus", "2", "--memory=512", "-c", "/x.toml"], {
      json: true,
      cpus: 2,
      memory: 512,
      config: "/x.toml",
      daemon: true,
    }],
    [["vm", "create", "--hostname", "web1", "--strict", "--fallback"], {
      hostname: "web1",
      strict: true,
      fallback: true,
      daemon: true,
    }],
    [["vm", "create", "--no-daemon", "--json"], { daemon: false, json: true }],
    [["vm", "create", "--image", "/rootfs"], undefined],
    [["vm", "create", "--net", "-p", "8080:80"], undefined],
    // left to commander: help, unknown options, bad numbers, missing values, other commands
    [["vm", "create", "--help"], undefined],
    [["vm", "create", "--cpus", "0"], undefined],
    [["vm", "create", "--cpus", "two"], undefined],
    [["vm", "create", "--cpus", "1025"], undefined],
    [["vm", "create", "--cpus", "1e1"], undefined],
    [["vm", "create", "--memory", "1048577"], undefined],
    [["vm", "create", "--memory", "9".repeat(400)], undefined],
    [["vm", "create", "--hostname", "a\nb"], undefined],
    [["vm", "create", "--hostname", "x".repeat(65)], undefined],
    [["vm", "create", "--hostname="], undefined],
    [["vm", "create", "--memory"], undefined],
    [["vm", "create", "--bogus"], undefined],
    [["vm", "create", "--json=yes"], undefined],
    [["vm", "create", "--no-daemon=1"], undefined],
    [["vm", "create", "--daemon"], undefined],
    [["vm", "create", "--cpus", "1", "--cpus", "2"], undefined],
    [["vm", "list"], undefined],
    [["lint"], undefined],
  ];
  for (const [args, want] of cases) assert.deepEqual(parseVmCreate(args), want, args.join(" "));
});

/** Values both parsers refuse: out of range, not plain decimal, not a hostname. */
const BAD_VALUES = [
  ["--cpus", "1e1"],
  ["--cpus", "1025"],
  ["--cpus", " 2"],
  ["--cpus", "0x10"],
  ["--memory", "512.0"],
  ["--memory", "1048577"],
  ["--memory", "99999999999999999999"],
  ["--hostname", "--json"],
  ["--hostname="],
  ["--hostname", "web\nroot"],
  ["--hostname", "tab\there"],
  ["--hostname", "esc\x1b[31m"],
  ["--hostname", "x".repeat(65)],
  ["--hostname", "-leading"],
  ["--hostname", "a..b"],
];

Deno.test("parseVmCreate gives what commander gives, or leaves the arguments to commander", async () => {
  // the fast parser must take these (the hot path) ...
  const taken = [
    [],
    ["--json"],
    ["--cpus", "2", "--memory", "512"],
    ["--cpus=2", "--memory=512"],
    ["--cpus", "1024", "--memory", "1048576"],
    ["--hostname", "web-1.example.org"],
    ["--hostname", "x".repeat(63)],
    ["-c", "/x.toml"],
    ["--config", "/x.toml"],
    ["--config=/x.toml"],
    ["--hostname", "web1", "--strict", "--fallback", "--json"],
    ["--json", "--json"],
    ["--no-daemon"],
    ["--no-daemon", "--cpus", "2", "--no-daemon"],
  ];
  // ... and may leave these to commander (which parses or rejects them)
  const left = [
    ["--help"],
    ["-h"],
    ["--bogus"],
    ["--cpus", "0"],
    ["--cpus=-1"],
    ["--cpus", "two"],
    ...BAD_VALUES,
    ["--memory"],
    ["-c"],
    ["--json=yes"],
    ["--no-daemon=yes"],
    ["--daemon"],
    ["--cpus", "1", "--cpus", "2"],
    ["-c/x.toml"],
    ["--", "extra"],
    ["extra"],
  ];
  for (const args of [...taken, ...left]) {
    const fast = parseVmCreate(["vm", "create", ...args]);
    const full = await commanderParse(args);
    const what = `vm create ${args.join(" ")}`;
    assert.equal(fast !== undefined, taken.includes(args), `${what}: taken by the fast parser`);
    if (fast !== undefined) assert.deepEqual(full, { opts: fast }, what);
  }
  // commander rejects what the fast parser rejects for being wrong (not merely unusual)
  const wrong = [
    ["--bogus"],
    ["--cpus", "0"],
    ["--memory"],
    ["--json=yes"],
    ["--daemon"],
    ["extra"],
  ];
  for (const args of [...wrong, ...BAD_VALUES]) {
    assert.ok((await commanderParse(args)).error?.startsWith("commander."), args.join(" "));
  }
});

/** `run` as `program.ts` declares it, with its action replaced and its output silenced. */
function runCommand(onAction: (command: unknown, opts: unknown) => void) {
  const program = buildProgram() as unknown as CommandUnknownOpts;
  const run = program.commands.find((c) => c.name() === "run");
  assert.ok(run, "program.ts declares run");
  run.action((...args) => onAction(args[0], args[1]));
  run.configureOutput({ writeOut: () => {}, writeErr: () => {}, outputError: () => {} });
  return { program, run };
}

Deno.test("parseRun knows exactly the flags program.ts declares for run", () => {
  const { run } = runCommand(() => {});
  const declared: Record<string, { key: string; value: string }> = {};
  for (const option of run.options) {
    assert.equal(option.defaultValue, undefined, `${option.flags}: no defaults`);
    let parsed: unknown;
    try {
      parsed = option.parseArg?.("x", undefined as unknown as string); // a list: repeatable
    } catch {
      parsed = undefined; // a checked value: "x" is no number
    }
    const value = option.negate
      ? "negate"
      : option.optional
      ? "optional"
      : !option.required
      ? "none"
      : Array.isArray(parsed)
      ? "repeat"
      : option.parseArg
      ? "checked"
      : "string";
    for (const flag of [option.long, option.short]) {
      if (flag) declared[flag] = { key: option.attributeName(), value };
    }
  }
  const fast = Object.fromEntries(
    Object.entries(RUN_OPTIONS).map((
      [flag, { key, value }],
    ) => [flag, { key, value: typeof value === "function" ? "checked" : value }]),
  );
  assert.deepEqual(fast, declared);
});

Deno.test("parseRun gives what commander gives, or leaves the arguments to commander", async () => {
  const commander = async (args: string[]) => {
    let got: unknown;
    const { program } = runCommand((command, opts) => got = { command, opts });
    try {
      await program.parseAsync(["run", ...args], { from: "user" });
      return got;
    } catch (err) {
      return { error: (err as { code?: string }).code ?? String(err) };
    }
  };
  const taken = [
    [],
    ["--", "true"],
    ["--", "sh", "-c", "exit 7"],
    ["--image", "/rootfs", "--", "cat", "/etc/os-release"],
    ["--net", "--", "true"],
    ["--net", "user", "-p", "8080:80", "-p", "8443:443", "--", "httpd", "-f"],
    ["--net=tap:tap0", "--", "true"],
    ["--net", "--image", "/r"],
    ["-e", "A=1", "--env", "B=2", "-w", "/app", "-u", "app", "--", "env"],
    ["--file", "./a:/a", "--file=./b:/b", "-i", "--progress", "--", "sh", "/a"],
    ["--timeout", "5", "--cpus", "2", "--memory", "512", "--strict", "--", "sleep", "1"],
    ["--no-daemon", "-c", "/x.toml", "--", "true"],
    ["--", "--help"],
  ];
  const left = [
    ["--help"],
    ["--bogus", "--", "true"],
    ["true"],
    ["--image", "/a", "--image", "/b", "--", "true"],
    ["--timeout", "0", "--", "true"],
    ["--cpus", "two", "--", "true"],
    ["--image"],
    ["-p8080:80", "--", "true"],
    ["--interactive=yes", "--", "true"],
  ];
  for (const args of [...taken, ...left]) {
    const fast = parseRun(["run", ...args]);
    const what = `run ${args.join(" ")}`;
    assert.equal(fast !== undefined, taken.includes(args), `${what}: taken by the fast parser`);
    if (fast) assert.deepEqual(await commander(args), fast, what);
  }
});
