/**
 * A table of valid and invalid cases per rule, asserting rule id, severity and positions.
 * @module
 */
import assert from "node:assert/strict";
import { DEFAULT_QEMU_PATH } from "../../lib/config/builtin_default.ts";
import { lintText } from "../lint_text.ts";
import type { LintOptions, ProbeResult } from "../types.ts";
import { rules } from "./mod.ts";

/** [severity, line, column, endLine, endColumn] */
type Expected = [string, number, number, number, number];
interface Case {
  code: string;
  options?: LintOptions;
  expect?: Expected[];
  message?: RegExp;
}

const hv = (body: string, name = "qemu") => `[hypervisor.${name}]\n${body}`;
const QEMU_LITE = 'path = "/usr/bin/qemu-lite-system-x86_64"\n';
const BOOT = 'kernel = "/k"\ninitrd = "/i"\nshared_fs = "virtio-9p"\n';
const TPL = "\n[factory]\nenable_template = true\n";
/** A configuration that templates correctly; `enable_template` is on line 8. */
const GOOD = hv(QEMU_LITE + BOOT) + TPL;
const probe = (path: string, r: ProbeResult): LintOptions => ({
  probeResults: new Map([[path, r]]),
});
const UPSTREAM = `path = "${DEFAULT_QEMU_PATH}"\n`;
/** A dotted key of `n` parts: `a.a.….a`. */
const dotted = (n: number) => Array(n).fill("a").join(".");

