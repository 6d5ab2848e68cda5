/**
 * The producer job: synthetic financial transactions into Kafka.
 *
 *   generator (seeded, simulated event time, optional labelled fraud)
 *     → JSON value, key = userId, fraud label in headers only
 *     → idempotent producer, acks=all → financial_transactions
 *
 * Unthrottled, the first two steps run on a second thread
 * (lib/generation_worker.ts), a batch ahead of the sends; the send loop keeps
 * {@link BATCHES_IN_FLIGHT} batches in flight, the delivery keeping each
 * partition's requests in order (lib/delivery.ts).
 *
 * Run `deno task produce --help` for the flags.
 *
 * @module
 */
// First: kafkajs's grouping of messages by partition is replaced before kafkajs loads.
import { groupingPatched } from "./lib/group_by_partition.ts";
import type { Message } from "kafkajs";
import { topicAs, TOPICS, topology } from "../stacks/topology.ts";
import { defineCommand, flagSource, parseCommandLine, UsageError } from "./lib/cli.ts";
import { commonFlags, runJob, shellOptions } from "./lib/job.ts";
import type { Logger } from "./lib/log.ts";
import { createKafka, PARTITIONER, PartitionRouter, PRODUCER_RETRY } from "./lib/kafka.ts";
import { Delivery, DeliveryStoppedError } from "./lib/delivery.ts";
import {
  injectedFraud,
  produceBatchSeconds,
  producedBytes,
  producedRecords,
  produceErrors,
} from "./lib/metrics.ts";
import { formatCount, formatElapsed, formatMBps, LiveLine } from "./lib/progress.ts";
import {
  GENERATOR_DEFAULTS,
  type GeneratorOptions,
  minUsersForRate,
  naturalEventsPerSecond,
  NORMAL_TRAFFIC,
  TransactionGenerator,
  usersForRate,
} from "./lib/generator.ts";
import {
  batchMessages,
  encodeBatch,
  type EncodedBatch,
  GenerationWorker,
  KeyRouting,
} from "./lib/generation_worker.ts";

/** The producer's flags. */
export const PRODUCE_COMMAND = defineCommand({
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
    "hard-negative-rate": {
      kind: "number",
      min: 0,
      max: 0.5,
      default: GENERATOR_DEFAULTS.hardNegativeRate,
      help: "share of records in labelled legitimate look-alikes of fraud (bursts at one " +
        "merchant, micro-payments, trips, moves: docs/detection.md)",
      placeholder: "P",
    },
    "time-scale": {
      kind: "number",
      min: 0.001,
      help: "unthrottled runs: how many times faster than real life users behave in event " +
        "time; 1 = uncompressed, a few transactions per user and day (default: 200 records " +
        "per second of event time)",
      placeholder: "X",
    },
    users: {
      kind: "int",
      min: 1,
      help: `simulated users (default: ${GENERATOR_DEFAULTS.users}, or ` +
        `${NORMAL_TRAFFIC.usersPerRecordPerSecond} per record/s of --rate when that is more; a ` +
        `paced run needs at least ${NORMAL_TRAFFIC.minUsersPerRecordPerSecond} per record/s, ` +
        `each user resting ${NORMAL_TRAFFIC.minUserGapMs / 1000} s between transactions ` +
        `of compressed event time)`,
      placeholder: "N",
    },
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
    "delivery-timeout": {
      kind: "duration",
      min: 0,
      default: 0,
      help: "give up (exit 1) when a batch is not acknowledged within this long, retries " +
        "through an outage included; 0 = keep retrying until Kafka is back",
    },
  },
  examples: [
    "deno task produce --rate 200",
    "deno task produce --count 100000 --seed 42",
    "deno task produce --duration 5m --fraud-rate 0.02",
  ],
});

/** What a producer run did, printed and logged at the end. */
export interface ProduceSummary {
  acknowledged: number;
  errors: number;
  bytes: number;
  seconds: number;
  fraudByPattern: Record<string, number>;
  seed: string;
  /** Times Kafka stopped acknowledging, and for how long in all (retried meanwhile). */
  outages: number;
  outageSeconds: number;
  /** Records sent again by a new producer id: the only ones that may be in the topic twice. */
  resent: number;
}

