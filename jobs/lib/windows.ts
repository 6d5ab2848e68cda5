/**
 * Tumbling event-time windows per merchant and currency: the pure core of
 * the aggregation job. Amounts are integer minor units throughout; two
 * currencies are never added together because the currency is part of the
 * window's key.
 *
 * @module
 */
import { fromMinorUnits } from "./currency.ts";
import type { TransactionType } from "./transaction.ts";

/** What the aggregation needs of a transaction (per-record repartition values of old versions). */
export interface WindowInput {
  merchantId: string;
  currency: string;
  transactionTime: number;
  transactionType: TransactionType;
  amountMinor: number;
}

/**
 * A window's running totals, as kept in state (plain JSON); also the partial
 * totals of one batch's transactions on the repartition topic.
 */
export interface WindowState {
  merchantId: string;
  currency: string;
  windowStart: number;
  windowEnd: number;
  transactionCount: number;
  purchaseCount: number;
  refundCount: number;
  purchaseMinor: number;
  refundMinor: number;
  minMinor: number;
  maxMinor: number;
}

/** The value on `transaction_aggregates` (key merchantId), per docs/design.md. */
export interface Aggregate {
  merchantId: string;
  currency: string;
  windowStart: number;
  windowEnd: number;
  transactionCount: number;
  purchaseCount: number;
  refundCount: number;
  /** Amounts as JSON numbers with the currency's decimals, printed exactly from minor units. */
  purchaseAmount: number;
  refundAmount: number;
  /** purchaseAmount - refundAmount. */
  netAmount: number;
  minAmount: number;
  maxAmount: number;
  /** The same amounts in integer minor units (cents), for exact arithmetic downstream. */
  purchaseAmountMinor: number;
  refundAmountMinor: number;
  netAmountMinor: number;
  minAmountMinor: number;
  maxAmountMinor: number;
}

/** The start of the tumbling window of `sizeMs` holding event time `t`. */
export function windowStart(t: number, sizeMs: number): number {
  return t - (((t % sizeMs) + sizeMs) % sizeMs);
}

/** The state key of a window: unambiguous whatever the ids contain. */
export function windowKey(merchantId: string, currency: string, start: number): string {
  return JSON.stringify([merchantId, currency, start]);
}

/** Adds one transaction to its window's totals (a new window when `current` is undefined). */
export function addToWindow(
  current: WindowState | undefined,
  input: WindowInput,
  sizeMs: number,
): WindowState {
  const start = windowStart(input.transactionTime, sizeMs);
  const w: WindowState = current ?? {
    merchantId: input.merchantId,
    currency: input.currency,
    windowStart: start,
    windowEnd: start + sizeMs,
    transactionCount: 0,
    purchaseCount: 0,
    refundCount: 0,
    purchaseMinor: 0,
    refundMinor: 0,
    minMinor: input.amountMinor,
    maxMinor: input.amountMinor,
  };
  const refund = input.transactionType === "refund";
  return {
    ...w,
    transactionCount: w.transactionCount + 1,
    purchaseCount: w.purchaseCount + (refund ? 0 : 1),
    refundCount: w.refundCount + (refund ? 1 : 0),
    purchaseMinor: w.purchaseMinor + (refund ? 0 : input.amountMinor),
    refundMinor: w.refundMinor + (refund ? input.amountMinor : 0),
    minMinor: Math.min(w.minMinor, input.amountMinor),
    maxMinor: Math.max(w.maxMinor, input.amountMinor),
  };
}

/**
 * What {@link addToWindow} gives, for a partial only the caller holds (stage
 * 1's, per batch): `partial` is changed in place and returned, a new one made
 * when it is undefined, and the transaction's fields read where they are.
 */
export function addToPartial(
  partial: WindowState | undefined,
  tx: Omit<WindowInput, "amountMinor">,
  amountMinor: number,
  sizeMs: number,
): WindowState {
  if (partial === undefined) {
    const { merchantId, currency, transactionTime, transactionType } = tx;
    return addToWindow(
      undefined,
      { merchantId, currency, transactionTime, transactionType, amountMinor },
      sizeMs,
    );
  }
  const refund = tx.transactionType === "refund";
  partial.transactionCount++;
  if (refund) {
    partial.refundCount++;
    partial.refundMinor += amountMinor;
  } else {
    partial.purchaseCount++;
    partial.purchaseMinor += amountMinor;
  }
  if (amountMinor < partial.minMinor) partial.minMinor = amountMinor;
  if (amountMinor > partial.maxMinor) partial.maxMinor = amountMinor;
  return partial;
}

/**
 * Merges `partial`, the totals of some of a window's transactions (built by
 * {@link addToWindow}), into the window's totals so far (`current`, undefined
 * for a new window). Both must be of the same merchant, currency and window.
 * Counts and sums add and min/max combine, so merging the partials of any
 * split of a window's transactions gives exactly what adding them one by
 * one gives: the aggregation sums each batch per window before the shuffle.
 */
