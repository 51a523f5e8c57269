/**
 * Helpers of the linter and config tests: the Kata configuration files to lint (the suite's own
 * corpus in `test/configs`, plus the real Kata files when they are present) and temporary files.
 * @module
 */

import { DEFAULT_CONFIG_PATHS } from "../lib/config/resolve_config_path.ts";

/** The suite's own small corpus of Kata configuration files (always present). */
export const OWN_CONFIGS_DIR = new URL("./configs", import.meta.url).pathname;

/**
 * The folder of real Kata configuration files: `VMFACTORY_KATA_CONFIGS`, by default the
 * `shared/kata-configs` folder beside the project; undefined (with a note) when it is absent.
 */
export function kataConfigsDir(): string | undefined {
  const dir = Deno.env.get("VMFACTORY_KATA_CONFIGS") ||
    new URL("../../shared/kata-configs", import.meta.url).pathname;
  try {
    if (Deno.statSync(dir).isDirectory) return dir;
  } catch { /* absent */ }
  console.warn(`note: no real Kata configuration files at ${dir}; testing the own corpus only`);
  return undefined;
}

/** A folder of configuration files to test with. */
export interface Corpus {
  /** "own" (test/configs) or "kata" (the real files). */
  name: "own" | "kata";
  /** The folder. */
  dir: string;
}

/** The corpora to test with: the own one always, the real Kata files when present. */
export function corpora(): Corpus[] {
  const kata = kataConfigsDir();
  return [
    { name: "own", dir: OWN_CONFIGS_DIR },
    ...(kata ? [{ name: "kata" as const, dir: kata }] : []),
  ];
}

/**
 * Every `*.toml` under `dir`, sorted; `config.d/` folders are left out (a drop-in is linted with
 * its main file, not alone).
 */
export function tomlFiles(dir: string): string[] {
  return [...Deno.readDirSync(dir)].flatMap((e) =>
    e.isDirectory
      ? e.name === "config.d" ? [] : tomlFiles(`${dir}/${e.name}`)
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
