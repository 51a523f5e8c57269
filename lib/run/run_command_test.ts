import assert from "node:assert/strict";
import { UsageError } from "../errors.ts";
import type { VmFactory } from "../factory/vm_factory.ts";
import type { VmRecord } from "../vm/vm_record.ts";
import type { VmStore } from "../vm/vm_store.ts";
import { runCommand } from "./run_command.ts";

/** A factory whose VMs have no agent (connecting fails), and a store that records removals. */
function fakes(getVm: () => Promise<VmRecord> = () => Promise.resolve(record())) {
  const calls = { made: 0, removed: [] as [string, readonly string[]][] };
  const factory = {
    getVm: () => (calls.made++, getVm()),
  } as unknown as VmFactory;
  const store = {
    remove: (id: string, from: readonly string[]) => (calls.removed.push([id, from]), true),
  } as unknown as VmStore;
  return { factory, store, calls };
}

function record(): VmRecord {
  return { id: "abc", agentSocket: "/nonexistent/agent.sock" } as VmRecord;
}

Deno.test("runCommand refuses bad input before making a VM", async () => {
  const { factory, store, calls } = fakes();
  const bad = [
    { env: ["=x"] },
    { cwd: "relative" },
    { files: [{ host: "/nonexistent/file", guest: "/x" }] },
    { files: [{ host: "/", guest: "relative" }] },
  ];
  for (const more of bad) {
    await assert.rejects(runCommand(factory, store, { command: ["true"], ...more }), UsageError);
  }
  const aborted = AbortSignal.abort(new Error("stop"));
  await assert.rejects(runCommand(factory, store, { command: ["true"], signal: aborted }), /stop/);
  assert.equal(calls.made, 0);
});

Deno.test("runCommand destroys the VM when the run fails or is aborted while it is made", async () => {
  const failing = fakes();
  await assert.rejects(
    runCommand(failing.factory, failing.store, { command: ["true"] }),
    /connect to the guest agent/,
  );
  assert.deepEqual(failing.calls.removed, [["abc", ["owned"]]]);

  const ac = new AbortController();
  const slow = fakes(() => {
    ac.abort(new Error("interrupted"));
    return Promise.resolve(record());
  });
  await assert.rejects(
    runCommand(slow.factory, slow.store, { command: ["true"], signal: ac.signal }),
    /interrupted/,
  );
  assert.deepEqual(slow.calls.removed, [["abc", ["owned"]]]);
});
