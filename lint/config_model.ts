/**
 * The view of a configuration the rules query: one file, or a main file merged with its
 * drop-ins (later files win per key; each entry keeps the file and line that set it).
 * @module
 */
import type { Entry, ParsedDocument, TableDef } from "./parse_document.ts";

const join = (p: readonly string[]) => p.join("\u0000");

/** Tables that exist only in Kata 1.x configuration files. */
const KATA1_TABLES = new Set(["proxy", "shim", "netmon"]);

/** Merged keys and tables of one or more parsed files. Build it from syntax-error-free files. */
export class ConfigModel {
  readonly #entries = new Map<string, Entry>();
  readonly #tables = new Map<string, TableDef>();
  /** The `[hypervisor.<name>]` in use (QEMU when several), if any. */
  readonly hypervisorName: string | undefined;

  constructor(documents: readonly ParsedDocument[]) {
    for (const doc of documents) {
      for (const t of doc.tables) {
        const id = join(t.keyPath);
        if (!this.#tables.has(id)) this.#tables.set(id, t);
      }
      for (const e of doc.entries) {
        const id = join(e.keyPath);
        this.#entries.delete(id); // re-insert: keep the order files set keys in
        this.#entries.set(id, e);
      }
    }
    const names = [...this.#tables.values()]
      .filter((t) => t.keyPath.length === 2 && t.keyPath[0] === "hypervisor")
      .map((t) => t.keyPath[1]);
    this.hypervisorName = names.includes("qemu") ? "qemu" : names[0];
  }

  /** The winning entry for `keyPath`. */
  get(keyPath: readonly string[]): Entry | undefined {
    return this.#entries.get(join(keyPath));
  }

  /** Every winning entry. */
  entries(): Entry[] {
    return [...this.#entries.values()];
  }

  /** Where a table was first defined. */
  table(keyPath: readonly string[]): TableDef | undefined {
    return this.#tables.get(join(keyPath));
  }

  /** Every table, first definitions. */
  tables(): TableDef[] {
    return [...this.#tables.values()];
  }

  /** A key of the hypervisor table in use. */
  hypervisor(key: string): Entry | undefined {
    return this.hypervisorName === undefined
      ? undefined
      : this.get(["hypervisor", this.hypervisorName, key]);
  }

  /** A factory key: `[hypervisor.<name>.factory]` (runtime-rs) wins over `[factory]` (Go). */
  factory(key: string): Entry | undefined {
    return (this.hypervisorName !== undefined
      ? this.get(["hypervisor", this.hypervisorName, "factory", key])
      : undefined) ?? this.get(["factory", key]);
  }

  /** A key of our `[vmfactory]` table. */
  vmfactory(key: string): Entry | undefined {
    return this.get(["vmfactory", key]);
  }

  /** A string value, or undefined when absent, empty or not a string. */
  text(entry: Entry | undefined): string | undefined {
    return typeof entry?.value === "string" && entry.value !== "" ? entry.value : undefined;
  }

  /** The `enable_template = true` entry when templating is on. */
  get templating(): Entry | undefined {
    const e = this.factory("enable_template");
    return e?.value === true ? e : undefined;
  }

  /** The `vm_cache_number` entry when VMCache is on (> 0). */
  get vmCache(): Entry | undefined {
    const e = this.factory("vm_cache_number");
    return (typeof e?.value === "number" || typeof e?.value === "bigint") && e.value > 0
      ? e
      : undefined;
  }

  /** `[vmfactory] guest = "builtin"`: the tool supplies kernel and initrd. */
  get builtinGuest(): boolean {
    return this.vmfactory("guest")?.value === "builtin";
  }

  /** The file has Kata 1.x tables (`[proxy.*]`, `[shim.*]`, `[netmon]`). */
  get kata1Style(): boolean {
    return this.tables().some((t) => KATA1_TABLES.has(t.keyPath[0]));
  }
}
