/**
 * The factory a configuration enables: template clones (`enable_template`), VMs fetched from a
 * VMCache server (`vm_cache_number > 0`), else cold boots; each falls back to a cold boot (with
 * the reason) unless strict. Sources load lazily: `vm create` never loads what it does not use.
 * @module
 */
import type { Settings } from "../config/settings.ts";
import type { VmStore } from "../vm/vm_store.ts";
import type { WorkloadOptions } from "./workload.ts";
import { VmFactory } from "./vm_factory.ts";

/** Options of {@link factoryFor}. */
export interface FactoryForOptions {
  /** Templating: fail instead of cold-booting a request the template cannot serve. */
  strict?: boolean;
  /** VMCache: cold-boot (with a warning) when the server cannot serve, instead of failing. */
  fallback?: boolean;
  /** Warnings and notices (one line each). */
  log?: (line: string) => void;
}

/**
 * The factory `settings` enable, over folders of `store`.
 * @example
 * ```ts
 * const settings = settingsFrom(await loadConfig({}));
 * const factory = await factoryFor(settings, new VmStore(settings.stateDir), { strict: true });
 * const vm = await factory.getVm({ memoryMiB: 512 });
 * ```
 */
export async function factoryFor(
  settings: Settings,
  store: VmStore,
  options: FactoryForOptions = {},
): Promise<VmFactory> {
  const log = options.log ?? console.error;
  const direct = async () =>
    (await import("./direct_source.ts")).directSourceFor(settings, store, { onNotice: log });
  const workload = workloadOptions(settings, store, log);
  if (settings.enableTemplate) {
    const { TemplateManager } = await import("../template/template_manager.ts");
    const source = new TemplateManager(settings, store, { log }).source();
    return new VmFactory(source, {
      strict: options.strict,
      fallback: direct,
      log,
      workload,
    });
  }
  if (settings.vmCacheNumber > 0) {
    const { VmCacheFetchSource } = await import("../cache/vmcache_source.ts");
    return new VmFactory(new VmCacheFetchSource(settings, store, { log }), {
      strict: !options.fallback,
      strictHint: " (--fallback cold-boots instead)",
      fallback: direct,
      log,
      workload,
    });
  }
  return new VmFactory(await direct(), { log, workload });
}

/** Workloads of the VMs of `store`: images cached in the state dir, networks apart from its VMs'. */
export function workloadOptions(
  settings: Settings,
  store: VmStore,
  log: (line: string) => void,
): WorkloadOptions {
  return {
    imageCacheDir: `${settings.stateDir}/images`,
    takenNetworks: () =>
      Promise.resolve(
        store.folders(["owned"]).flatMap((f) => f.record?.network ? [f.record.network] : []),
      ),
    onProgress: log,
  };
}
