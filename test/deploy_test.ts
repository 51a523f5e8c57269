/**
 * The deployment files in deploy/: the systemd unit of `vmfactory serve` (checked by
 * `systemd-analyze verify` where it exists, and parsed: required keys, hardening, consistency with
 * the VMCache unit) and the Kubernetes manifests (parsed, validated against the Kubernetes schemas
 * with kubernetes-models, and checked for what this project needs: probes on /healthz, the state
 * dir on a hostPath, capabilities, a configuration the linter accepts).
 */
import assert from "node:assert/strict";
import type { CommandUnknownOpts } from "@commander-js/extra-typings";
import { ConfigMap } from "kubernetes-models/v1";
import { DaemonSet } from "kubernetes-models/apps/v1";
import { parse as parseToml } from "smol-toml";
import { parseAllDocuments } from "yaml";
import { buildProgram } from "../cmd/program.ts";
import { systemProgram } from "../lib/system_program.ts";
import { runCli } from "./_cli.ts";

const DEPLOY = new URL("../deploy/", import.meta.url).pathname;
const K8S = `${DEPLOY}kubernetes/`;

/** The capabilities the daemon needs as root, and why (the unit's and the pod's comments say). */
const CAPABILITIES = ["SETUID", "SETGID", "SYS_PTRACE", "KILL"]; // + SYS_ADMIN under systemd

// --- systemd -------------------------------------------------------------------------------

/** One `Key=value` line of a unit, with the comment lines right above it. */
interface Directive {
  key: string;
  value: string;
  comment: string;
}

/** A unit file's sections: name → directives in order. */
function parseUnit(text: string): Map<string, Directive[]> {
  const sections = new Map<string, Directive[]>();
  let section: Directive[] | undefined;
  let comment: string[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "") comment = [];
    else if (line.startsWith("#")) comment.push(line.slice(1).trim());
    else if (/^\[.+\]$/.test(line)) {
      section = [];
      sections.set(line.slice(1, -1), section);
      comment = [];
    } else {
      const eq = line.indexOf("=");
      assert.ok(section && eq > 0, `not a directive: ${line}`);
      section.push({
        key: line.slice(0, eq),
        value: line.slice(eq + 1),
        comment: comment.join(" "),
      });
      comment = [];
    }
  }
  return sections;
}

/** The values of `key` in `section` (a key may repeat). */
function values(unit: Map<string, Directive[]>, section: string, key: string): string[] {
  return (unit.get(section) ?? []).filter((d) => d.key === key).map((d) => d.value);
}

/** The single value of `key` in `section`. */
function value(unit: Map<string, Directive[]>, section: string, key: string): string {
  const found = values(unit, section, key);
  assert.equal(found.length, 1, `${section} ${key}: ${found.length} values`);
  return found[0];
}

/** The options `command` (e.g. ["serve"]) declares, long and short. */
function declaredOptions(command: string[]): Set<string> {
  let cmd = buildProgram() as unknown as CommandUnknownOpts;
  for (const name of command) {
    const sub = cmd.commands.find((c) => c.name() === name);
    assert.ok(sub, `the CLI has ${command.join(" ")}`);
    cmd = sub;
  }
  return new Set(cmd.options.flatMap((o) => [o.long, o.short]).filter((f) => f !== undefined));
}

/** Asserts that `argv` is `vmfactory serve` with options serve declares. */
function assertServeArgs(argv: string[], where: string): void {
  assert.equal(argv[0], "serve", where);
  const known = declaredOptions(["serve"]);
  for (const arg of argv.filter((a) => a.startsWith("-"))) {
    assert.ok(known.has(arg.split("=")[0]), `${where}: serve has no option ${arg}`);
  }
}

/** The value after `flag` in `argv`. */
function optionValue(argv: string[], flag: string): string | undefined {
  const at = argv.indexOf(flag);
  return at < 0 ? undefined : argv[at + 1];
}

const unitText = Deno.readTextFileSync(`${DEPLOY}vmfactory.service`);
const cacheText = Deno.readTextFileSync(`${DEPLOY}vmfactory-cache.service`);

