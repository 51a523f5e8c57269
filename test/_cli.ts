/** Running the CLI from source in a subprocess, as a user would, for the CLI tests. @module */

/** Repo root. */
export const ROOT = new URL("..", import.meta.url).pathname;

/** Output of one CLI run. */
export interface CliResult {
  /** Exit code. */
  code: number;
  /** Standard output. */
  stdout: string;
  /** Standard error. */
  stderr: string;
}

/** Runs `vmfactory ARGS...` (no colours, no KATA_CONF_FILE unless `env` sets it). */
export async function runCli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}cmd/main.ts`, ...args],
    cwd: ROOT,
    env: { NO_COLOR: "1", KATA_CONF_FILE: "", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}
