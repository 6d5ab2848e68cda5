/**
 * The chart of a `deno task bench` result: an SVG drawn from the result JSON
 * alone, so any saved result can be drawn again. Two panels: throughput of
 * txpipe against its peers and Kafka's own tools (median bars, min–max
 * whiskers, log scale), and end-to-end latency percentiles per paced rate.
 * No dependencies: plain SVG text. tests/bench_results_test.ts renders one.
 *
 * @module
 */
import type { BenchResult, ContenderSummary, LatencyRow } from "./results.ts";

const WIDTH = 960;
const LABEL_W = 380;
const PLOT_W = WIDTH - LABEL_W - 130;
const ROW_H = 26;
const FONT = `font-family="Helvetica, Arial, sans-serif"`;

/** XML-escaped text. */
function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(
    /"/g,
    "&quot;",
  );
}

/** Short human figure: 950, 12.3k, 1.2M. */
export function shortNumber(n: number): string {
  const trim = (s: string) => s.replace(/\.0$/, "");
  if (n >= 1e6) return `${trim((n / 1e6).toFixed(n >= 1e7 ? 0 : 1))}M`;
  if (n >= 1e3) return `${trim((n / 1e3).toFixed(n >= 1e4 ? 0 : 1))}k`;
  if (n >= 10) return n.toFixed(0);
  return n.toPrecision(2);
}

/** A log10 scale from [lo, hi] (widened to powers of ten) onto [0, length]. */
export function logScale(lo: number, hi: number, length: number) {
  const a = Math.floor(Math.log10(Math.max(lo, 1e-9)));
  const b = Math.max(a + 1, Math.ceil(Math.log10(Math.max(hi, 1e-9))));
  const at = (v: number) => ((Math.log10(Math.max(v, 10 ** a)) - a) / (b - a)) * length;
  const ticks: number[] = [];
  for (let e = a; e <= b; e++) ticks.push(10 ** e);
  return { at, ticks };
}

interface Bar {
  group: string;
  label: string;
  s: ContenderSummary;
}

function throughputPanel(result: BenchResult, top: number): { svg: string; height: number } {
  const bars: Bar[] = [];
  const budget = result.catchUp?.cpusPerInstance;
  const catchUp = "catch-up over the backlog" +
    (budget ? `, each txpipe instance limited to ${budget} cores` : "");
  for (const s of result.catchUp?.contenders ?? []) {
    bars.push({ group: catchUp, label: s.contender, s });
  }
  for (const s of result.producer?.contenders ?? []) {
    bars.push({ group: "produce (acks=all, idempotent)", label: s.contender, s });
  }
  if (bars.length === 0) return { svg: "", height: 0 };
  const values = bars.flatMap((b) => [b.s.recordsPerSecond.min, b.s.recordsPerSecond.max]);
  const scale = logScale(Math.min(...values), Math.max(...values), PLOT_W);
  const out: string[] = [];
  out.push(
    `<text x="20" y="${
      top + 18
    }" font-size="16" font-weight="bold" ${FONT}>Throughput, records/s ` +
      `(log scale): median of ${result.runs} interleaved run(s), whiskers min–max</text>`,
    `<text x="20" y="${top + 34}" font-size="12" fill="#555" ${FONT}>txpipe in blue; the grey ` +
      `figure after each rate is the contender's peak RSS</text>`,
  );
  let y = top + 46;
  const plotTop = y;
  let group = "";
  const rows: string[] = [];
  for (const b of bars) {
    if (b.group !== group) {
      group = b.group;
      rows.push(
        `<text x="20" y="${y + 16}" font-size="13" font-style="italic" fill="#555" ${FONT}>${
          esc(group)
        }</text>`,
      );
      y += ROW_H;
    }
    const txpipe = b.label.startsWith("txpipe");
    const r = b.s.recordsPerSecond;
    const x = (v: number) => LABEL_W + scale.at(v);
    rows.push(
      `<text x="${LABEL_W - 8}" y="${y + 16}" font-size="13" text-anchor="end" ${FONT}>${
        esc(b.label)
      }</text>`,
      `<rect x="${LABEL_W}" y="${y + 4}" width="${Math.max(1, scale.at(r.median)).toFixed(1)}" ` +
        `height="${ROW_H - 8}" fill="${txpipe ? "#1f77b4" : "#aaaaaa"}"/>`,
      `<line x1="${x(r.min).toFixed(1)}" x2="${x(r.max).toFixed(1)}" y1="${y + ROW_H / 2}" y2="${
        y + ROW_H / 2
      }" stroke="#000" stroke-width="1.5"/>`,
      `<text x="${x(r.max) + 6}" y="${y + 17}" font-size="12" ${FONT}>${shortNumber(r.median)}${
        b.s.peakRssBytes
          ? `<tspan fill="#777">\u00a0· ${
            (b.s.peakRssBytes.median / 2 ** 20).toFixed(0)
          } MiB</tspan>`
          : ""
      }</text>`,
    );
    y += ROW_H;
  }
  // Grid lines under the bars.
  for (const t of scale.ticks) {
    const x = LABEL_W + scale.at(t);
    out.push(
      `<line x1="${x.toFixed(1)}" x2="${x.toFixed(1)}" y1="${plotTop}" y2="${y}" stroke="#ddd"/>`,
      `<text x="${x.toFixed(1)}" y="${
        y + 14
      }" font-size="11" text-anchor="middle" fill="#555" ${FONT}>${shortNumber(t)}</text>`,
    );
  }
  out.push(...rows);
  return { svg: out.join("\n"), height: y + 30 - top };
}