async function main(): Promise<number> {
  const { values: v } = parseCommandLine(PRODUCE_COMMAND);
  const seed = v.seed ?? crypto.randomUUID().slice(0, 8);
  const topic = v.topic;
  const rate = v.rate;
  let users: number;
  try {
    users = simulatedUsers(rate, v.users);
    if (rate > 0 && v.timeScale !== undefined) {
      throw new UsageError(
        `--time-scale: only for unthrottled runs (with --rate, event time follows the clock), ` +
          `got "${v.timeScale}"`,
      );
    }
  } catch (err) {
    console.error(`${PRODUCE_COMMAND.name}: ${(err as Error).message}\nRun with --help for usage.`);
    return 2;
  }
  // Unthrottled: the default arrival rate, or --time-scale's.
  const eventsPerSecond = v.timeScale === undefined
    ? GENERATOR_DEFAULTS.eventsPerSecond
    : naturalEventsPerSecond(users) * v.timeScale;
  const generatorOptions: GeneratorOptions = {
    seed,
    startTime: v.startTime ?? defaultStartTime(rate, v.count, eventsPerSecond),
    // Paced runs place event times on the clock as they send (see the send
    // loop); eventsPerSecond then only sets the time scale (the compression
    // of the users' days, docs/detection.md).
    ...(rate > 0 ? { eventsPerSecond: rate } : {}),
    ...(v.timeScale !== undefined ? { timeScale: v.timeScale } : {}),
    fraudRate: v.fraudRate,
    hardNegativeRate: v.hardNegativeRate,
    users,
    merchants: v.merchants,
  };
  // Paced, records are made in the send loop, as their event time follows the
  // clock when they are sent; unthrottled, on a second thread (see below).
  const generator = rate > 0 ? new TransactionGenerator(generatorOptions) : undefined;

  // A topic outside the spec (e.g. a test's) gets financial_transactions' settings.
  const topics = [topicAs(topology(), TOPICS.transactions, topic)];
  return await runJob({
    ...shellOptions("produce", v),
    topics,
  }, async ({ kafka, log, stopSignal }) => {
    // The topic's partition count, for routing, read once: no admin
    // connection is kept through an outage.
    const admin = kafka.admin();
    await admin.connect();
    const router = new PartitionRouter(admin);
    let partitions: number;
    try {
      partitions = await router.partitionCount(topic);
    } finally {
      await admin.disconnect().catch(() => {});
    }
    // Unthrottled: generation and JSON encoding on a second thread (generation_worker.ts).
    const source: RecordSource = generator ? { generator } : {
      worker: new GenerationWorker(
        generatorOptions,
        { topic, partitions },
        v.batchSize,
      ),
    };
    // Retried through outages, replaced when its idempotence state is lost,
    // reporting each outage once: jobs/lib/delivery.ts.
    const delivery = new Delivery({
      createProducer: (logCreator) =>
        createKafka({
          principal: "produce",
          clientId: "txpipe-produce",
          brokers: v.brokers,
          logCreator,
        })
          .producer({
            retry: PRODUCER_RETRY,
            createPartitioner: PARTITIONER,
            idempotent: true, // with acks=all: no duplicates from retries, order kept per partition
            maxInFlightRequests: 1, // kafkajs keeps idempotent sequences right only with one in flight
            allowAutoTopicCreation: false,
          }),
      router,
      topic,
      log,
      deliveryTimeoutMs: v.deliveryTimeout,
    });
    stopSignal.then(() => delivery.stop());
    try {
      return await produceUntilDone(delivery, source, {
        v,
        log,
        stopSignal,
        seed,
        topic,
        partitions,
      });
    } finally {
      source.worker?.close();
      await delivery.close();
    }
  });
}

/** Where the send loop's records come from: the worker (unthrottled) or a generator here (paced). */
type RecordSource = { worker: GenerationWorker; generator?: undefined } | {
  generator: TransactionGenerator;
  worker?: undefined;
};

