/** Rule `toml-syntax`. @module */
import type { Rule } from "../types.ts";

/** The file is not valid TOML (including a key defined twice). Reported by the parser, not `check`. */
export const tomlSyntax: Rule = {
  meta: {
    id: "toml-syntax",
    description: "The file is not valid TOML (syntax error or a key defined twice).",
    defaultSeverity: "error",
    docs: {
      explanation:
        "Kata refuses to start with a configuration file that is not valid TOML, and no other rule can check it. " +
        "A key defined twice (also through a dotted key or an inline table) is invalid TOML too.",
      incorrect: "[factory]\nenable_template = true\nenable_template = false\n",
      correct: "[factory]\nenable_template = true\n",
    },
  },
  check() {
    // Syntax errors are found while parsing (see parseDocument); nothing to check afterwards.
  },
};
