/**
 * The aggregation as it was before named stores and jobs/lib/repartition.ts
 * (and, with `perRecord`, before partials), for the upgrade tests: the same
 * wire format, and the changelogs of then, every key unprefixed: stage 1's
 * "progress", stage 2's window keys and its one "watermarks" entry.
 * Written with one unprefixed store, which writes keys as they are.
 */
import { internalTopicNames } from "../../stacks/topology.ts";
import type { Parsed, SourceRecord, StreamProcessor } from "../../jobs/lib/stream.ts";
import { parseTransaction, type Transaction } from "../../jobs/lib/transaction.ts";
import {
  addToWindow,
  combinedWatermark,
  decodePartial,
  mergeWindow,
  toAggregate,
  watermark,
  type WindowInput,
  windowKey,
  windowStart,
  type WindowState,
} from "../../jobs/lib/windows.ts";

const MARKER_KEY = "__watermark__";
const NEVER = Number.MIN_SAFE_INTEGER;
const MARKER_HEADER = "txpipe-watermark";

type Routed =
  | { kind: "partial"; window: WindowState }
  | { kind: "watermark"; source: number; watermark: number };

interface InputProgress {
  maxEventTime: number;
  marked: number;
}

/** Stage 1 then: one unprefixed key, "progress"; per-record values or partials. */
export function rekeyV1(o: {
  appId: string;
  input: string;
  repartitionPartitions: number;
  allowedLatenessMs: number;
  windowMs: number;
  perRecord?: boolean;
}): StreamProcessor<{ tx: Transaction; amountMinor: number }, { state: InputProgress }> {
  const topics = internalTopicNames(o.appId);
  const partials = new Map<number, Map<string, WindowState>>();
  const records = new Map<number, WindowInput[]>();
  return {
    name: "aggregate",
    groupId: `${o.appId}-rekey`,
    source: o.input,
    changelog: topics.rekeyChangelog,
    stores: { state: { unprefixed: true } },
    parse: (r) => {
      const v = parseTransaction(r.value);
      return v.ok ? { ok: true, value: { tx: v.tx, amountMinor: v.amountMinor } } : v;
    },
    beginBatch: (ctx) => {
      partials.set(ctx.partition, new Map());
      records.set(ctx.partition, []);
    },
    process: ({ tx, amountMinor }, record, ctx) => {
      const state = ctx.store("state");
      const progress = state.get("progress") ?? { maxEventTime: NEVER, marked: NEVER };
      const wm = watermark(progress.maxEventTime, o.allowedLatenessMs);
      if (tx.transactionTime < wm) {
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
      records.get(ctx.partition)!.push(input);
      const batch = partials.get(ctx.partition)!;
      const key = windowKey(
        tx.merchantId,
        tx.currency,
        windowStart(tx.transactionTime, o.windowMs),
      );
      batch.set(key, addToWindow(batch.get(key), input, o.windowMs));
      if (tx.transactionTime > progress.maxEventTime) {
        state.put("progress", { ...progress, maxEventTime: tx.transactionTime });
      }
    },
    endBatch: (ctx) => {
      const values = o.perRecord
        ? records.get(ctx.partition)!
        : [...partials.get(ctx.partition)!.values()];
      for (const v of values) {
        ctx.emit({
          topic: topics.repartition,
          key: `${v.merchantId}|${v.currency}`,
          value: JSON.stringify(v),
        });
      }
      const state = ctx.store("state");
      const progress = state.get("progress");
      if (!progress) return;
      const wm = watermark(progress.maxEventTime, o.allowedLatenessMs);
      if (wm <= progress.marked) return;
      for (let p = 0; p < o.repartitionPartitions; p++) {
        ctx.emit({
          topic: topics.repartition,
          key: MARKER_KEY,
          value: JSON.stringify({ source: ctx.partition, watermark: wm }),
          headers: { [MARKER_HEADER]: "1" },
          partition: p,
        });
      }
      state.put("progress", { ...progress, marked: wm });
    },
  };
}

/** Stage 2 then: window keys and the one "watermarks" entry, side by side, unprefixed. */
export function windowsV1(o: {
  appId: string;
  output: string;
  inputPartitions: number;
  windowMs: number;
}): StreamProcessor<Routed, { state: WindowState | Record<string, number> }> {
  const topics = internalTopicNames(o.appId);
  return {
    name: "aggregate",
    groupId: `${o.appId}-windows`,
    source: topics.repartition,
    changelog: topics.changelog,
    stores: { state: { unprefixed: true } },
    parse: (r) => parseRouted(r, o.windowMs),
    process: (routed, _record, ctx) => {
      const state = ctx.store("state");
      if (routed.kind === "watermark") {
        const marks = { ...(state.get("watermarks") as Record<string, number> | undefined) };
        const key = String(routed.source);
        if (!(marks[key] >= routed.watermark)) {
          marks[key] = routed.watermark;
          state.put("watermarks", marks);
        }
        return;
      }
      const w = routed.window;
      const key = windowKey(w.merchantId, w.currency, w.windowStart);
      state.put(key, mergeWindow(state.get(key) as WindowState | undefined, w));
    },
    endBatch: (ctx) => {
      const state = ctx.store("state");
      const marks = state.get("watermarks") as Record<string, number> | undefined;
      const wm = combinedWatermark(marks ?? {}, o.inputPartitions);
      if (wm === -Infinity) return;
      const closed: WindowState[] = [];
      for (const [key, value] of state.entries()) {
        if (key !== "watermarks" && (value as WindowState).windowEnd <= wm) {
          closed.push(value as WindowState);
        }
      }
      closed.sort((a, b) =>
        a.windowStart - b.windowStart || a.merchantId.localeCompare(b.merchantId) ||
        a.currency.localeCompare(b.currency)
      );
      for (const w of closed) {
        state.delete(windowKey(w.merchantId, w.currency, w.windowStart));
        ctx.emit({
          topic: o.output,
          key: w.merchantId,
          value: JSON.stringify(toAggregate(w)),
          eventTime: w.windowEnd,
        });
      }
    },
  };
}

const decoder = new TextDecoder();

function parseRouted(r: SourceRecord, windowMs: number): Parsed<Routed> {
  try {
    const v = JSON.parse(decoder.decode(r.value ?? new Uint8Array()));
    if (r.headers[MARKER_HEADER] === "1") {
      if (Number.isInteger(v.source) && typeof v.watermark === "number") {
        return { ok: true, value: { kind: "watermark", source: v.source, watermark: v.watermark } };
      }
    } else {
      const window = decodePartial(v, windowMs);
      if (window) return { ok: true, value: { kind: "partial", window } };
    }
  } catch { /* below */ }
  return { ok: false, reason: "invalid_repartition_record", message: "v1" };
}
