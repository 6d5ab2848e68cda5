/**
 * The offline harness (jobs/tune.ts, jobs/lib/tuning.ts): the detection job's
 * own processor on generated traffic, deterministic, sweeps that move only
 * what they must, and a command line that refuses bad flags with exit 2.
 * No Kafka.
 */
import assert from "node:assert/strict";
import { DEFAULT_DETECT_CONFIG, detect, type UserState } from "../jobs/lib/rules.ts";
import { evaluate, GroundTruth } from "../jobs/lib/evaluation.ts";
import {
  combineEvaluations,
  parseSweep,
  runDetection,
  traffic,
  type TrafficOptions,
  withThreshold,
} from "../jobs/lib/tuning.ts";
import { lineChart } from "../jobs/lib/svg_chart.ts";
import { detectProcessor } from "../jobs/detect.ts";
import { runSweep, scoreSeeds, type TuneOptions } from "../jobs/tune.ts";
import type { Anomaly } from "../jobs/lib/rules.ts";
import type { Transaction } from "../jobs/lib/transaction.ts";

const SMALL: Omit<TrafficOptions, "seed"> = {
  records: 8_000,
  users: 2_000,
  timeScale: 200,
  fraudRate: 0.03,
  hardNegatives: true,
};

function processor(config = DEFAULT_DETECT_CONFIG) {
  return detectProcessor({ appId: "t", input: "in", output: "out", config });
}

Deno.test("tune: a small run is deterministic, seed by seed", () => {
  const a = scoreSeeds(["7", "8"], SMALL, DEFAULT_DETECT_CONFIG);
  const b = scoreSeeds(["7", "8"], SMALL, DEFAULT_DETECT_CONFIG);
  assert.deepEqual(a, b);
  assert.ok(a.records >= 2 * SMALL.records!, `${a.records} records`);
  assert.ok(a.evaluation.instances > 0, "fraud was injected");
  assert.notDeepEqual(a.perSeed[0].evaluation, a.perSeed[1].evaluation, "seeds differ");
});

Deno.test("tune: the harness finds exactly the anomalies of detect() run per user in production order", () => {
  const records = [...traffic({ ...SMALL, seed: "9" })];
  const run = runDetection(records, processor(), { batchSize: 777 });
  assert.equal(run.deadLetters, 0);
  const states = new Map<string, UserState>();
  const direct: Anomaly[] = [];
  for (const r of records) {
    const d = detect(states.get(r.key), r.tx, r.amountMinor, DEFAULT_DETECT_CONFIG);
    states.set(r.key, d.state);
    direct.push(...d.anomalies);
  }
  assert.ok(direct.length > 0);
  assert.deepEqual(run.anomalies, direct);
  assert.equal(run.truth.transactions, records.length);
  assert.equal(run.truth.fraud.size, records.filter((r) => r.label).length);
});

Deno.test("tune: --days covers that much event time, then completes the started instances", () => {
  const o = { ...SMALL, records: undefined, timeScale: 20, seed: "3" };
  const records = [...traffic({ ...o, days: 0.01 })];
  const start = records[0].tx.transactionTime;
  const end = start + 0.01 * 86_400_000;
  // After the end only started instances go on: labelled records, and the ordinary purchases
  // an amount spike makes first to build its user's history (unlabelled, docs/detection.md).
  const after = records.filter((r) => r.tx.transactionTime >= end);
  const finishing = new Set(after.filter((r) => r.label || r.hardNegative).map((r) => r.user));
  const stray = after.filter((r) => !r.label && !r.hardNegative && !finishing.has(r.user));
  assert.deepEqual(stray.map((r) => r.tx.transactionId), [], "no background record after the end");
  assert.ok(records.at(-1)!.tx.transactionTime > end - 60_000, "the whole span is covered");
  // A longer run of the same seed starts with the same instances: each complete here.
  const perInstance = (rs: typeof records) => {
    const n = new Map<string, number>();
    for (const r of rs) {
      const id = r.label?.instanceId ?? r.hardNegative?.instanceId;
      if (id !== undefined) n.set(id, (n.get(id) ?? 0) + 1);
    }
    return n;
  };
  const short = perInstance(records);
  const long = perInstance([...traffic({ ...o, days: 0.1 })]);
  assert.ok(short.size > 0, "instances were started");
  for (const [id, n] of short) assert.equal(n, long.get(id), `instance ${id} complete`);
});

