/** Rule `key-too-deep`. @module */
import { MAX_KEY_DEPTH } from "../../lib/config/key_depth.ts";
import type { Rule } from "../types.ts";

/** A key or value nested deeper than vmfactory accepts. Found before parsing, not by `check`. */
export const keyTooDeep: Rule = {
  meta: {
    id: "key-too-deep",
    description: `A key or value is nested more than ${MAX_KEY_DEPTH} levels deep.`,
    defaultSeverity: "error",
    docs: {
      explanation:
        `vmfactory refuses a file that nests deeper than ${MAX_KEY_DEPTH} levels: each part of a table ` +
        "header or dotted key, each inline-table key and each array level counts one " +
        "([hypervisor.qemu.factory] enable_template is 4 deep; no Kata key is deeper). Such a file " +
        "is never a real configuration, and walking it would cost time and stack in proportion to " +
        "its depth, so it is rejected before it is parsed and no other rule runs on it. Every " +
        "command that reads the configuration refuses it the same way (exit 2).",
      incorrect: `${Array(MAX_KEY_DEPTH + 1).fill("a").join(".")} = 1\n`,
      correct: "[factory]\nenable_template = true\n",
    },
  },
  check() {
    // Found while parsing (see parseDocument): a file this deep is not parsed at all.
  },
};
