/**
 * The result file of `deno task bench` and the pure arithmetic behind it:
 * medians with their spread, ratios, and the cross-check of window
 * aggregates between contenders. tests/bench_results_test.ts covers it.
 *
 * @module
 */
import type { CatchUpRun, WindowTotals } from "./types.ts";

/** A figure measured over several runs: the median, with min and max. */
export interface Spread {
  median: number;
  min: number;
  max: number;
  runs: number[];
}

/** Median (the mean of the middle two for an even count), min and max of `values`. */
export function spread(values: readonly number[]): Spread {
  if (values.length === 0) throw new Error("spread: no values");
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  return { median, min: sorted[0], max: sorted[sorted.length - 1], runs: [...values] };
}

/** One contender's runs, summarised. */
export interface ContenderSummary {
  contender: string;
  /** What it is, in a few words (shown in the table). */
  what: string;
  recordsPerSecond: Spread;
  recordsPerSecondFromFirstOutput?: Spread;
  peakRssBytes?: Spread;
  cpuSeconds?: Spread;
  /** CPU seconds of the Kafka JVMs during the runs (see CatchUpRun.kafkaCpuSeconds). */
  kafkaCpuSeconds?: Spread;
  /** CPU seconds per million records (median run). */
  cpuSecondsPerMillion?: number;
  /** Input records dropped as late or invalid, per run (when the contender reports them). */
  dropped?: number[];
}

/** Summarises the runs of one contender. */
export function summariseRuns(
  contender: string,
  what: string,
  runs: CatchUpRun[],
): ContenderSummary {
  const fromFirst = runs.map((r) => r.recordsPerSecondFromFirstOutput).filter((v): v is number =>
    v !== undefined && v > 0
  );
  const cpu = spread(runs.map((r) => r.cpuSeconds));
  const records = runs[0]?.records ?? 0;
  return {
    contender,
    what,
    recordsPerSecond: spread(runs.map((r) => r.recordsPerSecond)),
    ...(fromFirst.length === runs.length
      ? { recordsPerSecondFromFirstOutput: spread(fromFirst) }
      : {}),
    peakRssBytes: spread(runs.map((r) => r.peakRssBytes)),
    cpuSeconds: cpu,
    ...(runs.length > 0 && runs.every((r) => r.kafkaCpuSeconds !== undefined)
      ? { kafkaCpuSeconds: spread(runs.map((r) => r.kafkaCpuSeconds!)) }
      : {}),
    ...(records > 0 ? { cpuSecondsPerMillion: (cpu.median / records) * 1e6 } : {}),
    ...(runs.some((r) => r.dropped !== undefined)
      ? { dropped: runs.map((r) => r.dropped ?? 0) }
      : {}),
  };
}

/** The cross-check of one contender's windows against the reference's. */
export interface CrossCheck {
  contender: string;
  reference: string;
  /** Windows both emitted (closed in both). */
  compared: number;
  /** Of those, windows whose count or minor-unit sums differ. */
  mismatched: number;
  /** Windows only one side emitted (not yet closed on the other side, or a finding). */
  onlyReference: number;
  onlyContender: number;
  /** The first few mismatches, for the report. */
  examples: Array<{ reference: WindowTotals; contender: WindowTotals }>;
  /** Windows the contender emitted more than once (a final result must be single). */
  duplicates: number;
}

function windowId(w: WindowTotals): string {
  return JSON.stringify([w.merchantId, w.currency, w.windowStart]);
}

/**
 * Compares `contender`'s windows with `reference`'s on the windows both
 * emitted: transaction count and purchase and refund sums in minor units
 * must be equal, exactly.
 */
export function crossCheck(
  names: { reference: string; contender: string },
  reference: readonly WindowTotals[],
  contender: readonly WindowTotals[],
): CrossCheck {
  const ref = new Map<string, WindowTotals>();
  for (const w of reference) ref.set(windowId(w), w);
  const seen = new Set<string>();
  let duplicates = 0;
  let compared = 0;
  let mismatched = 0;
  let onlyContender = 0;
  const examples: CrossCheck["examples"] = [];
  for (const w of contender) {
    const id = windowId(w);
    if (seen.has(id)) {
      duplicates++;
      continue;
    }
    seen.add(id);
    const r = ref.get(id);
    if (!r) {
      onlyContender++;
      continue;
    }
    compared++;
    if (
      r.transactionCount !== w.transactionCount || r.purchaseMinor !== w.purchaseMinor ||
      r.refundMinor !== w.refundMinor || r.windowEnd !== w.windowEnd
    ) {
      mismatched++;
      if (examples.length < 5) examples.push({ reference: r, contender: w });
    }
  }
  return {
    ...names,
    compared,
    mismatched,
    onlyReference: [...ref.keys()].filter((id) => !seen.has(id)).length,
    onlyContender,
    examples,
    duplicates,
  };
}

