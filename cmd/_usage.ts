/**
 * Misuse of the command line, as opposed to an operation that failed: both exit 2 when they are
 * a {@link UsageError}, but only misuse is followed by the hint to `--help`.
 * @module
 */
import { UsageError } from "../lib/errors.ts";

/** Printed after misuse: commander's parse errors and {@link OptionError}s. */
export const USAGE_HINT = "(run with --help for usage)";

/**
 * Options or arguments that parsed but do not go together or name nothing (e.g. FILE arguments
 * with `--config`, an unknown rule in `--rule`): exit 2, and the CLI prints {@link USAGE_HINT}.
 */
export class OptionError extends UsageError {}
