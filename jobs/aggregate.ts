/**
 * The aggregation job: exact totals per merchant and currency in tumbling
 * event-time windows, one final record per window, exactly once.
 *
 *   financial_transactions (key userId)
 *     → parse + validate (invalid → dead letters)
 *     → late records (behind the input partition's watermark) → dead letters, counted
 *     → re-key by merchant|currency → <app>-repartition, plus watermark markers
 *   <app>-repartition
 *     → add to the window (state: open windows, changelogged)
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
 * @module
 */
import { APP_IDS, internalTopicNames, topicAs, TOPICS, topology } from "../stacks/topology.ts";
import { type CommandSpec, parseCommandLine } from "./lib/cli.ts";
import { runJob, shellOptions, streamFlags, streamOptions } from "./lib/job.ts";
import { type Parsed, runStream, type StreamProcessor } from "./lib/stream.ts";
import { parseTransaction, type Transaction } from "./lib/transaction.ts";
import {
  addToWindow,
  combinedWatermark,
  toAggregate,
  watermark,
  type WindowInput,
  windowKey,
  windowStart,
  type WindowState,
} from "./lib/windows.ts";
import { aggregatesEmitted, lateRecords, watermarkSeconds } from "./lib/metrics.ts";

/** The aggregation job's flags. */
export const AGGREGATE_COMMAND: CommandSpec = {
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
};

const MARKER_KEY = "__watermark__";
/** "No event seen yet": JSON-safe, unlike -Infinity. */
const NEVER = Number.MIN_SAFE_INTEGER;
const MARKER_HEADER = "txpipe-watermark";

/** A repartition record: a transaction's window input, or an input partition's watermark. */
type Routed =
  | { kind: "tx"; input: WindowInput; eventTime: number }
  | { kind: "watermark"; source: number; watermark: number };

/** Stage 1 state (one key per input partition): the highest event time seen and marked. */
interface InputProgress {
  maxEventTime: number;
  marked: number;
}

/** Stage 1: validate, drop late records to the dead letters, re-key by merchant and currency. */
export function rekeyProcessor(o: {
  appId: string;
  input: string;
  repartitionPartitions: number;
  allowedLatenessMs: number;
}): StreamProcessor<{ tx: Transaction; amountMinor: number }, InputProgress> {
  const topics = internalTopicNames(o.appId);
  return {
    name: "aggregate",
    groupId: `${o.appId}-rekey`,
    source: o.input,
    changelog: topics.rekeyChangelog,
    parse: (r) => {
      const v = parseTransaction(r.value);
      return v.ok ? { ok: true, value: { tx: v.tx, amountMinor: v.amountMinor } } : v;
    },
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
      ctx.emit({
        topic: topics.repartition,
        key: `${tx.merchantId}|${tx.currency}`,
        value: JSON.stringify(input),
      });
      if (tx.transactionTime > progress.maxEventTime) {
        ctx.state.put("progress", { ...progress, maxEventTime: tx.transactionTime });
      }
    },
    endBatch: (ctx) => {
      const progress = ctx.state.get("progress");
      if (!progress) return;
      const wm = watermark(progress.maxEventTime, o.allowedLatenessMs);
      if (wm <= progress.marked) return;
      // After this batch's records, so a window never closes before its records arrive.
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
    parse: parseRouted,
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

function parseRouted(
  r: { key: string | null; value: Uint8Array | null; headers: Record<string, string> },
): Parsed<Routed> {
  try {
    const v = JSON.parse(new TextDecoder().decode(r.value ?? new Uint8Array()));
    if (r.headers[MARKER_HEADER] === "1") {
      if (Number.isInteger(v.source) && typeof v.watermark === "number") {
        return { ok: true, value: { kind: "watermark", source: v.source, watermark: v.watermark } };
      }
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
    message: "expected a window input or a watermark marker from the rekey stage",
  };
}

async function main(): Promise<number> {
  const { values: v } = parseCommandLine(AGGREGATE_COMMAND);
  const appId = v.appId as string;
  const topo = topology();
  const internal = internalTopicNames(appId);
  const inputSpec = topicAs(topo, TOPICS.transactions, v.input as string);
  const like = (name: string, spec: string) => topicAs(topo, spec, name);
  const defaults = internalTopicNames(APP_IDS.aggregate);
  const repartition = like(internal.repartition, defaults.repartition);
  return await runJob({
    ...shellOptions("aggregate", v),
    topics: [
      inputSpec,
      like(v.output as string, TOPICS.aggregates),
      like(v.deadLetters as string, TOPICS.deadLetters),
      repartition,
      like(internal.rekeyChangelog, defaults.rekeyChangelog),
      like(internal.changelog, defaults.changelog),
    ],
  }, async (ctx) => {
    // Either stage failing stops the other, and the job exits non-zero.
    let failed!: () => void;
    const failure = new Promise<void>((r) => failed = r);
    const run = {
      ...streamOptions(v, ctx),
      stopSignal: Promise.race([ctx.stopSignal, failure]),
    };
    const stages = [
      runStream(
        rekeyProcessor({
          appId,
          input: v.input as string,
          repartitionPartitions: repartition.partitions,
          allowedLatenessMs: v.allowedLateness as number,
        }),
        run,
      ),
      runStream(
        windowProcessor({
          appId,
          output: v.output as string,
          inputPartitions: inputSpec.partitions,
          windowMs: v.window as number,
        }),
        run,
      ),
    ].map((stage) => stage.catch((err) => (failed(), Promise.reject(err))));
    const results = await Promise.allSettled(stages);
    const rejected = results.find((r) => r.status === "rejected");
    if (rejected) throw (rejected as PromiseRejectedResult).reason;
  });
}

if (import.meta.main) Deno.exit(await main());
