/**
 * A strict parser for `vm create` options alone, so the hot path skips loading commander.
 * It accepts only what `program.ts` declares for `vm create`, with the same value checks
 * (`_validate.ts`); anything else returns undefined and the caller hands the arguments to
 * commander (which prints help and usage errors).
 * @module
 */
import { ArgumentProblem, cpusArg, hostnameArg, memoryArg } from "./_validate.ts";

/** Options of `vm create` (the same shape commander gives the action). */
export interface VmCreateArgs {
  cpus?: number;
  memory?: number;
  hostname?: string;
  strict?: boolean;
  fallback?: boolean;
  json?: boolean;
  config?: string;
  /** False with `--no-daemon` (commander's default for a negated flag is true). */
  daemon?: boolean;
}

/** How the fast parser reads one option: the attribute it sets and what its value is. */
export interface FastOption {
  /** The attribute commander gives the action. */
  key: keyof VmCreateArgs;
  /**
   * No value (a flag, true when given), a negated flag (`--no-X`: true unless given), any
   * string, or a value read by a `_validate.ts` reader.
   */
  value: "none" | "negate" | "string" | ((text: string) => unknown);
}

/** Every flag of `vm create` the fast parser knows; a test ties this to `program.ts`. */
export const VM_CREATE_OPTIONS: Readonly<Record<string, FastOption>> = {
  "--cpus": { key: "cpus", value: cpusArg },
  "--memory": { key: "memory", value: memoryArg },
  "--hostname": { key: "hostname", value: hostnameArg },
  "--strict": { key: "strict", value: "none" },
  "--fallback": { key: "fallback", value: "none" },
  "--json": { key: "json", value: "none" },
  "--config": { key: "config", value: "string" },
  "-c": { key: "config", value: "string" },
  "--no-daemon": { key: "daemon", value: "negate" },
};

/**
 * Flags of `vm create` the fast parser leaves to commander: a workload's cost is its image and
 * NIC, not commander's load.
 */
export const COMMANDER_ONLY_OPTIONS: readonly string[] = ["--image", "--net", "--port", "-p"];

/** The options of `vm create ...` in `args`, or undefined when commander must handle them. */
export function parseVmCreate(args: readonly string[]): VmCreateArgs | undefined {
  if (args[0] !== "vm" || args[1] !== "create") return undefined;
  // as commander does, a negated flag's attribute is true unless the flag is given
  const out: Record<string, unknown> = Object.fromEntries(
    Object.values(VM_CREATE_OPTIONS).filter((o) => o.value === "negate").map((o) => [o.key, true]),
  );
  for (let i = 2; i < args.length; i++) {
    const [name, inline] = args[i].startsWith("--") && args[i].includes("=")
      ? [args[i].slice(0, args[i].indexOf("=")), args[i].slice(args[i].indexOf("=") + 1)]
      : [args[i], undefined];
    const option = VM_CREATE_OPTIONS[name];
    if (!option) return undefined;
    if (option.value === "none" || option.value === "negate") {
      if (inline !== undefined) return undefined;
      out[option.key] = option.value === "none";
      continue;
    }
    const value = inline ?? args[++i];
    if (value === undefined || option.key in out) return undefined;
    if (option.value === "string") out[option.key] = value;
    else {
      try {
        out[option.key] = option.value(value);
      } catch (err) {
        if (err instanceof ArgumentProblem) return undefined; // commander explains it
        throw err;
      }
    }
  }
  return out as VmCreateArgs;
}
