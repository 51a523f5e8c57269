import assert from "node:assert/strict";
import type { Settings } from "../config/settings.ts";
import type { VmFactory } from "../factory/vm_factory.ts";
import { SourceUnfitError, type VmRequest } from "../factory/vm_source.ts";
import type { VmRecord } from "../vm/vm_record.ts";
import type { VmEntry, VmStore } from "../vm/vm_store.ts";
import { ApiError } from "./api_error.ts";
import { VmApiBackend } from "./vm_backend.ts";
import { fakeRecord } from "./_testing.ts";

function record(id: string): VmRecord {
  return fakeRecord(id, { totalMs: 1, phases: {} });
}

/** A backend over a factory that hands out `made` (or throws `fail`) and a store in memory. */
function backend(opts: { fail?: unknown; entries?: VmEntry[] } = {}) {
  const requests: VmRequest[] = [];
  const removed: string[] = [];
  const entries = opts.entries ?? [];
  const factory = {
    kind: "template",
    getVm: (request: VmRequest) => {
      requests.push(request);
      return opts.fail ? Promise.reject(opts.fail) : Promise.resolve(record("abc123"));
    },
  } as unknown as VmFactory;
  const store = {
    list: () => Promise.resolve(entries),
    remove: (id: string) => {
      removed.push(id);
      return Promise.resolve(true);
    },
    pooled: () => [{}, {}],
  } as unknown as VmStore;
  const settings = { poolSize: 2 } as Settings;
  return { api: new VmApiBackend({ factory, store, settings }), requests, removed };
}

Deno.test("backend: create passes only the VM's fields, the workload ones too", async () => {
  const { api, requests } = backend();
  await api.createVm({ cpus: 2, image: "oci:/x", ports: ["80:80"] }, new AbortController().signal);
  assert.deepEqual(requests, [{ cpus: 2, image: "oci:/x", ports: ["80:80"] }]);
});

Deno.test("backend: a request beyond what the source's VMs can grow to is 409", async () => {
  const unfit = new SourceUnfitError("template", "8 vCPUs asked, its VMs can hot-add up to 4");
  await assert.rejects(
    backend({ fail: unfit }).api.createVm({ cpus: 8 }, new AbortController().signal),
    (err) => err instanceof ApiError && err.status === 409 && err.code === "source_unfit",
  );
  const stale = new SourceUnfitError("template", "the template is stale: QEMU changed");
  await assert.rejects(
    backend({ fail: stale }).api.createVm({}, new AbortController().signal),
    (err) => err === stale,
    "other reasons stay a SourceUnfitError (503)",
  );
});

Deno.test("backend: a VM made for a client that left is destroyed", async () => {
  const { api, removed } = backend();
  const ac = new AbortController();
  const gone = new ApiError(499, "client_left", "answer", "the client left");
  ac.abort(gone);
  await assert.rejects(api.createVm({}, ac.signal), (err) => err === gone);
  assert.deepEqual(removed, ["abc123"]);
});

Deno.test("backend: ids or unique prefixes; several matches are 400; dead VMs are 409", async () => {
  const entries = ["aaa111", "aaa222", "bbb333"].map((id, i) => ({
    record: record(id),
    alive: i !== 2,
  }));
  const { api, removed } = backend({ entries });
  assert.equal((await api.getVm("aaa111"))?.id, "aaa111");
  assert.equal((await api.getVm("bbb"))?.state, "dead");
  assert.equal(await api.getVm("ccc"), undefined);
  await assert.rejects(
    api.getVm("aaa"),
    (err) =>
      err instanceof ApiError && err.code === "ambiguous_id" && /aaa111, aaa222/.test(err.message),
  );
  const sink = { stdout() {}, stderr() {} };
  const signal = new AbortController().signal;
  await assert.rejects(
    api.exec("bbb", { cmd: ["true"] }, sink, signal),
    (err) => err instanceof ApiError && err.status === 409,
  );
  await assert.rejects(
    api.exec("ccc", { cmd: ["true"] }, sink, signal),
    (err) => err instanceof ApiError && err.status === 404,
  );
  assert.equal(await api.destroyVm("ccc"), false);
  assert.equal(await api.destroyVm("bb"), true);
  assert.deepEqual(removed, ["bbb333"]);
  assert.deepEqual(await api.health(), {
    ok: true,
    source: "template",
    vms: 3,
    pool: { ready: 2, size: 2 },
  });
});
