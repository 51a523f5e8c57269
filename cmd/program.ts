/**
 * The `vmfactory` command tree on commander. Commands are declared here; each action imports its
 * implementation lazily so that `vm create` never loads the linter or gRPC.
 * @module
 */
import { Command, CommanderError, InvalidArgumentError, Option } from "@commander-js/extra-typings";
import denoJson from "../deno.json" with { type: "json" };
import { USAGE_HINT } from "./_usage.ts";
import {
  ArgumentProblem,
  clonesArg,
  cpusArg,
  hostnameArg,
  memoryArg,
  timeoutArg,
} from "./_validate.ts";

const SEVERITIES = ["off", "info", "warning", "error"];

/** Collects repeatable `--rule id=severity` options. */
function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** Makes a `_validate.ts` reader a commander argument parser (its problem is a usage error). */
function checked<T>(read: (value: string) => T): (value: string) => T {
  return (value) => {
    try {
      return read(value);
    } catch (err) {
      if (err instanceof ArgumentProblem) throw new InvalidArgumentError(err.message);
      throw err;
    }
  };
}

/**
 * Builds the whole command tree (exported for tests and shell completion). Usage errors throw a
 * `CommanderError` instead of exiting, in every command: `exitOverride` (like the help hint) is
 * set before the subcommands are added, because commander copies it to each one on creation.
 */
