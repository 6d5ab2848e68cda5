/** The pure windowing core of the aggregation: exact sums, keys, watermarks. */
import assert from "node:assert/strict";
import {
  addToPartial,
  addToWindow,
  combinedWatermark,
  mergeWindow,
  toAggregate,
  watermark,
  type WindowInput,
  windowKey,
  windowStart,
  type WindowState,
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

/** A seeded pseudo-random sequence in [0, 1) (the tests must be repeatable). */
function random(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

/** `n` transactions of one window: purchases and refunds, small and large amounts. */
function windowInputs(n: number, rand: () => number): WindowInput[] {
  return Array.from({ length: n }, (_, i) => ({
    ...base,
    transactionTime: 120_000 + Math.floor(rand() * 60_000),
    transactionType: rand() < 0.2 ? "refund" as const : "purchase" as const,
    // Refunds hold the extremes now and then: min/max must come from either kind.
    amountMinor: i === 7 ? 1 : i === 11 ? 9_999_999_99 : 1 + Math.floor(rand() ** 3 * 500_000),
  }));
}

/** The totals of `inputs` added one by one. */
function oneByOne(inputs: readonly WindowInput[]): WindowState | undefined {
  let w: WindowState | undefined;
  for (const i of inputs) w = addToWindow(w, i, 60_000);
  return w;
}

Deno.test("windows: merging the partials of any split gives exactly the one-by-one totals", () => {
  const rand = random(42);
  for (let round = 0; round < 200; round++) {
    const inputs = windowInputs(1 + Math.floor(rand() * 60), rand);
    const expected = oneByOne(inputs)!;
    // Cut into consecutive runs of random length (some of one record), one partial each.
    const partials: WindowState[] = [];
    for (let i = 0; i < inputs.length;) {
      const n = 1 + Math.floor(rand() * 10);
      partials.push(oneByOne(inputs.slice(i, i + n))!);
      i += n;
    }
    let merged: WindowState | undefined;
    for (const p of partials) merged = mergeWindow(merged, p);
    assert.deepEqual(merged, expected, `round ${round}`);
    // In any order: partials of different batches reach stage 2 in no fixed order.
    let reversed: WindowState | undefined;
    for (const p of partials.toReversed()) reversed = mergeWindow(reversed, p);
    assert.deepEqual(reversed, expected, `round ${round}, reversed`);
    assert.deepEqual(toAggregate(merged!), toAggregate(expected));
  }
});

Deno.test("windows: merged min, max and refunds come from whichever partial holds them", () => {
  const at = (transactionType: "purchase" | "refund", amountMinor: number): WindowInput => ({
    ...base,
    transactionTime: 61_000,
    transactionType,
    amountMinor,
  });
  const first = [at("purchase", 500), at("refund", 20)];
  const second = [at("purchase", 70), at("refund", 9_000), at("refund", 1)];
  const merged = mergeWindow(mergeWindow(undefined, oneByOne(first)!), oneByOne(second)!);
  assert.deepEqual(merged, oneByOne([...first, ...second]));
  assert.deepEqual(
    [merged.transactionCount, merged.purchaseCount, merged.refundCount],
    [5, 2, 3],
  );
  assert.deepEqual([merged.purchaseMinor, merged.refundMinor], [570, 9_021]);
  assert.deepEqual([merged.minMinor, merged.maxMinor], [1, 9_000]);
  assert.equal(toAggregate(merged).netAmountMinor, 570 - 9_021);
  assert.deepEqual([merged.windowStart, merged.windowEnd], [60_000, 120_000]);
});

Deno.test("windows: a first partial starts the window as a copy, never shared", () => {
  const p = oneByOne(windowInputs(3, random(7)))!;
  const w = mergeWindow(undefined, p);
  assert.deepEqual(w, p);
  assert.notEqual(w, p);
  const again = mergeWindow(w, p);
  assert.equal(again.transactionCount, 6);
  assert.equal(p.transactionCount, 3, "merging leaves its inputs as they were");
});

Deno.test("windows: a partial grown in place (stage 1) equals the window built one copy at a time", () => {
  let pure: WindowState | undefined;
  let inPlace: WindowState | undefined;
  for (let i = 0; i < 500; i++) {
    const tx = {
      ...base,
      transactionType: i % 7 === 3 ? "refund" as const : "purchase" as const,
      transactionTime: 1_700_000_000_000 + i,
    };
    const amountMinor = (i * 7919) % 100_000;
    pure = addToWindow(pure, { ...tx, amountMinor }, 60_000);
    const before = inPlace;
    inPlace = addToPartial(inPlace, tx, amountMinor, 60_000);
    if (before !== undefined) assert.equal(inPlace, before, "the same object, changed in place");
    assert.deepEqual(inPlace, pure);
    assert.deepEqual(Object.keys(inPlace), Object.keys(pure), "fields in the same order");
  }
});
