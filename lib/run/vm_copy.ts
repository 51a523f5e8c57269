/**
 * Copies files and folder trees into and out of a running VM (`vm cp`, `run --file`), by
 * `docker cp`'s rules for names (lib/run/_copy_plan.ts), streamed through the guest agent as a
 * tar stream with flow control both ways; modes, links and times are kept.
 *
 * In: the host's GNU tar (from a system folder) writes the stream, owned by root as `docker cp`
 * makes it, into the guest's busybox tar (`/bin/tar` of the initrd). For a VM with an image this
 * runs outside the image, at `<image root><path>`, so images without tar work too; links inside
 * the image are then resolved from the initrd's `/`.
 *
 * Out: the guest's busybox tar writes the stream, which is input from a hostile guest: GNU tar
 * unpacks it into a private staging folder in the destination's folder (owned by this user,
 * `..` and absolute names refused, nothing written through a link the archive made), the result
 * is checked on disk (lib/run/_staged_tree.ts: links pointing outside, devices, set-id bits) and
 * only then moved into place. Both ways are bounded by a byte count.
 * @module
 */
import { UsageError, VmfactoryError } from "../errors.ts";
import type { AgentClient, ExecOptions, ExecResult } from "../guest/agent_client.ts";
import { removeTree } from "../image/image_cache.ts";
import { systemProgram } from "../system_program.ts";
import type { VmRecord } from "../vm/vm_record.ts";
import {
  type CopyPath,
  nameOf,
  parentOf,
  type PathKind,
  planCopy,
  readCopyPath,
} from "./_copy_plan.ts";
import { checkStagedTree, placeTree, RefusedArchiveError } from "./_staged_tree.ts";

/** Default of {@link CopyOptions.maxBytes} (4 GiB). */
export const DEFAULT_MAX_COPY_BYTES = 4 * 2 ** 30;

/** Options of {@link copyIntoVm} and {@link copyFromVm}. */
export interface CopyOptions {
  /** Largest tar stream, bytes (default {@link DEFAULT_MAX_COPY_BYTES}); more fails the copy. */
  maxBytes?: number;
  /** Called with the bytes of the stream so far, as they pass. */
  onProgress?: (bytes: number) => void;
}

/** What a copy moved. */
export interface CopyResult {
  /** Bytes of the tar stream. */
  bytes: number;
}

/** The environment of the guest's side: the initrd's tools, not the image's. */
const GUEST_ENV = ["PATH=/bin:/sbin:/usr/bin:/usr/sbin"];
/** Guest stderr and host tar messages kept for an error. */
const MAX_MESSAGE_BYTES = 4096;
/** Exit codes of the guest scripts that name a problem (the host words it). */
const GUEST_MISSING = 3, GUEST_NOT_FOLDER = 4, GUEST_FOLDER_THERE = 5;

/** Prints what each argument is: folder, file (anything else, links too) or missing. */
const PROBE = `for p; do
if [ -d "$p" ]; then echo folder; elif [ -e "$p" ] || [ -L "$p" ]; then echo file; else echo missing; fi
done`;

/**
 * Unpacks the tar stream on stdin: args how (contents|entry), kind (folder|file), into, name,
 * and the source's name in the stream. What is left of stdin after tar is read to its end, so the
 * host's tar finishes writing.
 */
const UNPACK = `how=$1 kind=$2 into=$3 name=$4 src=$5 t=$3/$4
unpack() { /bin/tar -x -f - "$@"; rc=$?; cat >/dev/null; return $rc; }
if [ "$how" = contents ]; then unpack -C "$into" --strip-components 1; exit; fi
if [ "$kind" = folder ] && [ -d "$t" ]; then unpack -C "$t" --strip-components 1; exit; fi
if [ "$kind" = folder ] && { [ -e "$t" ] || [ -L "$t" ]; }; then exit ${GUEST_NOT_FOLDER}; fi
if [ "$kind" = file ] && [ -d "$t" ]; then exit ${GUEST_FOLDER_THERE}; fi
if [ "$kind" = file ] && [ "$name" = "$src" ]; then unpack -C "$into"; exit; fi
tmp=$(mktemp -d "$into/.vmfactory-cp-XXXXXX") || exit 1
if unpack -C "$tmp"; then
  if [ "$kind" = folder ]; then mv "$tmp" "$t" && exit 0
  else mv -f "$tmp/$src" "$t" && rmdir "$tmp" && exit 0; fi
fi
rm -rf "$tmp"; exit 1`;

