/**
 * Asks a QEMU binary on this host whether it has the migration capability `x-ignore-shared`
 * (needed to save and restore a template without copying guest RAM).
 * @module
 */

const COMMANDS = [
  { execute: "qmp_capabilities", id: 1 },
  { execute: "query-migrate-capabilities", id: 2 },
  { execute: "quit", id: 3 },
].map((c) => JSON.stringify(c)).join("\n") + "\n";

/**
 * Starts `qemuPath` with no machine (`-machine none -nodefaults -display none -qmp stdio`) and asks
 * QMP `query-migrate-capabilities` for `x-ignore-shared`. True only when the binary answers with
 * it; false when it lacks it, cannot start, or does not answer within `timeoutMs`. Caches nothing.
 */
export async function probeIgnoreShared(qemuPath: string, timeoutMs = 5000): Promise<boolean> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(qemuPath, {
      args: ["-machine", "none", "-nodefaults", "-display", "none", "-qmp", "stdio"],
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
  } catch {
    return false;
  }
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }, timeoutMs);
  try {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(COMMANDS)).catch(() => {});
    await writer.close().catch(() => {});
    const { stdout } = await child.output();
    return new TextDecoder().decode(stdout).split("\n").some((line) => {
      try {
        const msg = JSON.parse(line);
        return msg.id === 2 && Array.isArray(msg.return) &&
          msg.return.some((c: { capability?: string }) => c.capability === "x-ignore-shared");
      } catch {
        return false;
      }
    });
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}
