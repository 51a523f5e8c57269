import assert from "node:assert/strict";
import {
  identify,
  isAlive,
  parseIdentity,
  processesWhere,
  processStartTime,
  programNameOf,
  sameProcess,
  selfIdentity,
  signalProcess,
  waitForExit,
} from "./process_identity.ts";

Deno.test("a process is named by pid and start time; another start time is another process", () => {
  const me = selfIdentity();
  assert.equal(me.pid, Deno.pid);
  assert.ok(isAlive(me));
  assert.deepEqual(identify(Deno.pid), me);
  assert.ok(!isAlive({ pid: me.pid, startTime: me.startTime + 1 }));
  assert.ok(!isAlive({ pid: 2 ** 22 + 1, startTime: 1 })); // above pid_max
  assert.equal(processStartTime(0), undefined);
  assert.equal(processStartTime(-1), undefined);
  assert.ok(sameProcess(me, { ...me }));
});

Deno.test("parseIdentity checks what is read back from disk", () => {
  assert.deepEqual(parseIdentity({ pid: 42, startTime: 7 }), { pid: 42, startTime: 7 });
  for (
    const bad of [
      null,
      42,
      "42",
      {},
      { pid: 1, startTime: 7 },
      { pid: 42 },
      {
        pid: 42,
        startTime: -1,
      },
      { pid: 4.2, startTime: 7 },
      { pid: "42", startTime: 7 },
    ]
  ) {
    assert.equal(parseIdentity(bad), undefined, JSON.stringify(bad));
  }
});

Deno.test("signals reach only the named process; a zombie counts as dead", async () => {
  const child = new Deno.Command("sleep", { args: ["30"] }).spawn();
  try {
    const p = identify(child.pid)!;
    assert.ok(p && isAlive(p));
    assert.ok(
      processesWhere((argv) => argv[0].endsWith("sleep") && argv[1] === "30").some((x) =>
        x.pid === child.pid
      ),
    );
    assert.equal(signalProcess({ ...p, startTime: p.startTime + 1 }, "SIGKILL"), false);
    assert.ok(isAlive(p));
    assert.equal(signalProcess(p, "SIGKILL"), true);
    // not awaited yet: the child is a zombie until `status` reaps it, and counts as dead
    assert.ok(await waitForExit(p, 5000));
    assert.ok(!isAlive(p));
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await child.status;
  }
});

Deno.test("a program's name comes from its executable, and is undefined once it is gone", () => {
  assert.equal(programNameOf(Deno.pid), "deno");
  assert.equal(programNameOf(0x3fffffff), undefined);
});
