import assert from "node:assert/strict";
import { UsageError } from "../errors.ts";
import { DEFAULT_USER_NET_RANGE, isUserNet, planNetwork } from "./net_plan.ts";

const at = (x: number) => () => x;

Deno.test("a user-mode VM gets its own /24: guest .15, gateway .2, DNS .3", () => {
  assert.equal(DEFAULT_USER_NET_RANGE, "10.64.0.0/11");
  assert.deepEqual(planNetwork("b4f98b1ebe", { kind: "user" }, { random: at(0) }), {
    mac: "02:b4:f9:8b:1e:be",
    ip: "10.64.0.15",
    prefix: 24,
    gateway: "10.64.0.2",
    dns: ["10.64.0.3"],
    net: "10.64.0.0/24",
  });
  const last = planNetwork("b4f98b1ebe", { kind: "user" }, { random: at(0.99999999) });
  assert.equal(last.net, "10.95.255.0/24");
  assert.equal(last.ip, "10.95.255.15");
});

Deno.test("subnets of the host's other VMs are skipped, wrapping around the range", () => {
  const taken = [{ ip: "10.0.7.15" }, { ip: "10.0.0.15" }, { ip: "garbage" }, {}];
  const plan = planNetwork("x", { kind: "user" }, {
    userRange: "10.0.0.0/21",
    taken,
    random: at(0.99),
  });
  assert.equal(plan.net, "10.0.1.0/24");
  const all = Array.from({ length: 4 }, (_, i) => ({ ip: `192.168.${i}.15` }));
  const full = planNetwork("x", { kind: "user" }, {
    userRange: "192.168.0.0/22",
    taken: all,
    random: at(0.5),
  });
  assert.equal(full.net, "192.168.2.0/24", "every subnet taken: reused, not refused");
});

Deno.test("two VMs get different MACs and addresses", () => {
  const a = planNetwork("aaaaaaaaaa", { kind: "user" });
  const b = planNetwork("bbbbbbbbbb", { kind: "user" }, { taken: [a] });
  assert.notEqual(a.mac, b.mac);
  assert.notEqual(a.ip, b.ip);
  const c = planNetwork("aaaaaaaaaa", { kind: "user" }, { taken: [a] });
  assert.notEqual(c.mac, a.mac, "a MAC in use is not repeated even for the same id");
});

Deno.test("a bad user range is a UsageError", () => {
  for (const range of ["10.64.0.0", "10.64.0.1/11", "10.64.0.0/25", "10.0.0.0/7", "x/8", ""]) {
    assert.throws(
      () => planNetwork("x", { kind: "user" }, { userRange: range }),
      (err: Error) =>
        err instanceof UsageError && err.message.startsWith("Cannot use the user network range"),
      range,
    );
  }
});

Deno.test("isUserNet", () => {
  const table: [string, boolean][] = [
    ["10.0.2.0/24", true],
    ["10.64.0.0/11", true],
    ["10.0.0.0/8", true],
    ["10.0.2.0/25", false],
    ["10.0.2.1/24", false],
    ["10.0.2.0", false],
    ["10.0.2.0/024", false],
    ["10.0.2.0/24,hostfwd=tcp::1-:22", false],
  ];
  for (const [net, ok] of table) assert.equal(isUserNet(net), ok, net);
});

Deno.test("a tap VM is unaddressed unless given a static address", () => {
  const spec = { kind: "tap" as const, ifname: "vmf0" };
  assert.deepEqual(planNetwork("b4f98b1ebe", spec), {
    mac: "02:b4:f9:8b:1e:be",
    ip: "",
    prefix: 0,
    gateway: "",
    dns: [],
  });
  const tapAddress = { ip: "192.168.50.10", prefix: 24, gateway: "192.168.50.1", dns: ["1.1.1.1"] };
  assert.deepEqual(planNetwork("b4f98b1ebe", spec, { tapAddress }), {
    mac: "02:b4:f9:8b:1e:be",
    ...tapAddress,
  });
});

Deno.test("a bad static address is a UsageError", () => {
  const spec = { kind: "tap" as const, ifname: "vmf0" };
  const table: [object, RegExp][] = [
    [{ ip: "192.168.50", prefix: 24 }, /not an IPv4 address/],
    [{ ip: "192.168.50.10", prefix: 0 }, /prefix length must be 1–32/],
    [{ ip: "192.168.50.10", prefix: 33 }, /prefix length/],
    [{ ip: "192.168.50.10", prefix: 24, gateway: "192.168.51.1" }, /not another address/],
    [{ ip: "192.168.50.10", prefix: 24, gateway: "192.168.50.10" }, /not another address/],
    [{ ip: "192.168.50.10", prefix: 24, dns: ["dns.example"] }, /DNS server dns.example/],
  ];
  for (const [tapAddress, message] of table) {
    assert.throws(
      () => planNetwork("x", spec, { tapAddress: tapAddress as never }),
      (err: Error) =>
        err instanceof UsageError && /^Cannot use the address/.test(err.message) &&
        message.test(err.message),
      JSON.stringify(tapAddress),
    );
  }
});
