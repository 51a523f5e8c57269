/**
 * vmfactory library API: QEMU VMs from a template or a cache of booted VMs, behind one factory
 * interface, and the Kata configuration linter. Re-exports only.
 *
 * ```ts
 * import { loadConfig, settingsFrom, TemplateFactory, VmStore } from "./mod.ts";
 * const settings = settingsFrom(await loadConfig({}));
 * const factory = new TemplateFactory(settings, new VmStore(settings.stateDir));
 * const vm = await factory.getVm({ cpus: 1 }); // builds the template on first use
 * ```
 * @module
 */
export { UsageError, VmfactoryError } from "./lib/errors.ts";

// configuration
export {
  ConfigError,
  loadConfig,
  type LoadedConfig,
  mergeSources,
} from "./lib/config/load_config.ts";
export { type Settings, settingsFrom } from "./lib/config/settings.ts";
export { BUILTIN_DEFAULT_TOML } from "./lib/config/builtin_default.ts";

// factories: one interface, composable
export type { FactoryStatus, VmFactory, VmRequest } from "./lib/factory/vm_factory.ts";
export { type BootPlan, resolveBootPlan } from "./lib/factory/boot_plan.ts";
export { DirectFactory } from "./lib/factory/direct_factory.ts";
export {
  SHARED_MEMORY_NOTE,
  TemplateFactory,
  type TemplateFactoryOptions,
} from "./lib/template/template_factory.ts";
export type { TemplateManifest } from "./lib/template/template_manifest.ts";
export {
  CacheClosedError,
  type CacheKeeper,
  cacheVmSource,
  type HandOffInfo,
  VmCache,
  type VmCacheOptions,
} from "./lib/cache/vm_cache.ts";
export {
  CacheClientFactory,
  type CacheClientFactoryOptions,
} from "./lib/cache/cache_client_factory.ts";
export {
  startVmCacheServer,
  type VmCacheServer,
  type VmCacheServerOptions,
} from "./lib/cache/vm_cache_server.ts";
export { CacheStore, reapOrphans } from "./lib/cache/cache_store.ts";
export { CacheClient } from "./lib/cache/cache_client.ts";

// VMs
export { type VmEntry, type VmPaths, VmStore } from "./lib/vm/vm_store.ts";
export type { VmRecord, VmSource, VmTimings } from "./lib/vm/vm_record.ts";

// guest and QEMU
export { buildGuest, type GuestImage } from "./lib/guest/build_guest.ts";
export { AgentClient, waitForAgent } from "./lib/guest/agent_client.ts";
export { AgentError } from "./lib/guest/agent_error.ts";
export { buildQemuArgs, type QemuSpec } from "./lib/qemu/qemu_command.ts";
export { QmpClient, QmpError, waitForQmpSocket } from "./lib/qemu/qmp_client.ts";
export { startQemu, stopQemu } from "./lib/qemu/qemu_process.ts";
export { cachedAccel, resolveAccel } from "./lib/qemu/accel.ts";

// linter
export { formatJson, formatSarif, lintConfig, lintFiles, lintText, rules } from "./lint/mod.ts";
export type { Diagnostic, FileResult, Rule } from "./lint/mod.ts";
