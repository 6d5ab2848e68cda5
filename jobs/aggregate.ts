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
import { runStreamJob, streamFlags } from "./lib/job.ts";
import type { Parsed, StreamProcessor } from "./lib/stream.ts";
import { parseTransaction, type Transaction } from "./lib/transaction.ts";
import {
  addToWindow,
  combinedWatermark,
  mergeWindow,
  toAggregate,
  watermark,
  type WindowInput,
  windowKey,
  windowStart,
  type WindowState,
} from "./lib/windows.ts";
import { aggregatesEmitted, lateRecords, watermarkSeconds } from "./lib/metrics.ts";

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
  },
  examples: [
    "deno task aggregate",
    "deno task aggregate --window 5m --allowed-lateness 30s",
  ],
});

const MARKER_KEY = "__watermark__";
/** "No event seen yet": JSON-safe, unlike -Infinity. */
const NEVER = Number.MIN_SAFE_INTEGER;
const MARKER_HEADER = "txpipe-watermark";

/**
 * A repartition record: the partial totals of a window from one batch, a
 * transaction's window input (written by older versions), or an input
 * partition's watermark.
 */
type Routed =
  | { kind: "partial"; window: WindowState }
  | { kind: "tx"; input: WindowInput; eventTime: number }
  | { kind: "watermark"; source: number; watermark: number };

/** Stage 1 state (one key per input partition): the highest event time seen and marked. */
interface InputProgress {
  maxEventTime: number;
  marked: number;
}

/**
 * Stage 1: validate, drop late records to the dead letters, sum each batch
 * per merchant, currency and window, re-key by merchant and currency.
 */
export function rekeyProcessor(o: {
  appId: string;
  input: string;
  repartitionPartitions: number;
  allowedLatenessMs: number;
  windowMs: number;
}): StreamProcessor<{ tx: Transaction; amountMinor: number }, InputProgress> {
  const topics = internalTopicNames(o.appId);
  // The batch in progress's partial totals, by input partition, then by window key.
  const partials = new Map<number, Map<string, WindowState>>();
  const batchPartials = (partition: number) => {
    let m = partials.get(partition);
    if (!m) partials.set(partition, m = new Map());
    return m;
  };
  return {
    name: "aggregate",
    groupId: `${o.appId}-rekey`,
    source: o.input,
    changelog: topics.rekeyChangelog,
    parse: (r) => {
      const v = parseTransaction(r.value);
      return v.ok ? { ok: true, value: { tx: v.tx, amountMinor: v.amountMinor } } : v;
    },
    // Nothing from an earlier run of this batch (failed, abandoned) may reach this one.
    beginBatch: (ctx) => void partials.set(ctx.partition, new Map()),
    process: ({ tx, amountMinor }, record, ctx) => {
      const progress = ctx.state.get("progress") ?? { maxEventTime: NEVER, marked: NEVER };
      const wm = watermark(progress.maxEventTime, o.allowedLatenessMs);
      if (tx.transactionTime < wm) {
        lateRecords.inc({ processor: `${o.appId}-rekey` });
        ctx.deadLetter(
          record,
          "late_record",
          `transactionTime: expected at least the watermark ${wm}, given ${tx.transactionTime}`,
        );
        return;
      }
      const input: WindowInput = {
        merchantId: tx.merchantId,
        currency: tx.currency,
        transactionTime: tx.transactionTime,
        transactionType: tx.transactionType,
        amountMinor,
      };
      const batch = batchPartials(ctx.partition);
      const key = windowKey(
        tx.merchantId,
        tx.currency,
        windowStart(tx.transactionTime, o.windowMs),
      );
      batch.set(key, addToWindow(batch.get(key), input, o.windowMs));
      if (tx.transactionTime > progress.maxEventTime) {
        ctx.state.put("progress", { ...progress, maxEventTime: tx.transactionTime });
      }
    },
    endBatch: (ctx) => {
      for (const w of batchPartials(ctx.partition).values()) {
        ctx.emit({
          topic: topics.repartition,
          key: `${w.merchantId}|${w.currency}`,
          value: JSON.stringify(w),
        });
      }
      partials.delete(ctx.partition);
      const progress = ctx.state.get("progress");
      if (!progress) return;
      const wm = watermark(progress.maxEventTime, o.allowedLatenessMs);
      if (wm <= progress.marked) return;
      // After this batch's partials, so a window never closes before its records arrive.
      for (let p = 0; p < o.repartitionPartitions; p++) {
        ctx.emit({
          topic: topics.repartition,
          key: MARKER_KEY,
          value: JSON.stringify({ source: ctx.partition, watermark: wm }),
          headers: { [MARKER_HEADER]: "1" },
          partition: p,
        });
      }
      ctx.state.put("progress", { ...progress, marked: wm });
      watermarkSeconds.set(
        { processor: `${o.appId}-rekey`, partition: String(ctx.partition) },
        wm / 1000,
      );
    },
  };
}

/** Stage 2 state: open windows by window key, and the input watermarks under "watermarks". */
type WindowsState = WindowState | Record<string, number>;

