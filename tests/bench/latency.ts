/**
 * End-to-end latency and the maximum sustainable rate of one stream job
 * instance, a module of `deno task bench` (tests/bench/bench.ts calls
 * {@link measureRate} and {@link sweep}); also runnable on its own:
 *
 *   deno run -A tests/bench/latency.ts --job detect --rates 1000,5000 --seconds 20
 *
 * One point, at a paced rate R:
 *
 *   fresh bench_ input topic (financial_transactions' settings)
 *     → one job instance (fresh output, dead-letter and internal topics, app id)
 *     → `deno task produce --rate R` into the topic (event time = wall clock)
 *     → the independent read_committed reader (tests/bench/reader.ts) on the output
 *
 * then a warm-up (not measured), then `seconds` of measurement, then a drain.
 *
 * Definitions:
 *
 * - latency of an output: the reader's wall-clock receipt minus the output's
 *   reference time. detect: the anomaly's `detectedAt` (the event time of
 *   the transaction that triggered it, jobs/lib/rules.ts). aggregate: the
 *   window's `windowEnd` + allowed lateness, the earliest moment the window
 *   may be final (the watermark is the highest event time minus the allowed
 *   lateness, and event time follows the clock). Outputs whose reference
 *   time falls in the measurement interval are measured; the drain lets the
 *   last of them arrive. Percentiles are nearest-rank ({@link percentile}).
 * - the aggregation runs with 10 s windows and 2 s allowed lateness
 *   ({@link LATENCY_DEFAULTS}): each window boundary closes every active
 *   merchant and currency window at once, so a 60 s measurement sees six
 *   boundaries and thousands of windows; 2 s is more than the producer's
 *   batching (at most one batch of 4,000 records, 50 ms at 80,000 rec/s),
 *   so the watermark drops no record, and small beside the window.
 * - consumer lag: the records the job's groups have not committed (for the
 *   aggregation both stages, input and repartition topic), sampled every
 *   {@link LATENCY_DEFAULTS.lagIntervalMs} during the measurement. It is
 *   bounded ({@link judgePoint}) when (1) the lag at the end (mean of the
 *   last five samples, about 15 s: commits come per batch and the
 *   aggregation's window closes come in bursts, so lag is a saw-tooth) is at
 *   most `endSecondsOfInput` (3) seconds of input, `max(3 × R, 1,000)`
 *   records, and (2) the least-squares slope of lag over time is at most
 *   `slopeFraction` (2 %) of R: a job falling behind by 2 % of the input has
 *   a lag growing by 0.02 × R records a second, beyond the saw-tooth's noise
 *   on the slope (about 0.3 % of R with 20 samples over 60 s). A job that
 *   keeps up was seen with saw-tooth peaks of 2.7 s of input (aggregate at
 *   5,000 rec/s, 2 shared cores), averaging about 1.2 s; a job that does not
 *   fails (2) long before (1), which catches one that keeps pace with a
 *   backlog it never works off.
 * - sustained: bounded lag, the producer reached at least 95 % of R over the
 *   measurement (measured from the input topic's offsets, independently of
 *   the producer), the job and the producer ran throughout, and some output
 *   was measured. Otherwise `why` lists what failed (a producer short of the
 *   rate is named as such: then the point says little about the job).
 * - the maximum sustainable rate of a sweep: the highest rate of a sustained
 *   point.
 *
 * The job's own view comes from its `txpipe_event_to_output_latency_seconds`
 * histogram (commit time minus the output's event time; for the aggregation
 * the event time is `windowEnd`, so its figures include the allowed
 * lateness), scraped at the start and end of the measurement and
 * subtracted, with quantiles interpolated in buckets as Prometheus'
 * `histogram_quantile` does ({@link histogramQuantile}).
 *
 * @module
 */
import { join } from "node:path";
import { homeDir } from "../../stacks/local/cluster.ts";
import { internalTopicNames, topicAs, TOPICS } from "../../stacks/topology.ts";
import { ensureTopics } from "../../jobs/lib/kafka.ts";
import { defineCommand, parseCommandLine } from "../../jobs/lib/cli.ts";
import { copyToFile } from "../../jobs/lib/log_file.ts";
import { formatCount } from "../../jobs/lib/progress.ts";
import { parseMetrics, type Sample } from "../../jobs/lib/scrape.ts";
import { BROKERS, TOPO, withAdmin } from "../helpers/cluster.ts";
import {
  diagnosis,
  groupProgress,
  groupsOf,
  type Instance,
  type InstanceOptions,
  type JobTopics,
  runTopics,
  startInstance,
  stopInstance,
} from "../helpers/jobs.ts";
import { ProcessWatch, stopGracefully } from "./proc.ts";
import { type Received, startReader } from "./reader.ts";

