/**
 * The arithmetic and the chart of `deno task bench` (tests/bench/results.ts,
 * tests/bench/chart.ts): medians, the exact cross-check of window aggregates
 * between contenders, and an SVG drawn from a result alone.
 */
import assert from "node:assert/strict";
import { crossCheck, spread, summariseRuns, windowTotals } from "./bench/results.ts";
import type { BenchResult } from "./bench/results.ts";
import { logScale, renderChart, shortNumber } from "./bench/chart.ts";
import { markdown } from "./bench/report.ts";
import type { CatchUpRun, WindowTotals } from "./bench/types.ts";

Deno.test("bench: spread is the median with min and max (mean of the middle two when even)", () => {
  assert.deepEqual(spread([30, 10, 20]), { median: 20, min: 10, max: 30, runs: [30, 10, 20] });
  assert.equal(spread([4, 1, 3, 2]).median, 2.5);
  assert.equal(spread([7]).median, 7);
  assert.throws(() => spread([]), /no values/);
});

const w = (merchantId: string, start: number, count: number, purchase: number): WindowTotals => ({
  merchantId,
  currency: "EUR",
  windowStart: start,
  windowEnd: start + 60_000,
  transactionCount: count,
  purchaseMinor: purchase,
  refundMinor: 0,
});

Deno.test("bench: the cross-check compares the windows both closed, exactly", () => {
  const reference = [w("m1", 0, 3, 300), w("m2", 0, 1, 100), w("m1", 60_000, 2, 250)];
  // m2 not yet closed on the contender's side; one window only the contender closed.
  const same = crossCheck({ reference: "a", contender: "b" }, reference, [
    w("m1", 0, 3, 300),
    w("m1", 60_000, 2, 250),
    w("m3", 0, 1, 5),
  ]);
  assert.equal(same.compared, 2);
  assert.equal(same.mismatched, 0);
  assert.equal(same.onlyReference, 1);
  assert.equal(same.onlyContender, 1);
  assert.equal(same.duplicates, 0);

  // One cent apart is a mismatch; a window emitted twice is counted.
  const off = crossCheck({ reference: "a", contender: "b" }, reference, [
    w("m1", 0, 3, 301),
    w("m2", 0, 1, 100),
    w("m2", 0, 1, 100),
  ]);
  assert.equal(off.compared, 2);
  assert.equal(off.mismatched, 1);
  assert.equal(off.duplicates, 1);
  assert.deepEqual(off.examples[0].contender, w("m1", 0, 3, 301));
});

Deno.test("bench: aggregate records (txpipe's, and the peers' of the same fields) become window totals in minor units", () => {
  const record = {
    merchantId: "m1",
    currency: "JPY",
    windowStart: 0,
    windowEnd: 60_000,
    transactionCount: 2,
    purchaseAmount: 1500,
    purchaseAmountMinor: 1500,
    refundAmountMinor: 200,
  };
  const [t] = windowTotals([record]);
  assert.deepEqual(windowTotals([JSON.stringify(record)]), [t], "JSON text or parsed, the same");
  assert.deepEqual(t, {
    merchantId: "m1",
    currency: "JPY",
    windowStart: 0,
    windowEnd: 60_000,
    transactionCount: 2,
    purchaseMinor: 1500,
    refundMinor: 200,
  });
});

function run(contender: string, rps: number): CatchUpRun {
  return {
    contender,
    records: 1_000_000,
    startedAt: 0,
    firstOutputAt: 2_000,
    doneAt: (1_000_000 / rps) * 1000,
    recordsPerSecond: rps,
    recordsPerSecondFromFirstOutput: rps * 1.1,
    peakRssBytes: 300 * 2 ** 20,
    cpuSeconds: 40,
    outputs: 10,
  };
}

Deno.test("bench: the chart is an SVG drawn from the result alone, every contender labelled", () => {
  const result: BenchResult = {
    date: "2026-12-06T07:00:00.000Z",
    command: "deno task bench --quick",
    machine: {
      cpus: 2,
      cpuModel: "Test CPU",
      memoryGiB: 24,
      kernel: "6.1",
      deno: "2.9.6",
      java: "openjdk 17",
      kafka: "4.4.0",
    },
    runs: 3,
    seconds: 100,
    catchUp: {
      records: 1_000_000,
      windowMs: 60_000,
      allowedLatenessMs: 5_000,
      crossChecks: [],
      contenders: [
        summariseRuns("txpipe aggregate", "x", [run("a", 15_000), run("a", 20_000)]),
        summariseRuns("Kafka Streams aggregate <&>", "y", [run("k", 60_000)]),
      ],
    },
    latency: {
      seconds: 60,
      maxSustainableRate: { detect: 5000 },
      rows: [
        {
          job: "detect",
          rate: 1000,
          achievedRate: 1000,
          p50Ms: 80,
          p99Ms: 300,
          maxMs: 900,
          sustained: true,
        },
        {
          job: "detect",
          rate: 5000,
          achievedRate: 4990,
          p50Ms: 120,
          p99Ms: 800,
          maxMs: 2000,
          sustained: true,
        },
        {
          job: "detect",
          rate: 20000,
          achievedRate: 15000,
          p50Ms: 9000,
          p99Ms: 30000,
          maxMs: 40000,
          sustained: false,
          why: "lag grew",
        },
      ],
    },
  };
  const svg = renderChart(result);
  const md = markdown(result);
  assert.match(md, /\| txpipe aggregate \| 17 500 \(15 000–20 000\) \|/);
  assert.match(
    md,
    /0\.29× Kafka Streams aggregate <&>/,
    "txpipe's ratio to the peer, median over median",
  );
  assert.match(md, /maximum sustainable rate, detect: 5 000 records\/s/);
  assert.match(md, /\| detect \| 20 000 \| 15 000 \| .* \| no: lag grew \|/);
  assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.match(svg, /<\/svg>\n$/);
  assert.ok(!svg.includes("NaN") && !svg.includes("undefined") && !svg.includes("Infinity"));
  assert.ok(svg.includes(">txpipe aggregate<"));
  assert.ok(svg.includes("Kafka Streams aggregate &lt;&amp;&gt;"), "labels are escaped");
  assert.ok(svg.includes(">18k<"), "the median of 15k and 20k, 17 500");
  assert.equal((svg.match(/fill="#d62728"/g) ?? []).length, 3, "the unsustained rate in red");
});

Deno.test("bench: log scale and short numbers", () => {
  const s = logScale(1_500, 420_000, 300);
  assert.deepEqual(s.ticks, [1_000, 10_000, 100_000, 1_000_000]);
  assert.equal(s.at(1_000), 0);
  assert.equal(s.at(1_000_000), 300);
  assert.equal(Math.round(s.at(10_000)), 100);
  assert.equal(shortNumber(950), "950");
  assert.equal(shortNumber(12_345), "12k");
  assert.equal(shortNumber(1_234), "1.2k");
  assert.equal(shortNumber(2_500_000), "2.5M");
  assert.equal(shortNumber(1_000), "1k");
});
