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
import type { VmFolder } from "../vm/vm_store.ts";
import { type TemplateKeeper, TemplateSource } from "./template_source.ts";

/** The pool of prepared clones of one state directory. */
export class ClonePool {
  readonly #factory: VmFactory;

  /** A pool of clones of `keeper`'s template. */
  constructor(readonly keeper: TemplateKeeper) {
    this.#factory = new VmFactory(new TemplateSource(keeper, { pool: false }), { strict: true });
  }

  /** Pooled clones (of `templateId`, or of any template). */
  entries(templateId?: string): VmFolder[] {
    return this.keeper.store.folders(["pooled"]).filter((f) =>
      templateId === undefined || f.status?.templateId === templateId
    );
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
      await Promise.all(
        Array.from({ length: batch }, () => this.#factory.make({}, { as: "pooled", warm: true })),
      );
      made += batch;
    }
    return made;
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
