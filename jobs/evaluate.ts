/**
 * The evaluator: scores the detector against the generator's ground truth.
 *
 *   financial_transactions → every transaction (user, event time) and its
 *     label headers (fraud: txpipe-fraud-pattern / -instance; hard negative:
 *     txpipe-hard-negative / -instance)
 *   transaction_anomalies  → anomalies (read_committed)
 *     → recall per pattern, precision per rule and overall, false positives
 *       per 10 000 legitimate users per day, hard negatives flagged
 *       (jobs/lib/evaluation.ts; the same figures and table as `deno task tune`)
 *
 * Only this tool reads the label headers; the detector never does. One-shot
 * by default (reads both topics to their current end and prints the table);
 * `--follow` keeps reading and exposes the figures as Prometheus gauges.
 *
 * @module
 */
import type { Kafka } from "kafkajs";
import { TOPICS } from "../stacks/topology.ts";
import { defineCommand, parseCommandLine } from "./lib/cli.ts";
import { commonFlags, runJob, shellOptions } from "./lib/job.ts";
import { FETCH_MAX_WAIT_MS } from "./lib/kafka.ts";
import { PartitionReader } from "./lib/partition_reader.ts";
import type { Anomaly } from "./lib/rules.ts";
import {
  evaluate,
  type Evaluation,
  formatEvaluations,
  GroundTruth,
  labelsFromHeaders,
} from "./lib/evaluation.ts";
import {
  detectionPrecision,
  detectionRecall,
  evaluatedAnomalies,
  falsePositivesPer10kUserDays,
  hardNegativeFalsePositiveRate,
  rulePrecision,
  serveEvaluationMetric,
} from "./lib/metrics.ts";

/** The evaluator's flags. */
export const EVALUATE_COMMAND = defineCommand({
  name: "deno task evaluate",
  summary: "precision, recall and false positives of the detector against the generator's labels",
  flags: {
    ...commonFlags("evaluate"),
    transactions: {
      kind: "string",
      default: TOPICS.transactions,
      help: "topic of labelled transactions",
    },
    anomalies: { kind: "string", default: TOPICS.anomalies, help: "topic of anomalies" },
    follow: {
      kind: "boolean",
      default: false,
      help: "keep reading and serve the figures on /metrics instead of exiting",
    },
    interval: {
      kind: "duration",
      min: 1000,
      default: 15_000,
      help: "with --follow: how often the figures are recomputed and logged",
    },
    settle: {
      kind: "duration",
      min: 0,
      default: 300_000,
      help: "with --follow: count a fraud or hard-negative instance once its last record is this " +
        "old (event time), so patterns still unfolding are not misses",
    },
  },
  examples: ["deno task evaluate", "deno task evaluate --follow"],
});

/** What has been read so far. */
interface Collected {
  /** Every transaction read, with its labels. */
  truth: GroundTruth;
  anomalies: Map<string, Anomaly>;
  /** Next offset to read, per "topic/partition". */
  positions: Map<string, number>;
}

/** The most bytes one partition's fetch returns. */
const FETCH_BYTES = 1024 * 1024;

/** Both topics being read: {@link startReading}. */
interface Reading {
  /** Rejects when a partition's reader fails. */
  failed: Promise<never>;
  stop(): Promise<void>;
}

/**
 * Reads every partition of both topics from the beginning, with no consumer
 * group (partition_reader.ts), feeding `collected`, until stopped.
 */
async function startReading(
  kafka: Kafka,
  o: { transactions: string; anomalies: string },
  collected: Collected,
): Promise<Reading> {
  const admin = kafka.admin();
  await admin.connect();
  const readers: PartitionReader[] = [];
  try {
    for (const topic of [o.transactions, o.anomalies]) {
      const partitions = (await admin.fetchTopicOffsets(topic)).map((p) => p.partition);
      readers.push(...await PartitionReader.openAll(kafka, topic, partitions, FETCH_BYTES));
    }
  } catch (err) {
    await Promise.all(readers.map((r) => r.close()));
    throw err;
  } finally {
    await admin.disconnect();
  }
  const decoder = new TextDecoder();
  let stopped = false;
  const read = async (r: PartitionReader) => {
    while (!stopped) {
      const records = await r.next(FETCH_MAX_WAIT_MS);
      for (const m of records) {
        if (r.topic === o.transactions) {
          if (!m.value) continue;
          const headers: Record<string, string | undefined> = {};
          for (const [k, h] of Object.entries(m.headers ?? {})) headers[k] = h?.toString();
          try {
            const tx = JSON.parse(decoder.decode(m.value));
            if (
              typeof tx.transactionId !== "string" || typeof tx.userId !== "string" ||
              !Number.isFinite(tx.transactionTime)
            ) continue; // not a transaction: the detector dead-letters it
            collected.truth.add(tx, labelsFromHeaders(headers));
          } catch { /* not a transaction: the detector dead-letters it */ }
        } else if (m.value) {
          const a = JSON.parse(decoder.decode(m.value)) as Anomaly;
          collected.anomalies.set(a.anomalyId, a);
        }
      }
      // Past every record fetched, transaction markers and aborted records included.
      collected.positions.set(`${r.topic}/${r.partition}`, r.position);
    }
  };
  const loops = readers.map((r) =>
    read(r).catch((err) => stopped ? undefined : Promise.reject(err))
  );
  const failed = Promise.all(loops).then(() => new Promise<never>(() => {}));
  failed.catch(() => {}); // (seen by whoever awaits it)
  return {
    failed,
    stop: async () => {
      stopped = true;
      await Promise.all(readers.map((r) => r.close())); // ends the fetches in flight
      await Promise.allSettled(loops);
    },
  };
}

