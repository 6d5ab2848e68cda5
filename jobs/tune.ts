/**
 * The offline evaluation harness: how the detector scores on generated
 * traffic, without Kafka, in seconds (jobs/lib/tuning.ts).
 *
 *   held-out (default): the thresholds scored on the tuning seeds and on
 *     held-out seeds, side by side (docs/evaluation.md: tune on one seed,
 *     judge on others);
 *   --sweep KEY=FROM..TO: one threshold over a range on the tuning seeds,
 *     threshold → precision and recall per rule, `--chart FILE` as SVG.
 *
 * The figures and their table are jobs/lib/evaluation.ts's, the same as
 * `deno task evaluate` prints from the topics. Config in, figures out:
 * `--config FILE` takes the thresholds as `deno task detect --config` does.
 *
 * @module
 */
import { defineCommand, parseCommandLine, UsageError } from "./lib/cli.ts";
import { detectProcessor, loadConfig } from "./detect.ts";
import { GENERATOR_DEFAULTS, MAX_USERS } from "./lib/generator.ts";
import type { DetectConfig } from "./lib/rules.ts";
import { evaluate, type Evaluation, formatEvaluations, RULE_PATTERNS } from "./lib/evaluation.ts";
import {
  combineEvaluations,
  parseSweep,
  ruleOfKey,
  runDetection,
  type Sweep,
  traffic,
  type TrafficOptions,
  withThreshold,
} from "./lib/tuning.ts";
import { type ChartSeries, lineChart } from "./lib/svg_chart.ts";
import { formatCount, LiveLine } from "./lib/progress.ts";

/** Arrivals per seed when neither --records nor --days is given. */
export const DEFAULT_RECORDS = 200_000;

/** The harness's flags. */
export const TUNE_COMMAND = defineCommand({
  name: "deno task tune",
  summary: "score the detector offline on generated traffic: held-out seeds, threshold sweeps",
  flags: {
    seeds: { kind: "list", default: ["1"], help: "seeds to tune on", placeholder: "S1,S2" },
    "held-out": {
      kind: "list",
      default: ["2", "3"],
      help: "seeds held out from tuning, scored beside the tuning seeds (not used by --sweep)",
      placeholder: "S1,S2",
    },
    records: {
      kind: "int",
      min: 1,
      help: `arrivals per seed (default ${DEFAULT_RECORDS}); or --days`,
      placeholder: "N",
    },
    days: {
      kind: "number",
      min: 0.0001,
      help: "event-time days per seed instead of --records",
      placeholder: "D",
    },
    users: {
      kind: "int",
      min: 1,
      max: MAX_USERS,
      default: GENERATOR_DEFAULTS.users,
      help: "simulated users",
    },
    "time-scale": {
      kind: "number",
      min: 1,
      max: 100_000,
      default: 1,
      help: "event-time compression: 1 = a simulated day is a day, users make a few " +
        "transactions a day (what per-user-day figures need); N = they act N times faster",
      placeholder: "N",
    },
    "fraud-rate": {
      kind: "number",
      min: 0,
      max: 0.99,
      default: 0.01,
      help: "expected share of fraud-labelled records",
    },
    "hard-negatives": {
      kind: "boolean",
      default: true,
      help: "have the generator add labelled hard negatives (when it makes them)",
    },
    config: {
      kind: "string",
      help: "JSON file of thresholds over jobs/config/detect_defaults.json, as detect --config",
      placeholder: "FILE",
    },
    sweep: {
      kind: "string",
      help: "sweep one threshold on the tuning seeds: KEY=FROM..TO[:STEP] or KEY=V1,V2,…",
      placeholder: "KEY=FROM..TO",
    },
    chart: {
      kind: "string",
      help: "with --sweep: write the threshold → precision/recall chart here (SVG)",
      placeholder: "FILE",
    },
    json: { kind: "boolean", default: false, help: "print JSON instead of the table" },
  },
  examples: [
    "deno task tune",
    "deno task tune --seeds 1 --held-out 2,3,4 --records 500000",
    "deno task tune --sweep velocity.minCount=4..12 --chart velocity.svg",
    "deno task tune --config my_thresholds.json --json",
  ],
});

/** What one harness run is given (the parsed flags, checked). */
export interface TuneOptions {
  seeds: string[];
  heldOut: string[];
  traffic: Omit<TrafficOptions, "seed">;
  config: DetectConfig;
  /** Where the config came from, for the report. */
  configSource: string;
  sweep?: Sweep;
}

/** The figures of some seeds: each seed's and all of them combined. */
export interface SeedsResult {
  seeds: string[];
  records: number;
  evaluation: Evaluation;
  perSeed: Array<{ seed: string; records: number; evaluation: Evaluation }>;
}

/** Records scored and the time it took, for the speed line. */
export interface Throughput {
  records: number;
  seconds: number;
}

