/**
 * The linter's bench phase: `vmfactory lint` as a user runs it (a subprocess of cmd/main.ts
 * through `deno run -A`), over one file and over every file of the real Kata corpus (the tests'
 * `kataConfigsDir`, else their own `test/configs`; drop-ins are linted with their main file, not
 * alone), each timed spawn → exit. Both are read against the run's bare `deno run`.
 * @module
 */
import { kataConfigsDir, OWN_CONFIGS_DIR, tomlFiles } from "../test/lint_helpers.ts";
import { type BenchRun, f1, type Stats, stats } from "./_bench_run.ts";

/** The lint phase's figures. */
export interface LintResult {
  /** Where the files came from. */
  corpus: string;
  /** How many files "all" lints. */
  files: number;
  /** `lint FILE` of the corpus's first file, spawn → exit. */
  one: Stats;
  /** `lint FILE...` of every file in one run, spawn → exit. */
  all: Stats;
}

/** Times `n` runs (after one untimed warm-up) of `vmfactory lint` over one file and over all. */
export async function lintRuns(run: BenchRun, root: string, n: number): Promise<LintResult> {
  const corpus = kataConfigsDir() ?? OWN_CONFIGS_DIR;
  const files = tomlFiles(corpus);
  const time = async (args: string[]) => {
    const out: number[] = [];
    for (let i = -1; i < n; i++) {
      const t0 = performance.now();
      // exit 1 means findings: the real corpus has some; anything else is a failure
      const { code, stderr } = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", `${root}cmd/main.ts`, "lint", "--format", "json", ...args],
        cwd: run.dir,
        stdout: "null",
        stderr: "piped",
      }).output();
      if (code > 1) {
        throw new Error(`Cannot lint: exit ${code}: ${new TextDecoder().decode(stderr)}`);
      }
      if (i >= 0) out.push(performance.now() - t0);
    }
    return stats(out);
  };
  const one = await time([files[0]]);
  const all = await time(files);
  run.say(
    `  lint of 1 file: p50 ${f1(one.p50)} ms; of ${files.length} files: p50 ${f1(all.p50)} ms`,
  );
  return { corpus, files: files.length, one, all };
}