/** The stream jobs measured. */
export type StreamJob = "aggregate" | "detect";

/** When consumer lag counts as bounded. */
export interface LagBounds {
  /** The end lag may be at most this many seconds of input (rate × this). */
  endSecondsOfInput: number;
  /** ...and at least this many records are always allowed (for low rates). */
  minEndRecords: number;
  /** The least-squares slope of lag may be at most this fraction of the rate per second. */
  slopeFraction: number;
}

/** The settings of a run; each can be overridden per call. */
export const LATENCY_DEFAULTS = {
  /** Measured seconds: the issue's "lag stays bounded for 60 s". */
  seconds: 60,
  /** Seconds from the producer's start before measuring (job start-up, group join, catch-up). */
  warmupSeconds: 15,
  /** The sweep's rates (records per second). */
  rates: [1_000, 5_000, 20_000, 40_000, 80_000] as readonly number[],
  /** A sweep stops after this many unsustained points. */
  stopAfterFailures: 1,
  /** Lag sample interval during the measurement. */
  lagIntervalMs: 3_000,
  /** The aggregation's tumbling window and allowed lateness (see the module doc). */
  windowMs: 10_000,
  allowedLatenessMs: 2_000,
  /**
   * The producer's --fraud-rate: 5 % (its default is 1 %) so that detection
   * yields enough anomalies to measure at 1,000 rec/s (about 100 a minute
   * instead of 20); detection's per-record work does not depend on it.
   */
  fraudRate: 0.05,
  /** The producer must reach this fraction of the asked rate. */
  minAchievedFraction: 0.95,
  bounds: { endSecondsOfInput: 3, minEndRecords: 1_000, slopeFraction: 0.02 } as LagBounds,
};