/**
 * Waits until every partition of `topics` was read up to the end it had
 * when this started (a position counts transaction markers too), or nothing
 * new was read for 10 s (an open transaction holds read_committed back).
 */
async function waitForEnd(
  kafka: Kafka,
  topics: string[],
  collected: Collected,
): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  const ends = new Map<string, number>();
  for (const topic of topics) {
    for (const p of await admin.fetchTopicOffsets(topic)) {
      if (Number(p.high) > Number(p.low)) ends.set(`${topic}/${p.partition}`, Number(p.high));
    }
  }
  await admin.disconnect();
  let lastProgress = Date.now();
  let lastSum = -1;
  for (;;) {
    let done = true;
    let sum = 0;
    for (const [key, end] of ends) {
      const pos = collected.positions.get(key) ?? 0;
      sum += pos;
      if (pos < end) done = false;
    }
    if (done) return;
    if (sum !== lastSum) {
      lastSum = sum;
      lastProgress = Date.now();
    } else if (Date.now() - lastProgress > 10_000) {
      return; // nothing new for 10 s: everything readable has been read
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Sets the gauges. A figure is served only once it has a value (precision
 * once there is an anomaly to judge, a rate once it has a denominator), never
 * as a 0 nobody computed.
 */
export function publish(e: Evaluation): void {
  serveEvaluationMetric(detectionRecall);
  serveEvaluationMetric(evaluatedAnomalies);
  for (const p of e.patterns) {
    if (p.recall !== null) detectionRecall.set({ pattern: p.pattern }, p.recall);
  }
  if (e.precision !== null) {
    serveEvaluationMetric(detectionPrecision);
    detectionPrecision.set(e.precision);
  }
  for (const r of e.rules) {
    if (r.precision === null) continue;
    serveEvaluationMetric(rulePrecision);
    rulePrecision.set({ rule: r.rule }, r.precision);
  }
  if (e.falsePositivesPer10kUserDays !== null) {
    serveEvaluationMetric(falsePositivesPer10kUserDays);
    falsePositivesPer10kUserDays.set(e.falsePositivesPer10kUserDays);
  }
  for (const h of e.hardNegatives) {
    if (h.falsePositiveRate === null) continue;
    serveEvaluationMetric(hardNegativeFalsePositiveRate);
    hardNegativeFalsePositiveRate.set({ kind: h.kind }, h.falsePositiveRate);
  }
  evaluatedAnomalies.set(e.anomalies);
}

async function main(): Promise<number> {
  const { values: v } = parseCommandLine(EVALUATE_COMMAND);
  const topics = { transactions: v.transactions, anomalies: v.anomalies };
  const collected: Collected = {
    truth: new GroundTruth(),
    anomalies: new Map(),
    positions: new Map(),
  };
  return await runJob({
    ...shellOptions("evaluate", v),
    metricsPort: v.follow ? v.metricsPort : undefined,
    topics: [], // it only reads; the jobs it evaluates create their topics
    // One-shot, the table is the output: only warnings and errors are logged.
    logLevel: v.follow ? undefined : "warn",
  }, async ({ kafka, log, stopSignal }) => {
    const reading = await startReading(kafka, topics, collected);
    if (!v.follow) {
      try {
        await Promise.race([
          waitForEnd(kafka, [topics.transactions, topics.anomalies], collected),
          reading.failed,
        ]);
      } finally {
        await reading.stop();
      }
      const { truth } = collected;
      const result = evaluate(truth, collected.anomalies.values());
      console.log(
        `${topics.transactions}: ${truth.transactions} transactions, ${truth.fraud.size} ` +
          `fraud-labelled, ${truth.hardNegatives.size} hard negatives; ` +
          `${topics.anomalies}: ${collected.anomalies.size} anomalies\n`,
      );
      console.log(formatEvaluations([{ title: "", evaluation: result }]));
      return;
    }
    const tick = () => {
      // Live, an instance still unfolding (card testing spans minutes) is not
      // a miss yet, nor a hard negative not yet flagged: instances count once
      // their last record is --settle old (event time).
      const { truth } = collected;
      const e = evaluate(truth, collected.anomalies.values(), {
        settledBy: truth.maxEventTime - v.settle,
      });
      publish(e);
      log.info({
        "event.action": "evaluation",
        precision: e.precision,
        recall: Object.fromEntries(e.patterns.map((p) => [p.pattern, p.recall])),
        rulePrecision: Object.fromEntries(e.rules.map((r) => [r.rule, r.precision])),
        falsePositivesPer10kUserDays: e.falsePositivesPer10kUserDays,
        hardNegativeFalsePositiveRate: Object.fromEntries(
          e.hardNegatives.map((h) => [h.kind, h.falsePositiveRate]),
        ),
        anomalies: e.anomalies,
      }, "evaluation");
    };
    const timer = setInterval(tick, v.interval);
    try {
      await Promise.race([stopSignal, reading.failed]);
    } finally {
      clearInterval(timer);
      await reading.stop();
    }
    tick();
  });
}

if (import.meta.main) Deno.exit(await main());
