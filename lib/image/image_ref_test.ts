import assert from "node:assert/strict";
import { relative } from "node:path";
import { UsageError } from "../errors.ts";
import { parseImageRef } from "./image_ref.ts";

function refused(ref: string, pattern: RegExp) {
  assert.throws(() => parseImageRef(ref), (err: unknown) => {
    assert.ok(err instanceof UsageError, String(err));
    assert.equal(err.exitCode, 2);
    assert.match(err.message, /^Cannot use image /);
    assert.match(err.message, pattern);
    return true;
  });
}

Deno.test("parseImageRef: a folder, a tar file, oci:PATH[:TAG]; relative paths from the cwd", () => {
  const dir = Deno.makeTempDirSync({ prefix: "vmf-ref-" });
  try {
    Deno.mkdirSync(`${dir}/root`);
    Deno.writeFileSync(`${dir}/x.tar`, new Uint8Array(0));
    assert.deepEqual(parseImageRef(`${dir}/root/`), {
      kind: "directory",
      text: `${dir}/root/`,
      path: `${dir}/root`,
    });
    assert.deepEqual(parseImageRef(`${dir}/x.tar`), {
      kind: "tar",
      text: `${dir}/x.tar`,
      path: `${dir}/x.tar`,
    });
    assert.deepEqual(parseImageRef(`oci:${dir}/root`), {
      kind: "oci",
      text: `oci:${dir}/root`,
      path: `${dir}/root`,
    });
    assert.deepEqual(parseImageRef(`oci:${dir}/root:docker.io/library/busybox:1.36`).kind, "oci");
    assert.equal((parseImageRef(`oci:${dir}/root:v1.2`) as { tag?: string }).tag, "v1.2");
    const rel = relative(Deno.cwd(), `${dir}/root`);
    assert.ok(rel.startsWith("../"), rel);
    assert.equal(parseImageRef(rel).path, `${dir}/root`);
    assert.equal(parseImageRef(`oci:./${rel}/../root:latest`).path, `${dir}/root`);
    refused(`oci:${dir}/x.tar`, /is not a folder \(an OCI image layout is one\)/);
    refused(`oci:${dir}/root:`, /is not a valid tag/);
    refused(`oci:${dir}/root:bad tag`, /is not a valid tag/);
    refused(`oci::v1`, /oci: needs a path/);
    refused(
      `${dir}/missing`,
      /does not exist \(REF is a rootfs folder, a \.tar file or oci:PATH\[:TAG\]\)/,
    );
    refused("busybox:latest", /to use a registry image, copy it first: skopeo copy/);
    refused(
      "docker://busybox:1.36",
      /not pulled; .*skopeo copy docker:\/\/busybox:1\.36 oci:DIR:TAG/,
    );
    refused("", /empty/);
    refused("a\nb", /control characters/);
    refused("/dev/null", /neither a folder nor a file/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
