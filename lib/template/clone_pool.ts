/**
 * The warm pool: clones made ahead of time for the current template, so that a request only has
 * to make one unique. Each is made by the one factory from the template source (started, loaded,
 * resumed, personalized and warmed once through the agent: under TCG the first run of each guest
 * code path costs tens of ms) and committed `pooled`; its agent then sleeps until a host connects
 * (an idle clone uses ~1% of a core). Pooled folders live in the state directory, so any process
 * may claim one ({@link VmStore.claim}); the factory makes the claimed clone unique.
 * @module
 */
import { VmFactory } from "../factory/vm_factory.ts";
import type { VmRecord } from "../vm/vm_record.ts";
import type { VmFolder } from "../vm/vm_store.ts";
import { type TemplateKeeper, TemplateSource } from "./template_source.ts";

/** The pool of prepared clones of one state directory. */
export class ClonePool {
  readonly #factory: VmFactory;

  /** A pool of clones of `keeper`'s template. */
  constructor(readonly keeper: TemplateKeeper) {
    this.#factory = new VmFactory(new TemplateSource(keeper, { pool: false }), { strict: true });
  }

  /** Pooled clones (of `templateId`, or of any template), from the store's pool index. */
  entries(templateId?: string): VmFolder[] {
    return this.keeper.store.pooled(templateId);
  }

  /**
   * Makes clones until `size` are pooled for `templateId`, two at a time, after removing what dead
   * processes left. Call holding the pool lock (one refill at a time). Returns how many it made.
   */
  async topUp(templateId: string, size: number): Promise<number> {
    await this.keeper.store.reap();
    const have = this.entries(templateId).length;
    let made = 0;
    while (have + made < size) {
      const batch = Math.min(2, size - have - made);
      await Promise.all(Array.from({ length: batch }, () => this.add()));
      made += batch;
    }
    return made;
  }

  /**
   * Makes one pooled clone of the keeper's current template (its source refuses a stale or
   * missing one: the call then rejects). Callers decide how many and how many at once: `topUp`,
   * or the daemon's pool governor.
   */
  add(): Promise<VmRecord> {
    return this.#factory.make({}, { as: "pooled", warm: true });
  }

  /** Stops and removes up to `count` pooled clones of `templateId`, newest first; returns how many. */
  async shrink(templateId: string, count: number): Promise<number> {
    const newest = this.entries(templateId).sort((a, b) =>
      (b.status?.since ?? "").localeCompare(a.status?.since ?? "")
    );
    let stopped = 0;
    for (const entry of newest) {
      if (stopped >= count) break;
      if (await this.keeper.store.remove(entry.paths.id, ["pooled"])) stopped++;
    }
    return stopped;
  }

  /** Stops and removes pooled clones (all, or those not of `keepTemplateId`); returns how many. */
  async drain(keepTemplateId?: string): Promise<number> {
    await this.keeper.store.reap();
    let stopped = 0;
    for (const entry of this.entries()) {
      if (entry.status?.templateId === keepTemplateId) continue;
      if (await this.keeper.store.remove(entry.paths.id, ["pooled"])) stopped++;
    }
    return stopped;
  }
}