/** Latency percentiles of a set of outputs. */
export interface LatencyStats {
  count: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

/** Consumer lag over the measurement, in records. */
export interface LagSummary {
  /** First sample. */
  start: number;
  /** Mean of the last five samples (the last 15 s or so). */
  end: number;
  max: number;
  /** Least-squares slope of lag over time, records per second. */
  slopePerSecond: number;
  samples: number;
}

/** One lag sample: seconds since the measurement began, records behind. */
export interface LagSample {
  atSeconds: number;
  behind: number;
}

/** Quantiles estimated from the job's own histogram over the measurement. */
export interface HistogramEstimate {
  p50Ms: number;
  p99Ms: number;
  /** Observations during the measurement. */
  count: number;
}

/** One measured rate of one job. */
export interface LatencyPoint {
  job: StreamJob;
  /** Asked rate, records per second. */
  rate: number;
  /** Records that reached the input topic per second during the measurement. */
  achievedRate: number;
  /** Measured seconds (excluding warm-up and drain). */
  seconds: number;
  /**
   * Outputs measured: reference time within the measurement, received by the
   * reader by the end of the drain. Unsustained, outputs still held up then
   * are missing, so the percentiles are lower bounds.
   */
  outputs: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  lag: LagSummary;
  sustained: boolean;
  /** Why the point is not sustained. */
  why?: string;
  /** From the job's txpipe_event_to_output_latency_seconds (aggregate: from windowEnd). */
  jobHistogram: HistogramEstimate;
  /** Of the job's process during the whole run (warm-up included). */
  peakRssBytes: number;
  cpuSeconds: number;
  /** The aggregation's window and allowed lateness (absent for detect). */
  windowMs?: number;
  allowedLatenessMs?: number;
}

/** Options of {@link measureRate}. */
export interface MeasureOptions {
  job: StreamJob;
  rate: number;
  /** Default {@link LATENCY_DEFAULTS.seconds}. */
  seconds?: number;
  /** Default {@link LATENCY_DEFAULTS.warmupSeconds}. */
  warmupSeconds?: number;
  windowMs?: number;
  allowedLatenessMs?: number;
  /** The producer's --fraud-rate; default {@link LATENCY_DEFAULTS.fraudRate}. */
  fraudRate?: number;
  bounds?: LagBounds;
  /** Progress lines (default: stderr). */
  say?: (line: string) => void;
  /**
   * How the job instance runs: other brokers and settings (a transport), or
   * another checkout's job (`deno task bench reference`).
   */
  instance?: InstanceOptions;
  /** The contender's name in progress lines (default: the job's). */
  name?: string;
}

/** Options of {@link sweep}: those of {@link MeasureOptions} with rates instead of one rate. */
export interface SweepOptions extends Omit<MeasureOptions, "rate"> {
  /** Ascending; default {@link LATENCY_DEFAULTS.rates}. */
  rates?: readonly number[];
  /** Stop after this many unsustained points (default 1). */
  stopAfterFailures?: number;
}

/** A sweep's points and its maximum sustainable rate (null when no point was sustained). */
export interface SweepResult {
  job: StreamJob;
  points: LatencyPoint[];
  maxSustainableRate: number | null;
}

// ---------------------------------------------------------------------------
// Pure parts

/** The nearest-rank `q` quantile (0 < q <= 1) of ascending `sorted`; NaN when empty. */
export function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.max(1, Math.ceil(q * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1];
}

/** Count, p50, p99 and max of latencies in ms (any order). */
export function latencyStats(latenciesMs: readonly number[]): LatencyStats {
  const sorted = [...latenciesMs].sort((a, b) => a - b);
  return {
    count: sorted.length,
    p50Ms: percentile(sorted, 0.5),
    p99Ms: percentile(sorted, 0.99),
    maxMs: sorted.length ? sorted[sorted.length - 1] : NaN,
  };
}

/** Least-squares slope of y over x; 0 with fewer than two distinct x. */
export function leastSquaresSlope(points: ReadonlyArray<{ x: number; y: number }>): number {
  const n = points.length;
  if (n < 2) return 0;
  const mx = points.reduce((s, p) => s + p.x, 0) / n;
  const my = points.reduce((s, p) => s + p.y, 0) / n;
  let sxy = 0;
  let sxx = 0;
  for (const p of points) {
    sxy += (p.x - mx) * (p.y - my);
    sxx += (p.x - mx) ** 2;
  }
  return sxx === 0 ? 0 : sxy / sxx;
}

/** Start, end (mean of the last five), max and slope of lag samples in time order. */
export function summariseLag(samples: readonly LagSample[]): LagSummary {
  if (samples.length === 0) {
    return { start: NaN, end: NaN, max: NaN, slopePerSecond: NaN, samples: 0 };
  }
  const last = samples.slice(-5);
  return {
    start: samples[0].behind,
    end: last.reduce((s, x) => s + x.behind, 0) / last.length,
    max: Math.max(...samples.map((s) => s.behind)),
    slopePerSecond: leastSquaresSlope(samples.map((s) => ({ x: s.atSeconds, y: s.behind }))),
    samples: samples.length,
  };
}

/** Why lag at `rate` is not bounded by `bounds`, or undefined when it is. */
export function lagProblem(lag: LagSummary, rate: number, bounds: LagBounds): string | undefined {
  if (lag.samples < 3) return `only ${lag.samples} lag sample(s): lag unknown`;
  const endLimit = Math.max(bounds.endSecondsOfInput * rate, bounds.minEndRecords);
  if (lag.end > endLimit) {
    return `lag at the end ${formatCount(lag.end)} records > ${
      formatCount(endLimit)
    } (${bounds.endSecondsOfInput} s of input)`;
  }
  const slopeLimit = bounds.slopeFraction * rate;
  if (lag.slopePerSecond > slopeLimit) {
    return `lag grows ${formatCount(lag.slopePerSecond)} records/s > ${formatCount(slopeLimit)} (${
      bounds.slopeFraction * 100
    } % of the rate)`;
  }
  return undefined;
}

/** What decides a point, besides latency figures. */
export interface PointFacts {
  rate: number;
  achievedRate: number;
  lag: LagSummary;
  outputs: number;
  /** Set when the job or the producer exited before the end of the measurement. */
  exited?: string;
}

/**
 * Whether a point is sustained, and if not every reason, "; "-separated, in
 * this order: an exit, the producer's shortfall (the producer broke: the
 * point says little about the job), unbounded lag, no output.
 */
export function judgePoint(
  f: PointFacts,
  bounds: LagBounds = LATENCY_DEFAULTS.bounds,
  minAchievedFraction = LATENCY_DEFAULTS.minAchievedFraction,
): { sustained: boolean; why?: string } {
  const reasons: string[] = [];
  if (f.exited) reasons.push(f.exited);
  if (f.achievedRate < minAchievedFraction * f.rate) {
    reasons.push(
      `the producer reached only ${formatCount(f.achievedRate)} rec/s of ${
        formatCount(f.rate)
      } asked (< ${minAchievedFraction * 100} %)`,
    );
  }
  const lag = lagProblem(f.lag, f.rate, bounds);
  if (lag) reasons.push(lag);
  if (f.outputs === 0) reasons.push("no output measured");
  return reasons.length ? { sustained: false, why: reasons.join("; ") } : { sustained: true };
}

/** One cumulative bucket of a Prometheus histogram: observations <= `le`. */
export interface Bucket {
  le: number;
  count: number;
}

/**
 * The cumulative buckets of histogram `name` (e.g.
 * txpipe_event_to_output_latency_seconds) from parsed samples, summed over
 * the series whose labels include `match`, ascending by `le` (+Inf last).
 */
export function histogramBuckets(
  samples: readonly Sample[],
  name: string,
  match: Record<string, string> = {},
): Bucket[] {
  const byLe = new Map<number, number>();
  for (const s of samples) {
    if (s.name !== `${name}_bucket` || s.labels.le === undefined) continue;
    if (!Object.entries(match).every(([k, v]) => s.labels[k] === v)) continue;
    const le = s.labels.le === "+Inf" ? Infinity : Number(s.labels.le);
    byLe.set(le, (byLe.get(le) ?? 0) + s.value);
  }
  return [...byLe].map(([le, count]) => ({ le, count })).sort((a, b) => a.le - b.le);
}

/** {@link histogramBuckets} from Prometheus text exposition format. */
export function histogramFromText(
  text: string,
  name: string,
  match: Record<string, string> = {},
): Bucket[] {
  return histogramBuckets(parseMetrics(text), name, match);
}

/** `end` minus `start` bucket by bucket (a bucket missing from `start` counts 0). */
export function subtractBuckets(end: readonly Bucket[], start: readonly Bucket[]): Bucket[] {
  const before = new Map(start.map((b) => [b.le, b.count]));
  return end.map((b) => ({ le: b.le, count: Math.max(0, b.count - (before.get(b.le) ?? 0)) }));
}

/**
 * The `q` quantile of cumulative buckets, as Prometheus' histogram_quantile:
 * linear within the bucket holding the rank (the first bucket starts at 0);
 * a rank in the +Inf bucket gives the highest finite bound. NaN when empty.
 */
export function histogramQuantile(q: number, buckets: readonly Bucket[]): number {
  if (buckets.length === 0) return NaN;
  const total = buckets[buckets.length - 1].count;
  if (!(total > 0)) return NaN;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const b of buckets) {
    if (b.count >= rank && b.count > prevCount) {
      if (b.le === Infinity) return prevLe;
      return prevLe + (b.le - prevLe) * ((rank - prevCount) / (b.count - prevCount));
    }
    if (b.le !== Infinity) prevLe = b.le;
    prevCount = b.count;
  }
  return prevLe;
}

