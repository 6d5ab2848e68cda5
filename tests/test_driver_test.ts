/**
 * The in-memory test driver (jobs/lib/test_driver.ts) with the jobs' own
 * processors: the aggregation's two stages and detection, run batch by
 * batch in milliseconds, with crashes and failed batches, against
 * references computed here. The guarantees that need Kafka itself (exactly
 * once across kill -9, fencing, scale-out) stay in the real-cluster tests.
 */
import assert from "node:assert/strict";
import { seeded } from "./helpers/random.ts";
import { aggregateProcessors } from "../jobs/aggregate.ts";
import { detectProcessor } from "../jobs/detect.ts";
import { TestDriver } from "../jobs/lib/test_driver.ts";
import { encodeTransaction } from "../jobs/lib/transaction.ts";
import type { GeneratedRecord } from "../jobs/lib/generator.ts";
import { generate } from "./helpers/jobs.ts";
import { type Anomaly, parseDetectConfig } from "../jobs/lib/rules.ts";
import type { StreamProcessor } from "../jobs/lib/stream.ts";
import { internalTopicNames } from "../stacks/topology.ts";

const WINDOW_MS = 10_000;
const LATENESS_MS = 5_000;
const APP = "drv";
const topics = internalTopicNames(APP);

const records = (count: number, seed: string) => generate(count, seed, 0.02);

function aggregateDriver(): TestDriver {
  return new TestDriver({
    topics: { input: 5, [topics.repartition]: 3, output: 3 },
    processors: Object.values(aggregateProcessors({
      appId: APP,
      input: "input",
      output: "output",
      inputPartitions: 5,
      repartitionPartitions: 3,
      allowedLatenessMs: LATENESS_MS,
      windowMs: WINDOW_MS,
    })),
  });
}

const toInput = (r: GeneratedRecord) => ({ key: r.key, value: encodeTransaction(r.tx) });

/**
 * Runs `driver` to the end, crashing it after every `every` batches, with
 * random batch sizes up to `maxSize` and a fifth of the batches failing
 * halfway first; returns the number of crashes.
 */
function runCrashing(driver: TestDriver, seed: number, every: number, maxSize: number): number {
  const rand = seeded(seed);
  let crashes = 0;
  const o = {
    batchSize: () => 1 + rand() * maxSize,
    maxBatches: every,
    failBatch: () => rand() < 0.2,
  };
  while (driver.run(o) > 0) {
    driver.crash();
    crashes++;
  }
  return crashes;
}

interface Totals {
  count: number;
  purchaseMinor: number;
  refundMinor: number;
}

/** Closed windows' totals from the records as the driver partitioned them, computed here. */
function referenceTotals(driver: TestDriver, input: GeneratedRecord[]): Map<string, Totals> {
  const byId = new Map(input.map((r) => [r.tx.transactionId, r]));
  const maxByPartition = new Map<number, number>();
  const placed: GeneratedRecord[] = [];
  for (const r of driver.read("input")) {
    let id: string | undefined;
    try {
      id = JSON.parse(new TextDecoder().decode(r.value!)).transactionId;
    } catch {
      continue; // not JSON: not one of `input`
    }
    const g = byId.get(id!);
    if (!g || r.key !== g.key) continue; // not one of `input`
    const t = g.tx.transactionTime;
    maxByPartition.set(r.partition, Math.max(maxByPartition.get(r.partition) ?? -Infinity, t));
    placed.push(g);
  }
  const closedUntil = Math.min(...maxByPartition.values()) - LATENESS_MS;
  const out = new Map<string, Totals>();
  for (const { tx, amountMinor } of placed) {
    const start = Math.floor(tx.transactionTime / WINDOW_MS) * WINDOW_MS;
    if (start + WINDOW_MS > closedUntil) continue;
    const key = `${tx.merchantId}|${tx.currency}|${start}`;
    const t = out.get(key) ?? { count: 0, purchaseMinor: 0, refundMinor: 0 };
    t.count++;
    if (tx.transactionType === "refund") t.refundMinor += amountMinor;
    else t.purchaseMinor += amountMinor;
    out.set(key, t);
  }
  return out;
}

function outputTotals(driver: TestDriver): Map<string, Totals> {
  const out = new Map<string, Totals>();
  for (
    const a of driver.readValues<{
      merchantId: string;
      currency: string;
      windowStart: number;
      transactionCount: number;
      purchaseAmountMinor: number;
      refundAmountMinor: number;
    }>("output")
  ) {
    const key = `${a.merchantId}|${a.currency}|${a.windowStart}`;
    assert.ok(!out.has(key), `window ${key} emitted once`);
    out.set(key, {
      count: a.transactionCount,
      purchaseMinor: a.purchaseAmountMinor,
      refundMinor: a.refundAmountMinor,
    });
  }
  return out;
}

