/** The live summary of `deno task start`, from scraped samples alone (no processes). */
import assert from "node:assert/strict";
import { formatSettle, NO_DATA, type Scraped, summaryScreen } from "../jobs/lib/summary.ts";
import { parseMetrics } from "../jobs/lib/scrape.ts";

const CONTEXT = {
  header: "txpipe: local pipeline (cluster, Kafka 4.4.0)   up 00:12   Ctrl-C stops everything",
  settleMs: 300_000,
  metricsPorts: [
    { job: "produce", port: 9464 },
    { job: "aggregate", port: 9465 },
    { job: "detect", port: 9466 },
    { job: "evaluate", port: 9467 },
  ],
  logDir: "/work/main/.cache/logs",
  brokers: ["127.0.0.1:9092", "127.0.0.1:9093", "127.0.0.1:9094"],
  transactionsTopic: "financial_transactions",
};

/** The first minutes of a run: records flow, no anomaly judged, no fraud instance settled. */
const EARLY: Scraped = {
  produce: parseMetrics('txpipe_produced_records_total{topic="financial_transactions"} 2400\n'),
  aggregate: parseMetrics(
    'txpipe_consumed_records_total{processor="a-rekey",topic="financial_transactions"} 2390\n' +
      "txpipe_aggregates_emitted_total 0\n",
  ),
  detect: parseMetrics(
    'txpipe_consumed_records_total{processor="d",topic="financial_transactions"} 2380\n',
  ),
  evaluate: parseMetrics("txpipe_evaluated_anomalies 0\n"),
};

const line = (lines: string[], start: string) => lines.find((l) => l.startsWith(start)) ?? "";

Deno.test("summary: before the evaluator has data, precision and recall show — and the screen says when recall comes", () => {
  const screen = summaryScreen(EARLY, CONTEXT);
  assert.equal(
    line(screen.lines, "evaluate"),
    `evaluate   precision ${NO_DATA}   recall: ${NO_DATA}   ` +
      "(recall settles 5 min after each fraud instance)",
  );
  assert.doesNotMatch(screen.lines.join("\n"), /0\.0%|n\/a/);
  assert.match(line(screen.lines, "detect"), /anomalies: none yet$/);
  // The first screen has no previous one: no rate yet either.
  assert.match(
    line(screen.lines, "produce"),
    new RegExp(`^produce +${NO_DATA} rec/s   total 2,400`),
  );
});

Deno.test("summary: nothing scraped yet (jobs still starting): precision and recall show —, totals 0", () => {
  const screen = summaryScreen({ produce: [], aggregate: [], detect: [], evaluate: [] }, CONTEXT);
  assert.match(line(screen.lines, "evaluate"), /precision — {3}recall: —/);
  assert.deepEqual(screen.totals, { produced: 0, aggregated: 0, detected: 0 });
});

Deno.test("summary: the settle note uses the evaluator's actual --settle", () => {
  const screen = summaryScreen(EARLY, { ...CONTEXT, settleMs: 90_000 });
  assert.match(
    line(screen.lines, "evaluate"),
    /\(recall settles 90 s after each fraud instance\)$/,
  );
  assert.equal(formatSettle(300_000), "5 min");
  assert.equal(formatSettle(5_000), "5 s");
  assert.equal(formatSettle(3_600_000), "1 h");
  assert.equal(formatSettle(5_400_000), "1 h 30 min");
});

Deno.test("summary: with evaluator data, precision and recall per pattern; rates from the previous screen", () => {
  const later: Scraped = {
    ...EARLY,
    produce: parseMetrics('txpipe_produced_records_total{topic="financial_transactions"} 4400\n'),
    detect: parseMetrics(
      'txpipe_consumed_records_total{processor="d",topic="financial_transactions"} 4380\n' +
        'txpipe_anomalies_total{rule="velocity_burst",severity="high"} 3\n',
    ),
    evaluate: parseMetrics(
      "txpipe_detection_precision 0.975\n" +
        'txpipe_detection_recall{pattern="card_testing"} 1\n' +
        'txpipe_detection_recall{pattern="velocity_burst"} 0.5\n' +
        "txpipe_evaluated_anomalies 40\n",
    ),
  };
  const first = summaryScreen(EARLY, CONTEXT);
  const screen = summaryScreen(later, {
    ...CONTEXT,
    previous: { totals: first.totals, seconds: 10 },
  });
  assert.equal(
    line(screen.lines, "evaluate"),
    "evaluate   precision 97.5%   recall: card_testing 100%, velocity_burst 50%   " +
      "(recall settles 5 min after each fraud instance)",
  );
  assert.match(line(screen.lines, "produce"), /^produce +200 rec\/s {3}total 4,400/);
  assert.match(line(screen.lines, "detect"), /200 rec\/s .*anomalies: velocity_burst 3$/);
  assert.equal(screen.status.length, 5, "the status lines a non-terminal run logs");
});
