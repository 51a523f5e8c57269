/**
 * Where Kata looks for its configuration, and the drop-ins that override it.
 * @module
 */

/** The fixed places Kata looks for `configuration.toml` when neither `--config` nor `KATA_CONF_FILE` is set. */
export const DEFAULT_CONFIG_PATHS = [
  "/etc/kata-containers/configuration.toml",
  "/usr/share/defaults/kata-containers/configuration.toml",
] as const;

/**
 * The configuration file Kata would use: `config`, else `KATA_CONF_FILE`, else the first of
 * {@link DEFAULT_CONFIG_PATHS} that exists; `undefined` when there is none. An explicit `config`
 * or `KATA_CONF_FILE` is returned even when it does not exist (reading it then reports why).
 */
export function resolveConfigPath(
  opts: { config?: string; env?: Record<string, string | undefined> },
): string | undefined {
  if (opts.config) return opts.config;
  const fromEnv = (opts.env ?? Deno.env.toObject()).KATA_CONF_FILE;
  if (fromEnv) return fromEnv;
  return DEFAULT_CONFIG_PATHS.find(isFile);
}

/** The `config.d/*.toml` drop-ins beside `mainPath`, in lexical order (empty when there are none). */
export function dropInPaths(mainPath: string): string[] {
  const slash = mainPath.lastIndexOf("/");
  const dir = `${slash < 0 ? "." : mainPath.slice(0, slash) || "/"}/config.d`;
  let names: string[];
  try {
    names = [...Deno.readDirSync(dir)]
      .filter((e) => e.name.endsWith(".toml") && (e.isFile || e.isSymlink))
      .map((e) => e.name);
  } catch {
    return [];
  }
  return names.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)).map((n) =>
    `${dir.replace(/\/$/, "")}/${n}`
  );
}

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}