/** p50, p99 (ms) and count of the job's latency histogram between two scrapes. */
export function histogramEstimate(
  end: readonly Bucket[],
  start: readonly Bucket[],
): HistogramEstimate {
  const d = subtractBuckets(end, start);
  return {
    p50Ms: histogramQuantile(0.5, d) * 1000,
    p99Ms: histogramQuantile(0.99, d) * 1000,
    count: d.length ? d[d.length - 1].count : 0,
  };
}

/**
 * The reference time (epoch ms) of one output value: detect, the anomaly's
 * detectedAt; aggregate, windowEnd + allowed lateness. Undefined when the
 * value is not such an output.
 */
export function referenceTime(
  job: StreamJob,
  value: string,
  allowedLatenessMs: number,
): number | undefined {
  let v: { detectedAt?: unknown; windowEnd?: unknown };
  try {
    v = JSON.parse(value);
  } catch {
    return undefined;
  }
  const t = job === "detect" ? v?.detectedAt : v?.windowEnd;
  if (typeof t !== "number" || !Number.isFinite(t)) return undefined;
  return job === "detect" ? t : t + allowedLatenessMs;
}

/**
 * Partition replicas per broker past which a latency measurement warns: the
 * local cluster has been collecting topics (scratch runs, single test files
 * run by hand). On 2026-12-07, with about 1 500 per broker, detect's p99 at
 * 5 000 records/s was 881 ms and the aggregation's 2 263 ms; after
 * `deno task cluster reset`, 744 and 568 ms (docs/benchmarks.md). A fresh
 * cluster holds 131: the pipeline's topics and Kafka's two internal ones.
 */
