/**
 * The benchmark's chart: a hand-written SVG dot plot, one row per path, on a log time axis:
 * every sample as a faint dot, a bar up to the p50, a tick at the p95, and the target lines.
 * @module
 */

/** One row of the chart. */
export interface ChartRow {
  /** Row label. */
  label: string;
  /** Samples in ms. */
  samples: number[];
  /** Median in ms. */
  p50: number;
  /** 95th percentile in ms. */
  p95: number;
}

/** A vertical reference line. */
export interface ChartMark {
  /** Where, in ms. */
  ms: number;
  /** Its label. */
  label: string;
}

const escape = (s: string) =>
  s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");

function fmtMs(ms: number): string {
  if (ms >= 1000) return `${+(ms / 1000).toPrecision(3)} s`;
  return `${+ms.toPrecision(3)} ms`;
}

/** The SVG text of the chart for `rows`, with `marks` as dashed lines. */
export function benchChart(title: string, rows: ChartRow[], marks: ChartMark[]): string {
  const left = 270, right = 40, top = 50, rowH = 34, width = 960;
  const height = top + rows.length * rowH + 50 + 14 * Math.max(0, marks.length - 1);
  const all = rows.flatMap((r) => r.samples).filter((v) => v > 0);
  const lo = Math.floor(Math.log10(Math.min(1, ...all)));
  const hi = Math.ceil(Math.log10(Math.max(10, ...all)));
  const x = (ms: number) =>
    left + (Math.log10(Math.max(ms, 10 ** lo)) - lo) / (hi - lo) * (width - left - right);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${left}" y="22" font-size="15" font-weight="bold">${escape(title)}</text>`,
    `<text x="${left}" y="38" fill="#555">bar: p50, black tick: p95, dots: samples (log scale)</text>`,
  ];
  const bottom = top + rows.length * rowH;
  for (let e = lo; e <= hi; e++) {
    const gx = x(10 ** e).toFixed(1);
    out.push(
      `<line x1="${gx}" y1="${top}" x2="${gx}" y2="${bottom}" stroke="#ddd"/>`,
      `<text x="${gx}" y="${bottom + 16}" text-anchor="middle" fill="#333">${
        fmtMs(10 ** e)
      }</text>`,
    );
  }
  marks.forEach((m, i) => {
    const mx = x(m.ms).toFixed(1);
    const ly = bottom + 32 + 14 * i; // one line per mark: close marks do not overlap
    out.push(
      `<line x1="${mx}" y1="${top - 4}" x2="${mx}" y2="${bottom}" stroke="#c33" ` +
        `stroke-dasharray="4 3"/>`,
      `<text x="${mx}" y="${ly}" text-anchor="middle" fill="#c33">${escape(m.label)}</text>`,
    );
  });
  rows.forEach((r, i) => {
    const cy = top + i * rowH + rowH / 2;
    out.push(
      `<text x="${left - 8}" y="${cy + 4}" text-anchor="end">${escape(r.label)}</text>`,
      `<rect x="${left}" y="${cy - 7}" width="${(x(r.p50) - left).toFixed(1)}" height="14" ` +
        `fill="#4a7fc1" opacity="0.55"/>`,
      `<line x1="${x(r.p95).toFixed(1)}" y1="${cy - 10}" x2="${x(r.p95).toFixed(1)}" ` +
        `y2="${cy + 10}" stroke="black" stroke-width="2"/>`,
      ...r.samples.map((s) =>
        `<circle cx="${x(s).toFixed(1)}" cy="${cy}" r="2.5" fill="#123" opacity="0.35"/>`
      ),
      `<text x="${(x(r.p95) + 6).toFixed(1)}" y="${cy - 9}" fill="#333" font-size="10">${
        fmtMs(r.p50)
      } / ${fmtMs(r.p95)}</text>`,
    );
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}
