/**
 * A small, self-contained SVG line chart (no dependencies): a few series of
 * (x, y) points on shared axes, a legend and a title. Enough for a tuning
 * curve (threshold → precision and recall) in the docs.
 *
 * @module
 */

/** One line of the chart; a null y leaves a gap. */
export interface ChartSeries {
  name: string;
  points: ReadonlyArray<readonly [number, number | null]>;
  /** Dashed instead of solid. */
  dashed?: boolean;
}

/** What {@link lineChart} draws. */
export interface LineChart {
  title: string;
  xLabel: string;
  yLabel: string;
  series: readonly ChartSeries[];
  /** The y axis range (a little room is left around it); default 0 to 1. */
  yMin?: number;
  yMax?: number;
  /** How a y tick is labelled; default a percentage. */
  yFormat?: (y: number) => string;
  /** Width of the plot area (the legend's room is added); default 520. */
  plotWidth?: number;
  height?: number;
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

/** The SVG document of `chart`. */
export function lineChart(chart: LineChart): string {
  const longest = Math.max(0, ...chart.series.map((s) => s.name.length));
  const m = { left: 64, right: 56 + 7 * longest, top: 40, bottom: 52 };
  const plotW = chart.plotWidth ?? 520;
  const width = m.left + plotW + m.right;
  const height = chart.height ?? 420;
  const yMin = chart.yMin ?? 0;
  const yMax = chart.yMax ?? 1;
  const yFormat = chart.yFormat ?? ((y: number) => `${Math.round(y * 100)}%`);
  const plotH = height - m.top - m.bottom;
  const xs = chart.series.flatMap((s) => s.points.map(([x]) => x));
  const xMin = xs.length > 0 ? Math.min(...xs) : 0;
  const xMax = xs.length > 0 ? Math.max(...xs) : 1;
  const sx = (x: number) =>
    m.left + (xMax === xMin ? plotW / 2 : ((x - xMin) / (xMax - xMin)) * plotW);
  // 4% of the range as room above and below, so a line at either end stays visible.
  const span = yMax - yMin || 1;
  const [lo, hi] = [yMin - 0.04 * span, yMax + 0.04 * span];
  const sy = (y: number) => m.top + plotH - ((y - lo) / (hi - lo)) * plotH;
  const n = (v: number) => Number(v.toFixed(1));

  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<desc>${escape(chart.title)}; drawn by jobs/lib/svg_chart.ts</desc>`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="15">${
      escape(chart.title)
    }</text>`,
  ];
  for (let i = 0; i <= 4; i++) {
    const y = yMin + ((yMax - yMin) * i) / 4;
    out.push(
      `<line x1="${m.left}" x2="${m.left + plotW}" y1="${n(sy(y))}" y2="${n(sy(y))}" ` +
        `stroke="#dddddd"/>`,
      `<text x="${m.left - 8}" y="${n(sy(y)) + 4}" text-anchor="end">${escape(yFormat(y))}</text>`,
    );
  }
  for (const x of xTicks([...new Set(xs)].sort((a, b) => a - b))) {
    out.push(
      `<line x1="${n(sx(x))}" x2="${n(sx(x))}" y1="${m.top + plotH}" y2="${m.top + plotH + 5}" ` +
        `stroke="#333333"/>`,
      `<text x="${n(sx(x))}" y="${m.top + plotH + 18}" text-anchor="middle">${
        escape(formatTick(x))
      }</text>`,
    );
  }
  out.push(
    `<rect x="${m.left}" y="${m.top}" width="${plotW}" height="${plotH}" fill="none" ` +
      `stroke="#333333"/>`,
    `<text x="${m.left + plotW / 2}" y="${height - 12}" text-anchor="middle">${
      escape(chart.xLabel)
    }</text>`,
    `<text transform="translate(16 ${m.top + plotH / 2}) rotate(-90)" text-anchor="middle">${
      escape(chart.yLabel)
    }</text>`,
  );
  chart.series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const dash = s.dashed ? ` stroke-dasharray="6 4"` : "";
    // Earlier series are drawn wider, so one hidden under a later one still shows.
    const stroke = 2 + 1.5 * (chart.series.length - 1 - i);
    for (const run of segments(s.points)) {
      const pts = run.map(([x, y]) => `${n(sx(x))},${n(sy(y))}`).join(" ");
      out.push(
        `<polyline points="${pts}" fill="none" stroke="${color}" stroke-width="${stroke}"${dash}/>`,
      );
      for (const [x, y] of run) {
        out.push(`<circle cx="${n(sx(x))}" cy="${n(sy(y))}" r="3" fill="${color}"/>`);
      }
    }
    const ly = m.top + 10 + i * 20;
    const lx = m.left + plotW + 16;
    out.push(
      `<line x1="${lx}" x2="${lx + 24}" y1="${ly}" y2="${ly}" stroke="${color}" ` +
        `stroke-width="${stroke}"${dash}/>`,
      `<text x="${lx + 30}" y="${ly + 4}">${escape(s.name)}</text>`,
    );
  });
  out.push("</svg>", "");
  return out.join("\n");
}

/** The runs of consecutive points with a y, each at least one point. */
function segments(
  points: ReadonlyArray<readonly [number, number | null]>,
): Array<Array<[number, number]>> {
  const runs: Array<Array<[number, number]>> = [];
  let run: Array<[number, number]> = [];
  for (const [x, y] of [...points].sort((a, b) => a[0] - b[0])) {
    if (y === null || !Number.isFinite(y)) {
      if (run.length > 0) runs.push(run);
      run = [];
    } else run.push([x, y]);
  }
  if (run.length > 0) runs.push(run);
  return runs;
}

/** Every x when there are at most 12, else about 10 of them, evenly picked. */
function xTicks(sorted: number[]): number[] {
  if (sorted.length <= 12) return sorted;
  const step = Math.ceil(sorted.length / 10);
  return sorted.filter((_, i) => i % step === 0 || i === sorted.length - 1);
}

function formatTick(x: number): string {
  return Number.isInteger(x) ? String(x) : String(Number(x.toPrecision(4)));
}

function escape(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;");
}