/** Reports progress: the seed being run and its records so far. */
export type Progress = (seed: string, records: number) => void;

/** Scores `config` on each of `seeds` (generated anew per seed). */
export function scoreSeeds(
  seeds: readonly string[],
  traffic_: Omit<TrafficOptions, "seed">,
  config: DetectConfig,
  progress: Progress = () => {},
): SeedsResult {
  const processor = detectProcessor({
    appId: "txpipe-tune",
    input: "financial_transactions",
    output: "transaction_anomalies",
    config,
  });
  const perSeed = seeds.map((seed) => {
    const run = runDetection(traffic({ ...traffic_, seed }), processor, {
      onProgress: (n) => progress(seed, n),
    });
    if (run.deadLetters > 0) {
      throw new Error(`seed ${seed}: the detector rejected ${run.deadLetters} generated records`);
    }
    return {
      seed,
      records: run.truth.transactions,
      evaluation: evaluate(run.truth, run.anomalies),
    };
  });
  return {
    seeds: [...seeds],
    records: perSeed.reduce((s, r) => s + r.records, 0),
    evaluation: combineEvaluations(perSeed.map((r) => r.evaluation)),
    perSeed,
  };
}

/** One threshold value of a sweep and its figures on the tuning seeds. */
export interface SweepPoint {
  value: number;
  result: SeedsResult;
}

/** Runs `o.sweep` over the tuning seeds. */
export function runSweep(o: TuneOptions, sweep: Sweep, progress?: Progress): SweepPoint[] {
  return sweep.values.map((value) => ({
    value,
    result: scoreSeeds(
      o.seeds,
      o.traffic,
      withThreshold(o.config, sweep.key, value),
      (seed, n) => progress?.(`${seed} at ${sweep.key}=${value}`, n),
    ),
  }));
}

/** `seed 1` or `seeds 2, 3`. */
function seedsTitle(seeds: readonly string[]): string {
  return `${seeds.length === 1 ? "seed" : "seeds"} ${seeds.join(", ")}`;
}

/** The held-out table: tuning and held-out seeds side by side. */
export function formatHeldOut(tune: SeedsResult, heldOut: SeedsResult | undefined): string {
  const columns = [{ title: `tune: ${seedsTitle(tune.seeds)}`, evaluation: tune.evaluation }];
  if (heldOut) {
    columns.push({
      title: `held-out: ${seedsTitle(heldOut.seeds)}`,
      evaluation: heldOut.evaluation,
    });
  }
  return formatEvaluations(columns);
}

