/**
 * The live one-screen summary of `deno task start`, as a pure function of
 * the samples scraped from the four jobs' /metrics: what it shows can be
 * tested without running anything.
 *
 * A figure nobody has computed yet is shown as `—`, never as 0: precision
 * until the evaluator has judged an anomaly, recall until a fraud instance
 * has settled (the evaluator counts an instance --settle after its last
 * record, so that a pattern still unfolding is not a miss).
 *
 * @module
 */
import { formatCount } from "./progress.ts";
import { type Sample, sum, sumBy } from "./scrape.ts";

/** Shown for a figure that has no data yet. */
export const NO_DATA = "—";

/** The samples of each job's /metrics (empty when it did not answer). */
export interface Scraped {
  produce: Sample[];
  aggregate: Sample[];
  detect: Sample[];
  evaluate: Sample[];
}

/** Counter totals of one screen, for the rates of the next. */
export interface Totals {
  produced: number;
  aggregated: number;
  detected: number;
}

/** Everything on the screen that does not come from the samples. */
export interface SummaryContext {
  /** The first line. */
  header: string;
  /** The evaluator's --settle, ms. */
  settleMs: number;
  /** The previous screen's totals and the seconds since; no rates without them. */
  previous?: { totals: Totals; seconds: number };
  /** Each job's /metrics port, in screen order. */
  metricsPorts: ReadonlyArray<{ job: string; port: number }>;
  prometheusUrl?: string;
  logDir: string;
  brokers: readonly string[];
  /** The topic the aggregation's consumed records are counted on. */
  transactionsTopic: string;
}

/** One screen: its lines, the status lines alone (for a log), and totals for the next. */
export interface SummaryScreen {
  lines: string[];
  status: string[];
  totals: Totals;
}

/** "5 min", "90 s", "1 h 30 min": a settle time as the screen says it. */
export function formatSettle(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 60 || s % 60 !== 0) return `${s} s`;
  const min = s / 60;
  if (min < 60) return `${min} min`;
  return min % 60 === 0 ? `${min / 60} h` : `${Math.floor(min / 60)} h ${min % 60} min`;
}

/** The summary screen of one scrape of the four jobs. */
export function summaryScreen(scraped: Scraped, ctx: SummaryContext): SummaryScreen {
  const { produce: p, aggregate: a, detect: d, evaluate: e } = scraped;
  const totals: Totals = {
    produced: sum(p, "txpipe_produced_records_total"),
    aggregated: sum(a, "txpipe_consumed_records_total", { topic: ctx.transactionsTopic }),
    detected: sum(d, "txpipe_consumed_records_total"),
  };
  const rate = (key: keyof Totals) => {
    if (!ctx.previous || ctx.previous.seconds <= 0) return NO_DATA.padStart(7);
    const r = Math.max(0, (totals[key] - ctx.previous.totals[key]) / ctx.previous.seconds);
    return formatCount(r).padStart(7);
  };
  const byRule = [...sumBy(d, "txpipe_anomalies_total", "rule")]
    .map(([rule, n]) => `${rule} ${formatCount(n)}`).join(", ") || "none yet";
  const recall = [...sumBy(e, "txpipe_detection_recall", "pattern")]
    .map(([pattern, r]) => `${pattern} ${(r * 100).toFixed(0)}%`).join(", ") || NO_DATA;
  const precision = e.find((s) => s.name === "txpipe_detection_precision");
  const dead = sum(a, "txpipe_dead_letters_total") + sum(d, "txpipe_dead_letters_total");
  const status = [
    `produce    ${rate("produced")} rec/s   ` +
    `total ${formatCount(totals.produced)}   errors ${sum(p, "txpipe_produce_errors_total")}`,
    `aggregate  ${rate("aggregated")} rec/s   ` +
    `lag ${formatCount(sum(a, "txpipe_consumer_lag"))}   windows emitted ${
      formatCount(sum(a, "txpipe_aggregates_emitted_total"))
    }   late ${sum(a, "txpipe_late_records_total")}`,
    `detect     ${rate("detected")} rec/s   ` +
    `lag ${formatCount(sum(d, "txpipe_consumer_lag"))}   anomalies: ${byRule}`,
    `evaluate   precision ${
      precision ? `${(precision.value * 100).toFixed(1)}%` : NO_DATA
    }   recall: ${recall}   (recall settles ${
      formatSettle(ctx.settleMs)
    } after each fraud instance)`,
    `dead letters ${formatCount(dead)}`,
  ];
  const lines = [
    ctx.header,
    "",
    ...status,
    "",
    `metrics    ${ctx.metricsPorts.map((j) => `${j.job} :${j.port}`).join("  ")}${
      ctx.prometheusUrl ? `   prometheus ${ctx.prometheusUrl}` : ""
    }`,
    `logs       ${ctx.logDir}/<job>.log (ECS JSON)`,
    `kafka      ${ctx.brokers.join(",")}`,
  ];
  return { lines, status, totals };
}
