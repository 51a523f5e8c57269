/**
 * The request bodies of the HTTP API: their types, a reader that never buffers past the size cap,
 * and strict checks (unknown fields refused, every value typed and bounded; numbers and
 * hostnames by the same checks as the CLI's options).
 * @module
 */
import { ArgumentProblem, cpusArg, hostnameArg, memoryArg, timeoutArg } from "../value_checks.ts";
import { ApiError } from "./api_error.ts";

/** `POST /v1/vms`: what the new VM should be; every field is optional. */
export interface CreateVmBody {
  /** vCPUs (1 to 1024; default: the factory's). */
  cpus?: number;
  /** Memory in MiB (1 to 1 TiB; default: the factory's). */
  memoryMiB?: number;
  /** Guest hostname (RFC 1123, up to 64 characters; default `vm-<id>`). */
  hostname?: string;
  /** Root filesystem: a folder, a `.tar` or `oci:PATH[:TAG]` (as `vm create --image`). */
  image?: string;
  /** Network: "user" or "tap:NAME". */
  net?: string;
  /** Forwarded ports, "HOST:GUEST" each. */
  ports?: string[];
}

/** `POST /v1/vms/{id}/exec`: one command; exactly one of `cmd` and `shell`. */
export interface ExecBody {
  /** Program and arguments, run without a shell. */
  cmd?: string[];
  /** A line for the guest's `/bin/sh -c`. */
  shell?: string;
  /** The command's whole environment, "KEY=VALUE" each (default: the agent's PATH and HOME). */
  env?: string[];
  /** Working folder (absolute; default `/`). */
  cwd?: string;
  /** Who to run as: "name", "uid", "name:group" or "uid:gid" (default root). */
  user?: string;
  /** UTF-8 text fed to the command's stdin (default: /dev/null). */
  stdin?: string;
  /** Bytes fed to stdin, base64 (instead of `stdin`). */
  stdinBase64?: string;
  /** Kill the command after this many seconds (1 to 24 days; default: never). */
  timeoutS?: number;
}

/** `POST /v1/run`: a VM made for one command, destroyed afterwards. */
export interface RunBody extends CreateVmBody, ExecBody {}

/** Most arguments of `cmd`, entries of `env` and entries of `ports`. */
const MAX_ARGS = 4096, MAX_ENV = 1024, MAX_PORTS = 64;
/** Longest `image` and `cwd`. */
const MAX_PATH_LENGTH = 4096;

const READ_BODY = "read the request body";

function invalid(field: string, problem: string): ApiError {
  return new ApiError(400, "invalid_field", READ_BODY, `${field}: ${problem}`);
}

/** Checks one field's value; returns it or throws the problem (a message). */
type Check = (value: unknown) => unknown;

/** A CLI number check over a JSON value (anything but a number fails it with its message). */
function number(arg: (text: string) => number): Check {
  return (value) => arg(typeof value === "number" ? String(value) : "");
}

function text(what: string, test: (s: string) => boolean): Check {
  return (value) => {
    if (typeof value !== "string" || !test(value)) throw new ArgumentProblem(`expected ${what}`);
    return value;
  };
}

function list(max: number, item: Check, what: string): Check {
  return (value) => {
    if (!Array.isArray(value) || value.length > max) {
      throw new ArgumentProblem(`expected an array of at most ${max} ${what}`);
    }
    return value.map((v, i) => {
      try {
        return item(v);
      } catch (err) {
        if (err instanceof ArgumentProblem) throw new ArgumentProblem(`[${i}]: ${err.message}`);
        throw err;
      }
    });
  };
}

// deno-lint-ignore no-control-regex
const noControl = (s: string) => !/[\x00-\x1f\x7f]/.test(s);
const noNul = (s: string) => !s.includes("\0");
const PORT = /^([0-9]{1,5}):([0-9]{1,5})$/;
const ACCOUNT = "(?:[A-Za-z_][A-Za-z0-9_.-]{0,31}|[0-9]{1,10})";
const inPortRange = (n: string) => Number(n) >= 1 && Number(n) <= 65535;

const CREATE_FIELDS: Record<string, Check> = {
  cpus: number(cpusArg),
  memoryMiB: number(memoryArg),
  hostname: (value) => hostnameArg(typeof value === "string" ? value : ""),
  image: text(
    `an absolute path or oci:/PATH[:TAG] of 1 to ${MAX_PATH_LENGTH} characters without control ` +
      "characters (the daemon's working folder is not the client's)",
    (s) =>
      s.length >= 1 && s.length <= MAX_PATH_LENGTH && noControl(s) &&
      (s.startsWith("/") || s.startsWith("oci:/")),
  ),
  net: text(
    `"user" or "tap:NAME" (NAME: 1 to 15 letters, digits, '_', '.' or '-')`,
    (s) => s === "user" || /^tap:[A-Za-z0-9_.-]{1,15}$/.test(s),
  ),
  ports: (value) => {
    const ports = list(
      MAX_PORTS,
      text(`"HOST:GUEST", ports from 1 to 65535`, (s) => {
        const m = PORT.exec(s);
        return m !== null && inPortRange(m[1]) && inPortRange(m[2]);
      }),
      "ports",
    )(value) as string[];
    const hosts = ports.map((p) => Number(p.split(":")[0]));
    const twice = hosts.find((h, i) => hosts.indexOf(h) !== i);
    if (twice !== undefined) throw new ArgumentProblem(`host port ${twice} is forwarded twice`);
    return ports;
  },
};