/** The send loop: batches until --count, --duration or a signal, then the summary. */
async function produceUntilDone(
  delivery: Delivery,
  source: RecordSource,
  o: {
    v: Record<string, unknown>;
    log: Logger;
    stopSignal: Promise<void>;
    seed: string;
    topic: string;
    partitions: number;
  },
): Promise<number> {
  const { v, log, seed, topic } = o;
  const rate = v.rate as number;
  produceErrors.inc({ topic }, 0); // the series exists (at 0) before the first failure
  log.info({ seed, topic, rate: v.rate, count: v.count }, "producing");
  if (!groupingPatched) {
    log.debug("kafkajs loaded before group_by_partition.ts: its slower grouping");
  }
  let stopping = false;
  o.stopSignal.then(() => stopping = true);

  const summary: ProduceSummary = {
    acknowledged: 0,
    errors: 0,
    bytes: 0,
    seconds: 0,
    fraudByPattern: {},
    seed,
    outages: 0,
    outageSeconds: 0,
    resent: 0,
  };
  const live = new LiveLine();
  const started = performance.now();
  const elapsed = () => (performance.now() - started) / 1000;
  const ticker = setInterval(() => {
    const s = elapsed();
    live.update(
      `produced ${formatCount(summary.acknowledged)} | ${
        formatCount(summary.acknowledged / s)
      } rec/s | ${formatMBps(summary.bytes / s)} | errors ${summary.errors}${
        outageText(delivery)
      } | ${formatElapsed(s)}`,
    );
  }, 500);
  const logTicker = setInterval(() => {
    const { connected } = delivery.status();
    log.info({ acknowledged: summary.acknowledged, errors: summary.errors, connected }, "progress");
  }, 10_000);

  const count = v.count as number;
  const durationMs = v.duration as number | undefined;
  const batchSize = v.batchSize as number;
  // Paced: the event time of the records made now (the clock, or --start-time
  // plus the time since the first batch), so event time follows the rate
  // actually reached, whatever --rate asked for.
  const startTime = v.startTime as number | undefined;
  const eventClock = startTime === undefined
    ? () => Date.now()
    : () => startTime + elapsed() * 1000;
  // Event time starts now, not when the generator was built (before connecting).
  if (source.generator) source.generator.skipTo(eventClock());
  let generated = 0;
  let exitCode = 0;
  const keys = new KeyRouting({ topic, partitions: o.partitions });
  let failure: Error | undefined;
  // Batches handed to the delivery and not yet settled, oldest first.
  const inFlight: Array<Promise<void>> = [];

  // Resolves when every record is acknowledged (through outages, see
  // delivery.ts) or the batch is given up: then the run ends.
  const sendBatch = async (messages: Message[], bytes: number) => {
    const end = produceBatchSeconds.startTimer();
    const result = await delivery.send(messages);
    end();
    const ackedBytes = result.unacknowledged === 0 ? bytes : result.acknowledgedBytes;
    summary.acknowledged += result.acknowledged;
    summary.bytes += ackedBytes;
    producedRecords.inc({ topic }, result.acknowledged);
    producedBytes.inc({ topic }, ackedBytes);
    if (!result.error) return;
    summary.errors += result.unacknowledged;
    produceErrors.inc({ topic }, result.unacknowledged);
    stopping = true;
    const what = `${result.unacknowledged} of a batch of ${messages.length} records ` +
      `not acknowledged: ${result.error.message}`;
    if (result.error instanceof DeliveryStoppedError) {
      // Asked to stop while Kafka does not answer: nothing more to do.
      log.warn({ "event.action": "send-abandoned" }, what);
      return;
    }
    log.error({ err: result.error, "event.action": "send-failed" }, what);
    exitCode = 1;
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

    let batch: EncodedBatch;
    if (source.worker) {
      try {
        batch = await source.worker.take(n);
      } catch (err) {
        failure = err as Error; // reported once what was sent is settled
        break;
      }
    } else {
      batch = encodeBatch(source.generator.take(n, { until: eventClock() }), keys);
    }
    if (batch.count === 0) { // paced, and every user picked was resting
      await sleep(5);
      continue;
    }
    for (const { pattern } of batch.labels) {
      summary.fraudByPattern[pattern] = (summary.fraudByPattern[pattern] ?? 0) + 1;
      injectedFraud.inc({ pattern });
    }
    const { messages, bytes } = batchMessages(batch);
    generated += batch.count;
    // A few batches in flight: each partition's next request goes out as soon
    // as its previous one is acknowledged (the delivery keeps each partition's
    // requests in order, one at a time); the next batch is built meanwhile.
    // Bounded: while Kafka does not acknowledge, generation waits here.
    while (inFlight.length >= BATCHES_IN_FLIGHT) await inFlight.shift();
    const sent = sendBatch(messages, bytes);
    inFlight.push(sent);
    await sleep(0);
  }
  await Promise.all(inFlight);

  clearInterval(ticker);
  clearInterval(logTicker);
  summary.seconds = elapsed();
  const { outages, outageSeconds, resent } = delivery.status();
  Object.assign(summary, { outages, outageSeconds, resent });
  live.done();

  log.info({ "event.action": "summary", ...summary }, "producer finished");
  console.error(formatSummary(summary));
  if (failure) throw failure; // after the summary of what was sent: one message, by runJob
  return exitCode;
}