/**
 * Writes a tar stream of one path to stdout: args path, must-be-folder (1|0), contents (1|0: the
 * folder's entries as ./…), its folder and its name (the stream holds ./name and what is below).
 */
const PACK = `p=$1 folder=$2 contents=$3 dir=$4 name=$5
[ -e "$p" ] || [ -L "$p" ] || exit ${GUEST_MISSING}
[ "$folder" = 1 ] && [ ! -d "$p" ] && exit ${GUEST_NOT_FOLDER}
if [ "$contents" = 1 ]; then cd "$p" && exec /bin/tar -c -f - .; fi
cd "$dir" && exec /bin/tar -c -f - "./$name"`;

/**
 * Copies `hostPath` (a file, a link, a folder tree, or `DIR/.` for a folder's content) into the
 * running VM of `vm` at `guestPath` (absolute, in the VM's image when it has one), by
 * `docker cp`'s rules. Call with a connected agent of that VM; the copy is streamed, with flow
 * control. Throws a {@link UsageError} for a path that does not fit (missing, a folder onto a
 * file, a folder that does not exist) and a {@link VmfactoryError} when a side failed.
 * @example
 * ```ts
 * const agent = await AgentClient.connect(vm.agentSocket);
 * await copyIntoVm(agent, vm, "./site", "/srv/www"); // /srv/www/site, or /srv/www if new
 * ```
 */
export async function copyIntoVm(
  agent: AgentClient,
  vm: VmRecord,
  hostPath: string,
  guestPath: string,
  options: CopyOptions = {},
): Promise<CopyResult> {
  const action = `copy ${hostPath} to ${vm.id}:${guestPath}`;
  const dst = guestSide(action, guestPath);
  const src = readCopyPath(hostPath, Deno.cwd());
  const info = statOrUndefined(src.path, !(src.contents || src.folder));
  if (!info) throw new UsageError(action, `${hostPath} does not exist`);
  const kind = info.isDirectory ? "folder" : "file";
  const real = (path: string) => inGuest(vm, path);
  const probe = await guestExec(agent, PROBE, [real(dst.path), real(parentOf(dst.path))], {
    outputLimit: 64,
  });
  const [dstKind, parentKind] = kindsOf(probe, action);
  const plan = planCopy(action, { at: src, kind }, {
    at: dst,
    kind: dstKind,
    parentIsFolder: parentKind === "folder",
  });
  const tar = hostTar(action, [
    "-c",
    "-f",
    "-",
    "--format=gnu",
    "--numeric-owner",
    "--owner=0",
    "--group=0",
    ...(kind === "folder"
      ? ["-C", src.path, "."]
      : ["-C", parentOf(src.path), `--add-file=${nameOf(src.path)}`]),
  ], { stdout: "piped" });
  const counter = new ByteCounter(action, options);
  let result: ExecResult;
  try {
    result = await guestExec(agent, UNPACK, [
      plan.how,
      kind,
      real(plan.into),
      plan.name,
      nameOf(src.path),
    ], { stdin: counter.pass(tar.child.stdout), outputLimit: 64 * 1024 });
  } catch (err) {
    tar.kill();
    await tar.done();
    throw counter.over ?? err;
  }
  if (result.exitCode !== 0) {
    tar.kill();
    await tar.done();
    const shown = `${vm.id}:${plan.how === "entry" ? join(plan.into, plan.name) : plan.into}`;
    throw guestFailure(action, result, {
      [GUEST_NOT_FOLDER]: `cannot replace ${shown} with a folder`,
      [GUEST_FOLDER_THERE]: `cannot replace the folder ${shown} with a file`,
    }, "unpack");
  }
  const status = await tar.done();
  if (!status.ok) {
    throw new VmfactoryError(action, `the host's tar failed: ${status.message || "no message"}`);
  }
  return { bytes: counter.bytes };
}

