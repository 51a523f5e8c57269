/**
 * The run settings of a container image (OCI image config or `docker save` config JSON): Env,
 * WorkingDir, User, Entrypoint, Cmd. The config is input from a file: every field is checked and
 * bounded; what is absent or empty is left out.
 * @module
 */
import { ImageInputError } from "./_image_input_error.ts";

/** How a process of the image is run by default. */
export interface ImageConfig {
  /** `NAME=value` entries. */
  env?: string[];
  /** Absolute folder the command starts in. */
  workingDir?: string;
  /** `user`, `uid`, `user:group` or `uid:gid`. */
  user?: string;
  /** Command prefix. */
  entrypoint?: string[];
  /** Default arguments (or command, without an entrypoint). */
  cmd?: string[];
}

/** What an image config says besides {@link ImageConfig}. */
export interface ImageConfigFile {
  /** The run settings. */
  config: ImageConfig;
  /** `os` and `architecture`, when given. */
  platform: { os?: string; architecture?: string };
  /** `rootfs.diff_ids`: the digest of each uncompressed layer, when given. */
  diffIds?: string[];
}

const MAX_ITEMS = 1024;
const MAX_STRING = 32 * 1024;
const MAX_TOTAL = 1 << 20;
const DIGEST = /^sha256:[0-9a-f]{64}$/;
// deno-lint-ignore no-control-regex
const USER = /^[^\s:\x00-\x1f\x7f]{1,256}(:[^\s:\x00-\x1f\x7f]{1,256})?$/;

function text(value: unknown, where: string): string {
  if (typeof value !== "string") {
    throw new ImageInputError(`the image config's ${where} is not a string`);
  }
  if (value.length > MAX_STRING) {
    throw new ImageInputError(`the image config's ${where} is too long`);
  }
  if (value.includes("\0")) throw new ImageInputError(`the image config's ${where} holds a NUL`);
  return value;
}

function list(value: unknown, where: string): string[] | undefined {
  if (value === undefined || value === null) return undefined;
  if (!Array.isArray(value)) throw new ImageInputError(`the image config's ${where} is not a list`);
  if (value.length > MAX_ITEMS) {
    throw new ImageInputError(`the image config's ${where} has more than ${MAX_ITEMS} items`);
  }
  const items = value.map((v, i) => text(v, `${where}[${i}]`));
  return items.length ? items : undefined;
}

/**
 * Checks run settings (`Env`, `WorkingDir`, `User`, `Entrypoint`, `Cmd` as in an image config,
 * or the camelCase keys of {@link ImageConfig} when `camel`) and returns them.
 * @throws ImageInputError naming the field.
 */
export function checkImageConfig(value: unknown, camel = false): ImageConfig {
  if (value === undefined || value === null) return {};
  if (typeof value !== "object" || Array.isArray(value)) {
    throw new ImageInputError("the image config's config is not an object");
  }
  const v = value as Record<string, unknown>;
  const key = (name: string) => v[camel ? name[0].toLowerCase() + name.slice(1) : name];
  const config: ImageConfig = {};
  const env = list(key("Env"), "Env");
  env?.forEach((e, i) => {
    if (!/^[^=]+=/s.test(e)) {
      throw new ImageInputError(`the image config's Env[${i}] is not NAME=value`);
    }
  });
  if (env) config.env = env;
  const dir = key("WorkingDir");
  if (dir !== undefined && dir !== null && dir !== "") {
    config.workingDir = text(dir, "WorkingDir");
    if (!config.workingDir.startsWith("/")) {
      throw new ImageInputError("the image config's WorkingDir is not an absolute path");
    }
  }
  const user = key("User");
  if (user !== undefined && user !== null && user !== "") {
    if (!USER.test(text(user, "User"))) {
      throw new ImageInputError(
        `the image config's User ${JSON.stringify(user)} is not user[:group]`,
      );
    }
    config.user = user as string;
  }
  const entrypoint = list(key("Entrypoint"), "Entrypoint");
  if (entrypoint) config.entrypoint = entrypoint;
  const cmd = list(key("Cmd"), "Cmd");
  if (cmd) config.cmd = cmd;
  if (JSON.stringify(config).length > MAX_TOTAL) {
    throw new ImageInputError("the image config's run settings are too big");
  }
  return config;
}

/**
 * Reads an image config JSON document (OCI `application/vnd.oci.image.config.v1+json` or
 * docker's): its run settings, platform and layer digests.
 * @throws ImageInputError for malformed JSON or fields.
 */
export function parseImageConfigFile(bytes: Uint8Array): ImageConfigFile {
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (err) {
    throw new ImageInputError("the image config is not valid JSON", { cause: err });
  }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) {
    throw new ImageInputError("the image config is not a JSON object");
  }
  const d = doc as Record<string, unknown>;
  const platform: ImageConfigFile["platform"] = {};
  const word = (v: string) => /^[\w.-]{1,32}$/.test(v) ? v : "(invalid)";
  if (typeof d.os === "string") platform.os = word(d.os);
  if (typeof d.architecture === "string") platform.architecture = word(d.architecture);
  const rootfs = d.rootfs as Record<string, unknown> | undefined;
  let diffIds: string[] | undefined;
  if (rootfs && typeof rootfs === "object" && rootfs.diff_ids !== undefined) {
    diffIds = list(rootfs.diff_ids, "rootfs.diff_ids") ?? [];
    diffIds.forEach((id, i) => {
      if (!DIGEST.test(id)) {
        throw new ImageInputError(
          `the image config's rootfs.diff_ids[${i}] is not a sha256 digest`,
        );
      }
    });
  }
  return { config: checkImageConfig(d.config), platform, ...(diffIds ? { diffIds } : {}) };
}
