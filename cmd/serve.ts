/**
 * `vmfactory serve`: the daemon in the foreground (lib/daemon/serve_daemon.ts under the process
 * model of lib/daemon/run_daemon.ts). Only this command loads the daemon, the HTTP server and
 * prom-client.
 * @module
 */
import denoJson from "../deno.json" with { type: "json" };
import { DaemonLog, type LogFormat } from "../lib/daemon/daemon_log.ts";
import { runDaemon } from "../lib/daemon/run_daemon.ts";
import { type ServeApiOptions, ServeDaemon } from "../lib/daemon/serve_daemon.ts";
import { UsageError, VmfactoryError } from "../lib/errors.ts";
import { daemonSocketPath } from "../lib/server/api_client.ts";
import { MIN_TOKEN_LENGTH } from "../lib/server/api_server.ts";
import { commandContext, requireLintClean } from "./_context.ts";

/** `serve`'s options as commander parsed them. */
export interface ServeOptions {
  socket?: string;
  socketGroup?: string;
  listen?: string;
  tokenFile?: string;
  logFormat?: LogFormat;
  config?: string;
}

/** Reads `HOST:PORT` (`[v6]:PORT` for IPv6); port 0 takes any free one. */
export function listenArg(text: string): { hostname: string; port: number } {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):([0-9]{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port <= 65535)) {
    throw new UsageError(
      `listen on ${JSON.stringify(text)}`,
      "expected HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080",
    );
  }
  return { hostname: m[1] ?? m[2], port };
}

/** The bearer token in `path`: its first line, kept from other users (no access for others). */
function readToken(path: string): string {
  const what = `read the token file ${path}`;
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch (err) {
    throw new UsageError(what, (err as Error).message, { cause: err });
  }
  if (!info.isFile) throw new UsageError(what, "it is not a regular file");
  if ((info.mode ?? 0) & 0o007) {
    throw new UsageError(what, `other users may read it (chmod o-rwx ${path})`);
  }
  const token = Deno.readTextFileSync(path).split("\n")[0].trim();
  if (token.length < MIN_TOKEN_LENGTH || /\s/.test(token)) {
    throw new UsageError(
      what,
      `the token must be one line of at least ${MIN_TOKEN_LENGTH} characters without spaces (e.g. openssl rand -hex 32)`,
    );
  }
  return token;
}

/** `serve`: runs the daemon until SIGTERM or SIGINT; returns the exit code. */
export async function runServe(opts: ServeOptions): Promise<number> {
  const log = new DaemonLog(opts.logFormat ?? "text");
  try {
    if (opts.listen && !opts.tokenFile) {
      throw new UsageError("listen on TCP", "--listen needs --token-file (a bearer token)");
    }
    if (opts.tokenFile && !opts.listen) {
      throw new UsageError("use --token-file", "the token is for TCP: give --listen HOST:PORT too");
    }
    const listen = opts.listen ? listenArg(opts.listen) : undefined;
    const token = opts.tokenFile ? readToken(opts.tokenFile) : undefined;
    const ctx = await commandContext(opts);
    await requireLintClean(ctx, opts.config, { probe: ctx.settings.enableTemplate });
    const api: ServeApiOptions = {
      socketPath: opts.socket ?? daemonSocketPath(ctx.settings),
      ...(opts.socketGroup ? { socketGroup: opts.socketGroup, socketMode: 0o660 } : {}),
      ...(listen ? { listen, token } : {}),
    };
    const daemon = new ServeDaemon(ctx.settings, ctx.store, {
      api,
      log,
      version: denoJson.version,
      loadSettings: async () => {
        const next = await commandContext(opts);
        await requireLintClean(next, opts.config);
        return next.settings;
      },
    });
    return await runDaemon({
      role: "serve",
      what: "the daemon (vmfactory serve)",
      stateDir: ctx.settings.stateDir,
      log,
      recover: () => daemon.recover(),
      start: () => daemon.start(),
    });
  } catch (err) {
    if (log.format === "text" || !(err instanceof VmfactoryError)) throw err;
    log.error(err.message); // a JSON log stays JSON to the last line
    return err.exitCode;
  }
}
