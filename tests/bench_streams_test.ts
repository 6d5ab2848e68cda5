/**
 * The Kafka Streams contender of `deno task bench` (tests/bench/streams, run by
 * tests/bench/kafka_streams.ts) computes txpipe's windows: built with Maven,
 * run on the real cluster over a small backlog, its closed windows equal a
 * reference computed with txpipe's own window functions, and it skips and
 * counts invalid records.
 */
import assert from "node:assert/strict";
import { topicAs, TOPICS } from "../stacks/topology.ts";
import { ensureTopics } from "../jobs/lib/kafka.ts";
import { TransactionGenerator } from "../jobs/lib/generator.ts";
import { addToWindow, windowKey, windowStart, type WindowState } from "../jobs/lib/windows.ts";
import { ensureCluster, TOPO, withAdmin } from "./helpers/cluster.ts";
import { poisonRecords, produceMessages, toMessage } from "./helpers/jobs.ts";
import { buildKafkaStreams, runKafkaStreams } from "./bench/kafka_streams.ts";
import type { WindowTotals } from "./bench/types.ts";

const kafkaTest = { sanitizeOps: false, sanitizeResources: false };
const SETTINGS = { windowMs: 5_000, allowedLatenessMs: 2_000 };

/** Poison records whose fault is in a field the aggregation reads (the app checks those). */
const CHECKED_REASONS = new Set([
  "malformed_json",
  "empty_value",
  "not_object",
  "missing_field",
  "invalid_amount",
  "unknown_currency",
]);

function sorted(windows: WindowTotals[]): string[] {
  return windows.map((w) => JSON.stringify(w)).sort();
}

Deno.test(
  "kafka streams peer: closed windows equal txpipe's window functions; invalid records counted",
  kafkaTest,
  async () => {
    await buildKafkaStreams();
    // Few merchants, slow event time: windows with several transactions, a dozen of them closed.
    const gen = new TransactionGenerator({
      seed: "bench-streams",
      merchants: 40,
      eventsPerSecond: 50,
      fraudRate: 0.01,
    });
    const records = [...gen.take(3000), ...gen.flush()];
    const poison = poisonRecords(records[0]).filter((p) => CHECKED_REASONS.has(p.reason));
    const messages = records.map((r) => toMessage(r, false));
    messages.splice(1000, 0, ...poison.map((p) => p.message));

    // One input partition: records reach the windows in event-time order, so none is
    // late and the closed windows do not depend on fetch timing (several partitions
    // interleave in the repartition topic; see AggregateApp.java).
    const id = crypto.randomUUID().slice(0, 8);
    const input = `test_bench_streams_in_${id}`;
    const output = `test_bench_streams_out_${id}`;
    await ensureCluster();
    await withAdmin((admin) =>
      ensureTopics(admin, [{ ...topicAs(TOPO, TOPICS.transactions, input), partitions: 1 }])
    );
    try {
      await produceMessages(input, messages);
      const { run, windows, skipped } = await runKafkaStreams({
        input,
        output,
        records: messages.length,
        settings: SETTINGS,
        timeoutMs: 90_000,
      });

      const maxTime = Math.max(...records.map((r) => r.tx.transactionTime));
      const reference = new Map<string, WindowState>();
      for (const { tx, amountMinor } of records) {
        const key = windowKey(tx.merchantId, tx.currency, windowStart(tx.transactionTime, 5_000));
        reference.set(key, addToWindow(reference.get(key), { ...tx, amountMinor }, 5_000));
      }
      const closed = [...reference.values()]
        .filter((w) => w.windowEnd + SETTINGS.allowedLatenessMs <= maxTime)
        .map((w): WindowTotals => ({
          merchantId: w.merchantId,
          currency: w.currency,
          windowStart: w.windowStart,
          windowEnd: w.windowEnd,
          transactionCount: w.transactionCount,
          purchaseMinor: w.purchaseMinor,
          refundMinor: w.refundMinor,
        }));
      assert.ok(closed.length > 100, `the backlog closes many windows (${closed.length})`);
      assert.deepEqual(sorted(windows), sorted(closed), "exactly the closed windows, once each");
      assert.deepEqual(skipped, { invalid: poison.length, late: 0 });
      assert.equal(run.outputs, closed.length);
      assert.ok(run.startedAt < run.doneAt && run.recordsPerSecond > 0);
      assert.ok(run.peakRssBytes > 0 && run.cpuSeconds > 0);
    } finally {
      await withAdmin((admin) => admin.deleteTopics({ topics: [input, output] })).catch(() => {});
    }
  },
);