export const CROWDED_REPLICAS_PER_BROKER = 1_000;

/**
 * The warning a latency measurement prints first when a broker holds more
 * than {@link CROWDED_REPLICAS_PER_BROKER} partition replicas, or undefined.
 * `replicas`: the broker id of every replica of every partition.
 */
export function crowdedClusterWarning(replicas: readonly number[]): string | undefined {
  const perBroker = new Map<number, number>();
  for (const b of replicas) perBroker.set(b, (perBroker.get(b) ?? 0) + 1);
  const most = Math.max(0, ...perBroker.values());
  if (most <= CROWDED_REPLICAS_PER_BROKER) return undefined;
  return `warning: a broker holds ${formatCount(most)} partition replicas (a fresh cluster ` +
    `131): latency measured on a cluster that has collected topics runs several times slower; ` +
    `\`deno task cluster reset\` first to measure the code, not the cluster`;
}

/** Prints {@link crowdedClusterWarning} for the shared cluster, if it applies. */
export async function warnIfCrowded(say: (line: string) => void): Promise<void> {
  const { topics } = await withAdmin((admin) => admin.fetchTopicMetadata());
  const warning = crowdedClusterWarning(
    topics.flatMap((t) => t.partitions.flatMap((p) => p.replicas)),
  );
  if (warning) say(warning);
}

/** The highest rate of a sustained point, or null. */
export function maxSustainable(points: readonly LatencyPoint[]): number | null {
  const ok = points.filter((p) => p.sustained).map((p) => p.rate);
  return ok.length ? Math.max(...ok) : null;
}

/** A fixed-width table of points. */
export function formatTable(points: readonly LatencyPoint[]): string {
  const ms = (n: number) => (Number.isFinite(n) ? Math.round(n).toString() : "-");
  const header = [
    "job".padEnd(9),
    "rate".padStart(7),
    "achieved".padStart(9),
    "outputs".padStart(8),
    "p50 ms".padStart(7),
    "p99 ms".padStart(7),
    "max ms".padStart(7),
    "lag end".padStart(8),
    "lag max".padStart(8),
    "slope/s".padStart(8),
    "job p50".padStart(8),
    "job p99".padStart(8),
    "RSS MB".padStart(7),
    "CPU s".padStart(6),
    "  sustained",
  ].join(" ");
  const rows = points.map((p) =>
    [
      p.job.padEnd(9),
      formatCount(p.rate).padStart(7),
      formatCount(p.achievedRate).padStart(9),
      formatCount(p.outputs).padStart(8),
      ms(p.p50Ms).padStart(7),
      ms(p.p99Ms).padStart(7),
      ms(p.maxMs).padStart(7),
      formatCount(p.lag.end || 0).padStart(8),
      formatCount(p.lag.max || 0).padStart(8),
      formatCount(p.lag.slopePerSecond || 0).padStart(8),
      ms(p.jobHistogram.p50Ms).padStart(8),
      ms(p.jobHistogram.p99Ms).padStart(8),
      (p.peakRssBytes / 1e6).toFixed(0).padStart(7),
      p.cpuSeconds.toFixed(1).padStart(6),
      `  ${p.sustained ? "yes" : `NO: ${p.why}`}`,
    ].join(" ")
  );
  return [header, ...rows].join("\n");
}

// ---------------------------------------------------------------------------
// Running a point

const HISTOGRAM = "txpipe_event_to_output_latency_seconds";
const LOG_DIR = join(homeDir(), "bench-logs");

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A fresh input topic with financial_transactions' settings, named bench_<label>_<time>. */
async function freshBenchTopic(label: string): Promise<string> {
  const name = `bench_${label}_${Date.now()}`;
  await withAdmin((admin) => ensureTopics(admin, [topicAs(TOPO, TOPICS.transactions, name)]));
  return name;
}

