/** The pure parts of the latency benchmark (tests/bench/latency.ts): no cluster, no timing. */
import assert from "node:assert/strict";
import {
  type Bucket,
  CROWDED_REPLICAS_PER_BROKER,
  crowdedClusterWarning,
  histogramEstimate,
  histogramFromText,
  histogramQuantile,
  judgePoint,
  type LagBounds,
  type LatencyPoint,
  latencyStats,
  leastSquaresSlope,
  maxSustainable,
  percentile,
  referenceTime,
  subtractBuckets,
  summariseLag,
} from "./bench/latency.ts";

const BOUNDS: LagBounds = { endSecondsOfInput: 2, minEndRecords: 1_000, slopeFraction: 0.02 };

/** Lag samples every 3 s for 60 s: `f(seconds)` records behind. */
function lagOver60s(f: (s: number) => number) {
  const samples = [];
  for (let s = 0; s <= 60; s += 3) samples.push({ atSeconds: s, behind: f(s) });
  return summariseLag(samples);
}

Deno.test("latency bench: percentiles are nearest-rank", () => {
  const oneToHundred = Array.from({ length: 100 }, (_, i) => i + 1);
  assert.equal(percentile(oneToHundred, 0.5), 50);
  assert.equal(percentile(oneToHundred, 0.99), 99);
  assert.equal(percentile(oneToHundred, 1), 100);
  assert.equal(percentile([7], 0.99), 7);
  assert.ok(Number.isNaN(percentile([], 0.5)));
  // Ten values: p99 is the largest, p50 the fifth.
  assert.equal(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.99), 10);
  assert.equal(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.5), 5);
});

Deno.test("latency bench: latency stats sort their input", () => {
  assert.deepEqual(latencyStats([300, 100, 200]), { count: 3, p50Ms: 200, p99Ms: 300, maxMs: 300 });
  const empty = latencyStats([]);
  assert.equal(empty.count, 0);
  assert.ok(Number.isNaN(empty.p50Ms) && Number.isNaN(empty.maxMs));
});

Deno.test("latency bench: least-squares slope of a line, a saw-tooth and too few points", () => {
  assert.equal(leastSquaresSlope([{ x: 0, y: 5 }, { x: 1, y: 7 }, { x: 2, y: 9 }]), 2);
  // A saw-tooth around a constant level has a slope near 0.
  const saw = Array.from({ length: 21 }, (_, i) => ({ x: i * 3, y: i % 2 ? 1_000 : 0 }));
  assert.ok(Math.abs(leastSquaresSlope(saw)) < 5);
  assert.equal(leastSquaresSlope([{ x: 1, y: 3 }]), 0);
  assert.equal(leastSquaresSlope([{ x: 1, y: 3 }, { x: 1, y: 4 }]), 0);
});

Deno.test("latency bench: a lag summary has start, end (mean of the last five), max, slope", () => {
  const lag = summariseLag([
    { atSeconds: 0, behind: 100 },
    { atSeconds: 3, behind: 400 },
    { atSeconds: 6, behind: 130 },
    { atSeconds: 9, behind: 90 },
    { atSeconds: 12, behind: 110 },
    { atSeconds: 15, behind: 120 },
    { atSeconds: 18, behind: 50 },
  ]);
  assert.equal(lag.start, 100);
  assert.equal(lag.end, 100);
  assert.equal(lag.max, 400);
  assert.equal(lag.samples, 7);
  assert.ok(Number.isNaN(summariseLag([]).end));
});

Deno.test("latency bench: steady lag at the rate is sustained", () => {
  const lag = lagOver60s((s) => (s % 2 ? 3_000 : 1_000)); // saw-tooth at 10,000 rec/s
  assert.deepEqual(
    judgePoint({ rate: 10_000, achievedRate: 9_990, lag, outputs: 500 }, BOUNDS),
    { sustained: true },
  );
});

Deno.test("latency bench: a lag that ends high or keeps growing is not bounded", () => {
  // 1 % behind: slope 100/s at 10,000 rec/s (limit 200/s), end 5,400 (limit 20,000).
  const slight = lagOver60s((s) => 100 * s);
  assert.equal(
    judgePoint({ rate: 10_000, achievedRate: 10_000, lag: slight, outputs: 1 }, BOUNDS)
      .sustained,
    true,
  );
  // 5 % behind: slope 500/s over the 2 % limit, and the end (mean of 48 to 60 s) over 20,000.
  const behind = lagOver60s((s) => 500 * s);
  const v = judgePoint({ rate: 10_000, achievedRate: 10_000, lag: behind, outputs: 1 }, BOUNDS);
  assert.equal(v.sustained, false);
  assert.match(v.why!, /lag at the end 27,000 records > 20,000/);
  // Growing but still under the end limit: the slope decides.
  const growing = lagOver60s((s) => 300 * s);
  const g = judgePoint({ rate: 10_000, achievedRate: 10_000, lag: growing, outputs: 1 }, BOUNDS);
  assert.equal(g.sustained, false);
  assert.match(g.why!, /lag grows 300 records\/s > 200/);
  // A constant lag above two seconds of input: not bounded although flat.
  const high = lagOver60s(() => 50_000);
  assert.match(
    judgePoint({ rate: 10_000, achievedRate: 10_000, lag: high, outputs: 1 }, BOUNDS).why!,
    /lag at the end/,
  );
  // A shrinking lag (catching up after the warm-up) is fine once it ends low.
  const catchingUp = lagOver60s((s) => Math.max(500, 15_000 - 1_000 * s));
  assert.equal(
    judgePoint({ rate: 10_000, achievedRate: 10_000, lag: catchingUp, outputs: 1 }, BOUNDS)
      .sustained,
    true,
  );
});