/** The sweep table: one row per value, precision / recall per rule, then overall. */
export function formatSweep(sweep: Sweep, points: readonly SweepPoint[]): string {
  const pct = (x: number | null) => (x === null ? "n/a" : (x * 100).toFixed(1));
  const rules = [...new Set(points.flatMap((p) => p.result.evaluation.rules.map((r) => r.rule)))];
  const header = [
    sweep.key,
    ...rules.map((r) => `${r} P / R %`),
    "all P / R %",
    "FP /10k users/day",
  ];
  const rows = points.map((p) => {
    const e = p.result.evaluation;
    return [
      String(p.value),
      ...rules.map((rule) => {
        const r = e.rules.find((x) => x.rule === rule);
        return r === undefined ? "" : `${pct(r.precision)} / ${pct(r.recall)}`;
      }),
      `${pct(e.precision)} / ${pct(e.recall)}`,
      e.falsePositivesPer10kUserDays === null ? "n/a" : e.falsePositivesPer10kUserDays.toFixed(2),
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const render = (r: string[]) =>
    r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("   ");
  return [
    render(header),
    ...rows.map(render),
    "",
    "P: precision (anomalies with fraud-labelled evidence / anomalies); R: recall of the rule " +
    "on its own pattern (rule → pattern: " +
    Object.entries(RULE_PATTERNS).map(([r, p]) => `${r} → ${p}`).join(", ") +
    "); all R: instances of every pattern detected by any rule / injected",
  ].join("\n");
}

/** The SVG chart of a sweep: the swept rule's precision and recall, and overall precision. */
export function sweepChart(sweep: Sweep, points: readonly SweepPoint[], seeds: string[]): string {
  const rule = ruleOfKey(sweep.key);
  const series: ChartSeries[] = [];
  const of = (pick: (e: Evaluation) => number | null) =>
    points.map((p) => [p.value, pick(p.result.evaluation)] as [number, number | null]);
  if (rule !== undefined) {
    const r = (e: Evaluation) => e.rules.find((x) => x.rule === rule);
    series.push(
      { name: `${rule} precision`, points: of((e) => r(e)?.precision ?? null) },
      {
        name: `${rule} recall (${RULE_PATTERNS[rule]})`,
        points: of((e) => r(e)?.recall ?? null),
        dashed: true,
      },
    );
  }
  series.push(
    { name: "all rules precision", points: of((e) => e.precision) },
    { name: "all patterns recall", points: of((e) => e.recall), dashed: true },
  );
  return lineChart({
    title: `${sweep.key}: precision and recall (${seedsTitle(seeds)})`,
    xLabel: sweep.key,
    yLabel: "precision / recall",
    series,
  });
}

/** The one-line description of what was generated. */
function describe(o: TuneOptions, hardNegativesSeen: boolean): string {
  const t = o.traffic;
  const size = t.days !== undefined ? `${t.days} days` : `${formatCount(t.records ?? 0)} arrivals`;
  const hard = !t.hardNegatives ? "off" : hardNegativesSeen ? "on" : "on (none generated)";
  return `thresholds ${o.configSource}; per seed ${size}, ${formatCount(t.users ?? 0)} users, ` +
    `time scale ${t.timeScale ?? 1}, fraud rate ${t.fraudRate}, hard negatives ${hard}`;
}

/** The checked options of parsed flags; a {@link UsageError} for what they cannot mean. */
export async function tuneOptions(
  v: ReturnType<typeof parseCommandLine<typeof TUNE_COMMAND.flags>>["values"],
): Promise<TuneOptions> {
  if (v.records !== undefined && v.days !== undefined) {
    throw new UsageError(
      `--days: expected either --records or --days, got both (--records ${v.records} --days ${v.days})`,
    );
  }
  if (v.chart !== undefined && v.sweep === undefined) {
    throw new UsageError(`--chart: expected --sweep with it, got --chart ${v.chart} alone`);
  }
  const config = await loadConfig(v.config);
  let sweep: Sweep | undefined;
  if (v.sweep !== undefined) {
    try {
      sweep = parseSweep(v.sweep, config);
    } catch (err) {
      throw new UsageError(`--sweep: ${(err as Error).message}`);
    }
  }
  return {
    seeds: v.seeds,
    heldOut: v.heldOut,
    traffic: {
      users: v.users,
      records: v.days === undefined ? v.records ?? DEFAULT_RECORDS : undefined,
      days: v.days,
      timeScale: v.timeScale,
      fraudRate: v.fraudRate,
      hardNegatives: v.hardNegatives,
    },
    config,
    configSource: v.config ?? "jobs/config/detect_defaults.json",
    sweep,
  };
}

/** A progress reporter on stderr: a live line on a terminal, nothing on a pipe. */
function progressLine(): { progress: Progress; done: () => void } {
  const live = new LiveLine();
  let last = 0;
  return {
    progress: (what, n) => {
      const now = performance.now();
      if (now - last < 250) return;
      last = now;
      live.update(`tune: seed ${what}: ${formatCount(n)} records`);
    },
    done: () => live.done(),
  };
}

async function main(): Promise<number> {
  const { values: v } = parseCommandLine(TUNE_COMMAND);
  let o: TuneOptions;
  try {
    o = await tuneOptions(v);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    console.error(`${TUNE_COMMAND.name}: ${err.message}\nRun with --help for usage.`);
    return 2;
  }
  const { progress, done } = progressLine();
  const started = performance.now();
  let records = 0;
  let output: string;
  if (o.sweep !== undefined) {
    const points = runSweep(o, o.sweep, progress);
    done();
    records = points.reduce((s, p) => s + p.result.records, 0);
    const hard = points.some((p) => p.result.evaluation.hardNegatives.some((h) => h.instances));
    if (v.chart !== undefined) {
      await Deno.writeTextFile(v.chart, sweepChart(o.sweep, points, o.seeds));
    }
    output = v.json
      ? JSON.stringify({ options: o, sweep: o.sweep, points }, null, 2)
      : `${describe(o, hard)}\n${formatSweep(o.sweep, points)}`;
  } else {
    const tune = scoreSeeds(o.seeds, o.traffic, o.config, progress);
    const heldOut = o.heldOut.length > 0
      ? scoreSeeds(o.heldOut, o.traffic, o.config, progress)
      : undefined;
    done();
    records = tune.records + (heldOut?.records ?? 0);
    const hard = [tune, heldOut].some((r) =>
      r?.evaluation.hardNegatives.some((h) => h.instances > 0)
    );
    output = v.json
      ? JSON.stringify({ options: o, tune, heldOut }, null, 2)
      : `${describe(o, hard)}\n\n${formatHeldOut(tune, heldOut)}`;
  }
  console.log(output);
  const seconds = (performance.now() - started) / 1000;
  console.error(
    `tune: scored ${formatCount(records)} records in ${seconds.toFixed(1)} s ` +
      `(${formatCount(records / seconds)} records/s, generation included)` +
      (v.chart !== undefined ? `; chart written to ${v.chart}` : ""),
  );
  return 0;
}

if (import.meta.main) Deno.exit(await main());
