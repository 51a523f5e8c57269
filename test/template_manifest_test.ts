/**
 * The template manifest read back from disk (checked, never trusted) and what makes a template
 * stale. No QEMU.
 * @module
 */
import assert from "node:assert/strict";
import { DEFAULT_QEMU_PATH } from "../lib/config/builtin_default.ts";
import { findTemplate, loadManifest, readManifest } from "../lib/template/template_files.ts";
import {
  manifestProblem,
  templateDifferences,
  type TemplateInputs,
  type TemplateManifest,
} from "../lib/template/template_manifest.ts";
import { withFiles } from "./lint_helpers.ts";

const file = (path: string) => ({ path, size: 10, mtimeMs: 1000 });
const INPUTS: TemplateInputs = {
  qemu: file(DEFAULT_QEMU_PATH),
  kernel: file("/boot/vmlinuz"),
  initrd: file("/s/initrd"),
  append: "console=ttyS0",
  accel: "kvm",
  shape: { machine: "pc", cpus: 1, maxCpus: 4, memoryMiB: 256, slots: 4, maxMemoryMiB: 4352 },
};
const MANIFEST: TemplateManifest = {
  format: 1,
  id: "abc123",
  createdAt: "2026-01-01T00:00:00.000Z",
  ...INPUTS,
  qemu: { ...INPUTS.qemu, version: "8.2.2" },
  stateBytes: 400_000,
  buildMs: { bootMs: 900, saveMs: 40 },
};

Deno.test("manifestProblem: a valid manifest passes; another format or a bad field is named", () => {
  assert.equal(manifestProblem(MANIFEST), undefined);
  const broken = (patch: Record<string, unknown>) => manifestProblem({ ...MANIFEST, ...patch });
  const cases: [unknown, string][] = [
    [[1], "it is an array, not an object"],
    [null, "it is null, not an object"],
    [{ ...MANIFEST, format: 2 }, "its format is 2, this vmfactory reads format 1"],
    [{ ...MANIFEST, format: "1" }, 'its format is "1", this vmfactory reads format 1'],
    [{ ...MANIFEST, format: undefined }, "its format is missing, this vmfactory reads format 1"],
  ];
  for (const [value, want] of cases) assert.equal(manifestProblem(value), want);
  assert.equal(broken({ id: undefined }), "id is missing");
  assert.equal(broken({ id: 7 }), "id is a number, not a string");
  assert.equal(broken({ accel: "hvf" }), 'accel is "hvf", not kvm or tcg');
  assert.equal(
    broken({ qemu: { ...MANIFEST.qemu, version: undefined } }),
    "qemu.version is missing",
  );
  assert.equal(broken({ kernel: "/boot/vmlinuz" }), "kernel is a string, not an object");
  assert.equal(
    broken({ initrd: { ...MANIFEST.initrd, size: "10" } }),
    "initrd.size is a string, not a number",
  );
  assert.equal(
    broken({ shape: { ...MANIFEST.shape, cpus: null } }),
    "shape.cpus is null, not a number",
  );
  assert.equal(broken({ stateBytes: Infinity }), "stateBytes is Infinity, not a finite number");
  assert.equal(broken({ buildMs: { bootMs: "fast" } }), "buildMs is not an object of numbers");
});

Deno.test("loadManifest/readManifest/findTemplate: only a valid manifest makes a template", async () => {
  await withFiles({
    "good/manifest.json": JSON.stringify(MANIFEST),
    "v2/manifest.json": JSON.stringify({ ...MANIFEST, format: 2 }),
    "torn/manifest.json": '{"format": 1, "id": ',
    "partial/manifest.json": JSON.stringify({ format: 1, id: "x" }),
    "empty/.keep": "",
  }, (dir) => {
    assert.deepEqual(loadManifest(`${dir}/good`), { state: "usable", manifest: MANIFEST });
    assert.deepEqual(readManifest(`${dir}/good`), MANIFEST);
    assert.deepEqual(loadManifest(`${dir}/empty`), { state: "absent" });
    assert.equal(readManifest(`${dir}/empty`), undefined);
    const reasons: Record<string, RegExp> = {
      v2:
        /v2\/manifest\.json is not a usable manifest: its format is 2, this vmfactory reads format 1$/,
      torn: /torn\/manifest\.json is not JSON: /,
      partial: /partial\/manifest\.json is not a usable manifest: createdAt is missing$/,
    };
    for (const [name, want] of Object.entries(reasons)) {
      const read = loadManifest(`${dir}/${name}`);
      assert.equal(read.state, "unusable", name);
      if (read.state === "unusable") assert.match(read.reason, want);
      assert.equal(readManifest(`${dir}/${name}`), undefined, name);
      const heard: string[] = [];
      assert.equal(
        findTemplate(`${dir}/${name}`, (d, reason) => heard.push(`${d}: ${reason}`)),
        undefined,
      );
      assert.equal(heard.length, 1, name);
      assert.ok(heard[0].startsWith(`${dir}/${name}: `), heard[0]);
    }
    assert.deepEqual(findTemplate(`${dir}/good`)?.manifest, MANIFEST);
  });
});

Deno.test("templateDifferences: every input, the accelerator too, makes a template stale", () => {
  assert.deepEqual(templateDifferences(MANIFEST, INPUTS), []);
  assert.deepEqual(templateDifferences(MANIFEST, { ...INPUTS, accel: "tcg" }), [
    "the accelerator is tcg, the template ran with kvm",
  ]);
  assert.deepEqual(
    templateDifferences(MANIFEST, {
      ...INPUTS,
      kernel: { ...INPUTS.kernel, mtimeMs: 2000 },
      append: "quiet",
      shape: { ...INPUTS.shape, memoryMiB: 512 },
    }),
    [
      "kernel /boot/vmlinuz changed since the template was built",
      'kernel_params give "quiet", the template used "console=ttyS0"',
      "default_memory is 512, the template has 256",
    ],
  );
});
