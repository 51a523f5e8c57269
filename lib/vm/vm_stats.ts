/**
 * Measurements of running VMs and of timing samples: proportional set size and CPU time of
 * processes (from /proc), and quantiles. Used by the demo and the benchmark.
 * @module
 */

/** Sum of PSS (proportional set size) of the processes `pids` in MiB; they must be running. */
export function pssMiB(pids: number[]): number {
  let kib = 0;
  for (const pid of pids) {
    const text = Deno.readTextFileSync(`/proc/${pid}/smaps_rollup`);
    kib += Number(/^Pss:\s+(\d+)/m.exec(text)?.[1] ?? 0);
  }
  return kib / 1024;
}

/** CPU time (user + system) process `pid` has used so far, in clock ticks; 0 once it is gone. */
export function cpuTicks(pid: number): number {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // fields after "pid (comm) ": state is field 3, utime 14, stime 15
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return 0;
  }
}

/** The `q`-quantile of `values` (the sample at rank `floor(q × n)`, so p95 of 20 is the max). */
export function quantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}
