/** Fakes the server's unit tests share. @module */
import type { VmRecord, VmTimings } from "../vm/vm_record.ts";

/** A record of a VM that does not exist, in `/nonexistent/vms/<id>`. */
export function fakeRecord(
  id: string,
  timings: VmTimings = { totalMs: 3.5, phases: { claimMs: 1.5, personalizeMs: 2 } },
): VmRecord {
  const dir = `/nonexistent/vms/${id}`;
  return {
    id,
    pid: 4242,
    startTime: 1,
    source: "template",
    cpus: 1,
    memoryMiB: 256,
    hostname: `vm-${id}`,
    createdAt: new Date(0).toISOString(),
    dir,
    qmpSocket: `${dir}/qmp.sock`,
    agentSocket: `${dir}/agent.sock`,
    consoleLog: `${dir}/console.log`,
    accel: "tcg",
    timings,
  };
}
