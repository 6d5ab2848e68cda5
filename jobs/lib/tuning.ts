/**
 * The offline evaluation harness behind `deno task tune`: generated traffic
 * through the detection job's own processor, scored by jobs/lib/evaluation.ts.
 * No Kafka, no clock in the figures: the same options give the same figures.
 *
 *   TransactionGenerator (seed, users, records or days, fraud rate)
 *     → each record as the job reads it: its JSON bytes, no headers
 *     → the processor's parse and process (batch.ts's batchStep, as the
 *       runtime and the test driver run it), state in one PartitionState
 *     → anomalies, as the job writes them (JSON) → evaluate()
 *
 * One partition holds every user: the job sees each user's records in the
 * order they were produced (one user, one partition), and so does this; the
 * rules keep state per user only, so how users share partitions changes
 * nothing. The labels stay outside the records the processor sees.
 *
 * @module
 */
import {
  generatedJson,
  type GeneratedRecord,
  type GeneratorOptions,
  TransactionGenerator,
} from "./generator.ts";
import { batchStep } from "./batch.ts";
import { PartitionState, type SourceRecord, type StreamProcessor } from "./stream.ts";
import { type Anomaly, type DetectConfig, parseDetectConfig } from "./rules.ts";
import {
  type Evaluation,
  GroundTruth,
  type HardNegativeScore,
  type HardNegativeTruth,
  type PatternRecall,
  perTenThousandUserDays,
  type RulePrecision,
} from "./evaluation.ts";

/**
 * A generated record as the harness reads it: the generator's, with the
 * hard-negative label of issue 13 (present once the generator makes them).
 */
export type LabelledRecord = GeneratedRecord & { readonly hardNegative?: HardNegativeTruth };

/** What traffic to generate for one seed. */
export interface TrafficOptions {
  seed: string;
  /** Simulated users (generator default when absent). */
  users?: number;
  /** Arrivals to draw, then the rest of the started instances; exclusive with `days`. */
  records?: number;
  /** Or: event-time days to cover, then the rest of the started instances. */
  days?: number;
  /** Event-time compression (1, uncompressed, when absent). */
  timeScale?: number;
  /** Expected share of fraud-labelled records. */
  fraudRate: number;
  /** Whether the generator adds labelled hard negatives (when it can). */
  hardNegatives: boolean;
}

const DAY_MS = 86_400_000;

/**
 * The generator's options for `o`: uncompressed event time unless
 * `timeScale` says otherwise, the generator's default share of hard
 * negatives when they are on.
 */
export function generatorOptions(o: TrafficOptions): GeneratorOptions {
  const options: GeneratorOptions = {
    seed: o.seed,
    fraudRate: o.fraudRate,
    timeScale: o.timeScale ?? 1,
  };
  if (!o.hardNegatives) options.hardNegativeRate = 0;
  if (o.users !== undefined) options.users = o.users;
  return options;
}

/**
 * The records of one seed, in production order: `records` arrivals (or
 * those of the first `days` of event time), then the rest of the fraud
 * instances already started, so that every instance is complete.
 */
export function* traffic(o: TrafficOptions): Generator<LabelledRecord> {
  const generator = new TransactionGenerator(generatorOptions(o));
  if (o.days !== undefined) {
    let end = NaN;
    for (;;) {
      const r: LabelledRecord = generator.next();
      if (Number.isNaN(end)) end = r.tx.transactionTime + o.days * DAY_MS;
      if (r.tx.transactionTime >= end) {
        if (r.label !== undefined || r.hardNegative !== undefined) yield r; // its instance's
        break;
      }
      yield r;
    }
  } else {
    for (let i = 0; i < (o.records ?? 0); i++) yield generator.next();
  }
  yield* generator.flush();
}

/** What {@link runDetection} gathered. */
export interface DetectionRun {
  truth: GroundTruth;
  /** As the job wrote them, oldest first. */
  anomalies: Anomaly[];
  /** Records the processor rejected (the generator's never should be). */
  deadLetters: number;
}

/** Options of {@link runDetection}. */
export interface RunOptions {
  /** Records per batch (the state's changes are dropped after each). Default 4096. */
  batchSize?: number;
  /** Called after each batch with the records run so far. */
  onProgress?: (records: number) => void;
}

const utf8 = new TextEncoder();

/**
 * Runs `records` through `processor` (the detection job's: detectProcessor
 * in jobs/detect.ts) as the job runs them, gathering the ground truth beside.
 */