Deno.test("latency bench: low rates may always lag the floor of records", () => {
  const lag = lagOver60s(() => 900);
  assert.equal(
    judgePoint({ rate: 100, achievedRate: 100, lag, outputs: 1 }, BOUNDS).sustained,
    true,
  );
});

Deno.test("latency bench: a producer short of the rate, an exit or no output fail the point", () => {
  const lag = lagOver60s(() => 100);
  const slow = judgePoint({ rate: 80_000, achievedRate: 60_000, lag, outputs: 10 }, BOUNDS);
  assert.deepEqual(slow, {
    sustained: false,
    why: "the producer reached only 60,000 rec/s of 80,000 asked (< 95 %)",
  });
  // Every reason is given, the producer's first.
  const both = judgePoint(
    { rate: 20_000, achievedRate: 18_000, lag: lagOver60s((s) => 7_000 * s), outputs: 0 },
    BOUNDS,
  );
  assert.equal(both.sustained, false);
  assert.match(
    both.why!,
    /^the producer reached only 18,000.*; lag at the end .*; no output measured$/,
  );
  assert.equal(
    judgePoint({ rate: 80_000, achievedRate: 76_000, lag, outputs: 10 }, BOUNDS).sustained,
    true,
    "95 % of the rate is enough",
  );
  const exited = judgePoint(
    { rate: 1_000, achievedRate: 1_000, lag, outputs: 10, exited: "the job exited (code 1)" },
    BOUNDS,
  );
  assert.deepEqual(exited, { sustained: false, why: "the job exited (code 1)" });
  assert.deepEqual(judgePoint({ rate: 1_000, achievedRate: 1_000, lag, outputs: 0 }, BOUNDS), {
    sustained: false,
    why: "no output measured",
  });
  const unknown = judgePoint(
    {
      rate: 1_000,
      achievedRate: 1_000,
      lag: summariseLag([{ atSeconds: 0, behind: 0 }]),
      outputs: 3,
    },
    BOUNDS,
  );
  assert.match(unknown.why!, /only 1 lag sample/);
});

const METRICS = `# HELP txpipe_event_to_output_latency_seconds Seconds from the event time ...
# TYPE txpipe_event_to_output_latency_seconds histogram
txpipe_event_to_output_latency_seconds_bucket{le="0.05",processor="app-windows"} 0
txpipe_event_to_output_latency_seconds_bucket{le="0.1",processor="app-windows"} 10
txpipe_event_to_output_latency_seconds_bucket{le="0.5",processor="app-windows"} 30
txpipe_event_to_output_latency_seconds_bucket{le="1",processor="app-windows"} 40
txpipe_event_to_output_latency_seconds_bucket{le="+Inf",processor="app-windows"} 40
txpipe_event_to_output_latency_seconds_sum{processor="app-windows"} 12.5
txpipe_event_to_output_latency_seconds_count{processor="app-windows"} 40
txpipe_event_to_output_latency_seconds_bucket{le="0.05",processor="other"} 1000
txpipe_event_to_output_latency_seconds_bucket{le="0.1",processor="other"} 1000
txpipe_event_to_output_latency_seconds_bucket{le="0.5",processor="other"} 1000
txpipe_event_to_output_latency_seconds_bucket{le="1",processor="other"} 1000
txpipe_event_to_output_latency_seconds_bucket{le="+Inf",processor="other"} 1000
txpipe_produce_batch_seconds_bucket{le="0.1"} 7
`;

Deno.test("latency bench: histogram buckets from Prometheus text, by processor", () => {
  const name = "txpipe_event_to_output_latency_seconds";
  assert.deepEqual(histogramFromText(METRICS, name, { processor: "app-windows" }), [
    { le: 0.05, count: 0 },
    { le: 0.1, count: 10 },
    { le: 0.5, count: 30 },
    { le: 1, count: 40 },
    { le: Infinity, count: 40 },
  ]);
  // Without a filter the series are summed.
  assert.equal(histogramFromText(METRICS, name).at(-1)!.count, 1040);
  assert.deepEqual(histogramFromText(METRICS, name, { processor: "absent" }), []);
});

