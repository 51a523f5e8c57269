import assert from "node:assert/strict";
import { findTooDeep, MAX_KEY_DEPTH } from "./key_depth.ts";
import { ConfigError, mergeSources } from "./load_config.ts";
import { settingsFrom } from "./settings.ts";

const dotted = (n: number) => Array(n).fill("a").join(".");

Deno.test("findTooDeep counts headers, dotted keys, inline tables and arrays", () => {
  assert.equal(MAX_KEY_DEPTH, 32);
  const ok = [
    "[hypervisor.qemu.factory]\nenable_template = true\n",
    `${dotted(32)} = 1\n`,
    `[${dotted(31)}]\nx = 1\n[[${dotted(31)}]]\ny = 2\n`,
    `a = ${"[".repeat(31)}${"]".repeat(31)}\n`,
    `x = "${"[".repeat(100)}"\ny = '${"{".repeat(100)}'\nz = """\n${"[".repeat(100)}\n"""\n`,
    `k = 1.5.6.7.8.9\n# ${dotted(100)}\n`,
    `"${dotted(100)}" = 1\n`,
  ];
  for (const text of ok) assert.equal(findTooDeep(text), undefined, text);
  const deep: [string, number, number, number, number][] = [
    [`${dotted(33)} = 1\n`, 1, 1, 1, 66],
    [`\n  ${dotted(40)}=1`, 2, 3, 2, 82],
    [`[${dotted(16)}]\nb = { ${dotted(17)} = 1 }\n`, 2, 7, 2, 40],
    [`a = ${"[".repeat(40)}`, 1, 37, 1, 38],
    [`t = [{ a = [{ b = { ${dotted(29)} = 1 }}]}]`, 1, 21, 1, 78],
  ];
  for (const [text, line, column, endLine, endColumn] of deep) {
    const found = findTooDeep(text);
    assert.deepEqual(
      found && [found.line, found.column, found.endLine, found.endColumn],
      [line, column, endLine, endColumn],
      text,
    );
  }
});

Deno.test("findTooDeep never throws and stays linear on any input", () => {
  const junk = ["", "[", "]]]", "{}}", '"', "'''", "a.", "a = [", "= = =", "a.=.b", "\\", "[a.'"];
  for (const text of junk) findTooDeep(text);
  const start = performance.now();
  for (
    const text of [
      `${dotted(500_000)} = 1`,
      `a = ${"[".repeat(1_000_000)}`,
      `x=${"{a=".repeat(300_000)}`,
    ]
  ) {
    assert.ok(findTooDeep(text));
  }
  assert.ok(performance.now() - start < 2000, "a hang, not a slow machine");
});

Deno.test("mergeSources: an 8000-part key is a ConfigError naming the file and line", () => {
  const text = `[factory]\n${dotted(8000)} = 1\n`;
  const start = performance.now();
  assert.throws(
    () => mergeSources([{ path: "/etc/deep.toml", text }]),
    (err: Error) =>
      err instanceof ConfigError && err.exitCode === 2 &&
      err.message === "Cannot read the configuration: /etc/deep.toml:2:1: the key is 8001 " +
          "levels deep; vmfactory accepts at most 32 (Kata's own keys need 4)" &&
      err.positions[0].line === 2,
  );
  assert.ok(performance.now() - start < 2000, "a hang, not a slow machine");
});

Deno.test("mergeSources: values 32 deep merge without recursion, keys in file order", () => {
  const loaded = mergeSources([
    { path: "/a.toml", text: `z = 1\n${dotted(29)}.x = [[1], { b = 2 }]\nm = 3\n` },
    { path: "/b.toml", text: `${dotted(29)}.y = 4\nz = 5\n` },
  ]);
  assert.deepEqual(Object.keys(loaded.values), ["z", "a", "m"]);
  let v: unknown = loaded.values;
  for (let n = 0; n < 29; n++) v = (v as Record<string, unknown>).a;
  assert.deepEqual(v, { x: [[1], { b: 2 }], y: 4 });
  assert.equal(Object.getPrototypeOf((v as { x: unknown[] }).x[1]), Object.prototype);
  assert.equal(loaded.values.z, 5);
});

Deno.test("settingsFrom: counts and sizes out of range are ConfigErrors", () => {
  const bad = [
    ["[factory]\nvm_cache_number = 100000\n", /vm_cache_number must be an integer from 0 to 1024/],
    ["[vmfactory]\npool_size = 5000\n", /pool_size must be an integer from 0 to 1024/],
    ["[hypervisor.qemu]\ndefault_vcpus = nan\n", /default_vcpus must be a finite number/],
    ["[hypervisor.qemu]\nmemory_slots = 100000\n", /memory_slots must be an integer from 0 to 256/],
    ["[hypervisor.qemu]\ndefault_maxvcpus = 4294967296\n", /default_maxvcpus must be/],
    ["[hypervisor.qemu]\ndefault_memory = 9007199254740993\n", /default_memory must be at most/],
  ] as const;
  for (const [text, message] of bad) {
    assert.throws(
      () => settingsFrom(mergeSources([{ path: "/c.toml", text }]), {}),
      (err: Error) => err instanceof ConfigError && message.test(err.message),
      text,
    );
  }
});
