/** Shared set-up for the `vm`, `factory` and `guest` commands. @module */
import { loadConfig, type LoadedConfig } from "../lib/config/load_config.ts";
import { UsageError } from "../lib/errors.ts";
import { sha256Hex } from "../lib/sha256_hex.ts";
import { type Settings, settingsFrom } from "../lib/config/settings.ts";
import { ensurePrivateDir } from "../lib/private_dir.ts";
import { writeFileAtomic } from "../lib/vm/atomic_write.ts";
import { VmStore } from "../lib/vm/vm_store.ts";

/** Settings and the VM store of the effective configuration. */
export interface CommandContext {
  /** Typed settings. */
  settings: Settings;
  /** VM folders in the state directory. */
  store: VmStore;
  /** The configuration files read. */
  loaded: LoadedConfig;
}

/**
 * Loads the configuration (`--config`, then Kata's lookup, then the built-in default) and makes
 * sure the state directory is private to this user (created 0700; one that is another user's, a
 * symbolic link or writable by others is refused with exit 2). Its sub-folders (`vms/`,
 * `guest/`, `lint-ok/`) are protected by it.
 */
export async function commandContext(opts: { config?: string }): Promise<CommandContext> {
  const loaded = await loadConfig({ config: opts.config, env: Deno.env.toObject() });
  const settings = settingsFrom(loaded);
  ensurePrivateDir(settings.stateDir, {
    what: "state directory",
    hint: "set VMFACTORY_STATE_DIR or [vmfactory] state_dir to a folder of your own",
  });
  return { settings, store: new VmStore(settings.stateDir), loaded };
}

/**
 * Refuses (exit 2, with the findings) a configuration the linter rejects. The linter runs once
 * per distinct configuration text: a clean result is remembered in the state directory, so the
 * `vm create` fast path pays a hash, not a lint.
 */
export async function requireLintClean(
  ctx: CommandContext,
  configPath?: string,
  opts: { probe?: boolean } = {},
): Promise<void> {
  const text = ctx.loaded.sources.map((s) => `${s.path}\0${s.text}`).join("\0");
  const hash = await sha256Hex(text, 24);
  const marker = `${ctx.settings.stateDir}/lint-ok/${hash}`;
  // a probing lint depends on this host's binaries: it always runs (and then is remembered)
  if (!opts.probe) {
    try {
      Deno.statSync(marker);
      return;
    } catch {
      // not linted yet
    }
  }
  const { formatText, lintConfig } = await import("../lint/mod.ts");
  const { results } = await lintConfig({
    config: configPath,
    probe: opts.probe,
    env: Deno.env.toObject(),
  });
  if (results.some((r) => r.diagnostics.some((d) => d.severity === "error"))) {
    throw new UsageError(
      "use this configuration",
      `the linter rejects it:\n${formatText(results, { color: false })}`,
    );
  }
  Deno.mkdirSync(`${ctx.settings.stateDir}/lint-ok`, { recursive: true, mode: 0o700 });
  await writeFileAtomic(marker, "");
}

/** Writes one line to stderr (progress, warnings) without touching stdout. */
export function say(line: string): void {
  console.error(line);
}

/** Formats milliseconds for people. */
export function ms(value: number): string {
  return value >= 1000 ? `${(value / 1000).toFixed(2)} s` : `${value.toFixed(1)} ms`;
}
