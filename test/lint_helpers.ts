/**
 * Helpers of the linter and config tests: the real Kata configuration files (test data in the
 * `shared` folder beside the project) and temporary files.
 * @module
 */

import { DEFAULT_CONFIG_PATHS } from "../lib/config/resolve_config_path.ts";

/** The kata-configs folder, or undefined (with a message) when it is absent. */
export function kataConfigsDir(): string | undefined {
  const dir = new URL("../../shared/kata-configs", import.meta.url).pathname;
  try {
    if (Deno.statSync(dir).isDirectory) return dir;
  } catch { /* absent */ }
  console.warn(`skipping: no Kata configuration files at ${dir}`);
  return undefined;
}

/** Every `*.toml` under `dir`, sorted. */
export function tomlFiles(dir: string): string[] {
  return [...Deno.readDirSync(dir)].flatMap((e) =>
    e.isDirectory
      ? tomlFiles(`${dir}/${e.name}`)
      : e.name.endsWith(".toml")
      ? [`${dir}/${e.name}`]
      : []
  ).sort();
}

/** Runs `fn` with a temporary directory holding `files` (name -> text); removes it afterwards. */
export async function withFiles(
  files: Record<string, string>,
  fn: (dir: string) => void | Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "vmf-lint-test-" });
  try {
    for (const [name, text] of Object.entries(files)) {
      const path = `${dir}/${name}`;
      await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
      await Deno.writeTextFile(path, text);
    }
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Whether this host has a Kata configuration file at one of Kata's default paths. */
export function hostHasKataConfig(): boolean {
  return DEFAULT_CONFIG_PATHS.some((p) => {
    try {
      return Deno.statSync(p).isFile;
    } catch {
      return false;
    }
  });
}