/**
 * Batches the send loop hands to the delivery before it waits for the oldest.
 * With 1, every batch waited for its slowest partition, the producer idle 24 %
 * of the time; 3 made 8 % more records/s (median of 4 interleaved runs, records
 * generated in this thread). Bounded: generation waits while Kafka does not
 * acknowledge.
 */
const BATCHES_IN_FLIGHT = 3;

/**
 * The population of a run: --users, or {@link usersForRate} when not given.
 * A paced run whose --users cannot sustain --rate (each user rests 20 s of
 * event time between transactions) is a usage error naming --users.
 */
export function simulatedUsers(rate: number, given: number | undefined): number {
  if (given === undefined) return usersForRate(rate);
  const needed = minUsersForRate(rate);
  if (rate > 0 && given < needed) {
    const source = flagSource("users") === "variable" ? "TXPIPE_USERS (for --users)" : "--users";
    throw new UsageError(
      `${source}: expected at least ${needed} users for --rate ${rate} (each user rests ` +
        `${NORMAL_TRAFFIC.minUserGapMs / 1000} s ` +
        `between transactions, so fewer cannot make ${rate} records/s; leave --users out for ` +
        `${usersForRate(rate)}), got "${given}"`,
    );
  }
  return given;
}

/**
 * The first event time when --start-time is not given: now, except for an
 * unthrottled run of known size, whose simulated history then ends about
 * now instead of running ahead of the clock (later live records would all be
 * behind the aggregation's watermark).
 */
function defaultStartTime(rate: number, count: number, eventsPerSecond: number): number {
  const now = Date.now();
  if (rate > 0 || count === 0) return now;
  return now - Math.round((count * 1000) / eventsPerSecond);
}

/** The live line's part about an outage going on: "" while Kafka acknowledges. */
function outageText(delivery: Delivery): string {
  const d = delivery.status();
  if (d.connected || d.outageSince === undefined) return "";
  const why = d.lastError ? ` (${d.lastError.slice(0, 80)})` : "";
  return ` | Kafka not acknowledging for ${
    formatElapsed((Date.now() - d.outageSince) / 1000)
  }, retrying${why}`;
}

/** The human-readable end-of-run summary. */
export function formatSummary(s: ProduceSummary): string {
  const rate = s.seconds > 0 ? s.acknowledged / s.seconds : 0;
  const fraud = Object.entries(s.fraudByPattern).map(([p, n]) => `${p}=${n}`).join(" ") || "none";
  const outages = s.outages === 0
    ? ""
    : `Kafka outages ${s.outages} (${
      s.outageSeconds.toFixed(1)
    } s without acknowledgement, retried); resent by a new producer ${s.resent}; `;
  return [
    `produced ${formatCount(s.acknowledged)} records (acknowledged, acks=all) in ${
      formatElapsed(s.seconds)
    }: ${formatCount(rate)} rec/s, ${formatMBps(s.seconds > 0 ? s.bytes / s.seconds : 0)}`,
    `errors ${s.errors}; ${outages}fraud records ${fraud}; seed ${s.seed}`,
  ].join("\n");
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

if (import.meta.main) {
  Deno.exit(await main());
}
