/**
 * How long one Kafka transaction of a stream job takes on the real cluster,
 * and what `CONCURRENT_TRANSACTIONS` costs it: a standalone benchmark.
 *
 *   deno run -A tests/bench/transactions.ts --transactions 100 --pauses 0,100
 *
 * One transactional producer runs a stream job's commit in a loop, as
 * `PartitionTask.commit` (jobs/lib/partition_task.ts) does: AddPartitionsToTxn
 * and an acks=all send of one record, AddOffsetsToTxn and TxnOffsetCommit,
 * EndTxn. Each transaction begins `pause` ms after the previous commit
 * returned (0: at once, as a job that has records waiting does).
 *
 * Three variants are measured in interleaved rounds: txpipe's; txpipe's
 * without remembering the transaction coordinator (jobs/lib/coordinators.ts:
 * kafkajs then asks for it before each AddPartitionsToTxn, AddOffsetsToTxn
 * and EndTxn); and the reference retry schedule of
 * jobs/lib/concurrent_transactions.ts, a first wait of 20 ms as the Java
 * client's ADD_PARTITIONS_RETRY_BACKOFF_MS (and txpipe's before), doubling up
 * to 200 ms, instead of txpipe's ({@link RETRY_SCHEDULE}). Per variant and
 * pause it prints the median over rounds of each round's p50 and p90
 * transaction time and the refusals per transaction.
 *
 * @module
 */
import { defineCommand, parseCommandLine } from "../../jobs/lib/cli.ts";
import { createKafka, ensureTopics, PARTITIONER, PRODUCER_RETRY } from "../../jobs/lib/kafka.ts";
import {
  concurrentTransactionRetries,
  RETRY_SCHEDULE,
  type RetrySchedule,
} from "../../jobs/lib/concurrent_transactions.ts";
import { COORDINATOR_MEMORY } from "../../jobs/lib/coordinators.ts";
import { topicAs, TOPICS } from "../../stacks/topology.ts";
import { BROKERS, ensureCluster, TOPO, withAdmin } from "../helpers/cluster.ts";
import { percentile } from "./latency.ts";
import { spread } from "./results.ts";

/** The reference schedule: the Java client's first wait, and txpipe's before 2026-12-07. */
export const REFERENCE_SCHEDULE: RetrySchedule = { firstMs: 20, maxMs: 200 };

/** The consumer group the transactions commit offsets for (deleted at the end). */
const GROUP = "bench-txn-group";

/** What one round of one schedule and pause measured. */
export interface RoundResult {
  p50Ms: number;
  p90Ms: number;
  refusalsPerTransaction: number;
}

/** One variant measured: a retry schedule, and whether the transaction coordinator is remembered. */
interface Variant {
  name: string;
  schedule: RetrySchedule;
  rememberCoordinator: boolean;
}

async function round(
  topic: string,
  variant: Variant,
  pauseMs: number,
  transactions: number,
): Promise<RoundResult> {
  const saved = { ...RETRY_SCHEDULE };
  Object.assign(RETRY_SCHEDULE, variant.schedule);
  COORDINATOR_MEMORY.enabled = variant.rememberCoordinator;
  const kafka = createKafka({ principal: "admin", clientId: "txpipe-bench-txn", brokers: BROKERS });
  const producer = kafka.producer({
    transactionalId: `bench-txn-${crypto.randomUUID().slice(0, 8)}`,
    idempotent: true,
    maxInFlightRequests: 1,
    retry: PRODUCER_RETRY,
    createPartitioner: PARTITIONER,
  });
  await producer.connect();
  const times: number[] = [];
  let refusals = 0;
  try {
    // One unmeasured transaction: the coordinator's first sight of this id.
    for (let t = -1; t < transactions; t++) {
      if (pauseMs > 0) await new Promise((r) => setTimeout(r, pauseMs));
      const before = concurrentTransactionRetries.addPartitionsToTxn +
        concurrentTransactionRetries.addOffsetsToTxn + concurrentTransactionRetries.endTxn;
      const started = performance.now();
      const txn = await producer.transaction();
      await txn.send({ topic, acks: -1, messages: [{ key: "k", value: `t${t}`, partition: 0 }] });
      await txn.sendOffsets({
        consumerGroupId: GROUP,
        topics: [{ topic, partitions: [{ partition: 0, offset: String(t + 1) }] }],
      });
      await txn.commit();
      if (t < 0) continue;
      times.push(performance.now() - started);
      refusals += concurrentTransactionRetries.addPartitionsToTxn +
        concurrentTransactionRetries.addOffsetsToTxn + concurrentTransactionRetries.endTxn - before;
    }
  } finally {
    await producer.disconnect();
    Object.assign(RETRY_SCHEDULE, saved);
    COORDINATOR_MEMORY.enabled = true;
  }
  times.sort((a, b) => a - b);
  return {
    p50Ms: percentile(times, 0.5),
    p90Ms: percentile(times, 0.9),
    refusalsPerTransaction: refusals / transactions,
  };
}

