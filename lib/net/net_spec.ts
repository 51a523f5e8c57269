/**
 * What network a VM asks for (`--net user`, `--net tap:NAME`): QEMU's user-mode networking (a
 * private NAT per VM, no host setup) or an existing tap device the operator made for QEMU.
 * @module
 */
import { UsageError } from "../errors.ts";

/** A VM's network: user-mode (slirp) or a persistent tap device on the host. */
export type NetSpec = { kind: "user" } | { kind: "tap"; ifname: string };

/** Longest Linux interface name in bytes (IFNAMSIZ 16, less the terminating NUL). */
export const MAX_IFNAME_BYTES = 15;

/**
 * Why `name` is not a usable interface name, or undefined when it is. Linux's rules (1–15 bytes,
 * not `.` or `..`, no `/`, `:` or white space), narrowed to printable ASCII without `%` (a name
 * template for the kernel) or `,` (QEMU's option separator).
 */
export function ifnameProblem(name: string): string | undefined {
  if (name.length === 0) return "the name is empty";
  if (name.length > MAX_IFNAME_BYTES) {
    return `the name is longer than ${MAX_IFNAME_BYTES} characters`;
  }
  if (name === "." || name === "..") return `the name may not be ${name}`;
  if (!/^[\x21-\x7e]+$/.test(name)) return "the name must be printable ASCII without spaces";
  const bad = /[/:%,]/.exec(name);
  return bad ? `the name may not contain ${bad[0]}` : undefined;
}

/**
 * Parses `user` or `tap:NAME`; throws a {@link UsageError} "Cannot use the network "…": …"
 * for anything else.
 * @example
 * ```ts
 * parseNetSpec("tap:vmf0"); // { kind: "tap", ifname: "vmf0" }
 * ```
 */
export function parseNetSpec(text: string): NetSpec {
  const action = `use the network ${JSON.stringify(text.slice(0, 100))}`;
  if (text === "user") return { kind: "user" };
  if (!text.startsWith("tap:")) {
    throw new UsageError(action, "expected user or tap:NAME (an existing tap device)");
  }
  const ifname = text.slice(4);
  const problem = ifnameProblem(ifname);
  if (problem) throw new UsageError(action, `bad tap device name: ${problem}`);
  return { kind: "tap", ifname };
}