Deno.test("vmfactory.service runs serve with the hardening the daemon can live with", () => {
  const unit = parseUnit(unitText);
  const v = (key: string) => value(unit, "Service", key);
  assert.equal(v("Type"), "simple");
  const [binary, ...argv] = v("ExecStart").split(" ");
  assert.equal(binary, "/usr/local/bin/vmfactory");
  assertServeArgs(argv, "ExecStart");
  assert.equal(v("ExecReload"), "/bin/kill -HUP $MAINPID");
  assert.match(
    v("ExecStartPost"),
    /--unix-socket \/run\/vmfactory\/vmfactory\.sock http:\/\/localhost\/healthz$/,
  );
  assert.equal(v("KillMode"), "process");
  assert.equal(v("KillSignal"), "SIGTERM");
  // the state dir and the template's folder are writable; nothing else is
  assert.equal(v("ProtectSystem"), "strict");
  assert.deepEqual(v("ReadWritePaths").split(" "), ["/run/vmfactory", "/run/vc"]);
  assert.deepEqual(v("RuntimeDirectory").split(" "), ["vmfactory", "vc"]);
  assert.equal(v("PrivateTmp"), "yes");
  assert.equal(v("NoNewPrivileges"), "yes");
  assert.equal(v("DevicePolicy"), "closed");
  assert.deepEqual(values(unit, "Service", "DeviceAllow"), ["/dev/kvm rw"]);
  assert.deepEqual(
    v("CapabilityBoundingSet").split(" ").sort(),
    ["SYS_ADMIN", ...CAPABILITIES].map((c) => `CAP_${c}`).sort(),
  );
  for (const off of ["PrivateDevices", "ProtectKernelModules", "MemoryDenyWriteExecute", "User"]) {
    assert.deepEqual(values(unit, "Service", off), [], `${off} would stop QEMU or the guest build`);
  }
  assert.equal(value(unit, "Install", "WantedBy"), "multi-user.target");
});

Deno.test("vmfactory.service: every group of directives says why in a comment above it", () => {
  const lines = unitText.split("\n");
  const section = lines.indexOf("[Service]");
  let commented = false;
  for (const line of lines.slice(section + 1, lines.indexOf("[Install]"))) {
    if (line.startsWith("#")) commented = true;
    else if (line.trim() === "") commented = false;
    else assert.ok(commented, `no comment above: ${line}`);
  }
});

Deno.test("vmfactory.service agrees with vmfactory-cache.service", () => {
  const unit = parseUnit(unitText);
  const cache = parseUnit(cacheText);
  for (
    const [section, key] of [
      ["Unit", "Documentation"],
      ["Service", "KillMode"],
      ["Service", "KillSignal"],
      ["Service", "Restart"],
      ["Service", "RestartSec"],
      ["Service", "TimeoutStopSec"],
      ["Service", "RuntimeDirectoryMode"],
      ["Service", "RuntimeDirectoryPreserve"],
      ["Service", "UMask"],
      ["Install", "WantedBy"],
    ]
  ) {
    assert.equal(value(unit, section, key), value(cache, section, key), `${section} ${key}`);
  }
  const exec = (u: Map<string, Directive[]>) => value(u, "Service", "ExecStart").split(" ");
  assert.equal(exec(unit)[0], exec(cache)[0], "the same binary");
  assert.equal(optionValue(exec(unit), "--config"), optionValue(exec(cache), "--config"));
  for (const u of [unit, cache]) {
    assert.ok(value(u, "Service", "RuntimeDirectory").split(" ").includes("vmfactory"));
  }
  assert.match(value(unit, "Unit", "After"), /\bvmfactory-cache\.service\b/);
});