function latencyPanel(rows: readonly LatencyRow[], top: number): { svg: string; height: number } {
  if (rows.length === 0) return { svg: "", height: 0 };
  const jobs = [...new Set(rows.map((r) => r.job))];
  const h = 220;
  const panelW = (WIDTH - 80) / jobs.length;
  const all = rows.flatMap((r) => [r.p50Ms, r.p99Ms, r.maxMs]).filter((v) => v > 0);
  const scale = logScale(Math.min(...all), Math.max(...all), h);
  const out: string[] = [
    `<text x="20" y="${top + 18}" font-size="16" font-weight="bold" ${FONT}>End-to-end latency ` +
    `under paced load, ms (log scale): p50 ●, p99 ▲, max ×; red = lag not bounded</text>`,
  ];
  const plotTop = top + 40;
  jobs.forEach((job, j) => {
    const left = 60 + j * panelW;
    const points = rows.filter((r) => r.job === job);
    const xAt = (i: number) => left + ((i + 0.5) / points.length) * (panelW - 40);
    const yAt = (v: number) => plotTop + h - scale.at(v);
    out.push(
      `<text x="${left + (panelW - 40) / 2}" y="${
        plotTop - 4
      }" font-size="13" text-anchor="middle" ${FONT}>${esc(job)}</text>`,
      `<rect x="${left}" y="${plotTop}" width="${
        panelW - 40
      }" height="${h}" fill="none" stroke="#999"/>`,
    );
    for (const t of scale.ticks) {
      out.push(
        `<line x1="${left}" x2="${left + panelW - 40}" y1="${yAt(t).toFixed(1)}" y2="${
          yAt(t).toFixed(1)
        }" stroke="#eee"/>`,
        `<text x="${left - 4}" y="${
          yAt(t) + 4
        }" font-size="10" text-anchor="end" fill="#555" ${FONT}>${shortNumber(t)}</text>`,
      );
    }
    const series: Array<[keyof LatencyRow, string]> = [
      ["p50Ms", "●"],
      ["p99Ms", "▲"],
      ["maxMs", "×"],
    ];
    for (const [field, mark] of series) {
      const pts = points.map((p, i) =>
        `${xAt(i).toFixed(1)},${yAt(p[field] as number).toFixed(1)}`
      );
      out.push(
        `<polyline points="${pts.join(" ")}" fill="none" stroke="#1f77b4" stroke-width="1"/>`,
      );
      points.forEach((p, i) => {
        out.push(
          `<text x="${xAt(i).toFixed(1)}" y="${(yAt(p[field] as number) + 4).toFixed(1)}" ` +
            `font-size="11" text-anchor="middle" fill="${
              p.sustained ? "#1f77b4" : "#d62728"
            }" ${FONT}>${mark}</text>`,
        );
      });
    }
    points.forEach((p, i) => {
      out.push(
        `<text x="${xAt(i).toFixed(1)}" y="${
          plotTop + h + 14
        }" font-size="10" text-anchor="middle" ${FONT}>${shortNumber(p.rate)}/s</text>`,
      );
    });
  });
  out.push(
    `<text x="${WIDTH / 2}" y="${
      plotTop + h + 30
    }" font-size="11" text-anchor="middle" fill="#555" ${FONT}>paced input rate, records/s</text>`,
  );
  return { svg: out.join("\n"), height: h + 80 };
}

/** The whole chart of `result`, as SVG text. */
export function renderChart(result: BenchResult): string {
  const m = result.machine;
  const title = `txpipe benchmark, ${result.date.slice(0, 16).replace("T", " ")} UTC: ${m.cpus} ` +
    `cores (${m.cpuModel}), ${m.memoryGiB} GiB, Kafka ${m.kafka} (3 controllers + 3 brokers on ` +
    `the same machine)`;
  let y = 40;
  const throughput = throughputPanel(result, y);
  y += throughput.height;
  const latency = latencyPanel(result.latency?.rows ?? [], y);
  y += latency.height;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${
      y + 10
    }" viewBox="0 0 ${WIDTH} ${y + 10}">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="20" y="24" font-size="13" fill="#333" ${FONT}>${esc(title)}</text>`,
    throughput.svg,
    latency.svg,
    `</svg>`,
    "",
  ].join("\n");
}
