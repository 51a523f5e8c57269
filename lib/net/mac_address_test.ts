import assert from "node:assert/strict";
import { VmfactoryError } from "../errors.ts";
import { isUnicastMac, macForVm } from "./mac_address.ts";

const bytes = (...b: number[]) => () => Uint8Array.from(b);

Deno.test("a VM's MAC is 02: and its id", () => {
  assert.equal(macForVm("b4f98b1ebe"), "02:b4:f9:8b:1e:be");
  assert.equal(macForVm("0000000000"), "02:00:00:00:00:00");
});

Deno.test("an id of another form gets random bytes", () => {
  for (const id of ["B4F98B1EBE", "b4f98b1eb", "b4f98b1ebe0", "vm-1", ""]) {
    assert.equal(macForVm(id, [], bytes(1, 2, 3, 4, 255)), "02:01:02:03:04:ff", id);
  }
});

Deno.test("a MAC another VM has is not given again", () => {
  let calls = 0;
  const random = () => Uint8Array.from([calls++, 0, 0, 0, 0]);
  const taken = ["02:B4:F9:8B:1E:BE", "02:00:00:00:00:00"];
  assert.equal(macForVm("b4f98b1ebe", taken, random), "02:01:00:00:00:00");
  assert.equal(calls, 2);
});

Deno.test("macForVm gives up when every random pick is taken", () => {
  assert.throws(
    () => macForVm("x", ["02:00:00:00:00:00"], bytes(0, 0, 0, 0, 0)),
    (err: Error) => err instanceof VmfactoryError && /Cannot pick a MAC address/.test(err.message),
  );
});

Deno.test("random MACs are locally administered unicast and differ", () => {
  const macs = new Set(Array.from({ length: 100 }, () => macForVm("not-hex")));
  assert.equal(macs.size, 100);
  for (const mac of macs) assert.ok(isUnicastMac(mac) && mac.startsWith("02:"), mac);
});

Deno.test("isUnicastMac", () => {
  const table: [string, boolean][] = [
    ["02:00:00:00:00:01", true],
    ["52:54:00:12:34:56", true],
    ["03:00:00:00:00:01", false], // multicast
    ["ff:ff:ff:ff:ff:ff", false],
    ["02:00:00:00:00", false],
    ["02:00:00:00:00:00:00", false],
    ["02-00-00-00-00-01", false],
    ["02:00:00:00:00:0G", false],
    ["02:AB:00:00:00:01", false], // uppercase: not the canonical form
    ["", false],
  ];
  for (const [mac, ok] of table) assert.equal(isUnicastMac(mac), ok, mac);
});
