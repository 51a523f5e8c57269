/**
 * The checks of option and request values, shared by commander (`cmd/program.ts`), the fast parser
 * (`cmd/_fast_args.ts`) and the daemon's API bodies (`server/api_bodies.ts`), so all accept exactly
 * the same values. Each reader returns the
 * value or throws {@link ArgumentProblem}; it loads nothing (the fast path must stay cheap).
 * @module
 */
import { MAX_KEPT_VMS, MAX_MEMORY_MIB } from "./config/key_checks.ts";

/** Most vCPUs `--cpus` asks for (KVM's usual limit per VM on x86-64). */
export const MAX_CPUS = 1024;
/**
 * Longest `vm exec --timeout` in seconds (24 days): in ms, plus the agent client's grace (its
 * connection timeout, 10 s for `vm exec`), it still fits a timer (`MAX_TIMER_MS`, about 24.8
 * days; a longer timer fires at once).
 */
export const MAX_TIMEOUT_S = 24 * 24 * 3600;
/** Longest hostname Linux accepts (`HOST_NAME_MAX`). */
export const MAX_HOSTNAME_LENGTH = 64;

/** An option value that does not fit; the message says what is expected (commander shows it). */
export class ArgumentProblem extends Error {
  /** Builds the problem with its explanation. */
  constructor(message: string) {
    super(message);
    this.name = "ArgumentProblem";
  }
}

/** Reads a whole decimal number from `min` to `max` (no sign, exponent, fraction or spaces). */
function wholeNumber(text: string, min: number, max: number, what: string): number {
  const n = /^[0-9]{1,16}$/.test(text) ? Number(text) : NaN;
  if (!(n >= min && n <= max)) {
    throw new ArgumentProblem(`expected a whole number of ${what} from ${min} to ${max}`);
  }
  return n;
}

/** Reads `--cpus`: 1 to {@link MAX_CPUS}. */
export function cpusArg(text: string): number {
  return wholeNumber(text, 1, MAX_CPUS, "vCPUs");
}

/** Reads `--memory` (MiB): 1 to 1 TiB, the largest `default_memory` too. */
export function memoryArg(text: string): number {
  return wholeNumber(text, 1, MAX_MEMORY_MIB, "MiB");
}

/** Reads `vm exec --timeout` (seconds): 1 to {@link MAX_TIMEOUT_S}. */
export function timeoutArg(text: string): number {
  return wholeNumber(text, 1, MAX_TIMEOUT_S, "seconds");
}

/** Reads `demo --clones`: 1 to as many VMs as vmfactory keeps at once. */
export function clonesArg(text: string): number {
  return wholeNumber(text, 1, MAX_KEPT_VMS, "clones");
}

const LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
const HOSTNAME = new RegExp(`^${LABEL}(?:\\.${LABEL})*$`);

/**
 * Reads `--hostname`: 1 to 64 characters, dot-separated labels of letters, digits and inner
 * hyphens (RFC 1123), so no control character, space or newline reaches the guest.
 */
export function hostnameArg(text: string): string {
  if (text.length > MAX_HOSTNAME_LENGTH || !HOSTNAME.test(text)) {
    throw new ArgumentProblem(
      `expected 1 to ${MAX_HOSTNAME_LENGTH} characters: labels of letters, digits and inner ` +
        `hyphens, joined by dots (RFC 1123)`,
    );
  }
  return text;
}
