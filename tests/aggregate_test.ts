/**
 * The aggregation job on the real 3+3 cluster: exact windows against a
 * reference computed here, poison and late records, kill -9 recovery and
 * scale-out, all compared through read_committed outputs.
 */
import assert from "node:assert/strict";
import {
  baselineRun,
  canonical,
  countReasons,
  deadLetterReasons,
  killThriceThenFinish,
  outputsOf,
  runTopics,
  runTwoInstances,
  sharedInput,
} from "./helpers/jobs.ts";
import type { Aggregate } from "../jobs/lib/windows.ts";

const kafkaTest = { sanitizeOps: false, sanitizeResources: false };
const WINDOW_MS = 10_000;
const LATENESS_MS = 5_000;
const FLAGS = ["--window", "10s", "--allowed-lateness", "5s"];

/** The reference: computed here from the generator's own integer amounts, not by the job's code. */
async function reference(): Promise<Map<string, Omit<Aggregate, "minAmount" | "maxAmount">>> {
  const input = await sharedInput();
  // The job's watermark rule: each input partition's highest event time minus the
  // lateness; a window is final once the lowest of them has passed its end.
  const maxByPartition = new Map<number, number>();
  for (const r of input.records) {
    const p = input.partitionOf.get(r.tx.transactionId)!;
    maxByPartition.set(p, Math.max(maxByPartition.get(p) ?? -Infinity, r.tx.transactionTime));
  }
  assert.equal(maxByPartition.size, 5, "the dataset covers every input partition");
  const closedUntil = Math.min(...maxByPartition.values()) - LATENESS_MS;

  const out = new Map<string, Omit<Aggregate, "minAmount" | "maxAmount">>();
  for (const { tx, amountMinor } of input.records) {
    const start = Math.floor(tx.transactionTime / WINDOW_MS) * WINDOW_MS;
    if (start + WINDOW_MS > closedUntil) continue;
    const key = `${tx.merchantId}|${tx.currency}|${start}`;
    const a = out.get(key) ?? {
      merchantId: tx.merchantId,
      currency: tx.currency,
      windowStart: start,
      windowEnd: start + WINDOW_MS,
      transactionCount: 0,
      purchaseCount: 0,
      refundCount: 0,
      purchaseAmount: 0,
      refundAmount: 0,
      netAmount: 0,
      purchaseAmountMinor: 0,
      refundAmountMinor: 0,
      netAmountMinor: 0,
      minAmountMinor: Number.MAX_SAFE_INTEGER,
      maxAmountMinor: 0,
    };
    a.transactionCount++;
    if (tx.transactionType === "refund") {
      a.refundCount++;
      a.refundAmountMinor += amountMinor;
    } else {
      a.purchaseCount++;
      a.purchaseAmountMinor += amountMinor;
    }
    a.netAmountMinor = a.purchaseAmountMinor - a.refundAmountMinor;
    a.minAmountMinor = Math.min(a.minAmountMinor, amountMinor);
    a.maxAmountMinor = Math.max(a.maxAmountMinor, amountMinor);
    out.set(key, a);
  }
  return out;
}

/** The uninterrupted single-instance run every other test compares with. */
const baseline = baselineRun<Aggregate>("aggregate", "agg", FLAGS);

Deno.test(
  "aggregate: every closed window equals an independent reference to the cent; none missing or doubled",
  kafkaTest,
  async () => {
    const got = (await baseline()).outputs;
    const expected = await reference();

    const keys = got.map((a) => `${a.merchantId}|${a.currency}|${a.windowStart}`);
    assert.equal(new Set(keys).size, keys.length, "no window is emitted twice");
    assert.equal(got.length, expected.size, "no window is missing");
    assert.ok(got.length > 1000, `a meaningful number of windows (${got.length})`);
    for (const a of got) {
      const e = expected.get(`${a.merchantId}|${a.currency}|${a.windowStart}`);
      assert.ok(e, `unexpected window ${a.merchantId} ${a.currency} ${a.windowStart}`);
      for (const field of Object.keys(e) as Array<keyof typeof e>) {
        if (field.endsWith("Amount")) continue; // decimal forms: checked below against minor units
        assert.equal(
          a[field],
          e[field],
          `${field} of ${a.merchantId} ${a.currency} ${a.windowStart}`,
        );
      }
      const decimals = a.currency === "JPY" || a.currency === "KRW" ? 1 : 100;
      assert.equal(Math.round(a.purchaseAmount * decimals), a.purchaseAmountMinor);
      assert.equal(Math.round(a.netAmount * decimals), a.netAmountMinor);
      assert.equal(String(a.purchaseAmount), String(a.purchaseAmountMinor / decimals));
      assert.equal(a.windowEnd - a.windowStart, WINDOW_MS);
    }
  },
);

Deno.test(
  "aggregate: poison and late records land in the dead-letter topic with their reasons, nothing else does",
  kafkaTest,
  async () => {
    const input = await sharedInput();
    const { topics } = await baseline();
    assert.deepEqual(
      await deadLetterReasons(topics.deadLetters),
      countReasons([...input.poison.map((p) => p.reason), ...input.late.map(() => "late_record")]),
    );
  },
);

Deno.test(
  "aggregate: kill -9 three times at random moments, then restart, yields output identical to an uninterrupted run",
  kafkaTest,
  async () => {
    const expected = canonical((await baseline()).outputs);
    const input = await sharedInput();
    const t = runTopics(input.topic, "aggcrash");
    await killThriceThenFinish("aggregate", t, FLAGS);
    const got = canonical(await outputsOf<Aggregate>(t));
    assert.equal(got.length, expected.length);
    assert.deepEqual(got, expected);
  },
);

Deno.test(
  "aggregate: two instances in one group give output identical to one instance",
  kafkaTest,
  async () => {
    const expected = canonical((await baseline()).outputs);
    const input = await sharedInput();
    const t = runTopics(input.topic, "aggscale");
    await runTwoInstances("aggregate", t, FLAGS);
    const got = canonical(await outputsOf<Aggregate>(t));
    assert.deepEqual(got, expected);
  },
);
