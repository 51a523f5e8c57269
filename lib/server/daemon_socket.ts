/**
 * Where the daemon of a state directory listens, and whether anything is there: cheap enough for
 * every CLI call (no client is loaded when no socket exists).
 * @module
 */
import type { Settings } from "../config/settings.ts";

/**
 * The daemon's socket for `settings`: env `VMFACTORY_SOCKET`, else `<state_dir>/vmfactory.sock`.
 */
export function daemonSocketPath(
  settings: Pick<Settings, "stateDir">,
  env: Record<string, string | undefined> = { VMFACTORY_SOCKET: Deno.env.get("VMFACTORY_SOCKET") },
): string {
  return env.VMFACTORY_SOCKET || `${settings.stateDir}/vmfactory.sock`;
}

/**
 * A client of the daemon for `settings` when one answers (see `daemonFor` in api_client.ts);
 * one `lstat` and nothing loaded when there is no socket file.
 */
export async function daemonIfAny(
  settings: Pick<Settings, "stateDir">,
  options: { warn?: (line: string) => void } = {},
): Promise<import("./api_client.ts").ApiClient | undefined> {
  try {
    Deno.lstatSync(daemonSocketPath(settings));
  } catch {
    return undefined;
  }
  const { daemonFor } = await import("./api_client.ts");
  return await daemonFor(settings, options);
}
