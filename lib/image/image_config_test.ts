import assert from "node:assert/strict";
import { ImageInputError } from "./_image_input_error.ts";
import { checkImageConfig, parseImageConfigFile } from "./image_config.ts";

const enc = new TextEncoder();

function refused(value: unknown, pattern: RegExp) {
  assert.throws(
    () => checkImageConfig(value),
    (err: unknown) => err instanceof ImageInputError && pattern.test(err.message),
  );
}

Deno.test("reads Env, WorkingDir, User, Entrypoint, Cmd, platform and diff_ids", () => {
  const file = parseImageConfigFile(enc.encode(JSON.stringify({
    architecture: "amd64",
    os: "linux",
    config: {
      Env: ["PATH=/bin", "EMPTY=", "MULTI=a=b"],
      WorkingDir: "/app",
      User: "nobody:nogroup",
      Entrypoint: null,
      Cmd: ["sh", "-c", "echo ok"],
      ExposedPorts: { "80/tcp": {} },
    },
    rootfs: { type: "layers", diff_ids: [`sha256:${"a".repeat(64)}`] },
  })));
  assert.deepEqual(file, {
    config: {
      env: ["PATH=/bin", "EMPTY=", "MULTI=a=b"],
      workingDir: "/app",
      user: "nobody:nogroup",
      cmd: ["sh", "-c", "echo ok"],
    },
    platform: { os: "linux", architecture: "amd64" },
    diffIds: [`sha256:${"a".repeat(64)}`],
  });
  assert.deepEqual(checkImageConfig(undefined), {});
  assert.deepEqual(checkImageConfig({ Entrypoint: [], Cmd: [], WorkingDir: "", User: "" }), {});
  assert.deepEqual(checkImageConfig({ user: "1000", cmd: ["x"] }, true), {
    user: "1000",
    cmd: ["x"],
  });
});

Deno.test("refuses malformed or oversized run settings", () => {
  refused({ Env: "PATH=/bin" }, /Env is not a list/);
  refused({ Env: ["NOEQUALS"] }, /Env\[0\] is not NAME=value/);
  refused({ Env: ["=x"] }, /Env\[0\] is not NAME=value/);
  refused({ Env: [1] }, /Env\[0\] is not a string/);
  refused({ Cmd: ["a\0b"] }, /Cmd\[0\] holds a NUL/);
  refused({ Cmd: Array(1025).fill("x") }, /more than 1024 items/);
  refused({ Cmd: ["x".repeat(40000)] }, /Cmd\[0\] is too long/);
  refused({ WorkingDir: "app" }, /not an absolute path/);
  refused({ User: "a b" }, /is not user\[:group\]/);
  refused({ User: "a:b:c" }, /is not user\[:group\]/);
  refused({ Cmd: Array(100).fill("x".repeat(30000)) }, /too big/);
  refused([], /not an object/);
  assert.throws(() => parseImageConfigFile(enc.encode("{")), /not valid JSON/);
  assert.throws(() => parseImageConfigFile(enc.encode("[]")), /not a JSON object/);
  assert.throws(
    () => parseImageConfigFile(enc.encode(JSON.stringify({ rootfs: { diff_ids: ["md5:x"] } }))),
    /diff_ids\[0\] is not a sha256 digest/,
  );
});
