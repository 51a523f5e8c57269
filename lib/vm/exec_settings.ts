/**
 * How a command runs in a VM: in its image's root with the image config's environment, working
 * folder and user when it was made with an image, each overridden by what the caller gives.
 * One place for the CLI, the daemon's API and `run`.
 * @module
 */
import { UsageError } from "../errors.ts";
import type { VmRecord } from "./vm_record.ts";

/** What a caller may set for one command. */
export interface ExecOverrides {
  /** `NAME=value` entries added to (and replacing same-named ones of) the image's. */
  env?: readonly string[];
  /** Working folder (absolute). */
  cwd?: string;
  /** `user`, `uid`, `user:group` or `uid:gid`. */
  user?: string;
}

/** The agent's exec settings for a command in the VM of `record`. */
export interface ExecSettings {
  /** The image's root in the guest, to chroot into. */
  root?: string;
  /** The whole environment (undefined: the agent's default). */
  env?: string[];
  /** Working folder. */
  cwd?: string;
  /** User to run as. */
  user?: string;
}

/** The environment a command gets when nothing sets PATH (Docker's default). */
const DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** Checks a `NAME=value` entry (a usage error otherwise). */
export function checkEnvEntry(entry: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_]*=/.test(entry) || entry.length > 65536 || entry.includes("\0")) {
    throw new UsageError(
      "set an environment variable",
      `expected NAME=value, got ${JSON.stringify(entry.slice(0, 60))}`,
    );
  }
  return entry;
}

/**
 * The exec settings of a command in `record`'s VM: the image's (root, Env, WorkingDir, User),
 * then `overrides`. Without an image and overrides, everything is the agent's default.
 * @example
 * ```ts
 * const vm = await factory.getVm({ image: "oci:/srv/layouts/alpine:3" });
 * const agent = await AgentClient.connect(vm.agentSocket);
 * await agent.exec(["id"], execSettingsFor(vm, { user: "nobody", env: ["DEBUG=1"] }));
 * ```
 */
export function execSettingsFor(record: VmRecord, overrides: ExecOverrides = {}): ExecSettings {
  const image = record.image;
  const given = (overrides.env ?? []).map(checkEnvEntry);
  let env: string[] | undefined;
  if (image || given.length) {
    const byName = new Map<string, string>();
    for (const e of [DEFAULT_PATH, "HOME=/root", ...(image?.env ?? []), ...given]) {
      byName.set(e.slice(0, e.indexOf("=")), e);
    }
    env = [...byName.values()];
  }
  const cwd = overrides.cwd ?? image?.workingDir;
  if (cwd !== undefined && !cwd.startsWith("/")) {
    throw new UsageError(
      "run a command",
      `the working folder must be absolute, got ${JSON.stringify(cwd)}`,
    );
  }
  const user = overrides.user ?? image?.user;
  return {
    ...(image ? { root: image.root } : {}),
    ...(env ? { env } : {}),
    ...(cwd ? { cwd } : {}),
    ...(user ? { user } : {}),
  };
}

/**
 * The command `run` starts in `record`'s VM: the image's Entrypoint followed by `command`, or by
 * its Cmd when `command` is empty (Docker's rule). Throws a usage error when that leaves nothing.
 */
export function runCommandFor(record: VmRecord, command: readonly string[]): string[] {
  const image = record.image;
  const argv = [...(image?.entrypoint ?? []), ...(command.length ? command : image?.cmd ?? [])];
  if (argv.length === 0) {
    throw new UsageError(
      "run a command",
      "give a command after `--` (the image has no Entrypoint or Cmd)",
    );
  }
  return argv;
}
