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
}

/** How the fast parser reads one option: the attribute it sets and what its value is. */
export interface FastOption {
  /** The attribute commander gives the action. */
  key: keyof VmCreateArgs;
  /** No value (a flag), any string, or a value read by a `_validate.ts` reader. */
  value: "none" | "string" | ((text: string) => unknown);
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
};

/** The options of `vm create ...` in `args`, or undefined when commander must handle them. */
export function parseVmCreate(args: readonly string[]): VmCreateArgs | undefined {
  if (args[0] !== "vm" || args[1] !== "create") return undefined;
  const out: Record<string, unknown> = {};
  for (let i = 2; i < args.length; i++) {
    const [name, inline] = args[i].startsWith("--") && args[i].includes("=")
      ? [args[i].slice(0, args[i].indexOf("=")), args[i].slice(args[i].indexOf("=") + 1)]
      : [args[i], undefined];
    const option = VM_CREATE_OPTIONS[name];
    if (!option) return undefined;
    if (option.value === "none") {
      if (inline !== undefined) return undefined;
      out[option.key] = true;
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