const EXEC_FIELDS: Record<string, Check> = {
  cmd: (value) => {
    const cmd = list(MAX_ARGS, text("a string without NUL characters", noNul), "arguments")(
      value,
    ) as string[];
    if (cmd.length === 0 || cmd[0] === "") {
      throw new ArgumentProblem("expected a program name first");
    }
    return cmd;
  },
  shell: text("a non-empty command line without NUL characters", (s) => s !== "" && noNul(s)),
  env: list(
    MAX_ENV,
    text(
      "KEY=VALUE (KEY: letters, digits and '_', not starting with a digit; no NUL)",
      (s) => /^[A-Za-z_][A-Za-z0-9_]*=/.test(s) && noNul(s),
    ),
    "variables",
  ),
  cwd: text(
    `an absolute path of at most ${MAX_PATH_LENGTH} characters without NUL`,
    (s) => s.startsWith("/") && s.length <= MAX_PATH_LENGTH && noNul(s),
  ),
  user: text(
    "USER or USER:GROUP, each a name (letters, digits, '_', '.', '-'; up to 32) or a number",
    (s) => new RegExp(`^${ACCOUNT}(?::${ACCOUNT})?$`).test(s),
  ),
  stdin: text("a string", () => true),
  stdinBase64: text("base64", (s) => {
    try {
      Uint8Array.fromBase64(s);
      return true;
    } catch {
      return false;
    }
  }),
  timeoutS: number(timeoutArg),
};

/** `value` checked against `fields`: an object with known fields only, each valid. */
function checked(value: unknown, fields: Record<string, Check>): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ApiError(400, "invalid_body", READ_BODY, "expected a JSON object");
  }
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    if (!Object.hasOwn(fields, key)) {
      const known = Object.keys(fields).join(", ");
      throw new ApiError(
        400,
        "unknown_field",
        READ_BODY,
        `unknown field "${key}" (known: ${known})`,
      );
    }
    try {
      out[key] = fields[key](v);
    } catch (err) {
      if (err instanceof ArgumentProblem) throw invalid(key, err.message);
      throw err;
    }
  }
  return out;
}

function execRules(body: ExecBody): void {
  if ((body.cmd === undefined) === (body.shell === undefined)) {
    throw new ApiError(400, "invalid_body", READ_BODY, `give exactly one of "cmd" and "shell"`);
  }
  if (body.stdin !== undefined && body.stdinBase64 !== undefined) {
    throw new ApiError(400, "invalid_body", READ_BODY, `give "stdin" or "stdinBase64", not both`);
  }
}

/** Checks a `POST /v1/vms` body. @throws ApiError 400 */
export function parseCreateBody(value: unknown): CreateVmBody {
  return checked(value, CREATE_FIELDS) as CreateVmBody;
}

/** Checks a `POST /v1/vms/{id}/exec` body. @throws ApiError 400 */
export function parseExecBody(value: unknown): ExecBody {
  const body = checked(value, EXEC_FIELDS) as ExecBody;
  execRules(body);
  return body;
}

/** Checks a `POST /v1/run` body. @throws ApiError 400 */
export function parseRunBody(value: unknown): RunBody {
  const body = checked(value, { ...CREATE_FIELDS, ...EXEC_FIELDS }) as RunBody;
  execRules(body);
  return body;
}

/** The bytes `ExecBody` feeds to stdin (empty when it gives none). */
export function stdinOf(body: ExecBody): Uint8Array {
  if (body.stdinBase64 !== undefined) return Uint8Array.fromBase64(body.stdinBase64);
  return new TextEncoder().encode(body.stdin ?? "");
}

/**
 * The request's body as JSON (`{}` when empty). Reads at most `maxBytes` (a larger declared
 * length is refused before reading; a body that grows past the cap is cancelled there).
 * @throws ApiError 413 over the cap, 400 when it is not UTF-8 JSON
 */
export async function readJsonBody(req: Request, maxBytes: number): Promise<unknown> {
  const tooLarge = () =>
    new ApiError(413, "body_too_large", READ_BODY, `it exceeds ${maxBytes} bytes`);
  const declared = req.headers.get("content-length");
  if (declared !== null && Number(declared) > maxBytes) throw tooLarge();
  const parts: Uint8Array[] = [];
  let size = 0;
  if (req.body) {
    const reader = req.body.getReader();
    for (let r; !(r = await reader.read()).done;) {
      size += r.value.length;
      if (size > maxBytes) {
        await reader.cancel().catch(() => {});
        throw tooLarge();
      }
      parts.push(r.value);
    }
  }
  if (size === 0) return {};
  const bytes = new Uint8Array(size);
  for (let off = 0, i = 0; i < parts.length; off += parts[i++].length) bytes.set(parts[i], off);
  try {
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (err) {
    const why = err instanceof SyntaxError ? err.message : "it is not UTF-8";
    throw new ApiError(400, "invalid_json", READ_BODY, `not JSON: ${why}`);
  }
}
