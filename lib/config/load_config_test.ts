import assert from "node:assert/strict";
import { BUILTIN_PATH, DEFAULT_QEMU_PATH } from "./builtin_default.ts";
import { ConfigError, loadConfig, mergeSources } from "./load_config.ts";
import { dropInPaths, resolveConfigPath } from "./resolve_config_path.ts";
import { settingsFrom } from "./settings.ts";
import { hostHasKataConfig, withFiles } from "../../test/lint_helpers.ts";

Deno.test("resolveConfigPath: --config, then KATA_CONF_FILE", () => {
  assert.equal(
    resolveConfigPath({ config: "/a.toml", env: { KATA_CONF_FILE: "/b.toml" } }),
    "/a.toml",
  );
  assert.equal(resolveConfigPath({ env: { KATA_CONF_FILE: "/b.toml" } }), "/b.toml");
});

Deno.test("dropInPaths: config.d/*.toml in lexical order", async () => {
  await withFiles({
    "configuration.toml": "",
    "config.d/20-b.toml": "",
    "config.d/10-a.toml": "",
    "config.d/README": "",
  }, (dir) => {
    assert.deepEqual(dropInPaths(`${dir}/configuration.toml`), [
      `${dir}/config.d/10-a.toml`,
      `${dir}/config.d/20-b.toml`,
    ]);
    assert.deepEqual(dropInPaths(`${dir}/config.d/10-a.toml`), []);
  });
});

Deno.test("loadConfig: drop-ins win per key, origins point at the file that set the key", async () => {
  await withFiles({
    "configuration.toml": '[hypervisor.qemu]\npath = "/usr/bin/qemu"\ndefault_memory = 2048\n\n' +
      "[factory]\nenable_template = false\n",
    "config.d/10-a.toml": "[factory]\nenable_template = true\nvm_cache_number = 0\n",
    "config.d/20-b.toml": "hypervisor.qemu.default_memory = 512\n",
  }, async (dir) => {
    const loaded = await loadConfig({ config: `${dir}/configuration.toml` });
    assert.deepEqual(loaded.sources.map((s) => s.path.slice(dir.length)), [
      "/configuration.toml",
      "/config.d/10-a.toml",
      "/config.d/20-b.toml",
    ]);
    assert.deepEqual(loaded.values, {
      hypervisor: { qemu: { path: "/usr/bin/qemu", default_memory: 512 } },
      factory: { enable_template: true, vm_cache_number: 0 },
    });
    assert.deepEqual(loaded.origin(["factory", "enable_template"]), {
      path: `${dir}/config.d/10-a.toml`,
      line: 2,
      column: 1,
      endLine: 2,
      endColumn: 16,
    });
    assert.deepEqual(loaded.origin(["hypervisor", "qemu", "default_memory"]), {
      path: `${dir}/config.d/20-b.toml`,
      line: 1,
      column: 1,
      endLine: 1,
      endColumn: 31,
    });
    assert.equal(loaded.origin(["hypervisor", "qemu", "path"])?.line, 2);
    assert.equal(loaded.origin(["hypervisor", "qemu"])?.path, `${dir}/configuration.toml`);
    assert.equal(loaded.origin(["nope"]), undefined);
  });
});

Deno.test("loadConfig: the built-in default when no file exists", async () => {
  if (hostHasKataConfig()) return; // only meaningful where no Kata configuration exists
  const loaded = await loadConfig({ env: {} });
  assert.equal(loaded.sources.length, 1);
  assert.equal(loaded.sources[0].path, BUILTIN_PATH);
  const s = settingsFrom(loaded, { XDG_RUNTIME_DIR: "/run/user/1000" });
  assert.equal(s.qemuPath, DEFAULT_QEMU_PATH);
  assert.equal(s.memoryMiB, 256);
  assert.equal(s.machineType, "pc");
  assert.equal(s.enableTemplate, true);
  assert.equal(s.guest, "builtin");
  assert.equal(s.poolSize, 2);
  assert.equal(s.sharedFs, "none");
});

Deno.test("loadConfig: a syntax error is a ConfigError with positions", async () => {
  await withFiles({ "configuration.toml": "[factory]\nenable_template = \n" }, async (dir) => {
    await assert.rejects(loadConfig({ config: `${dir}/configuration.toml` }), (e) => {
      assert.ok(e instanceof ConfigError);
      assert.equal(e.exitCode, 2);
      assert.equal(e.positions[0].path, `${dir}/configuration.toml`);
      assert.equal(e.positions[0].line, 2);
      assert.match(e.message, /^Cannot read the configuration: /);
      return true;
    });
  });
});

Deno.test("loadConfig: an unreadable file is a usage error", async () => {
  await assert.rejects(
    loadConfig({ config: "/nonexistent/configuration.toml" }),
    /Cannot read \/nonexistent/,
  );
});

