import assert from "node:assert/strict";
import { DaemonLog } from "./daemon_log.ts";

const at = () => new Date("2026-12-01T11:00:00.000Z");

Deno.test("JSON lines: time, level, msg first, then the fields (reserved names renamed)", () => {
  const lines: string[] = [];
  const log = new DaemonLog("json", (l) => lines.push(l), at);
  log.info("listening", { socket: "/run/v.sock", port: 8080 });
  log.warn("pool: refill failed", { msg: "QEMU exited", err: new Error("boom"), n: 3n });
  log.line("warning: the template is stale; cold-booting instead");
  log.line("Cannot reload: bad file\nline 2");
  const parsed = lines.map((l) => JSON.parse(l));
  assert.deepEqual(parsed[0], {
    time: "2026-12-01T11:00:00.000Z",
    level: "info",
    msg: "listening",
    socket: "/run/v.sock",
    port: 8080,
  });
  assert.deepEqual(Object.keys(parsed[0]).slice(0, 3), ["time", "level", "msg"]);
  assert.deepEqual(parsed[1], {
    time: "2026-12-01T11:00:00.000Z",
    level: "warn",
    msg: "pool: refill failed",
    field_msg: "QEMU exited",
    err: "boom",
    n: 3,
  });
  assert.equal(parsed[2].level, "warn");
  assert.equal(parsed[2].msg, "the template is stale; cold-booting instead");
  assert.equal(parsed[3].level, "error");
  assert.equal(lines.length, 4, "one line each, newlines escaped");
});

Deno.test("text: the message as it is, then key=value fields; warnings and errors say so", () => {
  const lines: string[] = [];
  const log = new DaemonLog("text", (l) => lines.push(l), at);
  log.info("cache: 2/2 VMs ready (5.1 s)");
  log.info("listening", { socket: "/run/v.sock", group: "vm users", n: 2, port: undefined });
  log.line("cache: boot failed (2 in a row): QEMU exited; retrying in 2.0 s");
  log.error("Cannot start: a\nb");
  log.warn("stale", { why: "QEMU changed" });
  assert.deepEqual(lines, [
    "cache: 2/2 VMs ready (5.1 s)",
    'listening socket=/run/v.sock group="vm users" n=2',
    "cache: boot failed (2 in a row): QEMU exited; retrying in 2.0 s",
    "error: Cannot start: a\n  b",
    'warning: stale why="QEMU changed"',
  ]);
});
