import assert from "node:assert/strict";
import {
  cgroup2Mount,
  cgroupSupport,
  limitValues,
  placeInCgroup,
  prepareCgroupParent,
  pruneCgroups,
  removeCgroup,
} from "./cgroup.ts";
import { VmfactoryError } from "../errors.ts";

const MIB = 1024 * 1024;

Deno.test("limits: RAM ceiling + 25% + 64 MiB, one task per vCPU + 64, a core per vCPU + 1", () => {
  assert.deepEqual(limitValues({ name: "a", cpus: 4, memoryMiB: 4352 }), {
    "memory.max": String((5440 + 64) * MIB),
    "pids.max": "68",
    "cpu.max": "500000 100000",
  });
});

Deno.test("cgroup2Mount finds the cgroup v2 root mount in mountinfo, escapes decoded", () => {
  const hybrid = [
    "30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755",
    "31 30 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory",
    "41 30 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw",
  ].join("\n");
  assert.equal(cgroup2Mount(hybrid), "/sys/fs/cgroup/unified");
  const bind = "50 1 0:30 /sub /mnt/x rw - cgroup2 cgroup2 rw\n" +
    "51 1 0:30 / /sys/fs/cgroup\\040v2 rw - cgroup2 cgroup2 rw";
  assert.equal(cgroup2Mount(bind), "/sys/fs/cgroup v2");
  assert.equal(cgroup2Mount("31 30 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw"), undefined);
});

Deno.test("on this host the detection says whether limits are enforced, and why", () => {
  const support = cgroupSupport();
  assert.equal(typeof support.enforced, "boolean");
  if (support.enforced) {
    assert.ok(support.parent?.endsWith("/vmfactory"));
    for (const c of ["cpu", "memory", "pids"]) {
      assert.match(
        Deno.readTextFileSync(`${support.parent}/cgroup.subtree_control`),
        new RegExp(c),
      );
    }
  } else {
    assert.match(support.why, /^not enforced: /);
    assert.equal(support.parent, undefined);
  }
  assert.equal(
    prepareCgroupParent(undefined).why,
    "not enforced: no cgroup v2 hierarchy is mounted",
  );
});

Deno.test("a hierarchy without the controllers is not used; one with them gets vmfactory/", async () => {
  const root = await Deno.makeTempDir({ prefix: "vmf-cgroup-" });
  try {
    Deno.writeTextFileSync(`${root}/cgroup.controllers`, "cpuset cpu io\n");
    assert.match(prepareCgroupParent(root).why, /lacks the memory, pids controller\(s\)/);

    // a fake tree of plain files: what is written is what the kernel would be asked
    Deno.writeTextFileSync(`${root}/cgroup.controllers`, "cpuset cpu io memory pids\n");
    Deno.writeTextFileSync(`${root}/cgroup.subtree_control`, "cpu\n");
    const support = prepareCgroupParent(root);
    assert.deepEqual(support.parent, `${root}/vmfactory`);
    assert.ok(support.enforced);
    assert.equal(Deno.readTextFileSync(`${root}/cgroup.subtree_control`), "+memory +pids");
    assert.equal(
      Deno.readTextFileSync(`${root}/vmfactory/cgroup.subtree_control`),
      "+cpu +memory +pids",
    );

    const dir = placeInCgroup(4242, { name: "3fa9c0de", cpus: 1, memoryMiB: 256 }, support.parent);
    assert.equal(dir, `${root}/vmfactory/3fa9c0de`);
    assert.equal(Deno.readTextFileSync(`${dir}/memory.max`), String(384 * MIB));
    assert.equal(Deno.readTextFileSync(`${dir}/pids.max`), "65");
    assert.equal(Deno.readTextFileSync(`${dir}/cpu.max`), "200000 100000");
    assert.equal(Deno.readTextFileSync(`${dir}/cgroup.procs`), "4242");
    assert.throws(
      () => placeInCgroup(1, { name: "../x", cpus: 1, memoryMiB: 1 }, support.parent),
      (err) => err instanceof VmfactoryError && /^Cannot limit VM \.\.\/x: /.test(err.message),
    );
    assert.equal(placeInCgroup(1, { name: "x", cpus: 1, memoryMiB: 1 }, undefined), undefined);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

/** A writable cgroup v2 hierarchy here (controllers or not), when this test may make cgroups. */
function writableCgroup2(): string | undefined {
  const mount = cgroup2Mount(Deno.readTextFileSync("/proc/self/mountinfo"));
  if (!mount || Deno.uid() !== 0) return undefined;
  try {
    const probe = `${mount}/vmf-test-${Deno.pid}`;
    Deno.mkdirSync(probe);
    Deno.removeSync(probe);
    return mount;
  } catch {
    return undefined;
  }
}

Deno.test({
  name: "removeCgroup waits for a real cgroup to empty, then removes it",
  ignore: writableCgroup2() === undefined,
  fn: async () => {
    const dir = `${writableCgroup2()}/vmf-test-${Deno.pid}`;
    Deno.mkdirSync(dir);
    const child = new Deno.Command("/bin/sleep", { args: ["0.1"] }).spawn();
    try {
      Deno.writeTextFileSync(`${dir}/cgroup.procs`, String(child.pid));
      assert.match(Deno.readTextFileSync(`/proc/${child.pid}/cgroup`), /^0::\/vmf-test-/m);
      assert.equal(await removeCgroup(dir), true, "removed once sleep exited");
      await child.status;
      assert.throws(() => Deno.statSync(dir), Deno.errors.NotFound);
      assert.equal(await removeCgroup(dir), true, "a missing cgroup counts as removed");
    } finally {
      await child.status.catch(() => {});
      await Deno.remove(dir).catch(() => {});
    }
  },
});

Deno.test({
  name: "pruneCgroups removes only real cgroups left empty for 10 s",
  ignore: writableCgroup2() === undefined,
  fn: async () => {
    const parent = `${writableCgroup2()}/vmf-test-prune-${Deno.pid}`;
    const old = new Date(Date.now() - 60_000);
    const child = new Deno.Command("/bin/sleep", { args: ["5"] }).spawn();
    try {
      for (const name of ["old", "new", "busy"]) {
        Deno.mkdirSync(`${parent}/${name}`, { recursive: true });
      }
      Deno.utimeSync(`${parent}/old`, old, old);
      Deno.utimeSync(`${parent}/busy`, old, old);
      Deno.writeTextFileSync(`${parent}/busy/cgroup.procs`, String(child.pid));
      assert.equal(pruneCgroups(parent), 1);
      assert.deepEqual(
        [...Deno.readDirSync(parent)].filter((e) => e.isDirectory).map((e) => e.name).sort(),
        ["busy", "new"],
      );
    } finally {
      child.kill("SIGKILL");
      await child.status;
      for (const name of ["old", "new", "busy"]) await removeCgroup(`${parent}/${name}`);
      await Deno.remove(parent).catch(() => {});
    }
  },
});
