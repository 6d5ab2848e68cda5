/**
 * The stream runtime itself on the real 3+3 cluster. With one fault
 * injected, a batch whose transaction never finishes, the runtime must
 * abandon it, take the partition over again (fencing the stuck producer, so
 * its open transaction is aborted) and carry on with exact state, every
 * input applied exactly once. And a new group must start where its source
 * topic starts, even when retention has deleted the oldest records.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import type { Kafka, Producer, ProducerConfig, Transaction } from "kafkajs";
import { APP_IDS, internalTopicNames, TOPICS } from "../stacks/topology.ts";
import { createKafka } from "../jobs/lib/kafka.ts";
import { stuckBatches, transactions } from "../jobs/lib/metrics.ts";
import {
  releaseRecords,
  type RunOptions,
  runStream,
  type StreamProcessor,
} from "../jobs/lib/stream.ts";
import Batch from "kafkajs/src/consumer/batch.js";
import type { Logger } from "../jobs/lib/log.ts";
import { BROKERS, freshTopic, groupIds, readTopic, withAdmin } from "./helpers/cluster.ts";
import { produceMessages, waitGroupsCaughtUp } from "./helpers/jobs.ts";
import { captureLogs } from "./helpers/logs.ts";

const kafkaTest = { sanitizeOps: false, sanitizeResources: false };

/** A running sum per key: each input emits "<offset>:<sum so far>", so a lost or doubled update shows. */
function summing(groupId: string, source: string, output: string, changelog: string) {
  const processor: StreamProcessor<number, { sums: number }> = {
    name: "test-sum",
    groupId,
    source,
    changelog,
    stores: { sums: { unprefixed: true } },
    parse: (r) => {
      const n = Number(new TextDecoder().decode(r.value ?? new Uint8Array()));
      return Number.isInteger(n)
        ? { ok: true, value: n }
        : { ok: false, reason: "not_integer", message: "expected an integer" };
    },
    process: (n, r, ctx) => {
      const sum = (ctx.store("sums").get(r.key!) ?? 0) + n;
      ctx.store("sums").put(r.key!, sum);
      ctx.emit({ topic: output, key: r.key, value: `${r.offset}:${sum}` });
    },
  };
  return processor;
}

/**
 * A kafkajs client whose first batch transaction for source partition 0
 * sends its outputs and then hangs in sendOffsets for good, its transaction
 * left open on the brokers.
 */
