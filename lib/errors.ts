/**
 * Error classes shared by the library and the CLI.
 *
 * Every message reads "Cannot <action>: <detail>". The CLI maps {@link UsageError} to exit code 2
 * (with a hint to `--help`) and prints any {@link VmfactoryError} without a stack trace.
 * @module
 */

/** Base class of every error vmfactory raises on purpose; `exitCode` is what the CLI exits with. */
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

/** The user asked for something impossible (bad input, missing prerequisite): exit code 2. */
export class UsageError extends VmfactoryError {
  /** Builds a usage error; the CLI exits 2 and points at `--help`. */
  constructor(action: string, detail: string, options?: { cause?: unknown }) {
    super(action, detail, { ...options, exitCode: 2 });
  }
}