/** Records in `topic` (sum of its partitions' high watermarks). */
async function endOffsets(topic: string): Promise<number> {
  const ends = await withAdmin((admin) => admin.fetchTopicOffsets(topic));
  return ends.reduce((s, e) => s + Number(e.high), 0);
}

/** The job's /metrics address, from the "metrics" line of its log. */
async function metricsUrl(i: Instance, exited: () => boolean, timeoutMs = 60_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && !exited()) {
    const text = await Deno.readTextFile(i.logFile).catch(() => "");
    for (const line of text.split("\n")) {
      if (!line.includes('"metrics"')) continue;
      try {
        const url = JSON.parse(line)["url.full"];
        if (typeof url === "string") return url;
      } catch { /* a partly written line */ }
    }
    await sleep(250);
  }
  throw new Error(`the job did not report its /metrics address\n${await diagnosis(i)}`);
}

async function scrapeText(url: string): Promise<Sample[]> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5_000) });
  return parseMetrics(await res.text());
}

/** A running `deno task produce --rate`. */
interface Producer {
  child: Deno.ChildProcess;
  stderr: Promise<string>;
  logged: Promise<void>;
  logFile: string;
}

function startProducer(topic: string, rate: number, fraudRate: number): Producer {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "jobs/produce.ts",
      "--brokers",
      BROKERS.join(","),
      "--topic",
      topic,
      "--rate",
      String(rate),
      "--fraud-rate",
      String(fraudRate),
      "--metrics-port",
      "0",
    ],
    cwd: new URL("../../", import.meta.url),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  Deno.mkdirSync(LOG_DIR, { recursive: true });
  const logFile = join(LOG_DIR, `${topic}-produce.log`);
  const logged = Deno.open(logFile, { write: true, create: true, truncate: true })
    .then((f) => copyToFile(child.stdout, f));
  return { child, stderr: new Response(child.stderr).text(), logged, logFile };
}

/** Deletes a run's topics (input, output, dead letters, internal) and consumer groups. */
async function cleanUp(job: StreamJob, t: JobTopics): Promise<void> {
  const internal = internalTopicNames(t.appId);
  const mine = new Set([
    t.input,
    t.output,
    t.deadLetters,
    internal.repartition,
    internal.rekeyChangelog,
    internal.changelog,
  ]);
  await withAdmin(async (admin) => {
    const groups = groupsOf(job, t).map((g) => g.group);
    await admin.deleteGroups(groups).catch(() => {});
    const topics = (await admin.listTopics()).filter((name) => mine.has(name));
    if (topics.length) await admin.deleteTopics({ topics }).catch(() => {});
  });
}

/**
 * Measures one job at one paced rate (see the module doc): a fresh input
 * topic, one job instance, the producer at `rate`, the reader; `warmupSeconds`
 * unmeasured, then `seconds` measured, then a drain of at most one window
 * plus 15 s. Everything it started is stopped and its topics and groups
 * deleted, whatever happens.
 */
