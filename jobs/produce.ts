/**
 * The producer job: synthetic financial transactions into Kafka.
 *
 *   generator (seeded, simulated event time, optional labelled fraud)
 *     → JSON value, key = userId, fraud label in headers only
 *     → idempotent producer, acks=all → financial_transactions
 *
 * Run `deno task produce --help` for the flags.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { CompressionTypes } from "kafkajs";
import type { Message, Producer } from "kafkajs";
import { topicAs, TOPICS, topology } from "../stacks/topology.ts";
import { type CommandSpec, parseCommandLine } from "./lib/cli.ts";
import { commonFlags, runJob, shellOptions } from "./lib/job.ts";
import type { Logger } from "./lib/log.ts";
import { PARTITIONER, PartitionRouter, PRODUCER_RETRY, sendByPartition } from "./lib/kafka.ts";
import {
  injectedFraud,
  produceBatchSeconds,
  producedBytes,
  producedRecords,
  produceErrors,
} from "./lib/metrics.ts";
import { formatCount, formatElapsed, formatMBps, LiveLine } from "./lib/progress.ts";
import {
  encodeTransaction,
  FRAUD_INSTANCE_HEADER,
  FRAUD_PATTERN_HEADER,
  GENERATOR_DEFAULTS,
  TransactionGenerator,
} from "./lib/generator.ts";

/** The producer's flags. */
export const PRODUCE_COMMAND: CommandSpec = {
  name: "deno task produce",
  summary: "produce synthetic financial transactions into Kafka",
  flags: {
    ...commonFlags("produce"),
    topic: { kind: "string", default: TOPICS.transactions, help: "topic to write to" },
    rate: {
      kind: "number",
      min: 0,
      default: 0,
      help: "records per second; 0 = as fast as Kafka acknowledges",
      placeholder: "N",
    },
    count: {
      kind: "int",
      min: 0,
      default: 0,
      help: "stop after N records; 0 = no limit",
      placeholder: "N",
    },
    duration: { kind: "duration", min: 1, help: "stop after this long, e.g. 30s, 5m" },
    seed: {
      kind: "string",
      help: "seed of the generator; the same seed and --start-time give the same records " +
        "(default: random, printed)",
    },
    "start-time": {
      kind: "int",
      min: 0,
      help: "simulated event time of the first record, epoch ms (default: now; for an " +
        "unthrottled --count run, so that its history ends about now)",
      placeholder: "MS",
    },
    "fraud-rate": {
      kind: "number",
      min: 0,
      max: 0.5,
      default: 0.01,
      help: "share of records that belong to an injected, labelled fraud pattern",
      placeholder: "P",
    },
    users: { kind: "int", min: 1, default: 20_000, help: "simulated users", placeholder: "N" },
    merchants: {
      kind: "int",
      min: 1,
      default: 2_000,
      help: "simulated merchants",
      placeholder: "N",
    },
    "batch-size": {
      kind: "int",
      min: 1,
      max: 10_000,
      default: 4_000,
      help: "records per send; split by partition, in requests under the brokers' 1 MB limit",
      placeholder: "N",
    },
    "send-timeout": {
      kind: "duration",
      min: 1000,
      default: 120_000,
      help: "give up when a batch is not acknowledged within this long",
    },
  },
  examples: [
    "deno task produce --rate 200",
    "deno task produce --count 100000 --seed 42",
    "deno task produce --duration 5m --fraud-rate 0.02",
  ],
};

/** What a producer run did, printed and logged at the end. */
export interface ProduceSummary {
  acknowledged: number;
  errors: number;
  bytes: number;
  seconds: number;
  fraudByPattern: Record<string, number>;
  seed: string;
}

class SendTimeout extends Error {}

async function main(): Promise<number> {
  const { values: v } = parseCommandLine(PRODUCE_COMMAND);
  const seed = (v.seed as string | undefined) ?? crypto.randomUUID().slice(0, 8);
  const topic = v.topic as string;
  const rate = v.rate as number;
  const generator = new TransactionGenerator({
    seed,
    startTime: (v.startTime as number | undefined) ?? defaultStartTime(rate, v.count as number),
    // Paced runs keep event time on the wall clock; unthrottled runs simulate
    // the default arrival rate (event time then runs ahead of the clock).
    ...(rate > 0 ? { eventsPerSecond: rate } : {}),
    fraudRate: v.fraudRate as number,
    users: v.users as number,
    merchants: v.merchants as number,
  });

  // A topic outside the spec (e.g. a test's) gets financial_transactions' settings.
  const topics = [topicAs(topology(), TOPICS.transactions, topic)];
  return await runJob({
    ...shellOptions("produce", v),
    topics,
  }, async ({ kafka, log, stopSignal }) => {
    const producer = kafka.producer({
      retry: PRODUCER_RETRY,
      createPartitioner: PARTITIONER,
      idempotent: true, // with acks=all: no duplicates from retries, order kept per partition
      maxInFlightRequests: 1, // kafkajs keeps idempotent sequences right only with one in flight
      allowAutoTopicCreation: false,
    });
    const admin = kafka.admin(); // the topic's partition count, for routing
    await admin.connect();
    await producer.connect();
    try {
      const router = new PartitionRouter(admin);
      return await produceUntilDone(producer, generator, {
        v,
        log,
        stopSignal,
        seed,
        topic,
        router,
      });
    } finally {
      await producer.disconnect().catch(() => {});
      await admin.disconnect().catch(() => {});
    }
  });
}