Deno.test("test driver: the aggregation's two stages give every closed window's exact totals, batch sizes random", () => {
  const input = records(20_000, "driver-aggregate");
  const driver = aggregateDriver();
  driver.pipe("input", input.map(toInput));
  const rand = seeded(1);
  driver.run({ batchSize: () => 1 + rand() ** 2 * 1500 });
  const expected = referenceTotals(driver, input);
  assert.ok(expected.size > 1000, `windows closed (${expected.size})`);
  assert.deepEqual(outputTotals(driver), expected);
  assert.equal(driver.deadLetters().length, 0);
});

Deno.test("test driver: crashes every few batches and batches failing halfway change nothing in the output", () => {
  const input = records(20_000, "driver-crashes");
  const clean = aggregateDriver();
  clean.pipe("input", input.map(toInput));
  clean.run({ batchSize: 700 });

  const driver = aggregateDriver();
  driver.pipe("input", input.map(toInput));
  const crashes = runCrashing(driver, 2, 7, 900);
  assert.ok(crashes > 10, `crashed ${crashes} times`);
  assert.deepEqual(outputTotals(driver), outputTotals(clean));
  assert.deepEqual(driver.read("output").length, clean.read("output").length);
});

Deno.test("test driver: bad records go to the dead letters with their reason and source, a late one too, and nothing else is lost", () => {
  const input = records(3_000, "driver-dead-letters");
  const driver = aggregateDriver();
  driver.pipe("input", input.map(toInput));
  const last = input[input.length - 1].tx;
  driver.pipe("input", [
    { key: "u1", value: "{not json", partition: 0 },
    { key: "u2", value: JSON.stringify({ ...last, amount: -1 }), partition: 1 },
    // At the first record's time, minutes behind everything partition 2 has
    // seen (the input's last record may be a flushed instance's, far ahead of
    // partition 2): late for its window.
    {
      key: "u3",
      value: encodeTransaction({ ...last, transactionTime: input[0].tx.transactionTime }),
      partition: 2,
    },
  ]);
  driver.run({ batchSize: 400 });
  const dead = driver.deadLetters();
  assert.deepEqual(dead.map((d) => d.reason).sort(), [
    "invalid_amount",
    "late_record",
    "malformed_json",
  ]);
  for (const d of dead) {
    assert.equal(d.headers["txpipe-dlq-reason"], d.reason);
    assert.equal(d.headers["txpipe-dlq-source-topic"], "input");
    assert.equal(d.headers["txpipe-dlq-source-partition"], String(d.source.partition));
  }
  assert.equal(driver.read("dead_letters").length, 3);
  // The valid records are all in the windows that closed (the reference leaves the bad ones out).
  assert.deepEqual(outputTotals(driver), referenceTotals(driver, input));
});

function detectDriver(): TestDriver {
  return new TestDriver({
    topics: { input: 5, anomalies: 3 },
    processors: [
      detectProcessor({
        appId: "drvdet",
        input: "input",
        output: "anomalies",
        config: parseDetectConfig({}),
      }) as StreamProcessor<unknown, unknown>,
    ],
  });
}

Deno.test("test driver: detection finds every injected pattern, the same anomalies whatever the batches, crashes and failures", () => {
  const input = records(30_000, "driver-detect");
  const once = detectDriver();
  once.pipe("input", input.map(toInput));
  once.run({ batchSize: 5_000 });
  const anomalies = once.readValues<Anomaly>("anomalies");
  assert.deepEqual(
    new Set(anomalies.map((a) => a.rule)),
    new Set(["velocity", "amount_spike", "impossible_travel", "card_testing"]),
  );

  const driver = detectDriver();
  driver.pipe("input", input.map(toInput));
  assert.ok(runCrashing(driver, 3, 5, 3000) > 5);
  const ids = (list: Anomaly[]) => list.map((a) => a.anomalyId).sort();
  assert.deepEqual(ids(driver.readValues<Anomaly>("anomalies")), ids(anomalies));
  // The state restored from the changelog is the state kept in memory.
  const users = new Set(input.map((r) => r.key));
  let stateEntries = 0;
  for (let p = 0; p < 5; p++) stateEntries += driver.state("detect", p).size;
  assert.equal(stateEntries, users.size);
});
