/**
 * vmfactory library API: QEMU VMs from a template, a cache of booted VMs, or a cold boot, all
 * through one factory; the VM store; the guest agent client; the Kata configuration linter.
 * Re-exports only; everything else is internal.
 *
 * ```ts
 * import { factoryFor, loadConfig, settingsFrom, VmStore } from "./mod.ts";
 * const settings = settingsFrom(await loadConfig({}));
 * const store = new VmStore(settings.stateDir);
 * const factory = await factoryFor(settings, store); // the factory the configuration enables
 * const vm = await factory.getVm({ cpus: 1 }); // builds the template on first use
 * await store.remove(vm.id, ["owned"]);
 * ```
 * @module
 */
export { UsageError, VmfactoryError } from "./lib/errors.ts";

// configuration
export { ConfigError, loadConfig, type LoadedConfig } from "./lib/config/load_config.ts";
export { type Settings, settingsFrom } from "./lib/config/settings.ts";

// the one factory, and the sources it composes over
export { factoryFor, type FactoryForOptions } from "./lib/factory/factory_for.ts";
export { type FactoryStatus, VmFactory, type VmFactoryOptions } from "./lib/factory/vm_factory.ts";
export {
  type SourceShape,
  type SourceSupply,
  SourceUnfitError,
  type SourceVm,
  type VmRequest,
  type VmSource,
} from "./lib/factory/vm_source.ts";
export { DirectSource, directSourceFor } from "./lib/factory/direct_source.ts";
export { TemplateManager } from "./lib/template/template_manager.ts";
export { startVmCacheServer, type VmCacheServer } from "./lib/cache/vm_cache_server.ts";

// VMs
export { type FolderState, type PendingVm, type VmEntry, VmStore } from "./lib/vm/vm_store.ts";
export type { VmOrigin, VmRecord, VmTimings } from "./lib/vm/vm_record.ts";
export { AgentClient } from "./lib/guest/agent_client.ts";
export { AgentError } from "./lib/guest/agent_error.ts";

// workloads: container images
export {
  type ImageConfig,
  type PreparedImage,
  prepareImage,
  type PrepareImageOptions,
} from "./lib/image/prepare_image.ts";
export type { VmImage, VmNetwork } from "./lib/vm/vm_record.ts";
export { type ExecSettings, execSettingsFor } from "./lib/vm/exec_settings.ts";

// the daemon's HTTP API
export {
  type ApiBackend,
  type ApiServer,
  type ApiServerOptions,
  startApiServer,
} from "./lib/server/api_server.ts";
export { VmApiBackend } from "./lib/server/vm_backend.ts";

// linter
export { formatJson, formatSarif, lintConfig, lintFiles, lintText, rules } from "./lint/mod.ts";
export type { Diagnostic, FileResult, Rule } from "./lint/mod.ts";