const TABLE: Record<string, { valid: Case[]; invalid: Case[] }> = {
  "toml-syntax": {
    valid: [{ code: GOOD }, { code: GOOD.replaceAll("\n", "\r\n") }],
    invalid: [
      { code: "[factory]\nenable_template = \n", expect: [["error", 3, 1, 3, 2]] },
      {
        code: "[factory]\nenable_template = true\nenable_template = false\n",
        expect: [["error", 3, 1, 3, 16]],
        message: /multiple times.*enable_template/,
      },
      { code: "[factory]\na = 1\n[factory]\n", expect: [["error", 3, 2, 3, 9]] },
      {
        code: "factory = { enable_template = true }\nfactory.x = 1\n",
        expect: [["error", 2, 1, 2, 10]],
      },
      { code: '[hypervisor.qemu\npath = "x"\n', expect: [["error", 2, 1, 2, 5]] },
    ],
  },
  "key-too-deep": {
    valid: [
      { code: GOOD },
      { code: `${dotted(32)} = 1\n` },
      { code: `[${dotted(30)}]\nx = [1, 2]\ny = {}\nz.q = []\n` },
      { code: `a = ${"[".repeat(31)}${"]".repeat(31)}\n` },
      { code: '"a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.A.B.C.D.E.F.G" = 1.5\n' },
    ],
    invalid: [
      {
        code: `${dotted(33)} = 1\n`,
        expect: [["error", 1, 1, 1, 66]],
        message: /^the key is 33 levels deep; vmfactory accepts at most 32/,
      },
      { code: `[factory]\n${dotted(8000)} = 1\n`, expect: [["error", 2, 1, 2, 16000]] },
      { code: `[${dotted(33)}]\n`, expect: [["error", 1, 2, 1, 67]], message: /table is 33/ },
      { code: `[${dotted(32)}]\nx = 1\n`, expect: [["error", 2, 1, 2, 2]] },
      {
        code: `a = ${"[".repeat(33)}${"]".repeat(33)}\n`,
        expect: [["error", 1, 37, 1, 38]],
        message: /values are nested 33 levels deep/,
      },
      {
        code: `a = ${"{ b = ".repeat(32)}1${" }".repeat(32)}\n`,
        expect: [["error", 1, 193, 1, 194]],
      },
    ],
  },
  "template-requires-qemu-lite": {
    valid: [
      { code: GOOD },
      { code: hv('path = "/usr/bin/firecracker"\n' + BOOT) },
      {
        code: hv(UPSTREAM + BOOT) + TPL,
        options: probe(DEFAULT_QEMU_PATH, "capable"),
      },
    ],
    invalid: [
      {
        code: hv('path = "/usr/bin/firecracker"\n' + BOOT) + TPL,
        expect: [["error", 2, 1, 2, 30]],
        message: /not QEMU/,
      },
      {
        code: hv(UPSTREAM + BOOT) + TPL,
        expect: [["warning", 2, 1, 2, 37]],
        message: /QEMU >= 4\.1.*x-ignore-shared.*--probe/,
      },
      {
        code: hv(UPSTREAM + BOOT) + TPL,
        options: probe(DEFAULT_QEMU_PATH, "incapable"),
        expect: [["error", 2, 1, 2, 37]],
        message: /lacks x-ignore-shared/,
      },
      {
        code: hv(UPSTREAM + BOOT) + TPL,
        options: probe(DEFAULT_QEMU_PATH, "absent"),
        expect: [["warning", 2, 1, 2, 37]],
        message: /is not found on this host \(the Debian package qemu-system-x86 provides /,
      },
      {
        code: hv('path = "/opt/q/qemu-system-x86_64"\n' + BOOT) + TPL,
        options: probe("/opt/q/qemu-system-x86_64", "absent"),
        expect: [["warning", 2, 1, 2, 35]],
        message: /^\/opt\/q\/qemu-system-x86_64 is not found on this host .*qemu-system-x86/,
      },
      { code: hv(BOOT) + TPL, expect: [["warning", 1, 2, 1, 17]] },
      {
        code: hv(BOOT, "clh") + TPL,
        expect: [["error", 1, 2, 1, 16]],
        message: /hypervisor is clh/,
      },
    ],
  },
  "template-requires-initrd": {
    valid: [{ code: GOOD }, { code: hv(QEMU_LITE) + TPL + '[vmfactory]\nguest = "builtin"\n' }],
    invalid: [{ code: hv(QEMU_LITE + 'kernel = "/k"\n') + TPL, expect: [["error", 6, 1, 6, 23]] }],
  },
  "template-forbids-image": {
    valid: [{ code: GOOD }, { code: hv('image = "/img"\n') }],
    invalid: [{
      code: hv(QEMU_LITE + 'image = "/img"\n' + BOOT) + TPL,
      expect: [["error", 3, 1, 3, 15]],
    }],
  },
  "template-forbids-virtio-fs": {
    valid: [
      { code: GOOD },
      { code: hv('initrd = "/i"\n') + TPL + "[proxy.kata]\n" },
      { code: hv('shared_fs = "virtio-fs"\n') },
    ],
    invalid: [
      {
        code: hv('initrd = "/i"\nshared_fs = "virtio-fs"\n') + TPL,
        expect: [["error", 3, 1, 3, 24]],
        message: /will not work: clones map the template's memory privately.*shared/,
      },
      {
        code: hv('initrd = "/i"\nshared_fs = "virtio-fs-nydus"\n') + TPL,
        expect: [["error", 3, 1, 3, 30]],
      },
      {
        code: hv('initrd = "/i"\n') + TPL,
        expect: [["error", 1, 2, 1, 17]],
        message: /defaults it to virtio-fs/,
      },
    ],
  },
  "template-cache-exclusive": {
    valid: [{ code: GOOD }, { code: GOOD + "vm_cache_number = 0\n" }],
    invalid: [{ code: GOOD + "vm_cache_number = 2\n", expect: [["error", 9, 1, 9, 20]] }],
  },
  "vm-cache-requires-qemu": {
    valid: [{ code: hv(BOOT) + "[factory]\nvm_cache_number = 1\n" }],
    invalid: [{
      code: hv(BOOT, "firecracker") + "[factory]\nvm_cache_number = 1\n",
      expect: [["error", 6, 1, 6, 20]],
      message: /VM cache just support qemu, but the hypervisor is firecracker/,
    }],
  },
  "image-initrd-exclusive": {
    valid: [{ code: GOOD }, {
      code: hv('image = "/a"\ninitrd = "/b"\n') + '[vmfactory]\nguest = "builtin"\n',
    }],
    invalid: [{ code: hv('image = "/a"\ninitrd = "/b"\n'), expect: [["error", 3, 1, 3, 14]] }],
  },
  "image-or-initrd-required": {
    valid: [
      { code: GOOD },
      { code: "[hypervisor.remote]\n" },
      { code: hv('kernel = "/se.img"\nconfidential_guest = true\n') },
      { code: hv('kernel = "/k"\n') + '[vmfactory]\nguest = "builtin"\n' },
    ],
    invalid: [{ code: hv('kernel = "/k"\n'), expect: [["error", 1, 2, 1, 17]] }],
  },
  "invalid-value": {
    valid: [
      { code: GOOD },
      { code: hv("default_memory = 256\ndefault_vcpus = 1.5\ndefault_maxvcpus = 0\n") },
      { code: hv("default_vcpus = -1\ndefault_maxvcpus = 4294967295\nmemory_slots = 256\n") },
      { code: "[factory]\nvm_cache_number = 1024\n[vmfactory]\npool_size = 1024\n" },
      { code: "[vmfactory]\npool_min = 0\npool_max = 1024\n" },
      {
        code:
          '[vmfactory]\naccel = "tcg"\nstate_dir = "/var/lib/v"\nguest = "config"\npool_size = 0\n',
      },
      { code: '[vmfactory.lint]\nunknown-key = "error"\n' },
      // keys named like Object.prototype members are unknown keys, not checked values
      { code: "[factory]\nconstructor = 1\n[vmfactory]\ntoString = 2\n" + hv("valueOf = 3\n") },
    ],
    invalid: [
      {
        code: '[factory]\nenable_template = "yes"\n',
        expect: [["error", 2, 1, 2, 24]],
        message: /true or false/,
      },
      {
        code: '[factory]\ntemplate_path = "run/tpl"\n',
        expect: [["error", 2, 1, 2, 26]],
        message: /absolute/,
      },
      {
        code: "[factory]\nvm_cache_number = -1\n",
        expect: [["error", 2, 1, 2, 21]],
        message: /from 0 to 1024/,
      },
      { code: "[factory]\nvm_cache_number = 1025\n", expect: [["error", 2, 1, 2, 23]] },
      { code: "[vmfactory]\npool_size = 100000\n", expect: [["error", 2, 1, 2, 19]] },
      { code: "[vmfactory]\npool_min = -1\n", expect: [["error", 2, 1, 2, 14]] },
      { code: "[vmfactory]\npool_max = 1.5\n", expect: [["error", 2, 1, 2, 15]] },
      { code: hv("default_vcpus = nan\n"), expect: [["error", 2, 1, 2, 20]], message: /finite/ },
      { code: hv("default_maxvcpus = 4294967296\n"), expect: [["error", 2, 1, 2, 30]] },
      {
        code: hv("memory_slots = 257\n"),
        expect: [["error", 2, 1, 2, 19]],
        message: /from 0 to 256 \(QEMU's limit\)/,
      },
      { code: '[factory]\nvm_cache_endpoint = "x.sock"\n', expect: [["error", 2, 1, 2, 29]] },
      { code: hv('shared_fs = "ext4"\n'), expect: [["error", 2, 1, 2, 19]], message: /virtio-9p/ },
      { code: hv("default_memory = 128\n"), expect: [["error", 2, 1, 2, 21]], message: /256 MiB/ },
      { code: hv('default_memory = "2G"\n'), expect: [["error", 2, 1, 2, 22]] },
      {
        code: hv("enable_debug = 1\n"),
        expect: [["error", 2, 1, 2, 17]],
        message: /true or false, not an integer/,
      },
      {
        code: "[hypervisor.qemu.factory]\nenable_template = 1\n",
        expect: [["error", 2, 1, 2, 20]],
      },
      {
        code: '[vmfactory]\naccel = "fast"\n',
        expect: [["error", 2, 1, 2, 15]],
        message: /"auto", "kvm", "tcg"/,
      },
      { code: '[vmfactory]\nstate_dir = "state"\n', expect: [["error", 2, 1, 2, 20]] },
      { code: "[vmfactory]\npool_size = 1.5\n", expect: [["error", 2, 1, 2, 16]] },
      { code: '[vmfactory]\nguest = "mine"\n', expect: [["error", 2, 1, 2, 15]] },
      { code: '[vmfactory.lint]\nunknown-key = "loud"\n', expect: [["error", 2, 1, 2, 21]] },
      { code: '[vmfactory]\nlint = "off"\n', expect: [["error", 2, 1, 2, 13]] },
    ],
  },
  "unknown-key": {
    valid: [
      { code: GOOD },
      { code: "[hypervisor.qemu.factory]\nenable_template = false\nvm_cache_number = 0\n" },
      { code: '[vmfactory]\naccel = "auto"\n[vmfactory.lint]\ninvalid-value = "warning"\n' },
      { code: '[[hypervisor.qemu.guest_extension_images]]\nname = "a"\n' },
    ],
    invalid: [
      {
        code: "[factory]\nenable_templates = true\n",
        expect: [["warning", 2, 1, 2, 17]],
        message: /unknown key "enable_templates" in \[factory\].*did you mean "enable_template"\?/,
      },
      {
        code: "[factroy]\nenable_template = true\n",
        expect: [["warning", 1, 2, 1, 9]],
        message: /unknown table \[factroy\].*did you mean "factory"/,
      },
      { code: "factroy.enable_template = true\n", expect: [["warning", 1, 1, 1, 24]] },
      {
        code: '[hypervisr.qemu]\npath = "/q"\n',
        expect: [["warning", 1, 2, 1, 16]],
        message: /unknown table \[hypervisr\].*did you mean "hypervisor"/,
      },
      {
        code: "[[foo]]\na = 1\n",
        expect: [["warning", 1, 3, 1, 6]],
        message: /unknown table \[foo\]/,
      },
      { code: "foo = 1\n", expect: [["warning", 1, 1, 1, 4]], message: /at the top level/ },
      {
        code: '[vmfactory.lint]\nunknown-keys = "off"\n',
        expect: [["warning", 2, 1, 2, 13]],
        message: /unknown rule "unknown-keys".*did you mean "unknown-key"/,
      },
      {
        code: "[vmfactory]\npool_mx = 1\n",
        expect: [["warning", 2, 1, 2, 8]],
        message: /"pool_max"/,
      },
      {
        code: "[vmfactory]\npoolsize = 1\n",
        expect: [["warning", 2, 1, 2, 9]],
        message: /"pool_size"/,
      },
      {
        code: hv("default_memroy = 2048\n"),
        expect: [["warning", 2, 1, 2, 15]],
        message: /"default_memory"/,
      },
    ],
  },
  "template-shares-memory": {
    valid: [{ code: hv(QEMU_LITE + BOOT) }],
    invalid: [{ code: GOOD, expect: [["info", 8, 1, 8, 23]], message: /CVE-2015-2877/ }],
  },
};

for (const rule of rules) {
  const id = rule.meta.id;
  Deno.test(`rule ${id}: valid and invalid cases`, () => {
    const cases = TABLE[id];
    assert.ok(cases, `no cases for ${id}`);
    assert.ok(cases.valid.length > 0 && cases.invalid.length > 0);
    for (const c of cases.valid) {
      const found = lintText("t.toml", c.code, c.options).filter((d) => d.rule === id);
      assert.deepEqual(found, [], `valid case has a finding:\n${c.code}`);
    }
    for (const c of cases.invalid) {
      const found = lintText("t.toml", c.code, c.options).filter((d) => d.rule === id);
      assert.deepEqual(
        found.map((d) => [d.severity, d.line, d.column, d.endLine, d.endColumn]),
        c.expect,
        `invalid case:\n${c.code}\n${JSON.stringify(found)}`,
      );
      if (c.message) assert.match(found[0].message, c.message);
    }
  });
  Deno.test(`rule ${id}: documented with examples`, () => {
    const { docs } = rule.meta;
    assert.ok(docs.explanation.length > 40 && docs.incorrect && docs.correct);
    if (id === "toml-syntax") return;
    assert.ok(
      lintText("x.toml", docs.incorrect).some((d) => d.rule === id),
      `${id}: incorrect example`,
    );
    assert.ok(
      !lintText("x.toml", docs.correct).some((d) => d.rule === id),
      `${id}: correct example`,
    );
  });
}