Deno.test("tune: raising velocity.minCount never flags more users for velocity and changes no other rule", () => {
  const o: TuneOptions = {
    seeds: ["11"],
    heldOut: [],
    traffic: SMALL,
    config: DEFAULT_DETECT_CONFIG,
    configSource: "defaults",
  };
  const sweep = parseSweep("velocity.minCount=3..14", DEFAULT_DETECT_CONFIG);
  const records = [...traffic({ ...SMALL, seed: "11" })];
  const runs = sweep.values.map((v) =>
    runDetection(records, processor(withThreshold(DEFAULT_DETECT_CONFIG, sweep.key, v)))
  );
  const users = runs.map((r) =>
    new Set(r.anomalies.filter((a) => a.rule === "velocity").map((a) => a.userId)).size
  );
  for (let i = 1; i < users.length; i++) {
    assert.ok(users[i] <= users[i - 1], `users flagged by velocity ${users.join(" ")}`);
  }
  assert.ok(users[0] > users.at(-1)!, `the sweep moves something: ${users.join(" ")}`);
  const others = (r: { anomalies: Anomaly[] }) =>
    r.anomalies.filter((a) => a.rule !== "velocity").map((a) => a.anomalyId);
  for (const r of runs) assert.deepEqual(others(r), others(runs[0]));
  // runSweep scores the same runs.
  const points = runSweep(o, { key: sweep.key, values: [3, 14] });
  const velocity = points.map((p) => p.result.evaluation.rules.find((r) => r.rule === "velocity"));
  const counted = [runs[0], runs.at(-1)!].map((r) =>
    r.anomalies.filter((a) => a.rule === "velocity").length
  );
  assert.deepEqual(velocity.map((r) => r?.anomalies ?? 0), counted);
});

Deno.test("tune: why the sweep bounds users, not anomalies: a higher velocity threshold can raise the count", () => {
  // Counts in the 60 s window (a prior pace of a minute and gaps of seconds,
  // clamped to a minute; each at another merchant): 1 2 3 4 | 3 4. At 3 the
  // incident never ends (one anomaly); at 4 it ends when the count drops to 3
  // and fires again (two).
  const at = [0, 10, 20, 30, 75, 76].map((s) => s * 1000);
  const txs: Transaction[] = at.map((ms, i) => ({
    transactionId: `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`,
    userId: "user-1",
    amount: 50,
    currency: "USD",
    transactionTime: 1_700_000_000_000 + ms,
    merchantId: `merchant-${i}`,
    transactionType: "purchase",
    location: "New York, US",
    paymentMethod: "credit_card",
    isInternational: false,
  }));
  const count = (minCount: number) => {
    const config = {
      ...withThreshold(DEFAULT_DETECT_CONFIG, "velocity.minCount", minCount),
      priorGapMs: 60_000,
    };
    let state: UserState | undefined;
    let n = 0;
    for (const tx of txs) {
      const d = detect(state, tx, 5000, config);
      state = d.state;
      n += d.anomalies.filter((a) => a.rule === "velocity").length;
    }
    return n;
  };
  assert.equal(count(3), 1);
  assert.equal(count(4), 2);
});

Deno.test("tune: evaluations of several seeds combine by adding counts; user-days add up", () => {
  const truth = (user: string, t0: number, days: number) => {
    const t = new GroundTruth();
    t.add({ transactionId: `${user}-a`, userId: user, transactionTime: t0 });
    t.add({ transactionId: `${user}-b`, userId: user, transactionTime: t0 + days * 86_400_000 });
    t.add({ transactionId: `${user}-f`, userId: `${user}-x`, transactionTime: t0 }, {
      fraud: { pattern: "card_testing", instanceId: `${user}-i` },
    });
    return t;
  };
  const fp = (id: string, tx: string): Anomaly => ({
    anomalyId: id,
    rule: "velocity",
    severity: "medium",
    userId: "u",
    transactionIds: [tx],
    observed: 0,
    threshold: 0,
    windowStart: 0,
    windowEnd: 0,
    detectedAt: 0,
  });
  const a = evaluate(truth("u1", 0, 1), [fp("1", "u1-a"), fp("2", "u1-f")]);
  const b = evaluate(truth("u2", 0, 3), [fp("3", "u2-a")]);
  const c = combineEvaluations([a, b]);
  assert.equal(c.anomalies, 3);
  assert.equal(c.truePositives, 1);
  assert.equal(c.precision, 1 / 3);
  assert.equal(c.legitimateUsers, 2);
  assert.equal(c.days, 2, "user-weighted mean of 1 and 3 days");
  assert.equal(c.falsePositivesPer10kUserDays, (2 * 10_000) / (1 * 1 + 1 * 3));
  const ct = c.patterns.find((p) => p.pattern === "card_testing");
  assert.deepEqual(ct, { pattern: "card_testing", instances: 2, detected: 1, recall: 0.5 });
  assert.equal(c.rules.find((r) => r.rule === "velocity")?.recall, null, "no velocity bursts");
  assert.equal(combineEvaluations([a]), a);
});

