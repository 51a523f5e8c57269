/**
 * A strict parser for `vm create` options alone, so the hot path skips loading commander.
 * It accepts only what `program.ts` declares for `vm create`; anything else returns undefined
 * and the caller hands the arguments to commander (which prints help and usage errors).
 * @module
 */

/** Options of `vm create` (the same shape commander gives the action). */
export interface VmCreateArgs {
  cpus?: number;
  memory?: number;
  hostname?: string;
  strict?: boolean;
  fallback?: boolean;
  json?: boolean;
  config?: string;
}

const FLAGS = new Set(["--strict", "--fallback", "--json"]);
const VALUES: Record<string, keyof VmCreateArgs> = {
  "--cpus": "cpus",
  "--memory": "memory",
  "--hostname": "hostname",
  "--config": "config",
  "-c": "config",
};
const NUMERIC = new Set<keyof VmCreateArgs>(["cpus", "memory"]);

/** The options of `vm create ...` in `args`, or undefined when commander must handle them. */
export function parseVmCreate(args: readonly string[]): VmCreateArgs | undefined {
  if (args[0] !== "vm" || args[1] !== "create") return undefined;
  const out: Record<string, unknown> = {};
  for (let i = 2; i < args.length; i++) {
    const [name, inline] = args[i].startsWith("--") && args[i].includes("=")
      ? [args[i].slice(0, args[i].indexOf("=")), args[i].slice(args[i].indexOf("=") + 1)]
      : [args[i], undefined];
    if (FLAGS.has(name) && inline === undefined) {
      out[name.slice(2)] = true;
      continue;
    }
    const key = VALUES[name];
    const value = inline ?? args[++i];
    if (!key || value === undefined || key in out) return undefined;
    if (NUMERIC.has(key)) {
      const n = Number(value);
      if (!Number.isInteger(n) || n <= 0) return undefined;
      out[key] = n;
    } else out[key] = value;
  }
  return out as VmCreateArgs;
}
