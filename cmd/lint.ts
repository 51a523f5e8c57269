/** `vmfactory lint` (not built yet). @module */
import { VmfactoryError } from "../lib/errors.ts";

/** Runs the linter on `files` and returns the exit code. */
export function runLint(_files: string[], _opts: unknown): Promise<number> {
  throw new VmfactoryError("lint", "the linter is not built yet");
}
