/** `promtool check metrics` for the tests of the daemon's metrics. @module */

const PROMTOOL = "/usr/bin/promtool";

/**
 * Runs `promtool check metrics` (Debian package prometheus, installed by scripts/setup_host.sh)
 * on `text`; resolves to its complaints, "" when it has none.
 */
export async function promtoolComplaints(text: string): Promise<string> {
  try {
    Deno.statSync(PROMTOOL);
  } catch {
    throw new Error(`${PROMTOOL} is missing: install the Debian package prometheus`);
  }
  const child = new Deno.Command(PROMTOOL, {
    args: ["check", "metrics"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(text));
  await writer.close();
  const out = await child.output();
  const said = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return out.success ? said : `exit ${out.code}: ${said}`;
}
