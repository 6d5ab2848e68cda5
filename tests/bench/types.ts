/**
 * What every contender of `deno task bench` reports, so that txpipe, Kafka
 * Streams and Spark land in one table, one JSON file and one chart.
 *
 * @module
 */

/** One contender's catch-up over the shared backlog. */
export interface CatchUpRun {
  /** e.g. "txpipe aggregate", "Kafka Streams aggregate", "Spark aggregate". */
  contender: string;
  /** Records in the backlog it read. */
  records: number;
  /** Epoch ms: process spawned. */
  startedAt: number;
  /** Epoch ms: first output record received by the independent reader (tests/bench/reader.ts). */
  firstOutputAt?: number;
  /** Epoch ms: the whole backlog processed and committed (each contender says how it knows). */
  doneAt: number;
  /** records / (doneAt - startedAt). */
  recordsPerSecond: number;
  /** records / (doneAt - firstOutputAt): without start-up (JVM, Spark session, group join). */
  recordsPerSecondFromFirstOutput?: number;
  peakRssBytes: number;
  cpuSeconds: number;
  /**
   * CPU seconds the local cluster's Kafka JVMs used during the run: what the
   * contender cost the brokers (and what else ran then, e.g. the reader).
   */
  kafkaCpuSeconds?: number;
  /** Output records received by the reader during the run. */
  outputs: number;
  /** Input records the contender dropped as late or invalid (when it reports them). */
  dropped?: number;
}

/** The totals of one closed window, in the form all contenders are compared in. */
export interface WindowTotals {
  merchantId: string;
  currency: string;
  /** Epoch ms. */
  windowStart: number;
  windowEnd: number;
  transactionCount: number;
  purchaseMinor: number;
  refundMinor: number;
}

/** The settings every aggregation contender runs with (txpipe's flags of the same name). */
export interface AggregateSettings {
  /** Tumbling window size, ms. */
  windowMs: number;
  /** Allowed lateness = Kafka Streams' grace = Spark's watermark delay, ms. */
  allowedLatenessMs: number;
}

/** Rate from `from` to `to` (epoch ms) for `records`. */
export function perSecond(records: number, from: number, to: number): number {
  return to > from ? records / ((to - from) / 1000) : 0;
}
