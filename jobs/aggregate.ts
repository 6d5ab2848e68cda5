/**
 * The aggregation job: exact totals per merchant and currency in tumbling
 * event-time windows, one final record per window, exactly once.
 *
 *   financial_transactions (key userId)
 *     → parse + validate (invalid → dead letters)
 *     → late records (behind the input partition's watermark) → dead letters, counted
 *     → per batch, one partial total per merchant, currency and window
 *     → re-key by merchant|currency → <app>-repartition, plus watermark markers
 *   <app>-repartition
 *     → merge into the window (state: open windows, changelogged)
 *     → when the lowest input watermark passes a window's end → transaction_aggregates (key merchantId)
 *
 * Why a repartition topic: the input is keyed by user, so one merchant's
 * transactions sit on every input partition. Re-keying puts each merchant and
 * currency on exactly one partition, so any number of instances hold disjoint,
 * exact state and each window is emitted once. Watermark markers travel with
 * the records, and a window closes only when every input partition's
 * watermark has passed it: its content then does not depend on timing,
 * instance count or crashes.
 *
 * The topology's plumbing (watermarks, markers, late records, window
 * closing) is the runtime's (jobs/lib/repartition.ts); this job supplies
 * the parse step, the grouping key, the window's partial, merge and output.
 *
 * Why partials: a window's totals are sums, counts, a min and a max, which
 * combine in any grouping. Summing each batch per window before the shuffle
 * writes one repartition record per merchant, currency and window of the
 * batch instead of one per transaction, and stage 2 merges a handful of
 * partials instead of adding every record. A partial holds only its batch's
 * records: it is built between the batch's `beginBatch` and `endBatch`, so a
 * batch that fails and runs again starts from nothing, and it travels in the
 * batch's transaction, before the batch's watermark markers. Stage 2 still
 * reads the per-record values older versions wrote (an upgrade over a
 * repartition topic that holds some).
 *
 * @module
 */
import { APP_IDS, internalTopicNames, TOPICS, topicSpec, topology } from "../stacks/topology.ts";
import { defineCommand, parseCommandLine } from "./lib/cli.ts";
import { defineStreamJob, runStreamJob, streamFlags } from "./lib/job.ts";
import { windowedAggregation } from "./lib/repartition.ts";
import { parseTransaction, type Transaction } from "./lib/transaction.ts";
import {
  addToPartial,
  decodePartial,
  encodePartial,
  mergeWindow,
  toAggregate,
  windowKey,
  type WindowState,
} from "./lib/windows.ts";
import { aggregatesEmitted } from "./lib/metrics.ts";

/** The aggregation job's flags. */
export const AGGREGATE_COMMAND = defineCommand({
  name: "deno task aggregate",
  summary: "per merchant and currency totals in tumbling event-time windows, exactly once",
  flags: {
    ...streamFlags("aggregate"),
    output: { kind: "string", default: TOPICS.aggregates, help: "topic of window aggregates" },
    window: { kind: "duration", min: 1000, default: 60_000, help: "tumbling window size" },
    "allowed-lateness": {
      kind: "duration",
      min: 0,
      default: 5_000,
      help: "how far behind the highest event time a record may be and still count",
    },
    "max-watermark-drift": {
      kind: "duration",
      min: 0,
      default: 300_000,
      help:
        "how far in event time an input partition may run ahead of the slowest before it waits (0: never)",
    },
  },
  examples: [
    "deno task aggregate",
    "deno task aggregate --window 5m --allowed-lateness 30s",
  ],
});

/** A valid input transaction and its amount in minor units. */
type Input = { tx: Transaction; amountMinor: number };

/**
 * The two stages: stage 1 (`rekey`) validates, drops late records and sums
 * each batch per merchant, currency and window onto the repartition topic;
 * stage 2 (`windows`) merges the partials and closes the windows.
 */
export function aggregateProcessors(o: {
  appId: string;
  input: string;
  output: string;
  inputPartitions: number;
  repartitionPartitions: number;
  allowedLatenessMs: number;
  windowMs: number;
  /** See `--max-watermark-drift`; default 0, no alignment (as in the test driver). */
  maxDriftMs?: number;
}) {
  return windowedAggregation<Input, WindowState>({
    ...o,
    name: "aggregate",
    topics: internalTopicNames(o.appId),
    parse: (r) => {
      const v = parseTransaction(r.value);
      return v.ok ? { ok: true, value: { tx: v.tx, amountMinor: v.amountMinor } } : v;
    },
    eventTime: { field: "transactionTime", of: ({ tx }) => tx.transactionTime },
    // One group per merchant and currency (a currency code holds no "|").
    groupBy: ({ tx }) => `${tx.merchantId}|${tx.currency}`,
    add: (w, { tx, amountMinor }) => addToPartial(w, tx, amountMinor, o.windowMs),
    merge: mergeWindow,
    encodePartial,
    decodePartial: (v) => decodePartial(v, o.windowMs),
    partialDescription: `a partial window of ${o.windowMs} ms, a window input`,
    windowKey: (w) => windowKey(w.merchantId, w.currency, w.windowStart),
    order: (a, b) =>
      a.merchantId.localeCompare(b.merchantId) || a.currency.localeCompare(b.currency),
    close: (w) => {
      aggregatesEmitted.inc();
      const value = JSON.stringify(toAggregate(w));
      return { topic: o.output, key: w.merchantId, value, eventTime: w.windowEnd };
    },
  });
}

/** The aggregation job: its command and its two stages, made from the flags' values. */
export const STREAM_JOB = defineStreamJob({
  job: "aggregate",
  command: AGGREGATE_COMMAND,
  module: import.meta.url,
  processors: (v) => {
    // Partition counts of the spec topics the input and repartition topics stand for.
    const topo = topology();
    const { rekey, windows } = aggregateProcessors({
      appId: v.appId,
      input: v.input,
      output: v.output,
      inputPartitions: topicSpec(topo, TOPICS.transactions).partitions,
      repartitionPartitions:
        topicSpec(topo, internalTopicNames(APP_IDS.aggregate).repartition).partitions,
      allowedLatenessMs: v.allowedLateness,
      windowMs: v.window,
      maxDriftMs: v.maxWatermarkDrift,
    });
    return Promise.resolve([rekey, windows]);
  },
});

if (import.meta.main) {
  // Either stage failing stops the other, and the job exits non-zero (runStreamJob).
  Deno.exit(await runStreamJob(STREAM_JOB, parseCommandLine(AGGREGATE_COMMAND).values));
}
