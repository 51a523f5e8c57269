/**
 * Stand-ins for QEMU in unit tests of the store and the factory: real processes (`sleep`), named by
 * identity like a VM's QEMU, all killed and reaped when the set is disposed.
 * @module
 */
import { identify, type ProcessIdentity } from "../lib/process_identity.ts";

/** A set of `sleep` processes; use with `await using`. */
export class FakeProcesses implements AsyncDisposable {
  readonly #children: Deno.ChildProcess[] = [];

  /** Starts one and returns its identity. */
  spawn(): ProcessIdentity {
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
