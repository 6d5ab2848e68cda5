/**
 * The arithmetic and the chart of `deno task bench` (tests/bench/results.ts,
 * tests/bench/chart.ts): medians, the exact cross-check of window aggregates
 * between contenders, and an SVG drawn from a result alone.
 */
import assert from "node:assert/strict";
import { crossCheck, spread, summariseRuns, windowTotals } from "./bench/results.ts";
import type { BenchResult, LatencyRow } from "./bench/results.ts";
import { logScale, renderChart, shortNumber } from "./bench/chart.ts";
import { markdown } from "./bench/report.ts";
import { CpuBudget, cpuQuotaSupport } from "./bench/cpu_quota.ts";
import { ProcessWatch } from "./bench/proc.ts";
import { runScript } from "./helpers/cluster.ts";
import { taskArgs } from "./helpers/jobs.ts";
import { denoRunArgs, jobSpec } from "../stacks/topology.ts";
import { ROOT } from "../stacks/local/cluster.ts";
import { join } from "node:path";
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

const MACHINE: BenchResult["machine"] = {
  cpus: 2,
  cpuModel: "Test CPU",
  memoryGiB: 24,
  kernel: "6.1",
  deno: "2.9.6",
  java: "openjdk 17",
  kafka: "4.4.0",
};

function point(job: string, rate: number, sustained: boolean): LatencyRow {
  return {
    job,
    rate,
    achievedRate: rate,
    p50Ms: 100,
    p99Ms: 300,
    maxMs: 900,
    sustained,
    ...(sustained ? {} : { why: "lag grew" }),
  };
}

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
    machine: MACHINE,
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

Deno.test("bench reference: today's job is divided by the same job at the earlier commit; its windows are cross-checked", () => {
  const result: BenchResult = {
    date: "2026-12-06T21:00:00.000Z",
    command: "deno task bench reference --rev a93141b",
    machine: MACHINE,
    runs: 3,
    seconds: 600,
    reference: {
      rev: "a93141b",
      records: 1_000_000,
      contenders: [
        summariseRuns("ConsumerPerformance", "c", [run("c", 400_000)]),
        summariseRuns("txpipe aggregate", "today", [run("a", 60_000), run("a", 80_000)]),
        summariseRuns("txpipe aggregate at a93141b", "then", [run("r", 14_000)]),
        summariseRuns("txpipe detect", "today", [run("d", 70_000)]),
        summariseRuns("txpipe detect at a93141b", "then", [run("s", 35_000)]),
      ],
      crossChecks: [
        crossCheck(
          { reference: "txpipe aggregate run 1", contender: "txpipe aggregate at a93141b run 1" },
          [w("m1", 0, 3, 300)],
          [w("m1", 0, 3, 300)],
        ),
      ],
      latency: {
        seconds: 60,
        maxSustainableRate: { detect: 20_000, "detect at a93141b": 5_000 },
        rows: [
          { ...point("detect", 5_000, true), p99Ms: 180 },
          { ...point("detect at a93141b", 5_000, true), p99Ms: 6_200 },
          point("detect at a93141b", 10_000, false),
          point("detect", 10_000, true),
        ],
      },
    },
  };
  const md = markdown(result);
  assert.match(md, /same jobs at a93141b, over a backlog of 1 000 000 records/);
  assert.match(
    md,
    /\| txpipe aggregate \| 70 000 \(60 000–80 000\) \|.*5\.00× txpipe aggregate at a93141b; 1\.00× txpipe detect; 0\.17× ConsumerPerformance \|/,
  );
  assert.match(md, /\| txpipe detect \| 70 000 .*2\.00× txpipe detect at a93141b/);
  assert.match(
    md,
    /windows of txpipe aggregate at a93141b run 1 against txpipe aggregate run 1: 1 both closed, 0 differ/,
  );
  assert.match(md, /Latency under paced load, today's jobs against a93141b/);
  assert.match(md, /\| detect at a93141b \| 5 000 \| 5 000 \| 100 \| 6 200 \|/);
  assert.match(md, /\| detect at a93141b \| 10 000 \| .* \| no: lag grew \|/);
  assert.match(md, /maximum sustainable rate, detect at a93141b: 5 000 records\/s/);
  assert.match(md, /maximum sustainable rate, detect: 20 000 records\/s/);
});

/** Each `deno task bench` command line exits 2 with its message and no stack trace. */
async function assertBenchRefuses(cases: [string[], RegExp][]): Promise<void> {
  for (const [args, message] of cases) {
    const r = await runScript("tests/bench/bench.ts", args);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, message);
    assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
  }
}