export function runDetection<T, S>(
  records: Iterable<LabelledRecord>,
  processor: StreamProcessor<T, S>,
  o: RunOptions = {},
): DetectionRun {
  const batchSize = o.batchSize ?? 4096;
  const truth = new GroundTruth();
  const anomalies: Anomaly[] = [];
  let deadLetters = 0;
  const state = new PartitionState();
  let offset = 0;
  const toRecord = (r: LabelledRecord): SourceRecord => ({
    topic: processor.source,
    partition: 0,
    offset: String(offset++),
    key: r.key,
    value: utf8.encode(generatedJson(r.tx)),
    headers: {}, // the labels never reach the detector
  });
  const step = batchStep(processor, 0, state, toRecord, {
    output: (out) => {
      if (out.value !== null) anomalies.push(JSON.parse(out.value) as Anomaly);
    },
    deadLetter: () => deadLetters++,
  });
  let batch: LabelledRecord[] = [];
  const flush = () => {
    step.begin();
    step.records(batch);
    step.end();
    state.takeChanges();
    batch = [];
    o.onProgress?.(offset);
  };
  for (const r of records) {
    truth.add(r.tx, { fraud: r.label, hardNegative: r.hardNegative });
    batch.push(r);
    if (batch.length >= batchSize) flush();
  }
  if (batch.length > 0) flush();
  return { truth, anomalies, deadLetters };
}

/**
 * Evaluations of several runs as one: counts add up, ratios are recomputed
 * from them. Legitimate users add up per run (the seeds share one
 * population, so one person can count once per run) and `days` is their
 * user-weighted mean, so users × days is the runs' user-days added up.
 */
export function combineEvaluations(es: readonly Evaluation[]): Evaluation {
  if (es.length === 1) return es[0];
  const sum = (f: (e: Evaluation) => number) => es.reduce((s, e) => s + f(e), 0);
  const patterns = mergeBy(es, (e) => e.patterns, (r) => r.pattern, (rows): PatternRecall => {
    const instances = rows.reduce((s, r) => s + r.instances, 0);
    const detected = rows.reduce((s, r) => s + r.detected, 0);
    return { pattern: rows[0].pattern, instances, detected, recall: ratio(detected, instances) };
  });
  const rules = mergeBy(es, (e) => e.rules, (r) => r.rule, (rows): RulePrecision => {
    const anomalies = rows.reduce((s, r) => s + r.anomalies, 0);
    const truePositives = rows.reduce((s, r) => s + r.truePositives, 0);
    const detected = rows.reduce((s, r) => s + r.detected, 0);
    const pattern = rows[0].pattern;
    const instances = patterns.find((p) => p.pattern === pattern)?.instances ?? 0;
    return {
      rule: rows[0].rule,
      anomalies,
      truePositives,
      precision: ratio(truePositives, anomalies),
      pattern,
      detected,
      recall: ratio(detected, instances),
    };
  });
  const hardNegatives = mergeBy(
    es,
    (e) => e.hardNegatives,
    (r) => r.kind,
    (rows): HardNegativeScore => {
      const instances = rows.reduce((s, r) => s + r.instances, 0);
      const flagged = rows.reduce((s, r) => s + r.flagged, 0);
      const anomalies = rows.reduce((s, r) => s + r.anomalies, 0);
      const falsePositives = rows.reduce((s, r) => s + r.falsePositives, 0);
      return {
        kind: rows[0].kind,
        instances,
        flagged,
        falsePositiveRate: ratio(flagged, instances),
        anomalies,
        falsePositives,
        precision: ratio(anomalies - falsePositives, anomalies),
      };
    },
  );
  const instances = sum((e) => e.instances);
  const detected = sum((e) => e.detected);
  const anomalies = sum((e) => e.anomalies);
  const truePositives = sum((e) => e.truePositives);
  const falsePositives = sum((e) => e.falsePositives);
  const legitimateUsers = sum((e) => e.legitimateUsers);
  const userDays = sum((e) => e.legitimateUsers * e.days);
  const days = legitimateUsers > 0 ? userDays / legitimateUsers : 0;
  return {
    patterns,
    instances,
    detected,
    recall: ratio(detected, instances),
    rules,
    anomalies,
    truePositives,
    precision: ratio(truePositives, anomalies),
    falsePositives,
    legitimateUsers,
    days,
    falsePositivesPer10kUserDays: perTenThousandUserDays(falsePositives, 1, userDays),
    hardNegatives,
  };
}