export async function measureRate(o: MeasureOptions): Promise<LatencyPoint> {
  const say = o.say ?? ((line: string) => console.error(line));
  const seconds = o.seconds ?? LATENCY_DEFAULTS.seconds;
  const warmupSeconds = o.warmupSeconds ?? LATENCY_DEFAULTS.warmupSeconds;
  const windowMs = o.windowMs ?? LATENCY_DEFAULTS.windowMs;
  const latenessMs = o.allowedLatenessMs ?? LATENCY_DEFAULTS.allowedLatenessMs;
  const bounds = o.bounds ?? LATENCY_DEFAULTS.bounds;
  const job = o.job;
  const label = `${o.name ?? job} @ ${formatCount(o.rate)} rec/s`;

  const input = await freshBenchTopic(`latency_${job}_${o.rate}`);
  const t = runTopics(input, `bench_latency_${job}`);
  const measured: Array<{ ref: number; receivedAt: number }> = [];
  const groups = groupsOf(job, t);
  let measureStart = Infinity;
  let measureEnd = Infinity;
  let lastRef = -Infinity;
  const onRecord = (r: Received) => {
    const ref = referenceTime(job, r.value, latenessMs);
    if (ref === undefined) return;
    lastRef = Math.max(lastRef, ref);
    if (ref >= measureStart) measured.push({ ref, receivedAt: r.receivedAt });
  };

  say(`--> ${label}: starting the job on ${input}`);
  const instance = startInstance(
    job,
    t,
    job === "aggregate"
      ? ["--window", `${windowMs}ms`, "--allowed-lateness", `${latenessMs}ms`]
      : [],
    o.instance,
  );
  let exited: string | undefined;
  let measuring = true;
  instance.child.status.then((s) => {
    if (measuring) exited = `the job exited (code ${s.code}) during the run`;
  });
  const watch = new ProcessWatch(instance.child.pid);
  let producer: Producer | undefined;
  let reader: Awaited<ReturnType<typeof startReader>> | undefined;
  try {
    const url = await metricsUrl(instance, () => exited !== undefined);
    reader = await startReader(t.output, { keep: false, onRecord });
    say(`    job up (${url}); producing at ${formatCount(o.rate)} rec/s`);
    producer = startProducer(input, o.rate, o.fraudRate ?? LATENCY_DEFAULTS.fraudRate);
    producer.child.status.then((s) => {
      if (measuring) exited ??= `the producer exited (code ${s.code}) during the run`;
    });

    // Warm-up: not measured.
    const warmupEnd = Date.now() + warmupSeconds * 1000;
    while (Date.now() < warmupEnd && exited === undefined) {
      await sleep(Math.min(5_000, warmupEnd - Date.now()));
      const p = await groupProgress(groups).catch(() => undefined);
      say(
        `    warm-up: ${formatCount(await endOffsets(input))} produced, lag ${
          p ? formatCount(p.behind) : "?"
        }`,
      );
    }

    // Measurement.
    const h0 = histogramBuckets(await scrapeText(url).catch(() => []), HISTOGRAM, {
      processor: processorOf(job, t),
    });
    const offsetsStart = await endOffsets(input);
    measureStart = Date.now();
    const samples: LagSample[] = [];
    let nextSay = measureStart + 10_000;
    while (exited === undefined) {
      const p = await groupProgress(groups).catch(() => undefined);
      const now = Date.now();
      if (p) samples.push({ atSeconds: (now - measureStart) / 1000, behind: p.behind });
      if (now >= nextSay) {
        nextSay += 10_000;
        say(
          `    ${label}: ${Math.round((now - measureStart) / 1000)}/${seconds} s, lag ${
            p ? formatCount(p.behind) : "?"
          }, outputs ${formatCount(measured.length)}`,
        );
      }
      const left = measureStart + seconds * 1000 - Date.now();
      if (left <= 0) break;
      await sleep(Math.min(LATENCY_DEFAULTS.lagIntervalMs, left));
    }
    const offsetsEnd = await endOffsets(input);
    measureEnd = Date.now();
    const h1 = histogramBuckets(await scrapeText(url).catch(() => []), HISTOGRAM, {
      processor: processorOf(job, t),
    });
    const achievedRate = (offsetsEnd - offsetsStart) / ((measureEnd - measureStart) / 1000);

    // Drain: until an output past the measurement arrived (and 2 s more), the producer running.
    const drainUntil = Date.now() + (job === "aggregate" ? windowMs + latenessMs : 0) + 15_000;
    while (lastRef <= measureEnd && Date.now() < drainUntil && exited === undefined) {
      await sleep(250);
    }
    if (lastRef > measureEnd) await sleep(2_000);
    else say(`    drain: no output past the measurement within the drain time`);
    measuring = false;

    watch.sample();
    const stats = latencyStats(
      measured.filter((m) => m.ref <= measureEnd).map((m) => m.receivedAt - m.ref),
    );
    const lag = summariseLag(samples);
    const verdict = judgePoint({
      rate: o.rate,
      achievedRate,
      lag,
      outputs: stats.count,
      exited,
    }, bounds);
    const point: LatencyPoint = {
      job,
      rate: o.rate,
      achievedRate,
      seconds: (measureEnd - measureStart) / 1000,
      outputs: stats.count,
      p50Ms: stats.p50Ms,
      p99Ms: stats.p99Ms,
      maxMs: stats.maxMs,
      lag,
      ...verdict,
      jobHistogram: histogramEstimate(h1, h0),
      peakRssBytes: 0,
      cpuSeconds: 0,
      ...(job === "aggregate" ? { windowMs, allowedLatenessMs: latenessMs } : {}),
    };
    Object.assign(point, watch.stop());
    say(
      `    ${label}: ${point.sustained ? "sustained" : `NOT sustained: ${point.why}`}; p50 ${
        Math.round(point.p50Ms)
      } ms, p99 ${Math.round(point.p99Ms)} ms over ${formatCount(point.outputs)} outputs`,
    );
    return point;
  } finally {
    measuring = false;
    watch.stop();
    if (producer) await stopGracefully(producer.child, 30_000);
    await producer?.logged.catch(() => {});
    await stopInstance(instance);
    await reader?.stop().catch(() => {});
    await cleanUp(job, t).catch((err) => say(`    clean-up failed: ${err.message}`));
  }
}