function kafkaWithStuckTransaction(real: Kafka): { kafka: Kafka; stalled: () => boolean } {
  let stalled = false;
  const producer = (config?: ProducerConfig): Producer => {
    const p = real.producer(config);
    if (stalled || !config?.transactionalId?.endsWith("-0")) return p;
    const transaction = p.transaction.bind(p);
    p.transaction = async (): Promise<Transaction> => {
      const txn = await transaction();
      const sendOffsets = txn.sendOffsets.bind(txn);
      txn.sendOffsets = (offsets) => {
        if (stalled) return sendOffsets(offsets);
        stalled = true;
        return new Promise<void>(() => {});
      };
      return txn;
    };
    return p;
  };
  const kafka = new Proxy(real, {
    get: (target, prop) => {
      if (prop === "producer") return producer;
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { kafka, stalled: () => stalled };
}

/** Fresh topics and group of one summing run. */
interface SummingRun {
  source: string;
  output: string;
  deadLetters: string;
  changelog: string;
  groupId: string;
}

/**
 * Fresh topics and a group for a summing run; its source gets `count` inputs
 * over `keys` keys, each key's inputs 1, 2, 3, ... in order.
 */
async function summingRun(label: string, count: number, keys: number): Promise<SummingRun> {
  const run = {
    source: await freshTopic(TOPICS.transactions, `${label}_in`),
    output: await freshTopic(TOPICS.aggregates, `${label}_out`),
    deadLetters: await freshTopic(TOPICS.deadLetters, `${label}_dlq`),
    changelog: await freshTopic(internalTopicNames(APP_IDS.detect).changelog, `${label}_cl`),
    groupId: `test-${label}-${crypto.randomUUID().slice(0, 8)}`,
  };
  await produceMessages(
    run.source,
    Array.from({ length: count }, (_, i) => ({
      key: `k${i % keys}`,
      value: Buffer.from(String(Math.floor(i / keys) + 1)),
    })),
  );
  return run;
}

/** The runtime options a summing run's test sets. */
type SummingOptions = Pick<
  RunOptions,
  "batchTimeoutMs" | "maxBatchBytes" | "fetchBytes" | "maxBatchTimeMs"
>;

/** Runs `processor` (by default the summing one) over `run`'s topics until `stopSignal`. */
function runSumming(
  run: SummingRun,
  kafka: Kafka,
  log: Logger,
  options: SummingOptions,
  stopSignal: Promise<void>,
  processor = summing(run.groupId, run.source, run.output, run.changelog),
): Promise<void> {
  return runStream(processor, {
    kafka,
    logger: log,
    deadLetterTopic: run.deadLetters,
    stopSignal,
    sessionTimeoutMs: 10_000,
    ...options,
  });
}

/**
 * Runs the summing processor of `run` until its group's committed offsets
 * reach the end of every source partition, then stops it. Returns why it
 * did not catch up within `timeoutMs`, or null.
 */
async function runUntilCaughtUp(
  run: SummingRun,
  kafka: Kafka,
  log: Logger,
  options: SummingOptions,
  timeoutMs: number,
): Promise<string | null> {
  let stop!: () => void;
  const stopSignal = new Promise<void>((r) => stop = r);
  const running = runSumming(run, kafka, log, options, stopSignal);
  const caughtUp = await waitGroupsCaughtUp(
    [{ group: run.groupId, topic: run.source, transactional: false }],
    "the stream",
    timeoutMs,
  ).then(() => null, (err: Error) => err.message);
  stop();
  await running;
  return caughtUp;
}

Deno.test(
  "stream runtime: a batch stuck in its transaction is abandoned, its producer fenced, and every input is applied exactly once",
  kafkaTest,
  async () => {
    // 2 000 records over 20 keys; each key's inputs are 1, 2, 3, ... in order.
    const count = 2000;
    const keys = 20;
    const run = await summingRun("stuck", count, keys);
    const { groupId, output } = run;

    const { logger: log, lines } = captureLogs("test-stream");
    const real = createKafka({
      principal: "admin",
      clientId: "txpipe-test-stream",
      brokers: BROKERS,
      logger: log,
    });
    const { kafka, stalled } = kafkaWithStuckTransaction(real);
    const before = (await stuckBatches.get()).values.find((v) => v.labels.processor === groupId)
      ?.value ?? 0;

    const caughtUp = await runUntilCaughtUp(run, kafka, log, {
      batchTimeoutMs: 10_000,
      maxBatchBytes: 4096, // many small batches, many transactions
    }, 120_000);

    assert.ok(stalled(), "the fault was injected");
    assert.equal(
      caughtUp,
      null,
      "the job caught up after the stuck batch; its last log lines:\n" +
        lines.slice(-25).map((l) => JSON.stringify(l)).join("\n"),
    );
    const after = (await stuckBatches.get()).values.find((v) => v.labels.processor === groupId)
      ?.value ?? 0;
    assert.equal(after - before, 1, "one batch counted as stuck");
    const abandoned = lines.filter((l) => l["event.action"] === "batch-abandoned");
    assert.equal(abandoned.length, 1, "one abandonment logged");
    assert.match(
      String(abandoned[0].message),
      /partition 0 stuck .* while sending offsets to the transaction/,
    );

    // read_committed: the stuck transaction's outputs were aborted, so each
    // input appears once, and each key's running sums are 1, 1+2, 1+2+3, ...
    await assertExactSums(output, count, keys);
    // Both takeovers restored the state without a consumer group of their own.
    const groups = await groupIds();
    assert.deepEqual(
      groups.filter((g) => g.startsWith(groupId)),
      [groupId],
      "the job's group only",
    );
  },
);

/** The output of a summing run over `count` inputs and `keys` keys: each input once, exact sums. */
async function assertExactSums(output: string, count: number, keys: number): Promise<void> {
  const records = await readTopic(output, { expected: count, timeoutMs: 60_000 });
  assert.equal(records.length, count, "one output per input, none lost or doubled");
  const sums = new Map<string, number[]>();
  for (const r of records) {
    const [, sum] = new TextDecoder().decode(r.value!).split(":");
    const list = sums.get(r.key!) ?? [];
    list.push(Number(sum));
    sums.set(r.key!, list);
  }
  const perKey = count / keys;
  const expected = Array.from({ length: perKey }, (_, i) => ((i + 1) * (i + 2)) / 2);
  for (let k = 0; k < keys; k++) {
    const got = (sums.get(`k${k}`) ?? []).sort((a, b) => a - b);
    assert.deepEqual(got, expected, `running sums of k${k}`);
  }
}

/** Committed transactions of `groupId` so far (txpipe_transactions_total). */
async function committedTransactions(groupId: string): Promise<number> {
  return (await transactions.get()).values
    .filter((v) => v.labels.processor === groupId && v.labels.result === "committed")
    .reduce((n, v) => n + v.value, 0);
}

Deno.test(
  "stream runtime: a batch gathers many small fetches into one transaction, a stop commits the batches left open, and every input is applied exactly once",
  kafkaTest,
  async () => {
    // 3 000 records over 20 keys, about 5 key and value bytes each: with
    // 1 KiB fetches, each partition takes several fetches.
    const count = 3000;
    const keys = 20;
    const run = await summingRun("span", count, keys);
    const { logger: log } = captureLogs("test-stream");
    const kafka = createKafka({
      principal: "admin",
      clientId: "txpipe-test-stream",
      brokers: BROKERS,
      logger: log,
    });
    const options = { fetchBytes: 1024, maxBatchBytes: 1024 * 1024, maxBatchTimeMs: 60_000 };

    // Run 1 stops once 700 records are applied: batches are open then (nothing
    // drained yet, the time and size limits far off), and the stop commits them.
    let applied = 0;
    let stop!: () => void;
    const stopSignal = new Promise<void>((r) => stop = r);
    const processor = summing(run.groupId, run.source, run.output, run.changelog);
    const counting: typeof processor = {
      ...processor,
      process: (n, r, ctx) => {
        processor.process(n, r, ctx);
        if (++applied === 700) stop();
      },
    };
    await runSumming(run, kafka, log, options, stopSignal, counting);
    const committed = await withAdmin(async (admin) => {
      const [t] = await admin.fetchOffsets({ groupId: run.groupId, topics: [run.source] });
      return t.partitions.reduce((n, p) => n + Math.max(0, Number(p.offset)), 0);
    });
    assert.ok(applied >= 700 && applied < count, `stopped midway (${applied} applied)`);
    assert.equal(committed, applied, "the stop committed every record applied, no more");
    const firstRun = await readTopic(run.output, { expected: applied, timeoutMs: 30_000 });
    assert.equal(firstRun.length, applied, "and their outputs");

    // Run 2 picks up from there. Its batches may stay open 10 min: it catches
    // up only because a batch that has read all there is commits at once.
    const caughtUp = await runUntilCaughtUp(
      run,
      kafka,
      log,
      { ...options, maxBatchTimeMs: 600_000 },
      120_000,
    );
    assert.equal(caughtUp, null, "the second run caught up: drained batches commit at once");
    await assertExactSums(run.output, count, keys);

    // Fetches: at least one per KiB of each partition's keys and values.
    const bytesPerPartition = await withAdmin(async (admin) => {
      const ends = await admin.fetchTopicOffsets(run.source);
      return ends.map((e) => Number(e.high) * 5); // "k12" and "3": about 5 bytes a record
    });
    const fetches = bytesPerPartition.reduce((n, b) => n + Math.floor(b / 1024), 0);
    const txns = await committedTransactions(run.groupId);
    assert.ok(fetches >= 10, `a partition takes several fetches (${fetches} at least)`);
    assert.ok(txns < fetches / 2, `${txns} transactions for at least ${fetches} fetches`);
  },
);

Deno.test(
  "stream runtime: a new group on a topic whose oldest records retention has deleted starts at the log start and applies every remaining record once",
  kafkaTest,
  async () => {
    // 1 000 records over 10 keys, then the first half of every partition
    // deleted, as retention would.
    const run = await summingRun("trimmed", 1000, 10);
    const remaining = await withAdmin(async (admin) => {
      const ends = await admin.fetchTopicOffsets(run.source);
      const partitions = ends.map((e) => ({
        partition: e.partition,
        offset: String(Math.floor(Number(e.high) / 2)),
      }));
      await admin.deleteTopicRecords({ topic: run.source, partitions });
      return ends.reduce((n, e) => n + Number(e.high) - Math.floor(Number(e.high) / 2), 0);
    });

    const { logger: log, lines } = captureLogs("test-stream");
    const kafka = createKafka({
      principal: "admin",
      clientId: "txpipe-test-stream",
      brokers: BROKERS,
      logger: log,
    });
    const caughtUp = await runUntilCaughtUp(run, kafka, log, {}, 60_000);

    assert.equal(caughtUp, null, "the job caught up from the log start");
    const seeks = lines.filter((l) => String(l.message).startsWith("seeking back"));
    assert.deepEqual(seeks, [], "no seek back to offsets retention deleted");
    const records = await readTopic(run.output, { expected: remaining, timeoutMs: 30_000 });
    assert.equal(records.length, remaining, "one output per remaining input");
    // A key lives on one source partition: key and source offset name an input.
    const inputs = records.map((r) =>
      `${r.key}@${new TextDecoder().decode(r.value!).split(":")[0]}`
    );
    assert.equal(new Set(inputs).size, remaining, "no input applied twice");
  },
);

Deno.test("stream runtime: releasing a processed batch's records keeps every offset kafkajs reads of it", () => {
  // Offsets 10..14, the last a transaction's commit marker (a control record).
  const messages = [10, 11, 12, 13, 14].map((offset) => ({
    offset: String(offset),
    key: Buffer.from(`k${offset}`),
    value: Buffer.from(`v${offset}`),
    headers: {},
    isControlRecord: offset === 14,
    batchContext: { producerId: "1", inTransaction: true },
  }));
  const batch = new Batch("t", "10", {
    partition: 0,
    highWatermark: "15",
    messages,
    abortedTransactions: [],
  });
  const seen = () => ({
    first: batch.firstOffset(),
    last: batch.lastOffset(),
    empty: batch.isEmpty(),
    emptyIncludingFiltered: batch.isEmptyIncludingFiltered(),
    emptyDueToFiltering: batch.isEmptyDueToFiltering(),
    lag: batch.offsetLag(),
    lagLow: batch.offsetLagLow(),
    lastFiltered: batch.messages[batch.messages.length - 1].offset,
  });
  const before = seen();
  assert.equal(before.last, "14");
  assert.equal(before.lastFiltered, "13");
  const lastFiltered = batch.messages[batch.messages.length - 1];
  releaseRecords(batch);
  assert.deepEqual(seen(), before);
  for (const list of [batch.rawMessages, batch.messagesWithinOffset, batch.messages]) {
    assert.ok(list.length <= 2, "only stubs are left");
    for (const m of list) assert.deepEqual(Object.keys(m), ["offset"]);
  }
  // kafkajs keeps the last record it handed out: its bytes go too.
  assert.equal(lastFiltered.value, null);
  assert.equal(lastFiltered.key, null);
});