Deno.test("bench reference: --rev is required by the reference mode, refused by the others, and must name a commit", async () => {
  const cases: [string[], RegExp][] = [
    [["reference"], /--rev: expected the commit to compare with, got nothing/],
    [
      ["catchup", "--rev", "HEAD"],
      /--rev: only the reference mode takes it, got it with "catchup"/,
    ],
    [
      ["reference", "--rev", "no-such-commit"],
      /--rev: expected a commit of this repository, got "no-such-commit"/,
    ],
  ];
  await assertBenchRefuses(cases);
});

Deno.test("bench catchup: --cpus-per-instance is taken by the catchup mode only, and above 0 cores", async () => {
  const cases: [string[], RegExp][] = [
    [
      ["latency", "--cpus-per-instance", "0.5"],
      /--cpus-per-instance: only the catchup mode takes it, got it with "latency"/,
    ],
    [
      ["catchup", "--cpus-per-instance", "0"],
      /--cpus-per-instance: expected a value >= 0.05, got "0"/,
    ],
  ];
  await assertBenchRefuses(cases);
});

Deno.test("bench: a CPU budget of 0.2 cores holds a busy process to about 0.2 cores, and is removed after", async () => {
  const support = cpuQuotaSupport();
  if ("problem" in support) {
    // Without a cgroup cpu controller the bench refuses the flag in one sentence.
    assert.throws(() => new CpuBudget(0.2), new RegExp(support.problem.slice(0, 30)));
    return;
  }
  const budget = new CpuBudget(0.2);
  const busy = new Deno.Command("sh", { args: ["-c", "while :; do :; done"] }).spawn();
  try {
    budget.add(busy.pid);
    const watch = new ProcessWatch(busy.pid);
    await new Promise((r) => setTimeout(r, 2000));
    watch.sample();
    const { cpuSeconds } = watch.stop();
    // 2 s at 0.2 cores is 0.4 s; without the budget it would be about 2 s.
    assert.ok(cpuSeconds > 0.1 && cpuSeconds < 0.8, `CPU ${cpuSeconds} s in 2 s`);
    assert.ok(budget.throttled().periods > 0, "the budget held it back");
  } finally {
    busy.kill("SIGKILL");
    await busy.status;
    budget.remove();
  }
  assert.throws(() => Deno.statSync(budget.dir), Deno.errors.NotFound);
});

Deno.test("bench reference: an earlier commit's job runs as its own deno task ran it", async () => {
  // Today's checkout: the task is the job spec's command (V8 flags included).
  for (const job of ["aggregate", "detect"] as const) {
    assert.deepEqual(taskArgs(ROOT, job), denoRunArgs(jobSpec(job)));
  }
  const dir = await Deno.makeTempDir({ prefix: "txpipe-ref-" });
  try {
    await Deno.writeTextFile(
      join(dir, "deno.json"),
      JSON.stringify({ tasks: { detect: "deno run -A jobs/detect.ts", aggregate: "make it" } }),
    );
    assert.deepEqual(taskArgs(dir, "detect"), ["run", "-A", "jobs/detect.ts"]);
    assert.throws(() => taskArgs(dir, "aggregate"), /expected a "deno run …" task "aggregate"/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
