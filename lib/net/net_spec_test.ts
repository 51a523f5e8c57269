import assert from "node:assert/strict";
import { UsageError } from "../errors.ts";
import { ifnameProblem, parseNetSpec } from "./net_spec.ts";

Deno.test("parseNetSpec accepts user and tap:NAME", () => {
  assert.deepEqual(parseNetSpec("user"), { kind: "user" });
  for (const name of ["vmf0", "tap-1", "a", "x".repeat(15), "br0.100", "v_m@f+1"]) {
    assert.deepEqual(parseNetSpec(`tap:${name}`), { kind: "tap", ifname: name }, name);
  }
});

Deno.test("parseNetSpec rejects other specs and names Linux would refuse", () => {
  const table: [string, RegExp][] = [
    ["", /expected user or tap:NAME/],
    ["User", /expected user or tap:NAME/],
    ["bridge:br0", /expected user or tap:NAME/],
    ["tap", /expected user or tap:NAME/],
    ["tap:", /the name is empty/],
    [`tap:${"x".repeat(16)}`, /longer than 15 characters/],
    ["tap:.", /may not be \./],
    ["tap:..", /may not be \.\./],
    ["tap:a/b", /may not contain \//],
    ["tap:a:b", /may not contain :/],
    ["tap:tap%d", /may not contain %/],
    ["tap:a,b", /may not contain ,/],
    ["tap:a b", /printable ASCII without spaces/],
    ["tap:a\tb", /printable ASCII/],
    ["tap:é", /printable ASCII/],
    ["tap:a\0", /printable ASCII/],
  ];
  for (const [text, message] of table) {
    assert.throws(() => parseNetSpec(text), (err: Error) => {
      assert.ok(err instanceof UsageError, JSON.stringify(text));
      assert.match(err.message, /^Cannot use the network "/);
      assert.match(err.message, message, JSON.stringify(text));
      return true;
    });
  }
});

Deno.test("ifnameProblem is undefined for a valid name", () => {
  assert.equal(ifnameProblem("eth0"), undefined);
  assert.match(ifnameProblem("")!, /empty/);
});
