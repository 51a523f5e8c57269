/** Shared set-up for the `vm`, `factory` and `guest` commands. @module */
import { loadConfig } from "../lib/config/load_config.ts";
import { type Settings, settingsFrom } from "../lib/config/settings.ts";
import { VmStore } from "../lib/vm/vm_store.ts";

/** Settings and the VM store of the effective configuration. */
export interface CommandContext {
  /** Typed settings. */
  settings: Settings;
  /** VM folders in the state directory. */
  store: VmStore;
}

/** Loads the configuration (`--config`, then Kata's lookup, then the built-in default). */
export async function commandContext(opts: { config?: string }): Promise<CommandContext> {
  const loaded = await loadConfig({ config: opts.config, env: Deno.env.toObject() });
  const settings = settingsFrom(loaded);
  return { settings, store: new VmStore(settings.stateDir) };
}

/** Writes one line to stderr (progress, warnings) without touching stdout. */
export function say(line: string): void {
  console.error(line);
}

/** Formats milliseconds for people. */
export function ms(value: number): string {
  return value >= 1000 ? `${(value / 1000).toFixed(2)} s` : `${value.toFixed(1)} ms`;
}
