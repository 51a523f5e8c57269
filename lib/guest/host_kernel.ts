/**
 * The host's guest kernel: where it is and which release it is.
 * @module
 */
import { systemProgram } from "../system_program.ts";
import { UsageError } from "../errors.ts";

/** Returns the newest `/boot/vmlinuz-*` (by version); UsageError when there is none. */
export function findHostKernel(bootDir = "/boot"): string {
  let names: string[] = [];
  try {
    names = [...Deno.readDirSync(bootDir)].map((e) => e.name).filter((n) => /^vmlinuz-\d/.test(n));
  } catch {
    // no /boot: reported below
  }
  if (names.length === 0) {
    throw new UsageError(
      "find a guest kernel",
      `no ${bootDir}/vmlinuz-* (install the Debian package linux-image-amd64)`,
    );
  }
  names.sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
  return `${bootDir}/${names[names.length - 1]}`;
}

/**
 * Reads the release ("6.1.0-56-amd64") from an x86 bzImage header: the kernel_version field at
 * 0x20e points (minus 0x200) at a NUL-terminated "release (builder) #version" string.
 */
export function kernelRelease(header: Uint8Array, path = "the kernel"): string {
  const view = new DataView(header.buffer, header.byteOffset, header.byteLength);
  const bad = () =>
    new UsageError("read the guest kernel", `${path} is not an x86 bzImage with a version string`);
  if (header.length < 0x210 || view.getUint32(0x202, true) !== 0x53726448) throw bad(); // "HdrS"
  const start = view.getUint16(0x20e, true) + 0x200;
  const end = header.indexOf(0, start);
  if (start >= header.length || end < 0) throw bad();
  const release = new TextDecoder().decode(header.subarray(start, end)).split(" ")[0];
  if (!release) throw bad();
  return release;
}

/**
 * Extracts the uncompressed ELF vmlinux from a bzImage (payload_offset/payload_length at 0x248;
 * the payload ends with its 4-byte uncompressed size). QEMU boots such an ELF through its PVH
 * entry point without decompressing it in the guest, which saves seconds under software
 * emulation. Handles xz, zstd and gzip payloads; returns null for any other format.
 */
export async function extractVmlinux(bzImage: Uint8Array): Promise<Uint8Array | null> {
  const view = new DataView(bzImage.buffer, bzImage.byteOffset, bzImage.byteLength);
  if (bzImage.length < 0x250 || view.getUint32(0x202, true) !== 0x53726448) return null;
  const start = ((bzImage[0x1f1] || 4) + 1) * 512 + view.getUint32(0x248, true);
  const length = view.getUint32(0x24c, true);
  if (length < 8 || start + length > bzImage.length) return null;
  const payload = bzImage.subarray(start, start + length - 4);
  const size = view.getUint32(start + length - 4, true);
  const magic = (bytes: number[]) => bytes.every((b, i) => payload[i] === b);
  const tool = magic([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])
    ? "xz"
    : magic([0x28, 0xb5, 0x2f, 0xfd])
    ? "zstd"
    : magic([0x1f, 0x8b])
    ? "gzip"
    : null;
  if (!tool) return null;
  try {
    const child = new Deno.Command(systemProgram(tool) ?? `/usr/bin/${tool}`, {
      args: ["-dc"],
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const writer = child.stdin.getWriter();
    const [out] = await Promise.all([
      child.output(),
      writer.write(payload).then(() => writer.close()),
    ]);
    const elf = out.stdout;
    if (elf.length !== size || elf[0] !== 0x7f || elf[1] !== 0x45) return null;
    return elf;
  } catch {
    return null; // the decompressor is not installed: boot the bzImage instead
  }
}
