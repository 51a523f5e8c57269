/** Re-running this CLI in the background (the bundled, compiled or source form alike). @module */

/**
 * The CLI's entry module: `cmd/main.ts` beside this file, or, in the single-file bundle, the
 * bundle itself (never `Deno.mainModule`, which is whatever script imported the library).
 */
const ENTRY = import.meta.url.endsWith("/cmd/_self.ts")
  ? new URL("./main.ts", import.meta.url).href
  : import.meta.url;

/** Argv that runs this CLI again with `args`. */
export function selfCommand(args: string[]): string[] {
  // deno-lint-ignore no-explicit-any
  if ((Deno.build as any).standalone) return [Deno.execPath(), ...args];
  return [Deno.execPath(), "run", "-A", ENTRY, ...args];
}

/**
 * Starts this CLI with `args` as a detached background process with no terminal I/O and does not
 * wait for it (this process may exit right away).
 */
export function spawnDetached(args: string[]): void {
  const [cmd, ...rest] = selfCommand(args);
  const child = new Deno.Command(cmd, {
    args: rest,
    stdin: "null",
    stdout: "null",
    stderr: "null",
    env: { DENO_NO_UPDATE_CHECK: "1" },
  }).spawn();
  child.unref();
}