/**
 * Aggregate records as {@link WindowTotals}: txpipe's (jobs/lib/windows.ts
 * `Aggregate`), and the Kafka Streams and Spark peers', which write the same
 * field names. Each value is JSON text or already parsed.
 */
export function windowTotals(values: readonly unknown[]): WindowTotals[] {
  return values.map((v) => {
    const a = (typeof v === "string" ? JSON.parse(v) : v) as Record<string, unknown>;
    return {
      merchantId: String(a.merchantId),
      currency: String(a.currency),
      windowStart: Number(a.windowStart),
      windowEnd: Number(a.windowEnd),
      transactionCount: Number(a.transactionCount),
      purchaseMinor: Number(a.purchaseAmountMinor),
      refundMinor: Number(a.refundAmountMinor),
    };
  });
}

/** The machine a result was measured on. */
export interface Machine {
  cpus: number;
  cpuModel: string;
  memoryGiB: number;
  kernel: string;
  deno: string;
  java: string;
  kafka: string;
}

/** The cluster as a bench run found it, after deleting the topics tests left. */
export interface ClusterState {
  /** Topics named `test_…` or `test-…` deleted before the run. */
  topicsDeletedFirst: number;
  /** Partition replicas (leaders and followers) per broker id, every topic counted. */
  partitionReplicasPerBroker: Record<string, number>;
}

/** The producer section of a result. */
export interface ProducerResult {
  records: number;
  meanRecordBytes: number;
  contenders: ContenderSummary[];
}

/**
 * The cost of authentication and TLS (`deno task bench security`): the
 * producer and detect over the same backlog, each over SASL_PLAINTEXT (the
 * default), SASL_SSL and PLAINTEXT, on the same cluster, interleaved.
 */
export interface SecurityResult {
  records: number;
  /** Contenders named "<job> over <protocol>", e.g. "txpipe produce over SASL_SSL". */
  contenders: ContenderSummary[];
}

/**
 * Today's stream jobs against the same jobs at an earlier commit
 * (`deno task bench reference --rev REV`): one backlog, interleaved, every
 * job over the bench's PLAINTEXT listener (an earlier commit may not speak
 * SASL).
 */
export interface ReferenceResult {
  /** The earlier commit, abbreviated. */
  rev: string;
  records: number;
  /** "txpipe aggregate", "txpipe aggregate at REV", "txpipe detect", ... */
  contenders: ContenderSummary[];
  /** Every aggregation run's windows against today's first run. */
  crossChecks: CrossCheck[];
  /** With `--with-latency`: rows of "detect", "detect at REV", "aggregate", ... */
  latency?: LatencyResult;
}

/** The catch-up section of a result. */
export interface CatchUpResult {
  records: number;
  windowMs: number;
  allowedLatenessMs: number;
  contenders: ContenderSummary[];
  crossChecks: CrossCheck[];
  /** With `--cpus-per-instance`: the cores each txpipe instance was limited to. */
  cpusPerInstance?: number;
}

/** One paced rate of one job (tests/bench/latency.ts). */
export interface LatencyRow {
  job: string;
  rate: number;
  achievedRate: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  sustained: boolean;
  why?: string;
  jobP50Ms?: number;
  jobP99Ms?: number;
  peakRssBytes?: number;
}

/** The latency section of a result. */
export interface LatencyResult {
  seconds: number;
  rows: LatencyRow[];
  maxSustainableRate: Record<string, number | null>;
}

/** What one `deno task bench` run writes (results-<time>.json). */
export interface BenchResult {
  /** ISO date and time the run started. */
  date: string;
  command: string;
  machine: Machine;
  /** The cluster as the run found it (results written before 2026-12-07 lack it). */
  cluster?: ClusterState;
  runs: number;
  producer?: ProducerResult;
  catchUp?: CatchUpResult;
  latency?: LatencyResult;
  security?: SecurityResult;
  reference?: ReferenceResult;
  /** Seconds the whole bench took. */
  seconds: number;
}

/** a / b, or undefined when either is missing or b is 0. */
export function ratio(a: number | undefined, b: number | undefined): number | undefined {
  return a !== undefined && b !== undefined && b > 0 ? a / b : undefined;
}
