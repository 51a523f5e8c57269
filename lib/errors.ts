/**
 * Error classes shared by the library and the CLI.
 *
 * Every message reads "Cannot <action>: <detail>". The CLI maps {@link UsageError} to exit code 2
 * and prints any {@link VmfactoryError} without a stack trace.
 * @module
 */

/**
 * Base class of every error vmfactory raises on purpose; `exitCode` is what the CLI exits with.
 * @example
 * ```ts
 * const err = new VmfactoryError("stop QEMU", "pid 42 is still running");
 * console.log(err.message, err.exitCode); // "Cannot stop QEMU: pid 42 is still running" 1
 * ```
 */
export class VmfactoryError extends Error {
  /** Process exit code the CLI uses for this error. */
  readonly exitCode: number;
  /** Builds "Cannot <action>: <detail>". */
  constructor(action: string, detail: string, options?: { cause?: unknown; exitCode?: number }) {
    super(`Cannot ${action}: ${detail}`, options?.cause ? { cause: options.cause } : undefined);
    this.name = new.target.name;
    this.exitCode = options?.exitCode ?? 1;
  }
}

/**
 * The user asked for something impossible (bad input, missing prerequisite): exit code 2.
 * @example
 * ```ts
 * throw new UsageError("find VM abc", "no such VM"); // the CLI exits 2
 * ```
 */
export class UsageError extends VmfactoryError {
  /** Builds a usage error; the CLI exits 2. */
  constructor(action: string, detail: string, options?: { cause?: unknown }) {
    super(action, detail, { ...options, exitCode: 2 });
  }
}

/** The message of any thrown value (an Error's message, else its text). */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message || err.name : String(err);
}
