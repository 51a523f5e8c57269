import assert from "node:assert/strict";
import { UsageError } from "../errors.ts";
import { isPortForward, parsePortForward } from "./port_forward.ts";

Deno.test("parsePortForward accepts the documented forms", () => {
  const table: [string, string, number, number, string][] = [
    ["8080:80", "127.0.0.1", 8080, 80, "tcp"],
    ["127.0.0.1:8080:80", "127.0.0.1", 8080, 80, "tcp"],
    ["8080:80/tcp", "127.0.0.1", 8080, 80, "tcp"],
    ["127.0.0.2:53:53/udp", "127.0.0.2", 53, 53, "udp"],
    ["1:65535", "127.0.0.1", 1, 65535, "tcp"],
    ["127.255.255.254:65535:1", "127.255.255.254", 65535, 1, "tcp"],
  ];
  for (const [text, hostAddr, hostPort, guestPort, proto] of table) {
    assert.deepEqual(parsePortForward(text), { hostAddr, hostPort, guestPort, proto }, text);
  }
});

Deno.test("parsePortForward rejects bad input with a UsageError naming it", () => {
  const table: [string, RegExp][] = [
    ["", /expected HOSTPORT:GUESTPORT/],
    ["8080", /expected HOSTPORT:GUESTPORT/],
    ["1:2:3:4", /expected HOSTPORT:GUESTPORT/],
    ["0:80", /host port 0 is not a number 1–65535/],
    ["65536:80", /host port 65536/],
    ["8080:0", /guest port 0/],
    ["8080:080", /guest port 080/],
    ["8080:+80", /guest port \+80/],
    ["8080:8O", /guest port 8O/],
    [" 8080:80", /host port\s{2}8080/],
    ["8080:80/sctp", /protocol after \/ must be tcp or udp/],
    ["8080:80/", /protocol/],
    ["8080:80/tcp/udp", /protocol/],
    ["localhost:8080:80", /"localhost" is not an IPv4 address/],
    ["127.0.0.01:8080:80", /not an IPv4 address/],
    ["256.0.0.1:8080:80", /not an IPv4 address/],
    ["::1:8080:80", /expected HOSTPORT:GUESTPORT/],
    ["0.0.0.0:8080:80", /must be a loopback address \(127\.x\.x\.x\), not 0\.0\.0\.0/],
    ["192.168.1.2:8080:80", /must be a loopback address/],
  ];
  for (const [text, message] of table) {
    assert.throws(() => parsePortForward(text), (err: Error) => {
      assert.ok(err instanceof UsageError, text);
      assert.match(err.message, /^Cannot use the port forward "/);
      assert.match(err.message, message, text);
      return true;
    });
  }
});

Deno.test("parsePortForward takes any IPv4 host address only when allowed", () => {
  assert.deepEqual(parsePortForward("0.0.0.0:8080:80", { allowNonLoopback: true }), {
    hostAddr: "0.0.0.0",
    hostPort: 8080,
    guestPort: 80,
    proto: "tcp",
  });
});

Deno.test("a bad forward's text is cut in the message", () => {
  assert.throws(() => parsePortForward("9".repeat(5000)), (err: Error) => err.message.length < 300);
});

Deno.test("isPortForward checks forwards built elsewhere", () => {
  const ok = { hostAddr: "127.0.0.1", hostPort: 8080, guestPort: 80, proto: "tcp" as const };
  assert.equal(isPortForward(ok), true);
  assert.equal(isPortForward({ ...ok, hostAddr: "0.0.0.0" }), true);
  for (
    const bad of [
      { ...ok, hostAddr: "127.0.0.1,hostfwd=tcp::22-:22" },
      { ...ok, hostAddr: "" },
      { ...ok, hostPort: 0 },
      { ...ok, guestPort: 65536 },
      { ...ok, hostPort: 80.5 },
      { ...ok, proto: "sctp" as "tcp" },
    ]
  ) assert.equal(isPortForward(bad), false, JSON.stringify(bad));
});
