/**
 * The API server's Unix socket: a live server on the path is refused, a stale socket replaced,
 * anything else there (a file, a symbolic link) refused; the new socket has its mode (and group)
 * from its first moment at the path.
 * @module
 */
import { MAX_SOCKET_PATH_BYTES } from "../config/settings.ts";
import { errorMessage, UsageError, VmfactoryError } from "../errors.ts";
import { ensurePrivateDir } from "../private_dir.ts";

const ACTION = "start the API server";

/** A socket this server put at a path; removed only while that path is still this socket. */
export interface BoundSocket {
  /** The HTTP server on it. */
  server: Deno.HttpServer<Deno.NetAddr | Deno.UnixAddr>;
  /** Removes the socket file when it is still the one bound (same inode). */
  unlink(): void;
}

/** Where the socket goes and how it is protected. */
export interface SocketPlan {
  /** The socket path. */
  path: string;
  /** File mode. */
  mode: number;
  /** Group name or gid to give the socket to. */
  group?: string;
  /** Notices (a stale socket replaced). */
  log: (line: string) => void;
  /** Aborting it closes the server and every connection at once. */
  signal: AbortSignal;
}

/**
 * Serves `handler` on the Unix socket `plan.path`. The folder holding it must be this user's and
 * writable by no one else (created 0700 when missing). Binds in a fresh 0700 folder beside the
 * path, sets the mode and group there, then hard-links the socket into place: the link fails if
 * the path was taken meanwhile, so a server starting at the same time is never clobbered.
 * @throws UsageError when a server answers on the path, or the path is not a socket
 */
export async function serveOnSocket(
  plan: SocketPlan,
  handler: Deno.ServeHandler<Deno.UnixAddr>,
): Promise<BoundSocket> {
  const { path } = plan;
  const dir = parentOf(path);
  // the socket is first bound at `<dir>/.<16 hex>/s`, which must fit too
  const bytes = (s: string) => new TextEncoder().encode(s).length;
  if (!path.startsWith("/") || Math.max(bytes(path), bytes(dir) + 20) > MAX_SOCKET_PATH_BYTES) {
    throw new UsageError(
      ACTION,
      `the socket path must be absolute and short enough for a Unix socket ` +
        `(${MAX_SOCKET_PATH_BYTES} bytes, ${MAX_SOCKET_PATH_BYTES - 20} for its folder): ${path}`,
    );
  }
  const gid = plan.group === undefined ? undefined : groupId(plan.group);
  ensurePrivateDir(dir, { what: "socket folder" });
  await clearStale(path, plan.log);
  const tmp = Deno.makeTempDirSync({ dir, prefix: "." });
  const bound = `${tmp}/s`;
  let server: Deno.HttpServer<Deno.UnixAddr> | undefined;
  try {
    server = Deno.serve({ path: bound, signal: plan.signal, onListen() {} }, handler);
    Deno.chmodSync(bound, plan.mode);
    if (gid !== undefined) Deno.chownSync(bound, null, gid);
    Deno.linkSync(bound, path);
  } catch (err) {
    await server?.shutdown();
    if (err instanceof Deno.errors.AlreadyExists) {
      throw new UsageError(ACTION, `another server created ${path} meanwhile`, { cause: err });
    }
    const what = gid !== undefined && err instanceof Deno.errors.PermissionDenied
      ? `cannot give ${path} to group ${plan.group}`
      : `cannot listen on ${path}`;
    throw new VmfactoryError(ACTION, `${what}: ${errorMessage(err)}`, { cause: err });
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
  const ino = Deno.lstatSync(path).ino;
  return {
    server,
    unlink() {
      try {
        if (Deno.lstatSync(path).ino === ino) Deno.removeSync(path);
      } catch {
        // gone already
      }
    },
  };
}

/** Removes a socket nothing listens on; refuses a live one and anything that is not a socket. */
async function clearStale(path: string, log: (line: string) => void): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = Deno.lstatSync(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return;
    throw new VmfactoryError(ACTION, `cannot look at ${path}: ${errorMessage(err)}`);
  }
  if (!info.isSocket) {
    const what = info.isSymlink ? "a symbolic link" : "not a socket";
    throw new UsageError(
      ACTION,
      `${path} exists and is ${what} (remove it or choose another path)`,
    );
  }
  try {
    (await Deno.connect({ transport: "unix", path })).close();
  } catch (err) {
    if (!(err instanceof Deno.errors.ConnectionRefused)) {
      throw new VmfactoryError(ACTION, `cannot probe ${path}: ${errorMessage(err)}`);
    }
    log(`replacing stale socket ${path} (nothing listens on it)`);
    Deno.removeSync(path);
    return;
  }
  throw new UsageError(
    ACTION,
    `a server already answers on ${path} (stop it first, or choose another --socket)`,
  );
}

/** The gid of group `name` (a name in /etc/group, or a number). */
function groupId(name: string): number {
  if (/^[0-9]{1,10}$/.test(name)) return Number(name);
  let text = "";
  try {
    text = Deno.readTextFileSync("/etc/group");
  } catch (err) {
    throw new VmfactoryError(ACTION, `cannot read /etc/group: ${errorMessage(err)}`);
  }
  for (const line of text.split("\n")) {
    const [group, , gid] = line.split(":");
    if (group === name && /^[0-9]{1,10}$/.test(gid ?? "")) return Number(gid);
  }
  throw new UsageError(ACTION, `no group ${JSON.stringify(name)} in /etc/group`);
}

function parentOf(path: string): string {
  return path.slice(0, path.lastIndexOf("/")) || "/";
}
