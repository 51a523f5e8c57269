/** `vmfactory guest build`. @module */
import { buildGuest } from "../lib/guest/build_guest.ts";
import { commandContext, ms, say } from "./_context.ts";

/** Builds (or finds cached) the built-in guest and prints where it is. */
export async function runGuestBuild(
  opts: { kernel?: string; json?: boolean; config?: string },
): Promise<number> {
  const { settings } = await commandContext(opts);
  const start = performance.now();
  const image = await buildGuest({
    stateDir: settings.stateDir,
    kernel: opts.kernel,
    onProgress: (phase, detail) => say(`guest: ${phase}${detail ? ` (${detail})` : ""}`),
  });
  const elapsed = performance.now() - start;
  if (opts.json) console.log(JSON.stringify({ ...image, elapsedMs: Math.round(elapsed) }, null, 2));
  else {
    console.log(`kernel  ${image.kernel}\ninitrd  ${image.initrd}\nappend  ${image.append}`);
    say(`guest ${image.hash} (Linux ${image.kernelVersion}) ready in ${ms(elapsed)}`);
  }
  return 0;
}
