import assert from "node:assert/strict";
import { startFailureExitCode } from "./agent_error.ts";

Deno.test("a command the guest cannot start exits as a shell would", () => {
  assert.equal(startFailureExitCode("exec: cannot run nope: No such file or directory"), 127);
  assert.equal(startFailureExitCode("exec: cannot run /etc/passwd: Permission denied"), 126);
  assert.equal(startFailureExitCode("exec: chdir /nope: No such file or directory"), undefined);
  assert.equal(startFailureExitCode("mountImage: no medium in the CD drive"), undefined);
});
