/** The daemon's client for the CLI, loaded only when a socket file exists. @module */
import type { Settings } from "../lib/config/settings.ts";
import type { ApiClient } from "../lib/server/api_client.ts";
import { daemonSocketPath } from "../lib/server/daemon_socket.ts";

/**
 * A client of the daemon for `settings` when one answers (`daemonFor` of api_client.ts); one
 * `lstat` and nothing loaded when there is no socket file.
 */
export async function daemonIfAny(
  settings: Pick<Settings, "stateDir">,
  options: { warn?: (line: string) => void } = {},
): Promise<ApiClient | undefined> {
  try {
    Deno.lstatSync(daemonSocketPath(settings));
  } catch {
    return undefined;
  }
  const { daemonFor } = await import("../lib/server/api_client.ts");
  return await daemonFor(settings, options);
}