/**
 * Copies `guestPath` (absolute, in the VM's image when it has one; `DIR/.` for a folder's
 * content) out of the running VM of `vm` to `hostPath`, by `docker cp`'s rules: files owned by
 * this user, modes (but set-id bits), links and times kept. Nothing is placed unless the whole
 * archive passed the checks; a link pointing outside the destination, a device, a FIFO or a
 * socket is refused ({@link RefusedArchiveError}). Call with a connected agent of that VM.
 * @example
 * ```ts
 * await copyFromVm(agent, vm, "/var/log/app", "./logs"); // ./logs/app, or ./logs if new
 * ```
 */
export async function copyFromVm(
  agent: AgentClient,
  vm: VmRecord,
  guestPath: string,
  hostPath: string,
  options: CopyOptions = {},
): Promise<CopyResult> {
  const action = `copy ${vm.id}:${guestPath} to ${hostPath}`;
  const src = guestSide(action, guestPath);
  const dst = readCopyPath(hostPath, Deno.cwd());
  const dstKind = hostKind(dst.path);
  const parentIsFolder = hostKind(parentOf(dst.path)) === "folder";
  if (dstKind === "missing" && !parentIsFolder) {
    throw new UsageError(action, `the folder ${parentOf(dst.path)} does not exist`);
  }
  const name = nameOf(src.path);
  // a folder asked for (`DIR/` or `DIR/.`): where it goes is known before anything moves
  if (src.folder) {
    planCopy(action, { at: src, kind: "folder" }, { at: dst, kind: dstKind, parentIsFolder });
  }
  const stage = await Deno.makeTempDir({
    dir: dstKind === "folder" ? dst.path : parentOf(dst.path),
    prefix: ".vmfactory-cp-",
  });
  try {
    const bytes = await unpackFromGuest(agent, vm, src, stage, action, options);
    const entries = [...Deno.readDirSync(stage)].map((e) => e.name);
    if (!src.contents && (entries.length !== 1 || entries[0] !== name)) {
      const held = JSON.stringify(entries.slice(0, 3)).slice(0, 300);
      throw new RefusedArchiveError(
        action,
        `the guest's archive holds ${held}, not ${JSON.stringify(name)} alone (refused)`,
      );
    }
    checkStagedTree(stage, action);
    const kind = src.contents || Deno.lstatSync(`${stage}/${name}`).isDirectory ? "folder" : "file";
    const plan = planCopy(action, { at: src, kind }, { at: dst, kind: dstKind, parentIsFolder });
    if (!src.contents) {
      placeTree(`${stage}/${name}`, join(plan.into, plan.name), action);
    } else {
      const into = plan.how === "contents" ? plan.into : join(plan.into, plan.name);
      if (plan.how === "entry") Deno.mkdirSync(into);
      for (const entry of entries) placeTree(`${stage}/${entry}`, `${into}/${entry}`, action);
    }
    return { bytes };
  } finally {
    removeTree(stage);
  }
}

