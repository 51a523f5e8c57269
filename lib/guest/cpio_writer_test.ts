import assert from "node:assert/strict";
import { writeCpio } from "./cpio_writer.ts";

const entries = [
  { type: "dir" as const, path: "bin" },
  {
    type: "file" as const,
    path: "bin/hello",
    data: new TextEncoder().encode("hi!\n"),
    mode: 0o755,
  },
  { type: "symlink" as const, path: "bin/sh", target: "hello" },
  { type: "chardev" as const, path: "console", major: 5, minor: 1 },
];

Deno.test("writeCpio is deterministic and 4-byte aligned", () => {
  const a = writeCpio(entries), b = writeCpio(entries);
  assert.deepEqual(a, b);
  assert.equal(a.length % 4, 0);
  assert.equal(new TextDecoder().decode(a.subarray(0, 6)), "070701");
  assert.match(new TextDecoder().decode(a.subarray(a.length - 32)), /TRAILER!!!/);
});

function hasCpio(): boolean {
  try {
    return new Deno.Command("cpio", { args: ["--version"], stdout: "null" }).outputSync().success;
  } catch {
    return false;
  }
}

Deno.test({
  name: "writeCpio output lists and extracts with cpio(1)",
  ignore: !hasCpio(),
}, async () => {
  const dir = Deno.makeTempDirSync();
  try {
    const child = new Deno.Command("cpio", {
      args: ["-idv", "--no-absolute-filenames", "--quiet"],
      cwd: dir,
      stdin: "piped",
      stderr: "piped",
    }).spawn();
    const writer = child.stdin.getWriter();
    await writer.write(writeCpio(entries.filter((e) => e.type !== "chardev")));
    await writer.close();
    const out = await child.output();
    assert.deepEqual(new TextDecoder().decode(out.stderr).trim().split("\n"), [
      "bin",
      "bin/hello",
      "bin/sh",
    ]);
    assert.equal(Deno.readTextFileSync(`${dir}/bin/hello`), "hi!\n");
    assert.equal(Deno.statSync(`${dir}/bin/hello`).mode! & 0o777, 0o755);
    assert.equal(Deno.readLinkSync(`${dir}/bin/sh`), "hello");
    const list = await new Deno.Command("cpio", {
      args: ["-tv", "--quiet"],
      stdin: "piped",
      stdout: "piped",
    }).spawn();
    const w = list.stdin.getWriter();
    await w.write(writeCpio(entries));
    await w.close();
    const text = new TextDecoder().decode((await list.output()).stdout);
    assert.match(text, /^crw-------.* 5,\s+1 .*console$/m);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
