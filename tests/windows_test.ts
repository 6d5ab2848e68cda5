/** The pure windowing core of the aggregation: exact sums, keys, watermarks. */
import assert from "node:assert/strict";
import {
  addToWindow,
  combinedWatermark,
  toAggregate,
  watermark,
  windowKey,
  windowStart,
} from "../jobs/lib/windows.ts";

const base = {
  merchantId: "merchant-1",
  currency: "USD",
  transactionType: "purchase" as const,
};

Deno.test("windows: a window starts at the multiple of its size at or below the event time", () => {
  assert.equal(windowStart(1_700_000_012_345, 10_000), 1_700_000_010_000);
  assert.equal(windowStart(1_700_000_010_000, 10_000), 1_700_000_010_000);
  assert.equal(windowStart(59_999, 60_000), 0);
});

Deno.test("windows: sums are exact in minor units where floats would drift", () => {
  let w;
  // 0.10 + 0.20 (+ …) in floats is not 0.3; in cents it is exact.
  for (let i = 0; i < 1000; i++) {
    w = addToWindow(w, { ...base, transactionTime: 1000, amountMinor: i % 2 ? 10 : 20 }, 60_000);
  }
  const a = toAggregate(w!);
  assert.equal(a.transactionCount, 1000);
  assert.equal(a.purchaseAmountMinor, 15_000);
  assert.equal(a.purchaseAmount, 150);
  assert.equal(a.minAmount, 0.1);
  assert.equal(a.maxAmount, 0.2);
});

Deno.test("windows: refunds are counted apart and subtracted in the net amount", () => {
  let w = addToWindow(undefined, { ...base, transactionTime: 5, amountMinor: 1999 }, 60_000);
  w = addToWindow(
    w,
    { ...base, transactionTime: 6, transactionType: "refund", amountMinor: 2500 },
    60_000,
  );
  const a = toAggregate(w);
  assert.deepEqual(
    [
      a.purchaseCount,
      a.refundCount,
      a.purchaseAmount,
      a.refundAmount,
      a.netAmount,
      a.netAmountMinor,
    ],
    [1, 1, 19.99, 25, -5.01, -501],
  );
  assert.equal(a.windowStart, 0);
  assert.equal(a.windowEnd, 60_000);
});

Deno.test("windows: zero-decimal currencies print whole amounts", () => {
  const w = addToWindow(undefined, {
    ...base,
    currency: "JPY",
    transactionTime: 1,
    amountMinor: 1234,
  }, 60_000);
  assert.equal(toAggregate(w).purchaseAmount, 1234);
});

Deno.test("windows: keys keep merchant, currency and start apart whatever the ids contain", () => {
  assert.notEqual(windowKey("a|b", "USD", 0), windowKey("a", "b|USD", 0));
  assert.notEqual(windowKey("m", "USD", 0), windowKey("m", "EUR", 0));
});

Deno.test("windows: the combined watermark is the lowest input watermark, and unknown until all report", () => {
  assert.equal(watermark(10_000, 2_000), 8_000);
  assert.equal(combinedWatermark({ "0": 5, "1": 3 }, 3), -Infinity);
  assert.equal(combinedWatermark({ "0": 5, "1": 3, "2": 9 }, 3), 3);
});
