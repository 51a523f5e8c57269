/** `vmfactory factory init|destroy|status`. @module */
import { UsageError } from "../lib/errors.ts";
import type { Settings } from "../lib/config/settings.ts";
import { type CommandContext, commandContext, ms, requireLintClean, say } from "./_context.ts";

/**
 * Lints the effective configuration with probing on and, for templating, proves that the QEMU
 * binary supports `x-ignore-shared`; throws (exit 2) with the findings.
 */
async function requireCleanConfig(
  configPath: string | undefined,
  ctx: CommandContext,
): Promise<void> {
  // proved here as well as by the lint rule: a suppression comment must not skip this check
  const { probeIgnoreShared } = await import("../lint/mod.ts");
  if (ctx.settings.enableTemplate && !(await probeIgnoreShared(ctx.settings.qemuPath))) {
    throw new UsageError(
      "initialize the template",
      `${ctx.settings.qemuPath} does not support the migration capability x-ignore-shared (QEMU >= 4.1 does)`,
    );
  }
  await requireLintClean(ctx, configPath, { probe: true });
}

async function templateFactory(ctx: CommandContext, signal?: AbortSignal) {
  const { TemplateManager } = await import("../lib/template/template_manager.ts");
  const started = new Map<string, number>();
  let last: string | undefined;
  const phase = (name: string) => {
    const now = performance.now();
    if (last) say(`  ${last}: ${ms(now - started.get(last)!)}`);
    started.set(name, now);
    last = name;
    if (name) say(`${name} ...`);
  };
  return {
    factory: new TemplateManager(ctx.settings, ctx.store, {
      log: say,
      hooks: {
        onPhase: phase,
        onProgress: (p, detail) => phase(`guest: ${p}${detail ? ` (${detail})` : ""}`),
        onNotice: say,
        signal,
      },
    }),
    endPhases: () => phase(""),
  };
}

function mode(settings: Settings): "template" | "cache" | "none" {
  if (settings.enableTemplate) return "template";
  if (settings.vmCacheNumber > 0) return "cache";
  return "none";
}

/** `factory init`. */
export async function runFactoryInit(opts: { force?: boolean; config?: string }): Promise<number> {
  const ctx = await commandContext(opts);
  const which = mode(ctx.settings);
  if (which === "none") {
    throw new UsageError(
      "initialize the factory",
      "neither [factory] enable_template = true nor vm_cache_number > 0 is set",
    );
  }
  await requireCleanConfig(opts.config, ctx);
  if (which === "cache") {
    const { runCacheServer } = await import("../lib/cache/vm_cache_server.ts");
    return await runCacheServer(ctx.settings, ctx.store, { log: say });
  }
  const { SHARED_MEMORY_NOTE } = await import("../lib/template/template_manager.ts");
  const abort = new AbortController();
  const onSignal = () => abort.abort();
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    const { factory, endPhases } = await templateFactory(ctx, abort.signal);
    const start = performance.now();
    const res = await factory.init({ force: opts.force });
    endPhases();
    if (res.outcome === "exists") {
      say(`template already initialized in ${res.dir} (id ${res.manifest.id}); nothing to do`);
    } else {
      say(
        `template ${res.manifest.id} built in ${res.dir} in ${ms(performance.now() - start)}` +
          ` (state ${
            (res.manifest.stateBytes / 1e6).toFixed(2)
          } MB, ${res.manifest.shape.memoryMiB} MiB RAM)`,
      );
    }
    say(SHARED_MEMORY_NOTE);
    return 0;
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }
}

/** `factory refill` (hidden): tops the clone pool up; `vm create` runs it in the background. */
export async function runFactoryRefill(opts: { config?: string }): Promise<number> {
  const ctx = await commandContext(opts);
  if (!ctx.settings.enableTemplate) return 0;
  const { factory } = await templateFactory(ctx);
  await factory.refill();
  return 0;
}

/** `factory destroy`. */
export async function runFactoryDestroy(opts: { config?: string }): Promise<number> {
  const ctx = await commandContext(opts);
  if (ctx.settings.vmCacheNumber > 0 && !ctx.settings.enableTemplate) {
    const { destroyCache } = await import("../lib/cache/vm_cache_server.ts");
    return await destroyCache(ctx.settings, ctx.store, { log: say });
  }
  const { factory } = await templateFactory(ctx);
  const res = await factory.destroy();
  say(res.removed ? "template removed" : "no template to remove");
  if (res.runningClones) {
    say(`${res.runningClones} clone(s) still run and keep working (their memory stays mapped)`);
  }
  return 0;
}

/** `factory status`. */
export async function runFactoryStatus(opts: { json?: boolean; config?: string }): Promise<number> {
  const ctx = await commandContext(opts);
  const which = mode(ctx.settings);
  let status: Record<string, unknown>;
  if (which === "cache") {
    const { cacheStatus } = await import("../lib/cache/vm_cache_server.ts");
    status = await cacheStatus(ctx.settings);
  } else {
    const { factory } = await templateFactory(ctx);
    status = which === "template" || ctx.settings.enableTemplate
      ? await factory.status()
      : { kind: "direct", enabled: true, note: "no factory enabled: vm create cold-boots" };
  }
  const { confinement } = await import("../lib/qemu/confinement.ts");
  status = { ...status, confinement: confinement() };
  if (opts.json) {
    console.log(JSON.stringify(status, null, 2));
    return 0;
  }
  for (const [key, value] of Object.entries(status)) {
    const text = Array.isArray(value)
      ? (value.length
        ? "\n  - " + value.map((v) => typeof v === "object" ? JSON.stringify(v) : v).join("\n  - ")
        : "none")
      : typeof value === "object" && value !== null
      ? JSON.stringify(value)
      : String(value);
    console.log(`${key.padEnd(14)} ${text}`);
  }
  return 0;
}