Deno.test("latency bench: histogram quantiles interpolate within the bucket, as Prometheus", () => {
  const b = histogramFromText(METRICS, "txpipe_event_to_output_latency_seconds", {
    processor: "app-windows",
  });
  // Rank 20 of 40 lies halfway through (0.1, 0.5]: 10 before it, 20 in it.
  assert.ok(Math.abs(histogramQuantile(0.5, b) - 0.3) < 1e-9);
  // Rank 39.6 in (0.5, 1]: 30 before, 10 in it.
  assert.ok(Math.abs(histogramQuantile(0.99, b) - (0.5 + 0.5 * 0.96)) < 1e-9);
  // Rank 5 in the first non-empty bucket (0.05, 0.1].
  assert.ok(Math.abs(histogramQuantile(0.125, b) - 0.075) < 1e-9);
  // The first bucket starts at 0.
  assert.ok(
    Math.abs(histogramQuantile(0.5, [{ le: 1, count: 4 }, { le: Infinity, count: 4 }]) - 0.5) <
      1e-9,
  );
  // Observations above every finite bound: the highest finite bound.
  const over: Bucket[] = [{ le: 1, count: 0 }, { le: 5, count: 2 }, { le: Infinity, count: 10 }];
  assert.equal(histogramQuantile(0.99, over), 5);
  assert.ok(Number.isNaN(histogramQuantile(0.5, [])));
  assert.ok(
    Number.isNaN(histogramQuantile(0.5, [{ le: 1, count: 0 }, { le: Infinity, count: 0 }])),
  );
});

Deno.test("latency bench: the warm-up scrape is subtracted before estimating", () => {
  const start: Bucket[] = [
    { le: 0.1, count: 10 },
    { le: 0.5, count: 10 },
    { le: 1, count: 10 },
    { le: Infinity, count: 10 },
  ];
  const end: Bucket[] = [
    { le: 0.1, count: 10 },
    { le: 0.5, count: 10 },
    { le: 1, count: 110 },
    { le: Infinity, count: 110 },
  ];
  assert.deepEqual(subtractBuckets(end, start).map((b) => b.count), [0, 0, 100, 100]);
  // All 100 measured observations in (0.5, 1]: p50 0.75 s, not pulled down by the warm-up's.
  const e = histogramEstimate(end, start);
  assert.equal(e.count, 100);
  assert.ok(Math.abs(e.p50Ms - 750) < 1e-6);
  assert.ok(Math.abs(e.p99Ms - 995) < 1e-6);
  // A histogram absent at the start (the job's first output came later) counts from 0.
  assert.equal(histogramEstimate(end, []).count, 110);
  const none = histogramEstimate([], []);
  assert.equal(none.count, 0);
  assert.ok(Number.isNaN(none.p50Ms));
});

Deno.test("latency bench: reference times of anomalies and windows", () => {
  assert.equal(
    referenceTime("detect", JSON.stringify({ anomalyId: "a", detectedAt: 1_000 }), 2_000),
    1_000,
  );
  assert.equal(
    referenceTime("aggregate", JSON.stringify({ windowStart: 0, windowEnd: 10_000 }), 2_000),
    12_000,
  );
  assert.equal(referenceTime("detect", "not json", 0), undefined);
  assert.equal(referenceTime("aggregate", JSON.stringify({ detectedAt: 5 }), 0), undefined);
  assert.equal(referenceTime("detect", "null", 0), undefined);
});

Deno.test("latency bench: the maximum sustainable rate is the highest sustained point", () => {
  const point = (rate: number, sustained: boolean) => ({ rate, sustained }) as LatencyPoint;
  assert.equal(
    maxSustainable([point(1_000, true), point(5_000, true), point(20_000, false)]),
    5_000,
  );
  assert.equal(maxSustainable([point(1_000, false)]), null);
  assert.equal(maxSustainable([]), null);
});

Deno.test("latency bench: a cluster that has collected topics is named before measuring", () => {
  // Three brokers, each holding a replica of every partition.
  const cluster = (partitions: number) =>
    Array.from({ length: partitions }, () => [4, 5, 6]).flat();
  assert.equal(crowdedClusterWarning(cluster(131)), undefined); // a fresh cluster
  assert.equal(crowdedClusterWarning(cluster(CROWDED_REPLICAS_PER_BROKER)), undefined);
  const warning = crowdedClusterWarning(cluster(1_500));
  assert.match(warning ?? "", /a broker holds 1,500 partition replicas/);
  assert.match(warning ?? "", /deno task cluster reset/);
  // One broker past the bound is enough.
  assert.match(crowdedClusterWarning([...cluster(10), ...Array(1_001).fill(5)]) ?? "", /1,011/);
  assert.equal(crowdedClusterWarning([]), undefined);
});
