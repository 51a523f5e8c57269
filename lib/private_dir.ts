/**
 * Folders only this user controls: the state directory, the template folder and its /dev/shm
 * fallback. Other local users are hostile, so a folder the tool uses must be this user's, not a
 * symbolic link and not writable by anyone else; every folder above it must belong to root or
 * this user and be writable by no one else (or sticky, like /tmp). Files inside such a folder
 * cannot be planted, renamed or swapped by another user.
 * @module
 */
import { UsageError } from "./errors.ts";

/** How errors name the folder. */
export interface PrivateDirOptions {
  /** What the folder is, e.g. "state directory" (default "folder"). */
  what?: string;
  /** What to do about it, appended to the message. */
  hint?: string;
}

/**
 * A folder that is not private to this user: "Cannot use the <what> <path>: <problem>". With
 * `denied`, this user may not use it (permission denied, or root's folder and we are not root);
 * otherwise it is unsafe (a symbolic link, another user's, writable by others).
 */
export class PrivateDirError extends UsageError {
  /** Builds the error; the CLI exits 2. */
  constructor(
    /** The folder. */
    readonly path: string,
    /** What is wrong with it, e.g. "it is a symbolic link". */
    readonly problem: string,
    /** True when this user may not use it; false when it is unsafe. */
    readonly denied: boolean,
    options: PrivateDirOptions & { cause?: unknown } = {},
  ) {
    super(
      `use the ${options.what ?? "folder"} ${path}`,
      options.hint ? `${problem}; ${options.hint}` : problem,
      { cause: options.cause },
    );
  }
}

/** System folders the tool never mounts on nor uses as its own (exact paths, not below). */
const SYSTEM_PATHS = new Set([
  "/",
  "/bin",
  "/boot",
  "/dev",
  "/dev/shm",
  "/etc",
  "/home",
  "/lib",
  "/lib64",
  "/media",
  "/mnt",
  "/opt",
  "/proc",
  "/root",
  "/run",
  "/run/lock",
  "/run/shm",
  "/run/user",
  "/sbin",
  "/srv",
  "/sys",
  "/tmp",
  "/usr",
  "/var",
  "/var/lib",
  "/var/run",
  "/var/tmp",
]);

/** `path` without repeated, trailing or `.` slashes: "/a//b/./" is "/a/b". */
export function normalizePath(path: string): string {
  return "/" + path.split("/").filter((p) => p !== "" && p !== ".").join("/");
}

/** True when `path` is a system folder such as `/`, `/run`, `/dev/shm` or `/tmp` itself. */
export function isSystemPath(path: string): boolean {
  return SYSTEM_PATHS.has(normalizePath(path));
}

type Problem = { problem: string; denied: boolean };

function me(): number {
  return Deno.uid() ?? -1;
}

function modeText(mode: number): string {
  return `mode ${(mode & 0o7777).toString(8).padStart(4, "0")}`;
}

/** The folder the tool uses itself: a real folder of this user, writable by nobody else. */
function ownProblem(info: Deno.FileInfo): Problem | undefined {
  const uid = me();
  if (info.isSymlink) return { problem: "it is a symbolic link", denied: false };
  if (!info.isDirectory) return { problem: "it is not a folder", denied: false };
  if (info.uid !== uid) {
    if (info.uid === 0) return { problem: `it belongs to root, not to uid ${uid}`, denied: true };
    return { problem: `it belongs to uid ${info.uid}, not to you (uid ${uid})`, denied: false };
  }
  const mode = info.mode ?? 0;
  if (mode & 0o022) {
    return { problem: `it is writable by other users (${modeText(mode)})`, denied: false };
  }
  return undefined;
}

/** A folder above: root's or this user's, and writable by nobody else unless sticky. */
function ancestorProblem(path: string, info: Deno.FileInfo): Problem | undefined {
  const uid = me();
  if (info.uid !== 0 && info.uid !== uid) {
    return { problem: `${path} belongs to uid ${info.uid}, neither root nor you`, denied: false };
  }
  const mode = info.mode ?? 0;
  if (info.isSymlink) return undefined; // its target is checked separately
  if (!info.isDirectory) return { problem: `${path} is not a folder`, denied: false };
  if ((mode & 0o022) && !(mode & 0o1000)) {
    return {
      problem: `${path} is writable by other users and not sticky (${modeText(mode)})`,
      denied: false,
    };
  }
  return undefined;
}

