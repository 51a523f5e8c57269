import assert from "node:assert/strict";
import { UsageError } from "../errors.ts";
import { kernelRelease } from "./host_kernel.ts";

Deno.test("kernelRelease reads the version string of a bzImage header", () => {
  const header = new Uint8Array(0x400);
  const view = new DataView(header.buffer);
  view.setUint32(0x202, 0x53726448, true);
  view.setUint16(0x20e, 0x100, true);
  header.set(
    new TextEncoder().encode("6.1.0-56-amd64 (debian-kernel@lists.debian.org) #1 SMP\0"),
    0x300,
  );
  assert.equal(kernelRelease(header), "6.1.0-56-amd64");
  assert.throws(() => kernelRelease(new Uint8Array(0x400)), UsageError);
});