const analyze = systemProgram("systemd-analyze");
Deno.test({
  name: `systemd-analyze verify accepts the units${
    analyze
      ? ""
      : " (skipped: no systemd-analyze in /usr/bin, /bin, /usr/sbin, /sbin; Debian package systemd)"
  }`,
  ignore: !analyze,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "vmf-unit-" });
    try {
      // verify checks that ExecStart's programs exist: stand-ins for the ones not installed here
      const stub = `${dir}/stub`;
      await Deno.writeTextFile(stub, "#!/bin/sh\nexit 0\n", { mode: 0o755 });
      for (
        const [name, text] of [["vmfactory.service", unitText], [
          "vmfactory-cache.service",
          cacheText,
        ]]
      ) {
        const programs = [...text.matchAll(/^Exec\w*=-?(\/\S+)/gm)].map((m) => m[1]);
        let patched = text;
        for (const program of new Set(programs)) {
          if (!systemProgram(program.slice(program.lastIndexOf("/") + 1))) {
            patched = patched.replaceAll(program, stub);
          }
        }
        await Deno.writeTextFile(`${dir}/${name}`, patched);
        const out = await new Deno.Command(analyze!, {
          args: ["verify", "--man=no", `${dir}/${name}`],
          stdout: "piped",
          stderr: "piped",
        }).output();
        const said = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
        assert.equal(out.code, 0, said);
        assert.equal(said.trim(), "", `${name}: systemd-analyze verify warns`);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

// --- Kubernetes ----------------------------------------------------------------------------

/** The documents of a YAML file, parsed strictly (an error or warning fails the test). */
function yamlDocuments(path: string): Record<string, unknown>[] {
  const docs = parseAllDocuments(Deno.readTextFileSync(path), { prettyErrors: true });
  const list = Array.isArray(docs) ? docs : [docs];
  for (const doc of list) {
    assert.deepEqual([...doc.errors, ...doc.warnings].map(String), [], path);
  }
  return list.map((doc) => doc.toJS() as Record<string, unknown>);
}

// deno-lint-ignore no-explicit-any
type Json = any;

const manifests = [...Deno.readDirSync(K8S)].map((e) => e.name).filter((n) => n.endsWith(".yaml"))
  .sort();
const byKind = new Map<string, Json>();
for (const name of manifests) {
  for (const doc of yamlDocuments(`${K8S}${name}`)) byKind.set(doc.kind as string, doc);
}
const daemonSet = byKind.get("DaemonSet");
const configMap = byKind.get("ConfigMap");

Deno.test("the Kubernetes manifests are valid objects and kustomize lists them all", () => {
  assert.deepEqual([...byKind.keys()].sort(), ["ConfigMap", "DaemonSet", "Kustomization"]);
  new DaemonSet(daemonSet).validate();
  new ConfigMap(configMap).validate();
  const kustomization = byKind.get("Kustomization");
  assert.equal(kustomization.namespace, "vmfactory");
  assert.deepEqual(
    [...kustomization.resources].sort(),
    manifests.filter((n) => n !== "kustomization.yaml"),
  );
});

Deno.test("the schema check catches a broken DaemonSet (the validator is live)", () => {
  const broken = structuredClone(daemonSet);
  broken.spec.template.spec.containers[0].ports[0].containerPort = "metrics";
  assert.throws(() => new DaemonSet(broken).validate(), /containerPort/);
});

Deno.test("the DaemonSet: serve with its config, state dir on a hostPath, probes on /healthz", () => {
  const pod = daemonSet.spec.template.spec;
  assert.equal(pod.containers.length, 1);
  const [c] = pod.containers;
  const argv: string[] = c.args;
  assert.deepEqual(c.command, ["/usr/local/bin/vmfactory"]);
  assertServeArgs(argv, "DaemonSet args");
  const mountOf = (name: string) => c.volumeMounts.find((m: Json) => m.name === name);
  const volumeAt = (path: string) => {
    const mount = c.volumeMounts.find((m: Json) => m.mountPath === path);
    assert.ok(mount, `a volume is mounted at ${path}`);
    return pod.volumes.find((v: Json) => v.name === mount.name);
  };
  const folder = (path: string) => path.slice(0, path.lastIndexOf("/"));

  // the configuration: the ConfigMap's file where --config says
  const config = optionValue(argv, "--config")!;
  const configVolume = volumeAt(folder(config));
  assert.equal(configVolume.configMap.name, configMap.metadata.name);
  assert.ok(mountOf(configVolume.name).readOnly);
  const fileName = config.slice(config.lastIndexOf("/") + 1);
  const settings: Json = parseToml(configMap.data[fileName]);

  // the state dir is the node's, at the same path
  const stateDir = settings.vmfactory.state_dir;
  const state = volumeAt(stateDir);
  assert.deepEqual(state.hostPath, { path: stateDir, type: "DirectoryOrCreate" });

  // probes: curl on the API socket, GET /healthz; readiness wants a 200 (--fail)
  const socket = `${stateDir}/vmfactory.sock`;
  for (const probe of ["startupProbe", "livenessProbe", "readinessProbe"]) {
    const cmd: string[] = c[probe].exec.command;
    assert.equal(cmd[0], "curl", probe);
    assert.equal(optionValue(cmd, "--unix-socket"), socket, probe);
    assert.equal(cmd.at(-1), "http://localhost/healthz", probe);
    assert.equal(cmd.includes("--fail"), probe === "readinessProbe", `${probe} --fail`);
  }

  // the token: a Secret where --token-file says, readable by its owner only (serve checks)
  const token = optionValue(argv, "--token-file")!;
  const secret = volumeAt(folder(token)).secret;
  assert.ok(secret.secretName);
  assert.equal(secret.defaultMode & 0o077, 0, "no access for group or others");

  // metrics: the scrape annotations name the --listen port, declared on the container
  const port = Number(optionValue(argv, "--listen")!.split(":").at(-1));
  const annotations = daemonSet.spec.template.metadata.annotations;
  assert.equal(annotations["prometheus.io/scrape"], "true");
  assert.equal(annotations["prometheus.io/port"], String(port));
  assert.equal(annotations["prometheus.io/path"], "/metrics");
  assert.deepEqual(c.ports, [{ name: "metrics", containerPort: port, protocol: "TCP" }]);

  // KVM through the device plugin, requested as much as limited (an extended resource)
  const kvm = "devices.kubevirt.io/kvm";
  assert.equal(c.resources.requests[kvm], "1");
  assert.equal(c.resources.limits[kvm], "1");
  assert.ok(c.resources.limits.memory, "a memory limit bounds the VMs");
  assert.equal(c.resources.limits.cpu, undefined, "no CPU limit throttling every VM together");
  assert.ok(pod.tolerations.length > 0);
});

Deno.test("the DaemonSet is not privileged: only the capabilities the daemon needs", () => {
  const pod = daemonSet.spec.template.spec;
  const [c] = pod.containers;
  for (const hostWide of ["hostPID", "hostIPC", "hostNetwork"]) {
    assert.ok(!pod[hostWide], `${hostWide} is not needed`);
  }
  const sc = c.securityContext;
  assert.equal(sc.privileged, false);
  assert.equal(sc.allowPrivilegeEscalation, false);
  assert.equal(sc.readOnlyRootFilesystem, true);
  assert.equal(sc.seccompProfile.type, "RuntimeDefault");
  assert.deepEqual(sc.capabilities.drop, ["ALL"]);
  assert.deepEqual([...sc.capabilities.add].sort(), [...CAPABILITIES].sort());
  assert.ok(!pod.volumes.some((v: Json) => v.hostPath?.path === "/dev/kvm"), "KVM: device plugin");
  // without CAP_SYS_ADMIN there is no tmpfs mount: the template falls back to /dev/shm, which must
  // be big (the runtime's is 64 MiB) and memory-backed; template_path's folder must be writable
  const shm = pod.volumes.find((v: Json) =>
    v.name === c.volumeMounts.find((m: Json) => m.mountPath === "/dev/shm")?.name
  );
  assert.equal(shm?.emptyDir?.medium, "Memory");
  const settings: Json = parseToml(configMap.data["configuration.toml"]);
  const templatePath: string = settings.factory.template_path;
  assert.ok(
    c.volumeMounts.some((m: Json) => templatePath.startsWith(`${m.mountPath}/`) && !m.readOnly),
    `template_path ${templatePath} is on a writable volume`,
  );
  assert.ok(c.volumeMounts.some((m: Json) => m.mountPath === "/tmp"), "gcc's scratch");
});

Deno.test("the ConfigMap's configuration.toml passes vmfactory lint", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmf-k8s-" });
  try {
    const file = `${dir}/configuration.toml`;
    await Deno.writeTextFile(file, configMap.data["configuration.toml"]);
    const res = await runCli(["lint", "--format", "json", file]);
    assert.equal(res.code, 0, res.stdout + res.stderr);
    const findings = JSON.parse(res.stdout).files.flatMap((f: Json) => f.diagnostics);
    assert.deepEqual(
      findings.filter((d: Json) => d.severity !== "info").map((d: Json) => d.rule),
      [],
      "no warning either",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
