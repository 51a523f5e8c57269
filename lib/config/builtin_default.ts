/**
 * The configuration vmfactory uses when no Kata configuration file exists.
 * @module
 */

/** The QEMU binary Kata (and vmfactory) use when `[hypervisor.qemu]` sets no `path`. */
export const DEFAULT_QEMU_PATH = "/usr/bin/qemu-system-x86_64";

/** The Debian package that provides {@link DEFAULT_QEMU_PATH}. */
export const QEMU_PACKAGE = "qemu-system-x86";

/** Path shown for the built-in default in findings and `LoadedConfig.sources`. */
export const BUILTIN_PATH = "<builtin>";

/**
 * The built-in default configuration as TOML text. It lints clean except for the
 * `template-shares-memory` note; the QEMU binary's `x-ignore-shared` support is checked by the
 * factory on this host before it builds a template, so that lint rule is suppressed here.
 */
export const BUILTIN_DEFAULT_TOML =
  `# vmfactory built-in default (used when no Kata configuration file exists)
[hypervisor.qemu]
# The factory probes this binary for x-ignore-shared before it builds a template.
# vmfactory-lint-ignore template-requires-qemu-lite
path = "${DEFAULT_QEMU_PATH}"
default_memory = 256
default_vcpus = 1
default_maxvcpus = 4
memory_slots = 4
machine_type = "pc"
shared_fs = "none"

[factory]
enable_template = true
template_path = "/run/vc/vm/template"
vm_cache_number = 0

[vmfactory]
guest = "builtin"
accel = "auto"
pool_size = 2
`;
