import assert from "node:assert/strict";
import { UsageError } from "../errors.ts";
import { ConfigError, mergeSources } from "./load_config.ts";
import { defaultStateDir, longestSocketPath, pathProblem, settingsFrom } from "./settings.ts";

function settingsOf(text: string, env: Record<string, string> = {}) {
  return settingsFrom(mergeSources([{ path: "/etc/test.toml", text }]), env);
}

Deno.test("paths with spaces, commas and quotes are taken as they are, normalized", () => {
  const s = settingsOf(
    `[factory]\ntemplate_path = "/srv/a b,c'd\\"e//template/"\n` +
      `[vmfactory]\nstate_dir = "/srv/a b,c'd\\"e/state"\n`,
  );
  assert.equal(s.templatePath, `/srv/a b,c'd"e/template`);
  assert.equal(s.stateDir, `/srv/a b,c'd"e/state`);
});

Deno.test("a newline, `..`, a system folder or a relative path is refused with file and line", () => {
  const cases: [string, RegExp][] = [
    [
      `[vmfactory]\nstate_dir = "/srv/a\\nb"`,
      /test\.toml:2:\d+: state_dir must not contain control/,
    ],
    [`[factory]\ntemplate_path = "/run"`, /template_path must not be a system folder/],
    [`[factory]\ntemplate_path = "/dev/shm/"`, /template_path must not be a system folder/],
    [`[factory]\ntemplate_path = "/srv/../run"`, /template_path must not contain `\.\.`/],
    [`[vmfactory]\nstate_dir = "state"`, /state_dir must be an absolute path/],
    [`[factory]\nvm_cache_endpoint = "/x\\u0007.sock"`, /vm_cache_endpoint must not contain/],
  ];
  for (const [text, pattern] of cases) {
    assert.throws(() => settingsOf(text), (err: unknown) => {
      assert.ok(err instanceof ConfigError && err.exitCode === 2, String(err));
      assert.match(err.message, pattern);
      return true;
    });
  }
  const below = settingsOf(`[factory]\ntemplate_path = "/run/vc/vm/template"`);
  assert.equal(below.templatePath, "/run/vc/vm/template", "a folder below /run is fine");
});

Deno.test("VMFACTORY_STATE_DIR is checked like state_dir", () => {
  for (const value of ["rel", "/tmp", "/srv/a\nb", "/" + "x".repeat(90)]) {
    assert.throws(() => settingsOf("", { VMFACTORY_STATE_DIR: value }), UsageError, value);
  }
  assert.equal(settingsOf("", { VMFACTORY_STATE_DIR: "/srv/s p" }).stateDir, "/srv/s p");
});

Deno.test("a state directory too long for its sockets is refused up front, with the socket", () => {
  const longest = longestSocketPath("/s", "state_dir");
  assert.match(longest, /^\/s\/vms\/[0-9a-f]+\/agent\.sock$/);
  const room = 107 - (longest.length - 2); // bytes left for the state directory
  const fits = "/" + "x".repeat(room - 1);
  assert.equal(pathProblem(fits, "state_dir"), undefined);
  assert.match(
    pathProblem(fits + "x", "state_dir")!,
    /the socket .*agent\.sock would be 108 bytes/,
  );
  // bytes, not characters: "é" is two
  assert.match(pathProblem(fits.slice(0, -1) + "é", "state_dir")!, /108 bytes/);
  const tmpl = longestSocketPath("/t", "template_path");
  assert.match(tmpl, /^\/t\/\.build-[0-9a-f]{8}\/agent\.sock$/);
  assert.match(pathProblem("/" + "t".repeat(90), "template_path")!, /too long/);
});

Deno.test("the default state directory is per user", () => {
  if (Deno.uid() === 0) assert.equal(defaultStateDir({}), "/run/vmfactory");
  else {
    assert.equal(defaultStateDir({ XDG_RUNTIME_DIR: "/run/user/7" }), "/run/user/7/vmfactory");
    assert.equal(defaultStateDir({ XDG_RUNTIME_DIR: "relative" }), `/tmp/vmfactory-${Deno.uid()}`);
  }
});

Deno.test("pool_min defaults to pool_size, pool_max to 4 × pool_size; pool_max below pool_min is refused", () => {
  const fixed = settingsOf("");
  assert.deepEqual([fixed.poolSize, fixed.poolMin, fixed.poolMax], [2, 2, 8]);
  const none = settingsOf("[vmfactory]\npool_size = 0\n");
  assert.deepEqual([none.poolSize, none.poolMin, none.poolMax], [0, 0, 0]);
  const set = settingsOf("[vmfactory]\npool_size = 1\npool_min = 3\n");
  assert.deepEqual([set.poolSize, set.poolMin, set.poolMax], [1, 3, 4]);
  const high = settingsOf("[vmfactory]\npool_min = 6\n");
  assert.equal(high.poolMax, 8);
  const raised = settingsOf("[vmfactory]\npool_min = 9\n");
  assert.equal(raised.poolMax, 9, "at least pool_min");
  assert.throws(
    () => settingsOf("[vmfactory]\npool_min = 4\npool_max = 3\n"),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError && err.exitCode === 2, String(err));
      assert.match(err.message, /test\.toml:3:1: pool_max \(3\) must not be below pool_min \(4\)/);
      return true;
    },
  );
  assert.throws(() => settingsOf("[vmfactory]\npool_max = 2000\n"), /pool_max must be an integer/);
});
