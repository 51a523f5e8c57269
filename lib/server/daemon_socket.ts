/**
 * Where the daemon of a state directory listens: cheap enough for every CLI call, which looks
 * there before it loads the client.
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
