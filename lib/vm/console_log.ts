/**
 * A VM's serial console, bounded. QEMU keeps the newest bytes in a `ringbuf` chardev (its size:
 * the largest power of two within `[vmfactory] console_log_max`), so a guest writing to ttyS0
 * forever costs a fixed amount of memory and no disk. `ringbuf-read` takes what it returns out of
 * the ring, so each read moves it into the folder's `console.log`, itself cut to the newest
 * `maxBytes`: what a VM keeps is at most `maxBytes` in QEMU plus `maxBytes` on disk, and reading
 * twice shows the same text. Once QEMU has exited, only what was read before is left.
 * @module
 */
import { CONSOLE_CHARDEV } from "../qemu/qemu_command.ts";
import { QmpClient } from "../qemu/qmp_client.ts";
import type { VmPaths } from "./vm_paths.ts";

/** Options of {@link readConsole}. */
export interface ReadConsoleOptions {
  /** An open QMP session to the VM (else one is opened and closed). */
  qmp?: QmpClient;
  /** Limit for connecting to QMP and reading; default 2000 ms. */
  timeoutMs?: number;
}

/** What QEMU's ring holds, taken out of it; empty when QEMU cannot be asked. */
async function drainRing(
  paths: VmPaths,
  maxBytes: number,
  options: ReadConsoleOptions,
): Promise<Uint8Array> {
  const timeoutMs = options.timeoutMs ?? 2000;
  let qmp = options.qmp;
  try {
    qmp ??= await QmpClient.connect(paths.qmpSocket, { timeoutMs });
    const text = await qmp.execute<string>(
      "ringbuf-read",
      { device: CONSOLE_CHARDEV, size: maxBytes, format: "base64" },
      { timeoutMs },
    );
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  } catch {
    return new Uint8Array(); // QEMU gone, busy with another client, or no console
  } finally {
    if (qmp !== options.qmp) qmp?.close();
  }
}

/**
 * The serial console the VM in `paths` kept, oldest byte first: moves what QEMU holds into
 * `console.log` (keeping its newest `maxBytes`) and returns that file's content. Works, with what
 * was read before, once QEMU has exited. Concurrent readers (any process) take turns.
 */
export async function readConsole(
  paths: VmPaths,
  maxBytes: number,
  options: ReadConsoleOptions = {},
): Promise<Uint8Array> {
  using file = await Deno.open(paths.consoleLog, {
    read: true,
    write: true,
    create: true,
    mode: 0o600,
  });
  await file.lock(true);
  const kept = new Uint8Array((await file.stat()).size);
  for (let at = 0; at < kept.length;) {
    const n = await file.read(kept.subarray(at));
    if (n === null) break;
    at += n;
  }
  const fresh = await drainRing(paths, maxBytes, options);
  if (fresh.length === 0 && kept.length <= maxBytes) return kept;
  const all = new Uint8Array(kept.length + fresh.length);
  all.set(kept);
  all.set(fresh, kept.length);
  const tail = all.subarray(Math.max(0, all.length - maxBytes));
  await file.seek(0, Deno.SeekMode.Start);
  for (let at = 0; at < tail.length;) at += await file.write(tail.subarray(at));
  await file.truncate(tail.length);
  return tail;
}

/**
 * The last `lines` non-empty lines of the VM's console (see {@link readConsole}), joined by "; ";
 * for error messages (e.g. a boot that timed out). Empty when nothing was kept.
 */
export async function consoleTail(
  paths: VmPaths,
  maxBytes: number,
  lines = 3,
  options: ReadConsoleOptions = {},
): Promise<string> {
  try {
    const text = new TextDecoder().decode(await readConsole(paths, maxBytes, options));
    return text.split("\n").map((l) => l.trim()).filter(Boolean).slice(-lines).join("; ");
  } catch {
    return "";
  }
}
