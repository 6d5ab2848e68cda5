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
import { PartitionReader, readEach, type Reading } from "./lib/partition_reader.ts";
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
}

/** The most bytes one partition's fetch returns. */
const FETCH_BYTES = 1024 * 1024;

/**
 * Reads every partition of both topics from the beginning, with no consumer
 * group (partition_reader.ts), feeding `collected`: to the end each partition
 * had at the start (`toEnd`; its last stable offset, as the admin lists it
 * read_committed), else until stopped.
 */
async function startReading(
  kafka: Kafka,
  o: { transactions: string; anomalies: string },
  collected: Collected,
  toEnd: boolean,
): Promise<Reading> {
  const admin = kafka.admin();
  await admin.connect();
  const readers: PartitionReader[] = [];
  const ends = new Map<PartitionReader, number>();
  try {
    for (const topic of [o.transactions, o.anomalies]) {
      const offsets = await admin.fetchTopicOffsets(topic);
      const opened = await PartitionReader.openAll(
        kafka,
        topic,
        offsets.map((p) => p.partition),
        FETCH_BYTES,
      );
      opened.forEach((r, i) => ends.set(r, Number(offsets[i].high)));
      readers.push(...opened);
    }
  } catch (err) {
    await Promise.all(readers.map((r) => r.close()));
    throw err;
  } finally {
    await admin.disconnect();
  }
  const decoder = new TextDecoder();
  return readEach(readers, {
    maxWaitMs: FETCH_MAX_WAIT_MS,
    // (A position counts transaction markers and aborted records too.)
    more: toEnd ? (r) => r.position < ends.get(r)! : undefined,
    onFetch: (r, records) => {
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
    },
  });
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
  };
  return await runJob({
    ...shellOptions("evaluate", v),
    metricsPort: v.follow ? v.metricsPort : undefined,
    topics: [], // it only reads; the jobs it evaluates create their topics
    // One-shot, the table is the output: only warnings and errors are logged.
    logLevel: v.follow ? undefined : "warn",
  }, async ({ kafka, log, stopSignal }) => {
    const reading = await startReading(kafka, topics, collected, !v.follow);
    if (!v.follow) {
      try {
        await reading.done;
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
      await Promise.race([stopSignal, reading.done]);
    } finally {
      clearInterval(timer);
      await reading.stop();
    }
    tick();
  });
}

if (import.meta.main) Deno.exit(await main());
