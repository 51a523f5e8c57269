/**
 * The `vmfactory` command line. Commands are declared here (cheap); each action imports its
 * implementation lazily so that `vm create` never loads the linter or gRPC.
 * @module
 */
import { Command, Option } from "@commander-js/extra-typings";
import { VmfactoryError } from "../lib/errors.ts";
import denoJson from "../deno.json" with { type: "json" };

const SEVERITIES = ["off", "info", "warning", "error"];

/** Collects repeatable `--rule id=severity` options. */
function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** Builds the whole command tree (exported for tests and shell completion). */
export function buildProgram(): Command {
  const program = new Command()
    .name("vmfactory")
    .description(
      "Start QEMU VMs in milliseconds from a template or a cache of booted VMs, and lint Kata " +
        "Containers configuration files in CI.",
    )
    .version(denoJson.version, "-V, --version")
    .configureHelp({ showGlobalOptions: true })
    .showHelpAfterError("(run with --help for usage)")
    .addHelpText(
      "after",
      `
Examples:
  vmfactory demo                              build the guest, template it, clone VMs, print timings
  vmfactory lint /etc/kata-containers/configuration.toml
  vmfactory factory init && vmfactory vm create --json
  vmfactory vm exec <id> -- uname -r

Environment:
  KATA_CONF_FILE        Kata configuration file (when --config is not given)
  VMFACTORY_ACCEL       kvm | tcg | auto (overrides [vmfactory] accel)
  VMFACTORY_STATE_DIR   where VMs and the guest cache live (overrides [vmfactory] state_dir)
  NO_COLOR              disable colours`,
    );

  program
    .command("lint")
    .description(
      "Check Kata configuration.toml files for mistakes that break VM templating or VMCache. " +
        "With no FILE, lints the effective configuration the way Kata resolves it (plus config.d/).",
    )
    .argument("[files...]", "configuration files to lint")
    .option("-c, --config <file>", "Kata configuration file to resolve (instead of the default lookup)")
    .addOption(
      new Option("-f, --format <format>", "output format")
        .choices(["text", "json", "sarif", "github"] as const)
        .default("text" as const),
    )
    .option(
      "-r, --rule <id=severity>",
      `set a rule's severity (${SEVERITIES.join("|")}); repeatable`,
      collect,
      [] as string[],
    )
    .option("--probe", "query binaries on this host (e.g. whether QEMU supports x-ignore-shared)")
    .option("--explain <rule>", "print a rule's documentation with examples and exit")
    .option("--list-rules", "list every rule with its default severity and exit")
    .addHelpText(
      "after",
      `
Exit codes: 0 no error findings, 1 error findings, 2 usage error or unreadable input.
Suppress a finding with a comment on the line before it:  # vmfactory-lint-ignore <rule>

Examples:
  vmfactory lint configuration.toml
  vmfactory lint --format github /etc/kata-containers/configuration.toml
  vmfactory lint --rule unknown-key=error --format sarif *.toml > lint.sarif
  vmfactory lint --explain template-forbids-virtio-fs`,
    )
    .action(async (files, opts) => {
      const { runLint } = await import("./lint.ts");
      Deno.exitCode = await runLint(files, opts);
    });

  return program;
}

/** Runs the CLI with `args`; maps errors to exit codes and never prints a stack for user errors. */
export async function main(args: string[]): Promise<number> {
  const program = buildProgram();
  program.exitOverride();
  try {
    await program.parseAsync(args, { from: "user" });
    return typeof Deno.exitCode === "number" ? Deno.exitCode : 0;
  } catch (err) {
    // deno-lint-ignore no-explicit-any
    const e = err as any;
    if (e?.code && typeof e.code === "string" && e.code.startsWith("commander.")) {
      // commander already printed its message (or help/version).
      return e.code === "commander.helpDisplayed" || e.code === "commander.version" ||
          e.code === "commander.help"
        ? 0
        : 2;
    }
    if (err instanceof VmfactoryError) {
      console.error(`vmfactory: ${err.message}`);
      if (err.exitCode === 2) console.error("(run with --help for usage)");
      return err.exitCode;
    }
    throw err;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