/** Streams the guest's archive of `src` into GNU tar unpacking into `stage`; returns its size. */
async function unpackFromGuest(
  agent: AgentClient,
  vm: VmRecord,
  src: CopyPath,
  stage: string,
  action: string,
  options: CopyOptions,
): Promise<number> {
  const tar = hostTar(action, [
    "-x",
    "-f",
    "-",
    "-C",
    stage,
    "--no-same-owner", // this user's files, whatever the archive says
    "--same-permissions", // modes as in the VM (set-id bits are cleared after the check)
    "--no-overwrite-dir", // the staging folder stays private, whatever `./` says
    "--delay-directory-restore", // a read-only folder is made so once its content is in
  ], { stdin: "piped" });
  const counter = new ByteCounter(action, options);
  const writer = tar.child.stdin.getWriter();
  let tarGone = false; // tar stopped reading (it ended, or failed): the rest is counted only
  const stderr = new BoundedText();
  let result: ExecResult;
  try {
    result = await guestExec(agent, PACK, [
      inGuest(vm, src.path),
      src.contents || src.folder ? "1" : "0",
      src.contents ? "1" : "0",
      inGuest(vm, parentOf(src.path)),
      nameOf(src.path),
    ], {
      collect: false,
      outputLimit: 0xffff_ffff,
      onStdout: async (chunk) => {
        counter.add(chunk.length);
        if (tarGone) return;
        await writer.write(chunk).catch(() => tarGone = true);
      },
      onStderr: (chunk) => stderr.add(chunk),
    });
  } catch (err) {
    tar.kill();
    await tar.done();
    throw counter.over ?? err;
  }
  await writer.close().catch(() => {});
  const status = await tar.done();
  if (result.exitCode !== 0) {
    throw guestFailure(action, { ...result, stderr: stderr.bytes() }, {
      [GUEST_MISSING]: `${src.path} does not exist in VM ${vm.id}`,
      [GUEST_NOT_FOLDER]: `${src.path} is not a folder in VM ${vm.id}`,
    }, "pack");
  }
  if (result.truncated) throw counter.overLimit();
  if (!status.ok) {
    throw new RefusedArchiveError(
      action,
      `the guest's archive was refused: ${status.message || `tar exited ${status.code}`}`,
    );
  }
  return counter.bytes;
}

/** Reads a guest path: absolute, by name. */
function guestSide(action: string, path: string): CopyPath {
  if (!path.startsWith("/")) {
    throw new UsageError(
      action,
      `the path in the VM must be absolute, got ${JSON.stringify(path)}`,
    );
  }
  return readCopyPath(path, "/");
}

/** Where the VM's `path` is outside its image (the path itself without one). */
function inGuest(vm: VmRecord, path: string): string {
  return vm.image ? `${vm.image.root}${path === "/" ? "" : path}` : path;
}

function join(folder: string, name: string): string {
  return folder === "/" ? `/${name}` : `${folder}/${name}`;
}

/** Runs a guest script as root in the initrd's root, without a deadline (pings watch it). */
function guestExec(
  agent: AgentClient,
  script: string,
  args: string[],
  opts: ExecOptions,
): Promise<ExecResult> {
  return agent.exec(["/bin/sh", "-c", script, "vmfactory-cp", ...args], {
    env: GUEST_ENV,
    cwd: "/",
    timeoutMs: 0,
    ...opts,
  });
}

/** The kinds the PROBE script printed, checked (the guest may print anything). */
function kindsOf(result: ExecResult, action: string): PathKind[] {
  const lines = new TextDecoder().decode(result.stdout).split("\n");
  const kinds = ["folder", "file", "missing"];
  if (
    result.exitCode !== 0 || lines.length !== 3 || lines[2] !== "" ||
    !lines.slice(0, 2).every((l) => kinds.includes(l))
  ) {
    throw new VmfactoryError(action, "the guest's answer to where the copy goes is malformed");
  }
  return lines.slice(0, 2) as PathKind[];
}

/** The error of a guest script that exited non-zero: a named problem, or its stderr. */
function guestFailure(
  action: string,
  result: ExecResult,
  named: Record<number, string>,
  step: string,
): VmfactoryError {
  const detail = named[result.exitCode];
  if (detail) return new UsageError(action, detail);
  const said = printable(result.stderr);
  return new VmfactoryError(
    action,
    `the guest's tar could not ${step} (exit ${result.exitCode})${said ? `: ${said}` : ""}`,
  );
}

