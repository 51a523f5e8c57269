/**
 * The programs the tool runs (mount, umount, gcc, xz, zstd, gzip) are looked up in a fixed list
 * of system folders, never through `PATH`: a folder another user put first in `PATH` cannot make a
 * root tool run its program.
 * @module
 */

/** Where programs are looked for, in order. */
export const SYSTEM_DIRS: readonly string[] = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"];

const found = new Map<string, string | undefined>();

/** The absolute path of the system program `name`, resolved once; undefined when missing. */
export function systemProgram(name: string): string | undefined {
  if (!found.has(name)) {
    found.set(
      name,
      SYSTEM_DIRS.map((dir) => `${dir}/${name}`).find((path) => {
        try {
          return Deno.statSync(path).isFile;
        } catch {
          return false;
        }
      }),
    );
  }
  return found.get(name);
}
