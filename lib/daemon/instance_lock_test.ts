import assert from "node:assert/strict";
import { acquireInstanceLock, InstanceRunningError } from "./instance_lock.ts";

Deno.test("one holder per role and state directory; released, it can be taken again", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const lock = await acquireInstanceLock(dir, "serve", "the daemon");
    assert.equal(Deno.statSync(lock.path).mode! & 0o777, 0o600);
    await assert.rejects(
      () => acquireInstanceLock(dir, "serve", "the daemon"),
      (err: unknown) => {
        assert.ok(err instanceof InstanceRunningError && err.exitCode === 2);
        assert.equal(
          err.message,
          `Cannot start the daemon: another one runs on ${dir} (pid ${Deno.pid})`,
        );
        return true;
      },
    );
    const other = await acquireInstanceLock(dir, "vmcache", "the VMCache server");
    other.release();
    lock.release();
    lock.release();
    using again = await acquireInstanceLock(dir, "serve", "the daemon");
    assert.match(Deno.readTextFileSync(again.path), new RegExp(`"pid":${Deno.pid}`));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a lock held by a process killed -9 is taken over; a symlink is refused", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const code = `
      import { acquireInstanceLock } from "${new URL("./instance_lock.ts", import.meta.url).href}";
      await acquireInstanceLock(${JSON.stringify(dir)}, "serve", "the daemon");
      console.log("held");
      setInterval(() => {}, 60_000);
    `;
    const child = new Deno.Command(Deno.execPath(), {
      args: ["eval", code],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    try {
      assert.equal((await reader.read()).value?.trim(), "held");
      await assert.rejects(
        () => acquireInstanceLock(dir, "serve", "the daemon"),
        new RegExp(`\\(pid ${child.pid}\\)`),
      );
    } finally {
      child.kill("SIGKILL");
      await child.status;
      await reader.cancel();
    }
    using lock = await acquireInstanceLock(dir, "serve", "the daemon");
    assert.ok(lock.path.endsWith("/serve.lock"));
    Deno.symlinkSync(`${dir}/serve.lock`, `${dir}/link.lock`);
    await assert.rejects(() => acquireInstanceLock(dir, "link", "x"), /not a regular file/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