/** Stage 2: add to windows, close every window the combined watermark has passed. */
export function windowProcessor(o: {
  appId: string;
  output: string;
  inputPartitions: number;
  windowMs: number;
}): StreamProcessor<Routed, WindowsState> {
  const topics = internalTopicNames(o.appId);
  return {
    name: "aggregate",
    groupId: `${o.appId}-windows`,
    source: topics.repartition,
    changelog: topics.changelog,
    parse: (r) => parseRouted(r, o.windowMs),
    process: (routed, _record, ctx) => {
      if (routed.kind === "watermark") {
        const marks = { ...(ctx.state.get("watermarks") as Record<string, number> | undefined) };
        const key = String(routed.source);
        if (!(marks[key] >= routed.watermark)) {
          marks[key] = routed.watermark;
          ctx.state.put("watermarks", marks);
        }
        return;
      }
      if (routed.kind === "partial") {
        const w = routed.window;
        const key = windowKey(w.merchantId, w.currency, w.windowStart);
        ctx.state.put(key, mergeWindow(ctx.state.get(key) as WindowState | undefined, w));
        return;
      }
      const i = routed.input;
      const key = windowKey(i.merchantId, i.currency, windowStart(i.transactionTime, o.windowMs));
      ctx.state.put(key, addToWindow(ctx.state.get(key) as WindowState | undefined, i, o.windowMs));
    },
    endBatch: (ctx) => {
      const marks = ctx.state.get("watermarks") as Record<string, number> | undefined;
      const wm = combinedWatermark(marks ?? {}, o.inputPartitions);
      if (wm === -Infinity) return;
      watermarkSeconds.set(
        { processor: `${o.appId}-windows`, partition: String(ctx.partition) },
        wm / 1000,
      );
      const closed: WindowState[] = [];
      for (const [key, value] of ctx.state.entries()) {
        if (key !== "watermarks" && (value as WindowState).windowEnd <= wm) {
          closed.push(value as WindowState);
        }
      }
      closed.sort((a, b) =>
        a.windowStart - b.windowStart || a.merchantId.localeCompare(b.merchantId) ||
        a.currency.localeCompare(b.currency)
      );
      for (const w of closed) {
        ctx.state.delete(windowKey(w.merchantId, w.currency, w.windowStart));
        ctx.emit({
          topic: o.output,
          key: w.merchantId,
          value: JSON.stringify(toAggregate(w)),
          eventTime: w.windowEnd,
        });
        aggregatesEmitted.inc();
      }
    },
  };
}

const decoder = new TextDecoder();

/** A repartition record of either shape, or a marker; a partial of another window size is invalid. */
function parseRouted(
  r: { key: string | null; value: Uint8Array | null; headers: Readonly<Record<string, string>> },
  windowMs: number,
): Parsed<Routed> {
  try {
    const v = JSON.parse(decoder.decode(r.value ?? new Uint8Array()));
    if (r.headers[MARKER_HEADER] === "1") {
      if (Number.isInteger(v.source) && typeof v.watermark === "number") {
        return { ok: true, value: { kind: "watermark", source: v.source, watermark: v.watermark } };
      }
    } else if (typeof v === "object" && v !== null && "windowStart" in v) {
      if (isPartial(v, windowMs)) return { ok: true, value: { kind: "partial", window: v } };
    } else if (
      typeof v.merchantId === "string" && typeof v.currency === "string" &&
      Number.isSafeInteger(v.transactionTime) && Number.isSafeInteger(v.amountMinor) &&
      (v.transactionType === "purchase" || v.transactionType === "refund")
    ) {
      return { ok: true, value: { kind: "tx", input: v, eventTime: v.transactionTime } };
    }
  } catch { /* reported below */ }
  return {
    ok: false,
    reason: "invalid_repartition_record",
    message: `expected a partial window of ${windowMs} ms, a window input or a watermark ` +
      "marker from the rekey stage",
  };
}

/** The integer fields of a partial window. */
const PARTIAL_INTEGERS = [
  "windowStart",
  "windowEnd",
  "transactionCount",
  "purchaseCount",
  "refundCount",
  "purchaseMinor",
  "refundMinor",
  "minMinor",
  "maxMinor",
] as const;

/** Whether `v` is the partial totals of a window of `windowMs`, in JSON-safe integers. */
function isPartial(v: Record<string, unknown>, windowMs: number): boolean {
  if (typeof v.merchantId !== "string" || typeof v.currency !== "string") return false;
  if (!PARTIAL_INTEGERS.every((k) => Number.isSafeInteger(v[k]))) return false;
  const w = v as unknown as WindowState;
  return w.windowEnd - w.windowStart === windowMs &&
    windowStart(w.windowStart, windowMs) === w.windowStart &&
    w.transactionCount >= 1 && w.transactionCount === w.purchaseCount + w.refundCount &&
    w.minMinor <= w.maxMinor;
}

async function main(): Promise<number> {
  const { values: v } = parseCommandLine(AGGREGATE_COMMAND);
  // Partition counts of the spec topics the input and repartition topics stand for.
  const topo = topology();
  const inputPartitions = topicSpec(topo, TOPICS.transactions).partitions;
  const repartitionPartitions =
    topicSpec(topo, internalTopicNames(APP_IDS.aggregate).repartition).partitions;
  // Either stage failing stops the other, and the job exits non-zero (runStreamJob).
  return await runStreamJob("aggregate", AGGREGATE_COMMAND, v, [
    rekeyProcessor({
      appId: v.appId,
      input: v.input,
      repartitionPartitions,
      allowedLatenessMs: v.allowedLateness,
      windowMs: v.window,
    }),
    windowProcessor({ appId: v.appId, output: v.output, inputPartitions, windowMs: v.window }),
  ]);
}

if (import.meta.main) Deno.exit(await main());