const COMMAND = defineCommand({
  name: "deno run -A tests/bench/transactions.ts",
  summary: "a stream job's transaction on the real cluster: its time and CONCURRENT_TRANSACTIONS",
  flags: {
    transactions: {
      kind: "int",
      min: 10,
      default: 100,
      help: "measured transactions per round, schedule and pause",
      placeholder: "N",
    },
    pauses: {
      kind: "list",
      default: ["0", "100"],
      help: "ms between a commit and the next transaction",
      placeholder: "MS1,MS2,...",
    },
    rounds: {
      kind: "int",
      min: 1,
      default: 3,
      help: "interleaved rounds (each runs every schedule and pause)",
      placeholder: "N",
    },
  },
  examples: ["deno run -A tests/bench/transactions.ts --transactions 50 --pauses 0 --rounds 2"],
});

async function main(): Promise<void> {
  const { values: v } = parseCommandLine(COMMAND);
  const pauses = v.pauses.map(Number);
  if (pauses.some((p) => !Number.isInteger(p) || p < 0)) {
    console.error(`${COMMAND.name}: --pauses: expected whole numbers ≥ 0 (ms), got "${v.pauses}"`);
    Deno.exit(2);
  }
  await ensureCluster();
  const topic = `bench_transactions_${crypto.randomUUID().slice(0, 8)}`;
  await withAdmin((admin) => ensureTopics(admin, [topicAs(TOPO, TOPICS.aggregates, topic)]));
  const variants: Variant[] = [
    { name: "txpipe", schedule: { ...RETRY_SCHEDULE }, rememberCoordinator: true },
    {
      name: "txpipe, coordinator looked up each time",
      schedule: { ...RETRY_SCHEDULE },
      rememberCoordinator: false,
    },
    { name: "reference", schedule: REFERENCE_SCHEDULE, rememberCoordinator: true },
  ];
  const results = new Map<string, RoundResult[]>();
  try {
    for (let r = 1; r <= v.rounds; r++) {
      for (const pause of pauses) {
        for (const variant of variants) {
          const result = await round(topic, variant, pause, v.transactions);
          const key =
            `${variant.name} (first wait ${variant.schedule.firstMs} ms), pause ${pause} ms`;
          results.set(key, [...(results.get(key) ?? []), result]);
          console.error(
            `round ${r}/${v.rounds}: ${key}: p50 ${result.p50Ms.toFixed(1)} ms, p90 ${
              result.p90Ms.toFixed(1)
            } ms, ${result.refusalsPerTransaction.toFixed(2)} refusals per transaction`,
          );
        }
      }
    }
  } finally {
    await withAdmin(async (admin) => {
      await admin.deleteTopics({ topics: [topic] });
      await admin.deleteGroups([GROUP]);
    }).catch(() => {});
  }
  console.log(`medians of ${v.rounds} rounds, ${v.transactions} transactions each:`);
  for (const [key, rs] of results) {
    console.log(
      `  ${key.padEnd(72)} p50 ${
        spread(rs.map((x) => x.p50Ms)).median.toFixed(1).padStart(6)
      } ms  p90 ${spread(rs.map((x) => x.p90Ms)).median.toFixed(1).padStart(6)} ms  refusals/txn ${
        spread(rs.map((x) => x.refusalsPerTransaction)).median.toFixed(2)
      }`,
    );
  }
}

if (import.meta.main) await main();