function statOrUndefined(path: string, lstat: boolean): Deno.FileInfo | undefined {
  try {
    return lstat ? Deno.lstatSync(path) : Deno.statSync(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound || err instanceof Deno.errors.NotADirectory) {
      return undefined;
    }
    throw err;
  }
}

/** What `path` is on the host, links followed (the user named it). */
function hostKind(path: string): PathKind {
  const info = statOrUndefined(path, false);
  return !info ? "missing" : info.isDirectory ? "folder" : "file";
}

/** A running host tar and how it ended. */
interface HostTar {
  child: Deno.ChildProcess;
  kill(): void;
  /** Its end; `message`: the start of its stderr, made printable. */
  done(): Promise<{ ok: boolean; code: number; message: string }>;
}

/** Starts the system's GNU tar with `args` (stderr read and kept short). */
function hostTar(
  action: string,
  args: string[],
  io: { stdin?: "piped"; stdout?: "piped" },
): HostTar {
  const program = systemProgram("tar");
  if (!program) {
    throw new UsageError(action, "no tar in /usr/bin or /bin (install the Debian package tar)");
  }
  const child = new Deno.Command(program, {
    args,
    stdin: io.stdin ?? "null",
    stdout: io.stdout ?? "null",
    stderr: "piped",
    env: { LC_ALL: "C" },
  }).spawn();
  const stderr = new BoundedText();
  const read = (async () => {
    for await (const chunk of child.stderr) stderr.add(chunk);
  })().catch(() => {});
  return {
    child,
    kill() {
      try {
        child.kill("SIGKILL");
      } catch {
        // it ended already
      }
    },
    async done() {
      const status = await child.status;
      await read;
      return { ok: status.success, code: status.code, message: printable(stderr.bytes()) };
    },
  };
}

/** Counts the bytes of a copy's stream against its limit and reports progress. */
class ByteCounter {
  bytes = 0;
  /** Set once the stream went over the limit. */
  over?: VmfactoryError;
  readonly #max: number;
  readonly #action: string;
  readonly #onProgress?: (bytes: number) => void;

  constructor(action: string, options: CopyOptions) {
    this.#action = action;
    this.#max = options.maxBytes ?? DEFAULT_MAX_COPY_BYTES;
    this.#onProgress = options.onProgress;
  }

  /** Counts `n` more bytes; throws once over the limit. */
  add(n: number): void {
    this.bytes += n;
    if (this.bytes > this.#max) throw this.overLimit();
    this.#onProgress?.(this.bytes);
  }

  overLimit(): VmfactoryError {
    return this.over ??= new VmfactoryError(
      this.#action,
      `the copy is larger than ${this.#max} bytes (the limit; raise it with --max-size)`,
    );
  }

  /** `stream`, counted. */
  async *pass(stream: ReadableStream<Uint8Array>): AsyncGenerator<Uint8Array> {
    for await (const chunk of stream) {
      this.add(chunk.length);
      yield chunk;
    }
  }
}

/** The first {@link MAX_MESSAGE_BYTES} bytes of a stream; the rest is dropped. */
class BoundedText {
  #parts: Uint8Array[] = [];
  #size = 0;

  add(chunk: Uint8Array): void {
    if (this.#size >= MAX_MESSAGE_BYTES) return;
    const part = chunk.subarray(0, MAX_MESSAGE_BYTES - this.#size);
    this.#parts.push(part);
    this.#size += part.length;
  }

  bytes(): Uint8Array {
    const out = new Uint8Array(this.#size);
    this.#parts.reduce((at, p) => (out.set(p, at), at + p.length), 0);
    return out;
  }
}

/** Text of the guest or of tar, short, on one line, without control characters. */
function printable(bytes: Uint8Array): string {
  const text = new TextDecoder().decode(bytes.subarray(0, MAX_MESSAGE_BYTES)).trim();
  // deno-lint-ignore no-control-regex
  return text.replace(/\n+/g, "; ").replace(/[\x00-\x1f\x7f-\x9f]/g, "?").slice(0, 1000);
}