/** The send loop: batches until --count, --duration or a signal, then the summary. */
async function produceUntilDone(
  producer: Producer,
  generator: TransactionGenerator,
  o: {
    v: Record<string, unknown>;
    log: Logger;
    stopSignal: Promise<void>;
    seed: string;
    topic: string;
    router: PartitionRouter;
  },
): Promise<number> {
  const { v, log, seed, topic } = o;
  const rate = v.rate as number;
  produceErrors.inc({ topic }, 0); // the series exists (at 0) before the first failure
  log.info({ seed, topic, rate: v.rate, count: v.count }, "producing");
  let stopping = false;
  o.stopSignal.then(() => stopping = true);

  const summary: ProduceSummary = {
    acknowledged: 0,
    errors: 0,
    bytes: 0,
    seconds: 0,
    fraudByPattern: {},
    seed,
  };
  const live = new LiveLine();
  const started = performance.now();
  const elapsed = () => (performance.now() - started) / 1000;
  const ticker = setInterval(() => {
    const s = elapsed();
    live.update(
      `produced ${formatCount(summary.acknowledged)} | ${
        formatCount(summary.acknowledged / s)
      } rec/s | ${formatMBps(summary.bytes / s)} | errors ${summary.errors} | ${formatElapsed(s)}`,
    );
  }, 500);
  const logTicker = setInterval(() => {
    log.info({ acknowledged: summary.acknowledged, errors: summary.errors }, "progress");
  }, 10_000);

  const count = v.count as number;
  const durationMs = v.duration as number | undefined;
  const batchSize = v.batchSize as number;
  let generated = 0;
  let exitCode = 0;
  let inFlight: Promise<void> | undefined;

  const sendBatch = async (messages: Message[], bytes: number) => {
    const end = produceBatchSeconds.startTimer();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new SendTimeout()), v.sendTimeout as number);
    });
    try {
      await Promise.race([sendAll(producer, o.router, topic, messages), timeout]);
      summary.acknowledged += messages.length;
      summary.bytes += bytes;
      producedRecords.inc({ topic }, messages.length);
      producedBytes.inc({ topic }, bytes);
    } catch (err) {
      summary.errors += messages.length;
      produceErrors.inc({ topic }, messages.length);
      const why = err instanceof SendTimeout
        ? `not acknowledged within ${v.sendTimeout}ms`
        : (err as Error).message;
      log.error({ err, "event.action": "send-failed" }, `batch of ${messages.length}: ${why}`);
      stopping = true;
      exitCode = 1;
    } finally {
      clearTimeout(timer);
      end();
    }
  };

  while (!stopping) {
    let n = batchSize;
    if (count > 0) n = Math.min(n, count - generated);
    if (durationMs !== undefined && elapsed() * 1000 >= durationMs) break;
    if (rate > 0) {
      const allowed = Math.floor(rate * elapsed()) - generated;
      if (allowed <= 0) {
        await sleep(Math.max(5, Math.min(100, 1000 / rate)));
        continue;
      }
      n = Math.min(n, allowed);
    }
    if (n <= 0) break;

    const messages: Message[] = new Array(n);
    let bytes = 0;
    for (let i = 0; i < n; i++) {
      const record = generator.next();
      const value = encodeTransaction(record.tx);
      bytes += value.byteLength;
      const message: Message = {
        key: record.key,
        value: Buffer.from(value.buffer, value.byteOffset, value.byteLength),
      };
      if (record.label) {
        message.headers = {
          [FRAUD_PATTERN_HEADER]: record.label.pattern,
          [FRAUD_INSTANCE_HEADER]: record.label.instanceId,
        };
        summary.fraudByPattern[record.label.pattern] =
          (summary.fraudByPattern[record.label.pattern] ?? 0) + 1;
        injectedFraud.inc({ pattern: record.label.pattern });
      }
      messages[i] = message;
    }
    generated += n;
    // One batch in flight (idempotent sequences); the next one is built meanwhile.
    await inFlight;
    inFlight = sendBatch(messages, bytes);
    await sleep(0);
  }
  await inFlight;

  clearInterval(ticker);
  clearInterval(logTicker);
  summary.seconds = elapsed();
  live.done();

  log.info({ "event.action": "summary", ...summary }, "producer finished");
  console.error(formatSummary(summary));
  return exitCode;
}

/**
 * The first event time when --start-time is not given: now, except for an
 * unthrottled run of known size, whose simulated history then ends about
 * now instead of running ahead of the clock (later live records would all be
 * behind the aggregation's watermark).
 */
function defaultStartTime(rate: number, count: number): number {
  const now = Date.now();
  if (rate > 0 || count === 0) return now;
  return now - Math.round((count * 1000) / GENERATOR_DEFAULTS.eventsPerSecond);
}

/** One kafkajs send per partition (see sendByPartition: a multi-broker send can duplicate). */
function sendAll(
  producer: Producer,
  router: PartitionRouter,
  topic: string,
  messages: Message[],
): Promise<void> {
  return sendByPartition(
    (topicMessages) =>
      producer.sendBatch({ topicMessages, acks: -1, compression: CompressionTypes.None }),
    router,
    new Map([[topic, messages]]),
  );
}

/** The human-readable end-of-run summary. */
export function formatSummary(s: ProduceSummary): string {
  const rate = s.seconds > 0 ? s.acknowledged / s.seconds : 0;
  const fraud = Object.entries(s.fraudByPattern).map(([p, n]) => `${p}=${n}`).join(" ") || "none";
  return [
    `produced ${formatCount(s.acknowledged)} records (acknowledged, acks=all) in ${
      formatElapsed(s.seconds)
    }: ${formatCount(rate)} rec/s, ${formatMBps(s.seconds > 0 ? s.bytes / s.seconds : 0)}`,
    `errors ${s.errors}; fraud records ${fraud}; seed ${s.seed}`,
  ].join("\n");
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

if (import.meta.main) {
  Deno.exit(await main());
}
