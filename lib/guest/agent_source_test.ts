import assert from "node:assert/strict";
import {
  FLAG_NEW_SESSION,
  FRAME_MAGIC,
  FRAME_VERSION,
  HEADER_SIZE,
  MAX_PAYLOAD,
  Op,
  Reply,
} from "./agent_frame.ts";
import {
  AckFlag,
  ExecFlag,
  FRAME_COST,
  MAX_DEVICE_WAIT_MS,
  STDIN_WINDOW,
  StdinFlag,
} from "./agent_payload.ts";
import { AGENT_SOURCE, AGENT_SOURCE_SHA256 } from "./agent_source.ts";
import { AGENT_CFLAGS } from "./build_guest.ts";
import { sha256Hex } from "../sha256_hex.ts";

const AGENT_C = new URL("./agent.c", import.meta.url).pathname;
/** A TypeScript name, the C name that must have the same value, and the TypeScript value. */
type Named = [ts: string, c: string, value: number];

Deno.test("AGENT_SOURCE_SHA256 is the SHA-256 of AGENT_SOURCE", async () => {
  const hex = await sha256Hex(AGENT_SOURCE);
  assert.equal(AGENT_SOURCE_SHA256, hex, "run scripts/deno run -A scripts/gen_agent_source.ts");
});

Deno.test("AGENT_SOURCE equals agent.c byte for byte", () => {
  const embedded = new TextEncoder().encode(AGENT_SOURCE), file = Deno.readFileSync(AGENT_C);
  assert.ok(
    embedded.length === file.length && embedded.every((byte, i) => byte === file[i]),
    "lib/guest/agent_source.ts differs from lib/guest/agent.c: " +
      "run scripts/deno run -A scripts/gen_agent_source.ts",
  );
});

Deno.test("agent.c compiles without a warning under the guest build's gcc flags", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "vmf-agent-" });
  try {
    assert.equal(await gcc([...AGENT_CFLAGS, "-o", `${dir}/agent`, AGENT_C]), "");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("agent.c's frame and flow constants, opcodes, flags and reply types equal the host's", async () => {
  const snake = (name: string) => name.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase();
  const table = (ts: string, c: string, values: Record<string, number>) =>
    Object.entries(values).map(([k, v]): Named => [`${ts}.${k}`, `${c}_${snake(k)}`, v]);
  const names: Named[] = [
    ["FRAME_MAGIC", "MAGIC", FRAME_MAGIC],
    ["FRAME_VERSION", "VERSION", FRAME_VERSION],
    ["HEADER_SIZE", "HDR", HEADER_SIZE],
    ["MAX_PAYLOAD", "MAX_PAYLOAD", MAX_PAYLOAD],
    ["FLAG_NEW_SESSION", "FLAG_NEW_SESSION", FLAG_NEW_SESSION],
    ["STDIN_WINDOW", "STDIN_WINDOW", STDIN_WINDOW],
    ["FRAME_COST", "FRAME_COST", FRAME_COST],
    ["MAX_DEVICE_WAIT_MS", "MAX_WAIT_MS", MAX_DEVICE_WAIT_MS],
    ...table("Op", "OP", Op),
    ...table("Reply", "R", Reply),
    ...table("ExecFlag", "EXEC", ExecFlag),
    ...table("StdinFlag", "STDIN", StdinFlag),
    ...table("AckFlag", "ACK", AckFlag),
  ];
  // agent.c's own main() is renamed so that this program's main() prints the C values.
  const program = `#define main agent_main
#include "agent.c"
#undef main
int main(void) {
${names.map(([, c]) => `  printf("%lld\\n", (long long)(${c}));`).join("\n")}
  return 0;
}
`;
  const dir = Deno.makeTempDirSync({ prefix: "vmf-agent-" });
  try {
    Deno.writeTextFileSync(`${dir}/constants.c`, program);
    const include = AGENT_C.slice(0, AGENT_C.lastIndexOf("/"));
    await gcc(["-I", include, "-o", `${dir}/constants`, `${dir}/constants.c`]);
    const out = await new Deno.Command(`${dir}/constants`, { stdout: "piped" }).output();
    assert.ok(out.success, "the constants program failed");
    const values = new TextDecoder().decode(out.stdout).trim().split("\n").map(Number);
    assert.deepEqual(
      Object.fromEntries(names.map(([ts, c], i) => [`${ts} = ${c}`, values[i]])),
      Object.fromEntries(names.map(([ts, c, v]) => [`${ts} = ${c}`, v])),
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

/** Runs gcc and returns its stderr; throws when gcc is missing or fails. */
async function gcc(args: string[]): Promise<string> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("gcc", { args, stdout: "piped", stderr: "piped" }).output();
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    throw new Error(
      "Cannot compile agent.c: gcc is not installed (scripts/setup_host.sh installs gcc and libc6-dev)",
    );
  }
  const stderr = new TextDecoder().decode(out.stderr);
  if (!out.success) {
    throw new Error(`Cannot compile agent.c: gcc ${args.join(" ")} failed:\n${stderr}`);
  }
  return stderr;
}
