/**
 * Which user QEMU runs as. A tool running as root starts QEMU as root (it must open `/dev/kvm`,
 * the memory file and create its sockets in root's folders), and QEMU switches to an unprivileged
 * user with `-runas` once it has set up; a tool running as anyone else runs QEMU as itself.
 * @module
 */

/** The dedicated system user QEMU switches to when it exists (the administrator creates it). */
export const DEDICATED_QEMU_USER = "vmfactory-qemu";

/** The user QEMU switches to when there is no {@link DEDICATED_QEMU_USER}. */
export const FALLBACK_QEMU_USER = "nobody";

let cached: { user: string | undefined } | undefined;

/** True when the passwd text has an entry named `name`. */
export function passwdHas(passwd: string, name: string): boolean {
  return passwd.split("\n").some((line) => line.split(":")[0] === name);
}

/**
 * The user QEMU switches to: undefined when the tool is not root (QEMU keeps the tool's user),
 * else {@link DEDICATED_QEMU_USER} when `/etc/passwd` has it, else {@link FALLBACK_QEMU_USER}.
 * Read once per process.
 */
export function qemuRunAs(): string | undefined {
  if (!cached) {
    let user: string | undefined;
    if (Deno.uid() === 0) {
      let passwd = "";
      try {
        passwd = Deno.readTextFileSync("/etc/passwd");
      } catch {
        // no passwd file: the fallback, which QEMU resolves itself
      }
      user = passwdHas(passwd, DEDICATED_QEMU_USER) ? DEDICATED_QEMU_USER : FALLBACK_QEMU_USER;
    }
    cached = { user };
  }
  return cached.user;
}