/** Rows of every evaluation grouped by `key` (first-seen order), each group merged. */
function mergeBy<R>(
  es: readonly Evaluation[],
  rows: (e: Evaluation) => R[],
  key: (row: R) => string,
  merge: (group: R[]) => R,
): R[] {
  const groups = new Map<string, R[]>();
  for (const e of es) {
    for (const r of rows(e)) {
      const g = groups.get(key(r));
      if (g === undefined) groups.set(key(r), [r]);
      else g.push(r);
    }
  }
  return [...groups.values()].map(merge);
}

function ratio(part: number, whole: number): number | null {
  return whole === 0 ? null : part / whole;
}

/** A threshold swept over values: `key` is a dotted path into DetectConfig. */
export interface Sweep {
  key: string;
  values: number[];
}

/** Most values one sweep may take. */
export const MAX_SWEEP_VALUES = 100;

/** The numeric thresholds of DetectConfig, as dotted keys (`velocity.minCount`, `maxEvents`). */
export function thresholdKeys(config: DetectConfig): string[] {
  const keys: string[] = [];
  for (const [k, v] of Object.entries(config)) {
    if (typeof v === "number") keys.push(k);
    else for (const inner of Object.keys(v)) keys.push(`${k}.${inner}`);
  }
  return keys;
}

/**
 * Parses `KEY=FROM..TO` (step 1), `KEY=FROM..TO:STEP` or `KEY=V1,V2,…` into a
 * {@link Sweep}; throws a RangeError saying what was expected and given.
 */
export function parseSweep(text: string, config: DetectConfig): Sweep {
  const keys = thresholdKeys(config);
  const eq = text.indexOf("=");
  const fail = (expected: string): never => {
    throw new RangeError(`expected ${expected}, got "${text}"`);
  };
  if (eq < 0) fail("KEY=FROM..TO[:STEP] or KEY=V1,V2,…, e.g. velocity.minCount=4..12");
  const key = text.slice(0, eq).trim();
  if (!keys.includes(key)) fail(`a threshold key, one of ${keys.join(", ")}`);
  const spec = text.slice(eq + 1).trim();
  const num = (s: string) => (/^\s*-?\d+(\.\d+)?\s*$/.test(s) ? Number(s) : NaN);
  let values: number[];
  const range = /^([^.,:]+(?:\.\d+)?)\.\.([^:]+)(?::(.+))?$/.exec(spec);
  if (range) {
    const [from, to, step] = [num(range[1]), num(range[2]), num(range[3] ?? "1")];
    if ([from, to, step].some(Number.isNaN) || step <= 0 || to < from) {
      fail("FROM..TO[:STEP] with numbers, FROM ≤ TO and STEP > 0");
    }
    const n = Math.floor((to - from) / step + 1e-9) + 1;
    if (n > MAX_SWEEP_VALUES) fail(`at most ${MAX_SWEEP_VALUES} values (this is ${n})`);
    values = Array.from({ length: n }, (_, i) => Number((from + i * step).toPrecision(12)));
  } else {
    values = spec.split(",").map(num);
    if (values.some(Number.isNaN)) fail("FROM..TO[:STEP] or comma-separated numbers");
    if (values.length > MAX_SWEEP_VALUES) fail(`at most ${MAX_SWEEP_VALUES} values`);
  }
  for (const v of values) withThreshold(config, key, v); // each one a valid config
  return { key, values };
}

/**
 * `config` with the threshold at dotted `key` set to `value`, checked by
 * parseDetectConfig (a RangeError names the key, what it expects and `value`).
 */
export function withThreshold(config: DetectConfig, key: string, value: number): DetectConfig {
  const copy = JSON.parse(JSON.stringify(config)) as Record<string, unknown>;
  const [section, inner] = key.split(".");
  if (inner === undefined) copy[section] = value;
  else (copy[section] as Record<string, unknown>)[inner] = value;
  return parseDetectConfig(copy);
}

/** The rule a threshold section belongs to; undefined for `maxEvents` (every rule). */
export function ruleOfKey(key: string): string | undefined {
  const section = key.split(".")[0];
  return ({
    velocity: "velocity",
    amountSpike: "amount_spike",
    impossibleTravel: "impossible_travel",
    cardTesting: "card_testing",
  } as Record<string, string>)[section];
}