function lstat(path: string, top: string, options: PrivateDirOptions): Deno.FileInfo | undefined {
  try {
    return Deno.lstatSync(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    const denied = err instanceof Deno.errors.PermissionDenied;
    const problem = denied
      ? `cannot look into ${parentOf(path)} (permission denied)`
      : `cannot look at ${path}: ${(err as Error).message}`;
    throw new PrivateDirError(top, problem, denied, { ...options, cause: err });
  }
}

function parentOf(path: string): string {
  return path.slice(0, path.lastIndexOf("/")) || "/";
}

/**
 * Walks `path` from `/`: checks each existing folder above it, creates the missing ones 0700
 * when `create`, checks the folder itself. Returns false when a component is missing (not
 * `create`). Throws {@link PrivateDirError}.
 */
function walk(path: string, create: boolean, options: PrivateDirOptions): boolean {
  if (!path.startsWith("/")) {
    throw new PrivateDirError(path, "it is not an absolute path", false, options);
  }
  const top = normalizePath(path);
  const fail = (p: Problem | undefined, cause?: unknown) => {
    if (p) throw new PrivateDirError(top, p.problem, p.denied, { ...options, cause });
  };
  const parts = top.split("/").filter(Boolean);
  fail(ancestorProblem("/", Deno.lstatSync("/")));
  let prefix = "";
  let created = false;
  for (const [i, part] of parts.entries()) {
    prefix += `/${part}`;
    const last = i === parts.length - 1;
    let info = lstat(prefix, top, options);
    if (!info) {
      if (!create) return false;
      try {
        Deno.mkdirSync(prefix, { mode: 0o700 });
      } catch (err) {
        // made meanwhile: checked below; else this user cannot make it here (denied, read-only)
        if (!(err instanceof Deno.errors.AlreadyExists)) {
          const why = err instanceof Deno.errors.PermissionDenied
            ? "permission denied"
            : (err as Error).message;
          fail({ problem: `cannot create ${prefix} (${why})`, denied: true }, err);
        }
      }
      info = lstat(prefix, top, options)!;
      created = true;
    }
    if (last || created) {
      const problem = ownProblem(info);
      if (problem && !last) problem.problem = `${prefix}: ${problem.problem}`;
      fail(problem);
    } else {
      fail(ancestorProblem(prefix, info));
      if (info.isSymlink) walkTarget(prefix, top, options);
    }
  }
  return true;
}

/** Checks the folders of the real path a trusted symbolic link `link` leads to. */
function walkTarget(link: string, top: string, options: PrivateDirOptions): void {
  let real: string;
  try {
    real = Deno.realPathSync(link);
  } catch (err) {
    throw new PrivateDirError(top, `cannot resolve ${link}: ${(err as Error).message}`, false, {
      ...options,
      cause: err,
    });
  }
  let prefix = "";
  for (const part of real.split("/").filter(Boolean)) {
    prefix += `/${part}`;
    const info = lstat(prefix, top, options);
    const problem = info ? ancestorProblem(prefix, info) : { problem: `${link} is broken` };
    if (problem) throw new PrivateDirError(top, problem.problem, false, options);
  }
}

/**
 * Makes sure `path` is a folder private to this user: creates the missing folders (0700, each
 * then checked to be this user's), refuses one that is a symbolic link, another user's or
 * writable by others, and one below a folder that is neither root's nor this user's or that
 * others may write (unless sticky). Returns `path`.
 * @throws PrivateDirError (a UsageError, exit 2) naming the path and the problem.
 * @example
 * ```ts
 * const stateDir = ensurePrivateDir("/tmp/vmfactory-1000", { what: "state directory" });
 * ```
 */
export function ensurePrivateDir(path: string, options: PrivateDirOptions = {}): string {
  walk(path, true, options);
  return path;
}

/**
 * Checks an existing folder the way {@link ensurePrivateDir} does, creating nothing. True when it
 * is private to this user; false when it is missing or this user may not use it (permission
 * denied, or root's folder and this user is not root), so it holds nothing of this user's.
 * @throws PrivateDirError when it is unsafe (a symbolic link, another user's, writable by others).
 */
export function existingPrivateDir(path: string, options: PrivateDirOptions = {}): boolean {
  try {
    return walk(path, false, options);
  } catch (err) {
    if (err instanceof PrivateDirError && err.denied) return false;
    throw err;
  }
}
