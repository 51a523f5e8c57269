/**
 * The VMCache wire protocol (Kata's `cache.proto`) as a string, and its lazy loader.
 *
 * The tool ships as one bundled file, so the `.proto` text lives here too; `cache_proto_test.ts`
 * checks it equals `cache.proto` byte for byte. gRPC and proto-loader are imported only on the
 * first call of {@link loadCacheGrpc}: the server's serializers and the tests use them; the client
 * (`cache_client.ts`) does not, it speaks the messages through `cache_wire.ts`.
 * @module
 */

import type * as GrpcJs from "@grpc/grpc-js";

/** The text of `lib/cache/cache.proto`. */
export const CACHE_PROTO = `// VMCache wire protocol, kept wire-compatible with Kata Containers'
// src/runtime/protocols/cache/cache.proto (same package, service, names and field numbers).
// lib/cache/cache_proto.ts holds a byte-for-byte copy for the bundled tool.

syntax = "proto3";

package cache;

import "google/protobuf/empty.proto";

service CacheService {
    rpc Config(google.protobuf.Empty) returns (GrpcVMConfig);
    rpc GetBaseVM(google.protobuf.Empty) returns (GrpcVM);
    rpc Status(google.protobuf.Empty) returns (GrpcStatus);
    rpc Quit(google.protobuf.Empty) returns (google.protobuf.Empty);
}

// Opaque configuration blobs of the cache (JSON in vmfactory).
message GrpcVMConfig {
    bytes Data = 1;
    bytes AgentConfig = 2;
}

// One cached VM handed to a client; hypervisor holds JSON describing how to take it over.
message GrpcVM {
    string id = 1;
    bytes hypervisor = 2;
    int64 proxyPid = 3;
    string proxyURL = 4;
    uint32 cpu = 5;
    uint32 memory = 6;
    uint32 cpuDelta = 7;
}

message GrpcStatus {
    int64 pid = 1;
    repeated GrpcVMStatus vmstatus = 2;
}

message GrpcVMStatus {
    int64 pid = 1;
    uint32 cpu = 2;
    uint32 memory = 3;
}
`;

/** The loaded gRPC library and the `cache.CacheService` definition built from {@link CACHE_PROTO}. */
export interface CacheGrpc {
  /** The `@grpc/grpc-js` module. */
  grpc: typeof GrpcJs;
  /** Service definition for `grpc.Server.addService` and `grpc.makeGenericClientConstructor`. */
  service: GrpcJs.ServiceDefinition;
}

let loading: Promise<CacheGrpc> | undefined;

/** Imports gRPC and parses {@link CACHE_PROTO} once per process; later calls share the result. */
export function loadCacheGrpc(): Promise<CacheGrpc> {
  loading ??= load();
  return loading;
}

async function load(): Promise<CacheGrpc> {
  const [grpc, protoLoader] = await Promise.all([
    import("@grpc/grpc-js"),
    import("@grpc/proto-loader"),
  ]);
  // proto-loader reads files only; google/protobuf/empty.proto resolves from its bundled copies.
  const dir = Deno.makeTempDirSync({ prefix: "vmfactory-proto-" });
  try {
    const file = `${dir}/cache.proto`;
    Deno.writeTextFileSync(file, CACHE_PROTO);
    const definition = protoLoader.loadSync(file, {
      keepCase: true,
      longs: Number,
      defaults: true,
    });
    const pkg = grpc.loadPackageDefinition(definition) as unknown as {
      cache: { CacheService: GrpcJs.ServiceClientConstructor };
    };
    return { grpc, service: pkg.cache.CacheService.service };
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}
