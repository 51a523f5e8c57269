/**
 * Headers of a POSIX (pax) tar stream, for the flattened image that GNU tar unpacks. Names are
 * binary strings written back byte for byte; what does not fit a ustar header (a long name or link,
 * a big number, extended attributes) goes into a pax record before it.
 * @module
 */
import type { TarEntry, TarEntryType } from "./_tar_reader.ts";
import { binaryBytes } from "./_tar_names.ts";

/**
 * One member to write: an entry as {@link TarEntry} reads one, its link target, device numbers and
 * extended attributes optional. Its name is relative (binary string); "." for the root folder.
 */
export type TarHeader =
  & Omit<TarEntry, "linkname" | "devmajor" | "devminor" | "xattrs">
  & Partial<Pick<TarEntry, "linkname" | "devmajor" | "devminor" | "xattrs">>;

const FLAGS: Record<TarEntryType, string> = {
  file: "0",
  link: "1",
  symlink: "2",
  char: "3",
  block: "4",
  dir: "5",
  fifo: "6",
};

/** The two zero blocks that end an archive. */
export const TAR_END: Uint8Array = new Uint8Array(1024);

function paxRecord(key: string, value: Uint8Array): Uint8Array {
  const body = key.length + value.length + 3; // " ", "=", "\n"
  let length = body + String(body).length;
  if (String(length).length !== String(body).length) length++;
  const head = binaryBytes(`${length} ${key}=`);
  const out = new Uint8Array(length);
  out.set(head);
  out.set(value, head.length);
  out[length - 1] = 0x0a;
  return out;
}

function block(name: string, flag: string, h: TarHeader, size: number): Uint8Array {
  const b = new Uint8Array(512);
  const text = (offset: number, length: number, value: string) =>
    b.set(binaryBytes(value.slice(0, length)), offset);
  const octal = (offset: number, length: number, value: number) =>
    text(offset, length - 1, value.toString(8).padStart(length - 1, "0"));
  text(0, 100, name);
  octal(100, 8, h.mode & 0o7777);
  octal(108, 8, Math.min(h.uid, 0o7777777));
  octal(116, 8, Math.min(h.gid, 0o7777777));
  octal(124, 12, size);
  octal(136, 12, Math.min(Math.max(0, h.mtime), 0o77777777777));
  text(148, 8, "        ");
  text(156, 1, flag);
  text(157, 100, h.linkname ?? "");
  text(257, 8, "ustar\x0000");
  octal(329, 8, h.devmajor ?? 0);
  octal(337, 8, h.devminor ?? 0);
  octal(148, 7, b.reduce((sum, byte) => sum + byte, 0));
  return b;
}

/** The header blocks of `h` (a pax header first when it needs one); its data follows them. */
export function tarHeader(h: TarHeader): Uint8Array {
  const name = h.name === "." || h.name === "" ? "./" : h.name;
  const records: Uint8Array[] = [];
  const add = (key: string, value: string | Uint8Array) =>
    records.push(paxRecord(key, typeof value === "string" ? binaryBytes(value) : value));
  if (name.length > 100) add("path", name);
  if ((h.linkname ?? "").length > 100) add("linkpath", h.linkname!);
  if (h.uid > 0o7777777) add("uid", String(h.uid));
  if (h.gid > 0o7777777) add("gid", String(h.gid));
  if (h.size > 0o77777777777) add("size", String(h.size));
  if (h.mtime > 0o77777777777) add("mtime", String(h.mtime));
  for (const [key, value] of h.xattrs ?? []) add(`SCHILY.xattr.${key}`, value);
  const main = block(name, FLAGS[h.type], h, h.size > 0o77777777777 ? 0 : h.size);
  if (!records.length) return main;
  const paxSize = records.reduce((sum, r) => sum + r.length, 0);
  const paxName = `PaxHeaders/${name.slice(-80)}`;
  const paxHead = block(paxName, "x", { ...h, linkname: "" }, paxSize);
  const out = new Uint8Array(512 + Math.ceil(paxSize / 512) * 512 + 512);
  out.set(paxHead);
  let offset = 512;
  for (const r of records) {
    out.set(r, offset);
    offset += r.length;
  }
  out.set(main, out.length - 512);
  return out;
}
