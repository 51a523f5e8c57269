/**
 * Stand-ins for QEMU in unit tests of the store and the factory: real processes (a copy of
 * `sleep` named `qemu-system-fake`, so they pass the tool's QEMU identity check), named by
 * identity like a VM's QEMU, all killed and reaped when the set is disposed.
 * @module
 */
import { identify, type ProcessIdentity } from "../lib/process_identity.ts";

let binary: string | undefined;

/** A copy of `sleep` whose name says QEMU (made once per test process). */
function fakeQemuBinary(): string {
  if (binary) return binary;
  const dir = Deno.makeTempDirSync({ prefix: "vmf-fake-qemu-" });
  const path = `${dir}/qemu-system-fake`;
  const sleep = ["/usr/bin/sleep", "/bin/sleep"].find((p) => {
    try {
      return Deno.statSync(p).isFile;
    } catch {
      return false;
    }
  });
  if (!sleep) throw new Error("Cannot make a fake QEMU: no sleep binary");
  Deno.copyFileSync(sleep, path);
  Deno.chmodSync(path, 0o755);
  globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
  return binary = path;
}

/** A set of fake QEMU processes; use with `await using`. */
export class FakeProcesses implements AsyncDisposable {
  readonly #children: Deno.ChildProcess[] = [];

  /** Starts one and returns its identity. */
  spawn(): ProcessIdentity {
    const child = new Deno.Command(fakeQemuBinary(), { args: ["600"], stdout: "null" }).spawn();
    this.#children.push(child);
    return identify(child.pid)!;
  }

  /** Starts a process that is not QEMU (a plain `sleep`), e.g. to forge a record with. */
  spawnOther(): ProcessIdentity {
    const child = new Deno.Command("sleep", { args: ["600"], stdout: "null" }).spawn();
    this.#children.push(child);
    return identify(child.pid)!;
  }

  /** Kills and reaps every process of the set. */
  async [Symbol.asyncDispose](): Promise<void> {
    for (const child of this.#children) {
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
      await child.status;
    }
  }
}