/** The processor label of the job's outputs in the latency histogram. */
function processorOf(job: StreamJob, t: JobTopics): string {
  return job === "detect" ? t.appId : `${t.appId}-windows`;
}

/**
 * Measures `rates` in ascending order until `stopAfterFailures` points were
 * not sustained; the maximum sustainable rate is the highest sustained one.
 */
export async function sweep(o: SweepOptions): Promise<SweepResult> {
  const rates = [...(o.rates ?? LATENCY_DEFAULTS.rates)].sort((a, b) => a - b);
  const stopAfter = o.stopAfterFailures ?? LATENCY_DEFAULTS.stopAfterFailures;
  const points: LatencyPoint[] = [];
  let failures = 0;
  for (const rate of rates) {
    const point = await measureRate({ ...o, rate });
    points.push(point);
    if (!point.sustained && ++failures >= stopAfter) break;
  }
  return { job: o.job, points, maxSustainableRate: maxSustainable(points) };
}

// ---------------------------------------------------------------------------
// Standalone

const COMMAND = defineCommand({
  name: "deno run -A tests/bench/latency.ts",
  summary: "end-to-end latency and maximum sustainable rate of the stream jobs (paced sweep)",
  flags: {
    job: {
      kind: "string",
      choices: ["aggregate", "detect", "both"],
      default: "both",
      help: "job to measure",
    },
    rates: {
      kind: "list",
      default: LATENCY_DEFAULTS.rates.map(String),
      help: "paced rates, records per second, ascending",
      placeholder: "R1,R2,...",
    },
    seconds: {
      kind: "int",
      min: 5,
      default: LATENCY_DEFAULTS.seconds,
      help: "measured seconds per rate",
      placeholder: "S",
    },
    warmup: {
      kind: "int",
      min: 0,
      default: LATENCY_DEFAULTS.warmupSeconds,
      help: "unmeasured seconds per rate before measuring",
      placeholder: "S",
    },
    "fraud-rate": {
      kind: "number",
      min: 0,
      max: 0.5,
      default: LATENCY_DEFAULTS.fraudRate,
      help: "the producer's --fraud-rate (share of injected fraud records)",
      placeholder: "P",
    },
    "stop-after-failures": {
      kind: "int",
      min: 1,
      default: LATENCY_DEFAULTS.stopAfterFailures,
      help: "stop a sweep after this many unsustained rates",
      placeholder: "N",
    },
  },
  examples: ["deno run -A tests/bench/latency.ts --job detect --rates 1000,5000 --seconds 20"],
});

async function main(): Promise<void> {
  const { values: v } = parseCommandLine(COMMAND);
  const rates = v.rates.map(Number);
  if (rates.some((r) => !(r > 0))) {
    console.error(`${COMMAND.name}: --rates: expected positive numbers, got "${v.rates}"`);
    Deno.exit(2);
  }
  const jobs: StreamJob[] = v.job === "both" ? ["aggregate", "detect"] : [v.job];
  await warnIfCrowded((line) => console.error(line));
  const results: SweepResult[] = [];
  const started = Date.now();
  for (const job of jobs) {
    results.push(
      await sweep({
        job,
        rates,
        seconds: v.seconds,
        warmupSeconds: v.warmup,
        fraudRate: v.fraudRate,
        stopAfterFailures: v.stopAfterFailures,
      }),
    );
  }
  console.log(formatTable(results.flatMap((r) => r.points)));
  for (const r of results) {
    console.log(
      `maximum sustainable rate of ${r.job}: ${
        r.maxSustainableRate === null ? "none" : `${formatCount(r.maxSustainableRate)} rec/s`
      }`,
    );
  }
  console.log(`(${Math.round((Date.now() - started) / 1000)} s)`);
  console.log(JSON.stringify(results, null, 2));
}

if (import.meta.main) await main();
