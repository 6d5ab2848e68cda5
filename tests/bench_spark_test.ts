/**
 * The Spark contender of `deno task bench` (tests/bench/spark.ts) on the real
 * cluster: its closed windows must equal a reference computed with txpipe's
 * own pure window functions. Ignored unless the Spark install exists
 * (`ensureSpark` made .cache/bench/spark): CI does not install Spark.
 */
import assert from "node:assert/strict";
import { generate, inputTopic, toMessage } from "./helpers/jobs.ts";
import { runSpark, sparkInstalled } from "./bench/spark.ts";
import { startReader } from "./bench/reader.ts";
import { addToWindow, windowKey, windowStart, type WindowState } from "../jobs/lib/windows.ts";

const kafkaTest = { sanitizeOps: false, sanitizeResources: false };
const SETTINGS = { windowMs: 5_000, allowedLatenessMs: 2_000 };
const installed = await sparkInstalled();

/** Spark's output value (tests/bench/spark/aggregate.py). */
interface SparkAggregate {
  merchantId: string;
  currency: string;
  windowStart: number;
  windowEnd: number;
  transactionCount: number;
  purchaseCount: number;
  refundCount: number;
  purchaseAmountMinor: number;
  refundAmountMinor: number;
  minAmountMinor: number;
  maxAmountMinor: number;
}

Deno.test({
  name: "bench spark: Spark's closed windows equal txpipe's window functions to the cent",
  ignore: !installed,
  ...kafkaTest,
  fn: async () => {
    const records = generate(3_000, "bench-spark");
    const input = await inputTopic("spark_input", records.map((r) => toMessage(r)));
    const output = `test_spark_out_${crypto.randomUUID().slice(0, 8)}`;
    const { run, windows } = await runSpark({
      input,
      output,
      records: records.length,
      settings: SETTINGS,
      timeoutMs: 300_000,
    });

    // Spark's watermark is global: every window ending by the highest event time
    // minus the lateness is final once the whole backlog is read.
    const reference = new Map<string, WindowState>();
    for (const { tx, amountMinor } of records) {
      const start = windowStart(tx.transactionTime, SETTINGS.windowMs);
      const key = windowKey(tx.merchantId, tx.currency, start);
      reference.set(
        key,
        addToWindow(reference.get(key), { ...tx, amountMinor }, SETTINGS.windowMs),
      );
    }
    const closedUntil = Math.max(...records.map((r) => r.tx.transactionTime)) -
      SETTINGS.allowedLatenessMs;
    const closed = [...reference.values()].filter((w) => w.windowEnd <= closedUntil);

    const got = windows.map((w) => windowKey(w.merchantId, w.currency, w.windowStart));
    assert.ok(got.length > 100, `Spark emitted windows (${got.length})`);
    assert.equal(new Set(got).size, got.length, "no window is emitted twice");
    assert.equal(got.length, closed.length, "every closed window is emitted, no open one");
    assert.equal(run.outputs, got.length);
    assert.ok(run.doneAt > run.startedAt && run.recordsPerSecond > 0);
    assert.ok(run.peakRssBytes > 100e6, "the JVM is measured with the driver");

    const values = await outputValues(output, got.length);
    for (const v of values) {
      const e = reference.get(windowKey(v.merchantId, v.currency, v.windowStart));
      assert.ok(e, `unexpected window ${v.merchantId} ${v.currency} ${v.windowStart}`);
      assert.deepEqual(v, {
        merchantId: e.merchantId,
        currency: e.currency,
        windowStart: e.windowStart,
        windowEnd: e.windowEnd,
        transactionCount: e.transactionCount,
        purchaseCount: e.purchaseCount,
        refundCount: e.refundCount,
        purchaseAmountMinor: e.purchaseMinor,
        refundAmountMinor: e.refundMinor,
        minAmountMinor: e.minMinor,
        maxAmountMinor: e.maxMinor,
      });
    }
  },
});

/** Every field of Spark's output, read back through the benchmark's own reader. */
async function outputValues(topic: string, n: number): Promise<SparkAggregate[]> {
  const reader = await startReader(topic);
  try {
    assert.ok(await reader.waitFor(n, 30_000), `${n} output records read back`);
    return reader.records.map((r) => JSON.parse(r.value) as SparkAggregate);
  } finally {
    await reader.stop();
  }
}
