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
} from "../lib/value_checks.ts";

const SEVERITIES = ["off", "info", "warning", "error"];

/** Collects repeatable `--rule id=severity` options. */
function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** Collects a repeatable option that has no default (its help shows none). */
function repeatable(value: string, previous?: string[]): string[] {
  return [...(previous ?? []), value];
}

/** Makes a `lib/value_checks.ts` reader a commander argument parser (its problem is a usage error). */
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
  vmfactory run --image oci:/srv/alpine:3.20 -- cat /etc/os-release

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
  const imageOption = () =>
    new Option(
      "--image <ref>",
      "run commands in this container image: a rootfs folder, a .tar (rootfs or docker save) " +
        "or oci:PATH[:TAG] (an OCI layout)",
    );
  const netOption = () =>
    new Option("--net [mode]", "give the VM a network: user (NAT, the default) or tap:NAME");
  const portOption = () =>
    new Option(
      "-p, --port <host:guest>",
      "forward 127.0.0.1:HOST to the guest's port GUEST (needs --net user); repeatable",
    ).argParser(repeatable);
  const envOption = () =>
    new Option("-e, --env <name=value>", "set an environment variable; repeatable")
      .argParser(repeatable);
  const workdirOption = () =>
    new Option("-w, --workdir <dir>", "working folder of the command (absolute)");
  const userOption = () =>
    new Option("-u, --user <user>", "run as user, uid, user:group or uid:gid (default root)");

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
    .addOption(imageOption())
    .addOption(netOption())
    .addOption(portOption())
    .option("--strict", "fail instead of cold-booting when the template does not match")
    .option("--fallback", "cold-boot when the VMCache server is not running")
    .option("--json", "print the VM record as JSON")
    .addOption(configOption())
    .addOption(noDaemonOption())
    .addHelpText(
      "after",
      `
With --image, \`vm exec\` runs commands in the image (its Env, WorkingDir and User apply); the
image is converted once (progress on stderr) and cached under <state_dir>/images.

Examples:
  vmfactory vm create
  vmfactory vm create --cpus 2 --memory 512 --json
  vmfactory vm create --image ./rootfs                  a folder, a .tar or oci:PATH[:TAG]
  vmfactory vm create --image oci:/srv/alpine:3.20 --net
  vmfactory vm create --net user -p 8080:80             127.0.0.1:8080 reaches the guest's 80`,
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
    .option(
      "-i, --interactive",
      "stream this process's stdin to the command (else /dev/null); talks to the VM's agent " +
        "directly, not through the daemon",
    )
    .addOption(envOption())
    .addOption(workdirOption())
    .addOption(userOption())
    .addOption(configOption())
    .addOption(noDaemonOption())
    .addHelpText(
      "after",
      `
In a VM made with --image the command runs in the image, with its Env, WorkingDir and User
(-e, -w and -u override them).

Examples:
  vmfactory vm exec 3f2a -- uname -r
  vmfactory vm exec 3f2a --shell 'cat /proc/meminfo | head -3'
  vmfactory vm exec 3f2a -e DEBUG=1 -w /srv -u nobody -- env
  tar -c src | vmfactory vm exec -i 3f2a -- tar -x -C /tmp`,
    )
    .action(async (id, command, opts) => {
      const { runVmExec } = await import("./vm.ts");
      Deno.exitCode = await runVmExec(id, command, opts);
    });
  vm
    .command("cp")
    .description(
      "Copy files and folders into or out of a VM, like docker cp (modes, links and times kept).",
    )
    .argument("<src>", "a local path, or ID:PATH in a VM")
    .argument("<dst>", "ID:PATH in a VM, or a local path")
    .option("--max-size <size>", "largest copy (bytes, or 512M, 4G...; default 4G)")
    .option("--progress", "report bytes on stderr every 0.5 s even when it is not a terminal")
    .addOption(configOption())
    .addHelpText(
      "after",
      `
Exactly one side is ID:PATH (PATH absolute; in the image for a VM made with --image; a local
path with a colon is written ./NAME). As docker cp: a file into an existing folder keeps its name,
onto a file replaces it, to a new name takes it; a folder into an existing folder goes in it
(merged with one of its name), to a new name becomes it; SRC/. copies a folder's content. Copies
out are checked before anything is placed: links that point outside the destination, devices and
FIFOs are refused, set-id bits cleared, files are yours. Works on the VM's agent directly (not
through the daemon).

Examples:
  vmfactory vm cp ./site 3f2a:/srv/www          /srv/www/site (or /srv/www when it is new)
  vmfactory vm cp ./site/. 3f2a:/srv/www        the content of ./site into /srv/www
  vmfactory vm cp 3f2a:/var/log/app.log .
  vmfactory vm cp --progress 3f2a:/data ./backup`,
    )
    .action(async (src, dst, opts) => {
      const { runVmCp } = await import("./vm.ts");
      Deno.exitCode = await runVmCp(src, dst, opts);
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
    .command("run")
    .description(
      "Run one command in a new VM and destroy the VM afterwards (also on Ctrl-C, a timeout or " +
        "an error); exits with the command's exit code.",
    )
    .argument("[command...]", "command and arguments (after --; with an image: its Cmd when none)")
    .addOption(imageOption())
    .addOption(netOption())
    .addOption(portOption())
    .addOption(envOption())
    .addOption(workdirOption())
    .addOption(userOption())
    .option(
      "--file <host:guest>",
      "copy a local file or folder into the VM first (as vm cp); repeatable",
      repeatable,
    )
    .option("--timeout <seconds>", "kill the command after this many seconds", checked(timeoutArg))
    .option("--cpus <n>", "vCPUs (above the template's: hot-added)", checked(cpusArg))
    .option("--memory <MiB>", "memory in MiB (above the template's: hot-added)", checked(memoryArg))
    .option("-i, --interactive", "stream this process's stdin to the command (else /dev/null)")
    .option("--strict", "fail instead of cold-booting when the template does not match")
    .option("--progress", "report the bytes of --file copies on stderr even when not a terminal")
    .addOption(configOption())
    .addOption(noDaemonOption())
    .addHelpText(
      "after",
      `
With --image the command runs in the image: its Entrypoint comes first, its Cmd when no command
is given, its Env, WorkingDir and User apply unless -e, -w, -u say otherwise. With --net (user
networking) the VM's gateway is the host: a server on the host's 127.0.0.1:PORT answers there.
Exit codes: the command's; 124 when --timeout killed it; 130/143 on SIGINT/SIGTERM; 1 and 2 as
for every command (a failed operation, bad input).

Examples:
  vmfactory run -- uname -r
  vmfactory run --image oci:/srv/alpine:3.20 -- cat /etc/os-release
  vmfactory run --image ./rootfs -e DEBUG=1 -w /app -u app -- ./start.sh
  vmfactory run --net -- sh -c 'wget -qO- http://$(ip route | awk "/^default/{print \\$3}"):8000/'
  vmfactory run --file ./job:/job --timeout 60 -- sh /job/run.sh
  gzip -c big.log | vmfactory run -i -- sh -c 'gunzip | wc -l'`,
    )
    .action(async (command, opts) => {
      const { runRun } = await import("./run.ts");
      Deno.exitCode = await runRun(command, opts);
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
