import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { loadCacheGrpc } from "./cache_proto.ts";
import {
  decodeEmpty,
  decodeGrpcStatus,
  decodeGrpcVM,
  decodeGrpcVMConfig,
  encodeGrpcStatus,
  encodeGrpcVM,
  encodeGrpcVMConfig,
  frameMessage,
  unframeMessage,
  WireError,
} from "./cache_wire.ts";

// proto-loader, built from cache.proto, is the reference: the hand codec must agree both ways.
const { service } = await loadCacheGrpc();
const bytes = (b: Uint8Array) => [...b];

const VM = {
  id: "vm-é1",
  hypervisor: new TextEncoder().encode('{"qmp":"/run/q.sock"}'),
  proxyPid: 2 ** 40 + 3,
  proxyURL: "unix:///p",
  cpu: 4,
  memory: 2 ** 32 - 1,
  cpuDelta: 1,
};

Deno.test("GrpcVM: hand codec and proto-loader agree both ways", () => {
  const ref = service.GetBaseVM.responseSerialize(VM);
  assert.deepEqual(bytes(encodeGrpcVM(VM)), bytes(ref));
  const vm = decodeGrpcVM(ref);
  assert.deepEqual({ ...vm, hypervisor: bytes(vm.hypervisor) }, {
    ...VM,
    hypervisor: bytes(VM.hypervisor),
  });
  const back = service.GetBaseVM.responseDeserialize(Buffer.from(encodeGrpcVM(VM)));
  assert.equal(back.id, VM.id);
  assert.equal(back.memory, VM.memory);
  assert.equal(back.proxyPid, VM.proxyPid);
});

Deno.test("GrpcVM: defaults are omitted and decode to proto3 defaults", () => {
  assert.equal(encodeGrpcVM({}).length, 0);
  assert.deepEqual(decodeGrpcVM(new Uint8Array()), {
    id: "",
    hypervisor: new Uint8Array(),
    proxyPid: 0,
    proxyURL: "",
    cpu: 0,
    memory: 0,
    cpuDelta: 0,
  });
});

Deno.test("GrpcStatus and GrpcVMConfig: hand codec and proto-loader agree both ways", () => {
  const status = {
    pid: 123456,
    vmstatus: [{ pid: 7, cpu: 1, memory: 128 }, { pid: 0, cpu: 0, memory: 0 }, {
      pid: 99,
      cpu: 2,
      memory: 4096,
    }],
  };
  // proto-loader writes the zeros of a nested message, the hand codec omits them: both are valid
  const refStatus = service.Status.responseSerialize(status);
  assert.deepEqual(decodeGrpcStatus(refStatus), status);
  assert.deepEqual(
    service.Status.responseDeserialize(Buffer.from(encodeGrpcStatus(status))),
    status,
  );
  assert.deepEqual(decodeGrpcStatus(new Uint8Array()), { pid: 0, vmstatus: [] });

  const config = { Data: new Uint8Array([7]), AgentConfig: new Uint8Array([8, 9]) };
  const refConfig = service.Config.responseSerialize(config);
  assert.deepEqual(bytes(encodeGrpcVMConfig(config)), bytes(refConfig));
  const c = decodeGrpcVMConfig(refConfig);
  assert.deepEqual([bytes(c.Data), bytes(c.AgentConfig)], [[7], [8, 9]]);
  assert.deepEqual(decodeEmpty(service.Quit.responseSerialize({})), {});
});

Deno.test("decoding skips unknown fields of every wire type and rejects garbage", () => {
  // field 15 varint, field 16 fixed64, field 17 bytes, field 18 fixed32, then id = "a"
  const unknown = [0x78, 0x96, 0x01, 0x81, 0x01, ...new Array(8).fill(1), 0x8a, 0x01, 2, 0, 0];
  const msg = new Uint8Array([...unknown, 0x95, 0x01, 1, 2, 3, 4, 0x0a, 1, 0x61]);
  assert.equal(decodeGrpcVM(msg).id, "a");
  assert.deepEqual(decodeEmpty(msg), {});
  assert.throws(() => decodeGrpcVM(new Uint8Array([0x0a, 5, 0x61])), WireError); // truncated
  assert.throws(() => decodeGrpcVM(new Uint8Array([0x08, 1])), WireError); // id as a varint
  assert.throws(() => decodeGrpcVM(new Uint8Array([0x28, 0x80])), WireError); // cut varint
  assert.throws(() => decodeGrpcStatus(new Uint8Array([0x0b])), WireError); // group
  assert.throws(() => decodeGrpcStatus(new Uint8Array([0x00, 0x00])), WireError); // field 0
});

Deno.test("decoding: a negative int64 and a uint32 sent as a wide varint", () => {
  const negative = service.Status.responseSerialize({ pid: -2, vmstatus: [] });
  assert.equal(decodeGrpcStatus(negative).pid, -2);
  assert.deepEqual(bytes(encodeGrpcStatus({ pid: -2, vmstatus: [] })), bytes(negative));
  // cpu = 2^32 + 5 truncates to 5, as protobuf's uint32 does
  assert.equal(decodeGrpcVM(new Uint8Array([0x28, 0x85, 0x80, 0x80, 0x80, 0x10])).cpu, 5);
});

Deno.test("gRPC framing: one whole uncompressed message, nothing else", () => {
  const frame = frameMessage(new Uint8Array([1, 2, 3]));
  assert.deepEqual(bytes(frame), [0, 0, 0, 0, 3, 1, 2, 3]);
  assert.deepEqual(bytes(unframeMessage(frame)), [1, 2, 3]);
  assert.deepEqual(bytes(unframeMessage(frameMessage(new Uint8Array()))), []);
  assert.throws(() => unframeMessage(frame.subarray(0, 7)), WireError); // truncated
  assert.throws(() => unframeMessage(new Uint8Array([...frame, 0])), WireError); // trailing
  assert.throws(() => unframeMessage(new Uint8Array([1, 0, 0, 0, 0])), WireError); // compressed
  assert.throws(() => unframeMessage(new Uint8Array(4)), WireError);
});