Deno.test("tune: sweeps parse ranges, steps and lists, and refuse what the config would", () => {
  const d = DEFAULT_DETECT_CONFIG;
  assert.deepEqual(parseSweep("velocity.minCount=4..7", d), {
    key: "velocity.minCount",
    values: [4, 5, 6, 7],
  });
  assert.deepEqual(parseSweep("amountSpike.multiplier=2..3:0.5", d).values, [2, 2.5, 3]);
  assert.deepEqual(parseSweep("maxEvents=16,32,64", d).values, [16, 32, 64]);
  assert.throws(() => parseSweep("velocity.minCount", d), /expected KEY=FROM\.\.TO/);
  assert.throws(
    () => parseSweep("velocity.count=1..2", d),
    /a threshold key, one of velocity\.minCount/,
  );
  assert.throws(() => parseSweep("velocity.minCount=9..4", d), /FROM ≤ TO/);
  assert.throws(
    () => parseSweep("velocity.minCount=1..3", d),
    /velocity\.minCount: expected an integer from 2/,
  );
  assert.throws(() => parseSweep("velocity.minCount=a,b", d), /comma-separated numbers/);
  assert.throws(() => parseSweep("velocity.minCount=1..1000", d), /at most 100 values/);
  assert.equal(withThreshold(d, "velocity.minCount", 6).velocity.minCount, 6);
  assert.equal(d.velocity.minCount, 5, "the config given is not changed");
});

Deno.test("tune: the chart is one self-contained SVG, a gap where a figure is n/a", () => {
  const svg = lineChart({
    title: "a <b> & c",
    xLabel: "x",
    yLabel: "y",
    series: [{ name: "p", points: [[1, 0.5], [2, null], [3, 1], [4, 0.9]] }],
  });
  assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  assert.match(svg, /a &lt;b&gt; &amp; c/);
  assert.equal(svg.match(/<polyline /g)?.length, 2, "split at the gap");
  assert.equal(svg.match(/<circle /g)?.length, 3);
  assert.doesNotMatch(svg, /NaN|undefined|href=/);
});

/** Runs `deno task tune` with `args`; its exit code, stdout and stderr. */
async function tune(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "jobs/tune.ts", ...args],
    cwd: new URL("../", import.meta.url),
    stdin: "null",
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

Deno.test("tune: bad flags exit 2 naming the flag, what was expected and what was given", async () => {
  const cases: Array<[string[], RegExp]> = [
    [["--records", "lots"], /--records: expected an integer, got "lots"/],
    [["--fraud-rate", "2"], /--fraud-rate: expected a value <= 0\.99, got "2"/],
    [["--records", "10", "--days", "1"], /--days: expected either --records or --days, got both/],
    [["--chart", "x.svg"], /--chart: expected --sweep with it, got --chart x\.svg alone/],
    [
      ["--sweep", "velocity.count=1..2"],
      /--sweep: expected a threshold key, one of .*got "velocity\.count=1\.\.2"/,
    ],
    [
      ["--sweep", "velocity.minCount=1..3"],
      /--sweep: detect config velocity\.minCount: expected an integer from 2 to 64, given 1/,
    ],
    [
      ["--config", "/nonexistent.json"],
      /--config: expected a readable JSON file, got "\/nonexistent\.json"/,
    ],
    [["--speed", "9"], /unknown flag --speed; expected one of --seeds, --held-out/],
  ];
  for (const [args, message] of cases) {
    const r = await tune(args);
    assert.equal(r.code, 2, `${args.join(" ")}: exit code\n${r.stderr}`);
    assert.match(r.stderr, message, args.join(" "));
    assert.match(r.stderr, /^deno task tune: /);
    assert.equal(r.stdout, "", "nothing on stdout");
  }
});

Deno.test("tune: held-out and sweep runs print their table or JSON, the sweep its chart", async () => {
  const small = [
    "--records",
    "3000",
    "--users",
    "1000",
    "--time-scale",
    "200",
    "--fraud-rate",
    "0.03",
  ];
  const table = await tune([...small, "--seeds", "1", "--held-out", "2,3"]);
  assert.equal(table.code, 0, table.stderr);
  assert.match(table.stdout, /tune: seed 1 +held-out: seeds 2, 3/);
  assert.match(table.stdout, /^ {2}all rules +\d+\.\d\d% \(\d+\/\d+\) +\d+\.\d\d% \(\d+\/\d+\)$/m);
  assert.match(table.stderr, /tune: scored [\d,]+ records in [\d.]+ s \([\d,]+ records\/s/);

  const dir = await Deno.makeTempDir();
  try {
    const chart = `${dir}/sweep.svg`;
    const args = [...small, "--sweep", "cardTesting.minCount=4,6", "--chart", chart, "--json"];
    const first = await tune(args);
    assert.equal(first.code, 0, first.stderr);
    const json = JSON.parse(first.stdout);
    assert.deepEqual(json.points.map((p: { value: number }) => p.value), [4, 6]);
    assert.match(await Deno.readTextFile(chart), /card_testing precision/);
    const again = await tune(args);
    assert.equal(again.stdout, first.stdout, "the same flags, the same JSON");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
