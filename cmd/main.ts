/**
 * Entry point of the `vmfactory` command line. `vm create` and `run` — the commands users script,
 * on the clone hot path — are parsed by a small strict parser so they do not pay commander's start-up
 * (~60 ms, measured); anything it does not recognise, including `--help`, goes to the full
 * commander program in `program.ts`, which owns help texts and usage errors.
 * @module
 */
import { errorMessage, VmfactoryError } from "../lib/errors.ts";
import { parseRun, parseVmCreate } from "./_fast_args.ts";
import { OptionError, USAGE_HINT } from "./_usage.ts";

/**
 * Runs the CLI with `args`; maps errors to exit codes and never prints a stack for user errors.
 * The `--help` hint follows misuse only (commander prints it after its own parse errors; here it
 * follows an {@link OptionError}), not a failed operation such as a missing kernel.
 */
export async function main(args: string[]): Promise<number> {
  try {
    const create = parseVmCreate(args);
    if (create) {
      const { runVmCreate } = await import("./vm.ts");
      return await runVmCreate(create);
    }
    const run = parseRun(args);
    if (run) {
      const { runRun } = await import("./run.ts");
      return await runRun(run.command, run.opts);
    }
    const { runProgram } = await import("./program.ts");
    return await runProgram(args);
  } catch (err) {
    if (err instanceof VmfactoryError) {
      console.error(`vmfactory: ${err.message}`);
      if (err instanceof OptionError) console.error(USAGE_HINT);
      return err.exitCode;
    }
    // an operating-system error the code did not name (a file it could not read, say): a failed
    // operation, not a bug; VMFACTORY_DEBUG=1 shows its stack
    if (isOsError(err) && !Deno.env.get("VMFACTORY_DEBUG")) {
      console.error(`vmfactory: ${errorMessage(err)}`);
      return 1;
    }
    throw err;
  }
}

function isOsError(err: unknown): boolean {
  return Object.values(Deno.errors).some((kind) => err instanceof kind);
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
