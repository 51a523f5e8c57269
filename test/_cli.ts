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
    env: { NO_COLOR: "1", KATA_CONF_FILE: "", VMFACTORY_SOCKET: "", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/**
 * Reads `reader` (a child's decoded output) until the text read so far matches `until`; returns
 * that text. Throws when the stream ends first.
 */
export async function readUntil(
  reader: ReadableStreamDefaultReader<string>,
  until: RegExp | string,
): Promise<string> {
  let seen = "";
  const matches = () => typeof until === "string" ? seen.includes(until) : until.test(seen);
  while (!matches()) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the output ended before ${until}:\n${seen}`);
    seen += value;
  }
  return seen;
}

/**
 * Runs the TypeScript `code` in a Deno child (from a file in `dir`) until it prints its first line,
 * then sends it `signal` and waits for it to exit; returns that line.
 */
export async function runScriptUntilLine(
  code: string,
  dir: string,
  signal: Deno.Signal,
): Promise<string> {
  const script = `${dir}/child-${crypto.randomUUID().slice(0, 6)}.ts`;
  await Deno.writeTextFile(script, code);
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-lock", script],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  try {
    return (await readUntil(reader, "\n")).trim();
  } finally {
    child.kill(signal);
    await child.status;
    await reader.cancel().catch(() => {});
  }
}