Deno.test("origin: quoted keys, inline tables, dotted keys, CRLF, multi-line strings and arrays", () => {
  const text = '# c\r\n[hypervisor."qemu"]\r\nkernel_params = """\r\n[x]\r\na = 1\r\n"""\r\n' +
    'arr = [\r\n  "a", # ]\r\n  "b",\r\n]\r\nobj = { inner = { deep = 1 }, "q k" = 2 }\r\n' +
    "factory.enable_template = true\r\n[[a.list]]\r\nx = 1\r\n[[a.list]]\r\nx = 2\r\n";
  const loaded = mergeSources([{ path: "f.toml", text }]);
  const at = (...p: string[]) => {
    const o = loaded.origin(p);
    return o && [o.line, o.column, o.endLine, o.endColumn];
  };
  assert.deepEqual(at("hypervisor", "qemu"), [2, 2, 2, 19]);
  assert.deepEqual(at("hypervisor", "qemu", "kernel_params"), [3, 1, 3, 14]);
  assert.equal(at("x"), undefined);
  assert.equal(at("hypervisor", "qemu", "a"), undefined);
  assert.deepEqual(at("hypervisor", "qemu", "arr"), [7, 1, 7, 4]);
  assert.deepEqual(at("hypervisor", "qemu", "obj", "inner", "deep"), [11, 19, 11, 23]);
  assert.deepEqual(at("hypervisor", "qemu", "obj", "q k"), [11, 31, 11, 36]);
  assert.deepEqual(at("hypervisor", "qemu", "factory", "enable_template"), [12, 1, 12, 24]);
  assert.deepEqual(at("a", "list", "1", "x"), [16, 1, 16, 2]);
});

Deno.test("settingsFrom: runtime-rs factory layout, defaults, env overrides", () => {
  const loaded = mergeSources([{
    path: "rs.toml",
    text:
      '[hypervisor.qemu]\npath = "/opt/qemu"\nkernel = "/k"\ninitrd = "/i"\ndefault_vcpus = 0\n' +
      '[hypervisor.qemu.factory]\nenable_template = true\ntemplate_path = "/tpl"\n' +
      '[vmfactory]\naccel = "kvm"\nstate_dir = "/var/lib/vmf"\n',
  }]);
  const s = settingsFrom(loaded, {});
  assert.equal(s.hypervisorName, "qemu");
  assert.equal(s.qemuPath, "/opt/qemu");
  assert.equal(s.enableTemplate, true);
  assert.equal(s.templatePath, "/tpl");
  assert.equal(s.vmCacheNumber, 0);
  assert.equal(s.vmCacheEndpoint, "/var/run/kata-containers/cache.sock");
  assert.equal(s.guest, "config");
  assert.equal(s.vcpus, 1);
  assert.equal(s.memoryMiB, 2048);
  assert.equal(s.memorySlots, 10);
  assert.equal(s.machineType, "q35");
  assert.equal(s.kernelParams, "");
  assert.equal(s.accel, "kvm");
  assert.equal(s.stateDir, "/var/lib/vmf");
  const o = settingsFrom(loaded, { VMFACTORY_ACCEL: "tcg", VMFACTORY_STATE_DIR: "/tmp/x" });
  assert.equal(o.accel, "tcg");
  assert.equal(o.stateDir, "/tmp/x");
  assert.throws(() => settingsFrom(loaded, { VMFACTORY_ACCEL: "fast" }), /VMFACTORY_ACCEL/);
});

Deno.test("settingsFrom: Go factory layout, state dir default, guest builtin without initrd", () => {
  const loaded = mergeSources([{
    path: "go.toml",
    text: '[hypervisor.clh]\nkernel = "/k"\nimage = "/img"\n[factory]\nvm_cache_number = 3\n',
  }]);
  const s = settingsFrom(loaded, { XDG_RUNTIME_DIR: "/run/user/7" });
  assert.equal(s.hypervisorName, "clh");
  assert.equal(s.vmCacheNumber, 3);
  assert.equal(s.guest, "builtin");
  assert.equal(s.image, "/img");
  assert.equal(s.initrd, undefined);
  assert.equal(s.stateDir, Deno.uid() === 0 ? "/run/vmfactory" : "/run/user/7/vmfactory");
});

Deno.test("settingsFrom: a bad value names the file and line", () => {
  const loaded = mergeSources([{
    path: "bad.toml",
    text: '[factory]\n\nenable_template = "yes"\n',
  }]);
  assert.throws(() => settingsFrom(loaded, {}), (e) => {
    assert.ok(e instanceof ConfigError);
    assert.match(e.message, /bad\.toml:3:1: enable_template must be true or false/);
    return true;
  });
});