export function buildProgram(): Command {
  const program = new Command()
    .exitOverride()
    .name("vmfactory")
    .description(
      "Start QEMU VMs in milliseconds from a template or a cache of booted VMs, and lint Kata " +
        "Containers configuration files in CI.",
    )
    .version(denoJson.version, "-V, --version")
    .configureHelp({ showGlobalOptions: true })
    .showHelpAfterError(USAGE_HINT)
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
  VMFACTORY_SOCKET      the daemon's socket; vm create/list/exec/destroy use the daemon when
                        one answers there (default <state_dir>/vmfactory.sock; --no-daemon: never)
  NO_COLOR              disable colours`,
    );

  program
    .command("lint")
    .description(
      "Check Kata configuration.toml files for mistakes that break VM templating or VMCache. " +
        "With no FILE, lints the effective configuration the way Kata resolves it (plus config.d/).",
    )
    .argument("[files...]", "configuration files to lint")
    .option(
      "-c, --config <file>",
      "Kata configuration file to resolve (instead of the default lookup)",
    )
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

  const configOption = () =>
    new Option(
      "-c, --config <file>",
      "Kata configuration file (default: KATA_CONF_FILE, then Kata's paths, then the built-in default)",
    );
  const noDaemonOption = () =>
    new Option(
      "--no-daemon",
      "work without the `vmfactory serve` daemon even when one answers on its socket",
    );

  const guest = program.command("guest").description(
    "The built-in guest (kernel from the host, initrd built here).",
  );
  guest
    .command("build")
    .description(
      "Build (or find cached) the built-in guest: busybox, virtio modules and the agent.",
    )
    .option("--kernel <path>", "guest kernel (default: newest /boot/vmlinuz-*)")
    .option("--json", "print the result as JSON")
    .addOption(configOption())
    .action(async (opts) => {
      const { runGuestBuild } = await import("./guest.ts");
      Deno.exitCode = await runGuestBuild(opts);
    });

  const factory = program
    .command("factory")
    .description("The VM factory: a template to clone from, or a VMCache server of booted VMs.")
    .addHelpText(
      "after",
      `
[factory] enable_template = true     factory init builds the template; vm create clones it
[factory] vm_cache_number = N        factory init runs the VMCache server in the foreground`,
    );
  factory
    .command("init")
    .description(
      "Build the template (enable_template) or run the VMCache server (vm_cache_number > 0).",
    )
    .option("--force", "rebuild a template that is stale")
    .addOption(configOption())
    .action(async (opts) => {
      const { runFactoryInit } = await import("./factory.ts");
      Deno.exitCode = await runFactoryInit(opts);
    });
  factory
    .command("destroy")
    .description("Remove the template (unmount + delete) or ask the VMCache server to quit.")
    .addOption(configOption())
    .action(async (opts) => {
      const { runFactoryDestroy } = await import("./factory.ts");
      Deno.exitCode = await runFactoryDestroy(opts);
    });
  factory
    .command("refill", { hidden: true })
    .description("Top the template's clone pool up to [vmfactory] pool_size (run after vm create).")
    .addOption(configOption())
    .action(async (opts) => {
      const { runFactoryRefill } = await import("./factory.ts");
      Deno.exitCode = await runFactoryRefill(opts);
    });
  factory
    .command("status")
    .description(
      "Template: present, size, age, fresh or stale and why. VMCache: server and its VMs.",
    )
    .option("--json", "print machine-readable JSON")
    .addOption(configOption())
    .action(async (opts) => {
      const { runFactoryStatus } = await import("./factory.ts");
      Deno.exitCode = await runFactoryStatus(opts);
    });

  const vm = program.command("vm").description("Create, list, use and destroy VMs.");
  vm
    .command("create")
    .description(
      "Get a VM from the factory (template clone, VMCache, or a cold boot) and wait until its agent answers.",
    )
    .option("--cpus <n>", "vCPUs (above the template's: hot-added)", checked(cpusArg))
    .option("--memory <MiB>", "memory in MiB (above the template's: hot-added)", checked(memoryArg))
    .option("--hostname <name>", "guest hostname (default: vm-<id>)", checked(hostnameArg))
    .option("--strict", "fail instead of cold-booting when the template does not match")
    .option("--fallback", "cold-boot when the VMCache server is not running")
    .option("--json", "print the VM record as JSON")
    .addOption(configOption())
    .addOption(noDaemonOption())
    .addHelpText(
      "after",
      `
Examples:
  vmfactory vm create
  vmfactory vm create --cpus 2 --memory 512 --json`,
    )
    .action(async (opts) => {
      const { runVmCreate } = await import("./vm.ts");
      Deno.exitCode = await runVmCreate(opts);
    });
  vm
    .command("list")
    .alias("ls")
    .description("List VMs (dead ones are reported as such).")
    .option("--json", "print machine-readable JSON")
    .addOption(configOption())
    .addOption(noDaemonOption())
    .action(async (opts) => {
      const { runVmList } = await import("./vm.ts");
      Deno.exitCode = await runVmList(opts);
    });
  vm
    .command("exec")
    .description("Run a command in a VM; streams its output and exits with its exit code.")
    .argument("<id>", "VM id (or a unique prefix)")
    .argument("[command...]", "command and arguments (after --)")
    .option("--shell <line>", "run a shell line with /bin/sh -c instead")
    .option("--timeout <seconds>", "kill the command after this many seconds", checked(timeoutArg))
    .addOption(configOption())
    .addOption(noDaemonOption())
    .addHelpText(
      "after",
      `
Examples:
  vmfactory vm exec 3f2a -- uname -r
  vmfactory vm exec 3f2a --shell 'cat /proc/meminfo | head -3'`,
    )
    .action(async (id, command, opts) => {
      const { runVmExec } = await import("./vm.ts");
      Deno.exitCode = await runVmExec(id, command, opts);
    });
  vm
    .command("logs")
    .description(
      "Print a VM's serial console: the newest [vmfactory] console_log_max bytes it kept.",
    )
    .argument("<id>", "VM id (or a unique prefix)")
    .addOption(configOption())
    .addHelpText(
      "after",
      `
Exit codes: 0 printed, 2 no such VM.

Examples:
  vmfactory vm logs 3f2a
  vmfactory vm logs 3f2a | tail -20`,
    )
    .action(async (id, opts) => {
      const { runVmLogs } = await import("./vm.ts");
      Deno.exitCode = await runVmLogs(id, opts);
    });
  vm
    .command("destroy")
    .alias("rm")
    .description("Stop VMs and remove everything of theirs.")
    .argument("[ids...]", "VM ids (or unique prefixes)")
    .option("--all", "destroy every VM")
    .addOption(configOption())
    .addOption(noDaemonOption())
    .action(async (ids, opts) => {
      const { runVmDestroy } = await import("./vm.ts");
      Deno.exitCode = await runVmDestroy(ids, opts);
    });

  program
    .command("serve")
    .description(
      "Run the daemon in the foreground: the factory, a clone pool sized to demand, and the " +
        "HTTP API on a Unix socket (and optionally TCP with a token).",
    )
    .option(
      "--socket <path>",
      "Unix socket (default: VMFACTORY_SOCKET, else <state_dir>/vmfactory.sock)",
    )
    .option("--socket-group <name>", "give the socket to this group, mode 0660 (default: 0600)")
    .option("--listen <host:port>", "serve on TCP too; needs --token-file")
    .option(
      "--token-file <file>",
      "bearer token TCP clients must send (one line, not readable by others)",
    )
    .addOption(
      new Option("--log-format <format>", "log lines on stderr")
        .choices(["text", "json"] as const)
        .default("text" as const),
    )
    .addOption(configOption())
    .addHelpText(
      "after",
      `
Signals: SIGTERM/SIGINT drain (no new requests, those in flight finish, pooled VMs are destroyed,
VMs handed out keep running; exit 0). SIGHUP re-reads the configuration (a bad one is logged and
the old one kept): pool_min/pool_max apply at once, a template that no longer matches is rebuilt in
the background while requests are cold-booted. One daemon per state directory; a daemon killed -9
is cleaned up by the next start. Metrics: GET /metrics (Prometheus text).

Examples:
  vmfactory serve
  vmfactory serve --socket /run/vmfactory/api.sock --socket-group vmusers --log-format json
  vmfactory serve --listen 127.0.0.1:8080 --token-file /etc/vmfactory/token
  curl --unix-socket /run/vmfactory/vmfactory.sock -X POST http://vmfactory/v1/vms
  curl --unix-socket /run/vmfactory/vmfactory.sock http://vmfactory/metrics
  systemctl reload vmfactory        # SIGHUP, with deploy/ or docs/operations.md's unit`,
    )
    .action(async (opts) => {
      const { runServe } = await import("./serve.ts");
      Deno.exitCode = await runServe(opts);
    });

  program
    .command("demo")
    .description(
      "Build the guest, cold-boot a VM, make a template, clone VMs from it, print the timings and memory, clean up.",
    )
    .option("--clones <n>", "number of clones", checked(clonesArg), 8)
    .option("--keep", "keep the VMs and the template afterwards")
    .action(async (opts) => {
      const { runDemo } = await import("./demo.ts");
      Deno.exitCode = await runDemo(opts);
    });

  return program;
}

/**
 * Parses `args` with commander and runs the chosen command; returns the exit code. Commander's
 * usage errors (unknown command or option, missing or bad argument, in any command) exit 2 after
 * it printed the message and the hint; help and version exit 0; other errors propagate.
 */
export async function runProgram(args: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(args, { from: "user" });
    return typeof Deno.exitCode === "number" ? Deno.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    throw err;
  }
}
