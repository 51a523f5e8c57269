/** Helpers shared by the cache unit tests. @module */

import assert from "node:assert/strict";

/** Leaves a socket file nobody listens on, as a crashed server does (SIGKILL: no cleanup). */
export async function makeStaleSocket(path: string): Promise<void> {
  const code = `Deno.listen({ transport: "unix", path: ${JSON.stringify(path)} });` +
    `Deno.kill(Deno.pid, "SIGKILL");`;
  await new Deno.Command(Deno.execPath(), { args: ["eval", code], stderr: "null" }).output();
  assert.ok(Deno.lstatSync(path).isSocket);
}
