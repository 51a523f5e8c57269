/**
 * A strict parser for the options of `vm create` and `run` alone, so the hot paths skip loading
 * commander. It accepts only what `program.ts` declares for them, with the same value checks
 * (`lib/value_checks.ts`); anything else returns undefined and the caller hands the arguments to
 * commander (which prints help and usage errors).
 * @module
 */
import {
  ArgumentProblem,
  cpusArg,
  hostnameArg,
  memoryArg,
  timeoutArg,
} from "../lib/value_checks.ts";

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
export interface FastOption<K extends string = keyof VmCreateArgs> {
  /** The attribute commander gives the action. */
  key: K;
  /**
   * No value (a flag, true when given), a negated flag (`--no-X`: true unless given), any
   * string, a value that may be left out (`--net [mode]`: true without one), a repeatable string
   * (collected into a list), or a value read by a `lib/value_checks.ts` reader.
   */
  value: "none" | "negate" | "string" | "optional" | "repeat" | ((text: string) => unknown);
}

/** The flags `vm create` and `run` share: the VM's size, how it may be made, the config. */
const VM_OPTIONS = {
  "--cpus": { key: "cpus", value: cpusArg },
  "--memory": { key: "memory", value: memoryArg },
  "--strict": { key: "strict", value: "none" },
  "--config": { key: "config", value: "string" },
  "-c": { key: "config", value: "string" },
  "--no-daemon": { key: "daemon", value: "negate" },
} as const satisfies Record<string, FastOption<keyof RunFastArgs>>;

/** Every flag of `vm create` the fast parser knows; a test ties this to `program.ts`. */
export const VM_CREATE_OPTIONS: Readonly<Record<string, FastOption>> = {
  ...VM_OPTIONS,
  "--hostname": { key: "hostname", value: hostnameArg },
  "--fallback": { key: "fallback", value: "none" },
  "--json": { key: "json", value: "none" },
};

/**
 * Flags of `vm create` the fast parser leaves to commander: a workload's cost is its image and
 * NIC, not commander's load.
 */
export const COMMANDER_ONLY_OPTIONS: readonly string[] = ["--image", "--net", "--port", "-p"];

/** The options of `vm create ...` in `args`, or undefined when commander must handle them. */
export function parseVmCreate(args: readonly string[]): VmCreateArgs | undefined {
  if (args[0] !== "vm" || args[1] !== "create") return undefined;
  const parsed = parseOptions(args.slice(2), VM_CREATE_OPTIONS);
  return parsed && parsed.rest === undefined ? parsed.opts as VmCreateArgs : undefined;
}

/** Options of `run` (the same shape commander gives the action). */
export interface RunFastArgs {
  /** `--image REF`. */
  image?: string;
  /** `--net [MODE]`: true when given without a mode (user networking). */
  net?: string | true;
  /** `-p/--port HOST:GUEST`, repeatable. */
  port?: string[];
  /** `-e/--env NAME=VALUE`, repeatable. */
  env?: string[];
  workdir?: string;
  user?: string;
  /** `--file HOST:GUEST`, repeatable. */
  file?: string[];
  timeout?: number;
  cpus?: number;
  memory?: number;
  interactive?: boolean;
  strict?: boolean;
  progress?: boolean;
  config?: string;
  /** False with `--no-daemon`. */
  daemon?: boolean;
}

/** Every flag of `run` the fast parser knows; a test ties this to `program.ts`. */
export const RUN_OPTIONS: Readonly<Record<string, FastOption<keyof RunFastArgs>>> = {
  "--image": { key: "image", value: "string" },
  "--net": { key: "net", value: "optional" },
  "--port": { key: "port", value: "repeat" },
  "-p": { key: "port", value: "repeat" },
  "--env": { key: "env", value: "repeat" },
  "-e": { key: "env", value: "repeat" },
  "--workdir": { key: "workdir", value: "string" },
  "-w": { key: "workdir", value: "string" },
  "--user": { key: "user", value: "string" },
  "-u": { key: "user", value: "string" },
  "--file": { key: "file", value: "repeat" },
  "--timeout": { key: "timeout", value: timeoutArg },
  "--interactive": { key: "interactive", value: "none" },
  "-i": { key: "interactive", value: "none" },
  "--progress": { key: "progress", value: "none" },
  ...VM_OPTIONS,
};

/**
 * `run [options] -- CMD...` in `args`: its options and command, or undefined when commander must
 * handle them (help, anything unknown or unusual, a command not after `--`).
 */
export function parseRun(
  args: readonly string[],
): { opts: RunFastArgs; command: string[] } | undefined {
  if (args[0] !== "run") return undefined;
  const parsed = parseOptions(args.slice(1), RUN_OPTIONS);
  if (!parsed) return undefined;
  return { opts: parsed.opts as RunFastArgs, command: parsed.rest ?? [] };
}

/**
 * Reads `args` with `table`, strictly: undefined at anything commander might read otherwise (an
 * unknown flag, a missing or bad value, a single-valued option given twice, a positional argument
 * before `--`). `rest` is what follows `--`.
 */
function parseOptions(
  args: readonly string[],
  table: Readonly<Record<string, FastOption<string>>>,
): { opts: Record<string, unknown>; rest?: string[] } | undefined {
  // as commander does, a negated flag's attribute is true unless the flag is given
  const out: Record<string, unknown> = Object.fromEntries(
    Object.values(table).filter((o) => o.value === "negate").map((o) => [o.key, true]),
  );
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--") return { opts: out, rest: args.slice(i + 1) };
    const [name, inline] = args[i].startsWith("--") && args[i].includes("=")
      ? [args[i].slice(0, args[i].indexOf("=")), args[i].slice(args[i].indexOf("=") + 1)]
      : [args[i], undefined];
    const option = table[name];
    if (!option) return undefined;
    if (option.value === "none" || option.value === "negate") {
      if (inline !== undefined) return undefined;
      out[option.key] = option.value === "none";
      continue;
    }
    if (option.value === "optional") {
      if (option.key in out) return undefined;
      const next = args[i + 1];
      // commander takes the next argument as the value unless it looks like an option
      out[option.key] = inline ?? (next !== undefined && !next.startsWith("-") ? args[++i] : true);
      continue;
    }
    const value = inline ?? args[++i];
    if (value === undefined) return undefined;
    if (option.value === "repeat") {
      out[option.key] = [...(out[option.key] as string[] | undefined ?? []), value];
      continue;
    }
    if (option.key in out) return undefined;
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
  return { opts: out };
}
