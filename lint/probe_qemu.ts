/**
 * Asks a QEMU binary on this host whether it has the migration capability `x-ignore-shared`
 * (needed to save and restore a template without copying guest RAM).
 * @module
 */
import { DEFAULT_QEMU_PATH, QEMU_PACKAGE } from "../lib/config/builtin_default.ts";
import { UsageError } from "../lib/errors.ts";
import { sandboxArgs } from "../lib/qemu/qemu_command.ts";
import { qemuRunAs } from "../lib/qemu/qemu_user.ts";
import type { ProbeResult } from "./types.ts";

const COMMANDS = [
  { execute: "qmp_capabilities", id: 1 },
  { execute: "query-migrate-capabilities", id: 2 },
  { execute: "quit", id: 3 },
].map((c) => JSON.stringify(c)).join("\n") + "\n";

/** Whether `path` is a file on this host. */
function isFile(path: string): boolean {
  if (!path.startsWith("/")) return false; // never looked up in PATH
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/**
 * What `--probe` learns about `qemuPath`: "absent" when it is not a file on this host, else
 * whether {@link probeIgnoreShared} finds the capability.
 */
export async function probeQemu(qemuPath: string, timeoutMs = 5000): Promise<ProbeResult> {
  if (!isFile(qemuPath)) return "absent";
  return await probeIgnoreShared(qemuPath, timeoutMs) ? "capable" : "incapable";
}

/**
 * Starts `qemuPath` with no machine (`-machine none -nodefaults -display none -qmp stdio`) and asks
 * QMP `query-migrate-capabilities` for `x-ignore-shared`. True only when the binary answers with
 * it; false when it lacks it, cannot start, or does not answer within `timeoutMs`. Caches nothing.
 * Throws a {@link UsageError} naming the Debian package when `qemuPath` is not a file (a missing
 * binary is not one that lacks the capability).
 */
export async function probeIgnoreShared(qemuPath: string, timeoutMs = 5000): Promise<boolean> {
  if (!isFile(qemuPath)) {
    throw new UsageError(
      "probe QEMU",
      `${qemuPath} is not found (the Debian package ${QEMU_PACKAGE} provides ${DEFAULT_QEMU_PATH})`,
    );
  }
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(qemuPath, {
      args: [
        ...sandboxArgs(qemuRunAs()),
        ...["-machine", "none", "-nodefaults", "-display", "none", "-qmp", "stdio"],
      ],
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
