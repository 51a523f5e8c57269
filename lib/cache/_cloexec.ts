/**
 * Marks this process's sockets close-on-exec.
 *
 * Deno 2.9's `node:net` creates its listening and accepted sockets without `FD_CLOEXEC`, so every
 * QEMU the VMCache server starts inherits them. A QEMU holding the listening socket keeps it
 * accepting connections after the server died: the socket of a server killed -9 then looks alive
 * (connect succeeds, nothing answers), which blocks the next server and hangs clients. There is
 * no fcntl in Deno's API, so this calls libc's through FFI (needs `--allow-ffi`, part of `-A`).
 * @module
 */

const F_GETFD = 1;
const F_SETFD = 2;
const FD_CLOEXEC = 1;

type Libc = { symbols: { fcntl(fd: number, cmd: number, arg: number): number } };
let libc: Libc | undefined | null;

function open(): Libc | undefined {
  if (libc !== undefined) return libc ?? undefined;
  try {
    libc = Deno.dlopen("libc.so.6", {
      fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
    }) as unknown as Libc;
  } catch {
    libc = null;
  }
  return libc ?? undefined;
}

/**
 * Sets `FD_CLOEXEC` on every socket descriptor of this process; returns false when that cannot
 * be done here (no FFI permission, no libc, no /proc). May be called at any time, often.
 */
export function socketsCloseOnExec(): boolean {
  const c = open();
  if (!c) return false;
  let names: Deno.DirEntry[];
  try {
    names = [...Deno.readDirSync("/proc/self/fd")];
  } catch {
    return false;
  }
  for (const { name } of names) {
    const fd = Number(name);
    if (fd < 3) continue;
    try {
      if (!Deno.readLinkSync(`/proc/self/fd/${fd}`).startsWith("socket:")) continue;
    } catch {
      continue; // closed meanwhile (or the directory's own descriptor)
    }
    const flags = c.symbols.fcntl(fd, F_GETFD, 0);
    if (flags >= 0 && !(flags & FD_CLOEXEC)) c.symbols.fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
  }
  return true;
}
