/**
 * The linter's bench phase: `vmfactory lint` as a user runs it (a subprocess of cmd/main.ts
 * through `deno run -A`), over one file and over every file of the real Kata corpus
 * (`VMFACTORY_KATA_CONFIGS`, else `shared/kata-configs` beside the project, else the project's
 * own `test/configs`), each timed spawn → exit. Both are read against the run's bare `deno run`.
 * @module
 */
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

/** `.toml` files under `dir`, sorted, recursively (drop-in folders included). */
function tomlFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync(dir)) {
    const path = `${dir}/${e.name}`;
    if (e.isDirectory) out.push(...tomlFiles(path));
    else if (e.isFile && e.name.endsWith(".toml")) out.push(path);
  }
  return out.sort();
}

/** The first folder of configuration files that exists. */
function corpusDir(root: string): string {
  const candidates = [
    Deno.env.get("VMFACTORY_KATA_CONFIGS"),
    new URL("../shared/kata-configs", `file://${root}`).pathname,
    `${root}test/configs`,
  ];
  for (const dir of candidates) {
    if (!dir) continue;
    try {
      if (Deno.statSync(dir).isDirectory) return dir;
    } catch { /* absent */ }
  }
  throw new Error(`Cannot find configuration files to lint: tried ${candidates.join(", ")}`);
}

/** Times `n` runs (after one untimed warm-up) of `vmfactory lint` over one file and over all. */
export async function lintRuns(run: BenchRun, root: string, n: number): Promise<LintResult> {
  const corpus = corpusDir(root);
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