export function mergeWindow(current: WindowState | undefined, partial: WindowState): WindowState {
  if (!current) return { ...partial };
  return {
    ...current,
    transactionCount: current.transactionCount + partial.transactionCount,
    purchaseCount: current.purchaseCount + partial.purchaseCount,
    refundCount: current.refundCount + partial.refundCount,
    purchaseMinor: current.purchaseMinor + partial.purchaseMinor,
    refundMinor: current.refundMinor + partial.refundMinor,
    minMinor: Math.min(current.minMinor, partial.minMinor),
    maxMinor: Math.max(current.maxMinor, partial.maxMinor),
  };
}

/** The final record of a closed window. */
export function toAggregate(w: WindowState): Aggregate {
  const net = w.purchaseMinor - w.refundMinor;
  const amount = (minor: number) => {
    // fromMinorUnits takes positive or negative integers alike.
    return minor < 0 ? -fromMinorUnits(-minor, w.currency) : fromMinorUnits(minor, w.currency);
  };
  return {
    merchantId: w.merchantId,
    currency: w.currency,
    windowStart: w.windowStart,
    windowEnd: w.windowEnd,
    transactionCount: w.transactionCount,
    purchaseCount: w.purchaseCount,
    refundCount: w.refundCount,
    purchaseAmount: amount(w.purchaseMinor),
    refundAmount: amount(w.refundMinor),
    netAmount: amount(net),
    minAmount: amount(w.minMinor),
    maxAmount: amount(w.maxMinor),
    purchaseAmountMinor: w.purchaseMinor,
    refundAmountMinor: w.refundMinor,
    netAmountMinor: net,
    minAmountMinor: w.minMinor,
    maxAmountMinor: w.maxMinor,
  };
}

/**
 * The watermark of one input partition: the highest event time seen minus
 * the allowed lateness. A record with an event time below it is late.
 */
export function watermark(maxEventTime: number, allowedLatenessMs: number): number {
  return maxEventTime - allowedLatenessMs;
}

/**
 * The watermark downstream of a repartition: the lowest of the input
 * partitions' watermarks (an input partition not heard from holds it back).
 */
export function combinedWatermark(
  bySource: Readonly<Record<string, number>>,
  sourcePartitions: number,
): number {
  let min = Infinity;
  for (let p = 0; p < sourcePartitions; p++) {
    const w = bySource[String(p)];
    if (w === undefined) return -Infinity;
    min = Math.min(min, w);
  }
  return min;
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

/**
 * A partial as the rekey stage writes it to the repartition topic: a JSON
 * array of its fields in a fixed order (merchant, currency, window start,
 * counts, minor-unit sums, min, max), without the names and the window's
 * end, which follows from its start. About 60 bytes where the object took
 * 225: the repartition topic is the largest thing the aggregation writes.
 */
export function encodePartial(w: WindowState): string {
  return JSON.stringify([
    w.merchantId,
    w.currency,
    w.windowStart,
    w.transactionCount,
    w.purchaseCount,
    w.refundCount,
    w.purchaseMinor,
    w.refundMinor,
    w.minMinor,
    w.maxMinor,
  ]);
}

/**
 * A repartition record's JSON value as a window partial of `windowMs`: the
 * array {@link encodePartial} writes, a partial as an object (what versions
 * before it wrote), or a single transaction's window input (the per-record
 * values older versions wrote) as the partial of that one transaction;
 * undefined when it is none of these.
 */
export function decodePartial(v: unknown, windowMs: number): WindowState | undefined {
  if (typeof v !== "object" || v === null) return undefined;
  if (Array.isArray(v)) {
    if (v.length !== 10) return undefined;
    const w: WindowState = {
      merchantId: v[0],
      currency: v[1],
      windowStart: v[2],
      windowEnd: v[2] + windowMs,
      transactionCount: v[3],
      purchaseCount: v[4],
      refundCount: v[5],
      purchaseMinor: v[6],
      refundMinor: v[7],
      minMinor: v[8],
      maxMinor: v[9],
    };
    return isPartial(w, windowMs) ? w : undefined;
  }
  if ("windowStart" in v) return isPartial(v, windowMs) ? v : undefined;
  return isWindowInput(v) ? addToWindow(undefined, v, windowMs) : undefined;
}

/** Whether `v` is the partial totals of a window of `windowMs`, in JSON-safe integers. */
function isPartial(v: object, windowMs: number): v is WindowState {
  const r = v as Record<string, unknown>;
  if (typeof r.merchantId !== "string" || typeof r.currency !== "string") return false;
  if (!PARTIAL_INTEGERS.every((k) => Number.isSafeInteger(r[k]))) return false;
  const w = r as unknown as WindowState;
  return w.windowEnd - w.windowStart === windowMs &&
    windowStart(w.windowStart, windowMs) === w.windowStart &&
    w.transactionCount >= 1 && w.transactionCount === w.purchaseCount + w.refundCount &&
    w.minMinor <= w.maxMinor;
}

/** Whether `v` is a transaction's window input. */
function isWindowInput(v: object): v is WindowInput {
  const r: Record<string, unknown> = { ...v };
  return typeof r.merchantId === "string" && typeof r.currency === "string" &&
    Number.isSafeInteger(r.transactionTime) && Number.isSafeInteger(r.amountMinor) &&
    (r.transactionType === "purchase" || r.transactionType === "refund");
}
