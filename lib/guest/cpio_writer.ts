/**
 * A minimal, deterministic writer of "newc" cpio archives (the format the Linux kernel unpacks
 * as an initramfs). Every entry gets mtime 0, uid/gid 0 and sequential inode numbers, so the same
 * entries always give the same bytes.
 * @module
 */

/** One archive member; paths are relative ("bin/sh"), parents must come before children. */
export type CpioEntry =
  | { type: "dir"; path: string; mode?: number }
  | { type: "file"; path: string; data: Uint8Array; mode?: number }
  | { type: "symlink"; path: string; target: string }
  | { type: "chardev"; path: string; major: number; minor: number; mode?: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;
const encoder = new TextEncoder();

/** Serializes `entries` (in the given order) plus the trailer into one newc archive. */
export function writeCpio(entries: readonly CpioEntry[]): Uint8Array {
  const parts: Uint8Array[] = [];
  let size = 0;
  const push = (bytes: Uint8Array) => {
    parts.push(bytes);
    size += bytes.length;
    const pad = (4 - (size % 4)) % 4;
    if (pad) {
      parts.push(new Uint8Array(pad));
      size += pad;
    }
  };
  const member = (
    ino: number,
    path: string,
    mode: number,
    nlink: number,
    data: Uint8Array,
    rdev: [number, number] = [0, 0],
  ) => {
    const name = encoder.encode(path + "\0");
    const fields = [ino, mode, 0, 0, nlink, 0, data.length, 0, 0, rdev[0], rdev[1], name.length, 0];
    const header = "070701" + fields.map((v) => v.toString(16).padStart(8, "0")).join("");
    const head = new Uint8Array(header.length + name.length);
    head.set(encoder.encode(header));
    head.set(name, header.length);
    push(head);
    if (data.length) push(data);
  };
  entries.forEach((e, i) => {
    const path = e.path.replace(/^\/+/, "");
    switch (e.type) {
      case "dir":
        return member(i + 1, path, S_IFDIR | (e.mode ?? 0o755), 2, new Uint8Array());
      case "file":
        return member(i + 1, path, S_IFREG | (e.mode ?? 0o644), 1, e.data);
      case "symlink":
        return member(i + 1, path, S_IFLNK | 0o777, 1, encoder.encode(e.target));
      case "chardev":
        return member(i + 1, path, S_IFCHR | (e.mode ?? 0o600), 1, new Uint8Array(), [
          e.major,
          e.minor,
        ]);
    }
  });
  member(0, "TRAILER!!!", 0, 1, new Uint8Array());
  const out = new Uint8Array(size);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
