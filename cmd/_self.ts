/** Re-running this CLI in the background (the bundled, compiled or source form alike). @module */

/** Argv that runs this CLI again with `args`. */
export function selfCommand(args: string[]): string[] {
  // deno-lint-ignore no-explicit-any
  if ((Deno.build as any).standalone) return [Deno.execPath(), ...args];
  return [Deno.execPath(), "run", "-A", Deno.mainModule, ...args];
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
