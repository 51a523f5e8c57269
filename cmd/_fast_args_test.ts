import assert from "node:assert/strict";
import { parseVmCreate } from "./_fast_args.ts";

Deno.test("parseVmCreate: the options vm create declares, nothing else", () => {
  const cases: [string[], unknown][] = [
    [["vm", "create"], {}],
    [["vm", "create", "--json", "--cpus", "2", "--memory=512", "-c", "/x.toml"], {
      json: true,
      cpus: 2,
      memory: 512,
      config: "/x.toml",
    }],
    [["vm", "create", "--hostname", "web1", "--strict", "--fallback"], {
      hostname: "web1",
      strict: true,
      fallback: true,
    }],
    // left to commander: help, unknown options, bad numbers, missing values, other commands
    [["vm", "create", "--help"], undefined],
    [["vm", "create", "--cpus", "0"], undefined],
    [["vm", "create", "--cpus", "two"], undefined],
    [["vm", "create", "--memory"], undefined],
    [["vm", "create", "--bogus"], undefined],
    [["vm", "create", "--json=yes"], undefined],
    [["vm", "create", "--cpus", "1", "--cpus", "2"], undefined],
    [["vm", "list"], undefined],
    [["lint"], undefined],
  ];
  for (const [args, want] of cases) assert.deepEqual(parseVmCreate(args), want, args.join(" "));
});
