/**
 * The small stream runtime every txpipe stream job runs on.
 *
 * A job is a {@link StreamProcessor}: a source topic, a parse step, a
 * per-record `process` function over per-partition named state stores, and
 * optional `beginBatch` and `endBatch` hooks. A batch's processing is the
 * pure step of batch.ts (records and state in; outputs, dead letters and
 * state changes out), the same one the test driver (test_driver.ts) runs in
 * memory. The runtime does the plumbing once:
 *
 * - a consumer group on the source (`read_committed`, no auto-commit);
 * - exactly-once read-process-write: for every fetched batch of a partition,
 *   one Kafka transaction holds the outputs, the dead letters, the state
 *   changes (changelog) and the consumed offsets (`sendOffsets`); the
 *   transactional id is per source partition, so a new owner of a partition
 *   fences the old one (zombie fencing);
 * - state recovery: the changelog topic (compacted, one partition per source
 *   partition) is read back when a partition is assigned, up to a barrier
 *   record this owner wrote after fencing, so no update is missed; the
 *   source offset the state is at is restored with it, and processing
 *   resumes there;
 * - a batch stuck past its deadline is abandoned and its partition taken
 *   over again (see {@link RunOptions.batchTimeoutMs});
 * - dead letters: a record the parse step rejects goes to the dead-letter
 *   topic with its original key and value and reason headers;
 * - metrics, ECS logs and a graceful stop (the batch in progress commits).
 *
 * Any failure it cannot reason about ends the process (crash-only): state
 * lives in Kafka, so a restart resumes exactly where the last commit left.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import type { Consumer, EachBatchPayload, Kafka, KafkaMessage, Message, Producer } from "kafkajs";
import type { Logger } from "./log.ts";
import {
  PARTITIONER,
  PartitionRouter,
  PRODUCER_RETRY,
  sendByPartition,
  subscribeWhenKnown,
} from "./kafka.ts";
import {
  consumedRecords,
  deadLetters,
  eventTimeAhead,
  eventTimeLead,
  observeEventTimes,
  outputRecords,
  restoredStateRecords,
  stateEntries,
  stuckBatches,
  transactions,
} from "./metrics.ts";
import { LagMonitor } from "./lag.ts";
import { processBatch } from "./batch.ts";

/** Header names of a dead letter. */
export const DLQ_HEADERS = {
  reason: "txpipe-dlq-reason",
  message: "txpipe-dlq-message",
  topic: "txpipe-dlq-source-topic",
  partition: "txpipe-dlq-source-partition",
  offset: "txpipe-dlq-source-offset",
  job: "txpipe-dlq-job",
} as const;

const BARRIER_KEY = "__txpipe_restore_barrier__";
/**
 * Changelog key of the source offset the state is at: written in every
 * batch's transaction, so the state restored and the offset to resume from
 * always come from the same commits.
 */
const OFFSET_KEY = "__txpipe_next_offset__";

/** A consumed record as a processor sees it. */
export interface SourceRecord {
  readonly topic: string;
  readonly partition: number;
  readonly offset: string;
  readonly key: string | null;
  /**
   * A view of the fetched bytes, not a copy: keeping it past the record's
   * batch keeps the whole fetch in memory (copy what you keep).
   */
  readonly value: Uint8Array | null;
  readonly headers: Readonly<Record<string, string>>;
}

/** A record to write, inside the batch's transaction. */
export interface OutputRecord {
  readonly topic: string;
  readonly key: string | null;
  readonly value: string | null;
  readonly headers?: Record<string, string>;
  /** Explicit partition; default: Kafka's key hash (murmur2, like the Java client). */
  readonly partition?: number;
  /** Event time the output derives from, for the event-to-output latency metric. */
  readonly eventTime?: number;
}

/** What a parse step returns: a value to process, or a reason to dead-letter. */
export type Parsed<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly reason: string; readonly message: string };

/**
 * The per-partition key-value state of a processor as its changelog holds it:
 * changelog keys (store prefix included, see stores.ts) to values. The
 * runtime restores it and takes its changes; a processor sees it through its
 * named stores ({@link ProcessContext.store}).
 */
export class PartitionState<S = unknown> {
  readonly #entries = new Map<string, S>();
  readonly #dirty = new Set<string>();

  /** The value of `key`, if any. */
  get(key: string): S | undefined {
    return this.#entries.get(key);
  }

  /** Sets `key`; the change reaches the changelog in this batch's transaction. */
  put(key: string, value: S): void {
    this.#entries.set(key, value);
    this.#dirty.add(key);
  }

  /** Deletes `key` (a tombstone in the changelog). */
  delete(key: string): void {
    if (this.#entries.delete(key)) this.#dirty.add(key);
  }

  /** Every entry, in insertion order. */
  entries(): IterableIterator<[string, S]> {
    return this.#entries.entries();
  }

  /** How many keys the state holds. */
  get size(): number {
    return this.#entries.size;
  }

  /** Restores one changelog record (no dirty mark). */
  restore(key: string, value: S | null): void {
    if (value === null) this.#entries.delete(key);
    else this.#entries.set(key, value);
  }

  /** The keys changed since the last call, with their values (null = deleted). */
  takeChanges(): Array<[string, S | null]> {
    const out: Array<[string, S | null]> = [];
    for (const key of this.#dirty) out.push([key, this.#entries.get(key) ?? null]);
    this.#dirty.clear();
    return out;
  }
}

/**
 * A processor's state stores: store name to the type of its values, e.g.
 * `{ windows: WindowState; watermarks: number }`.
 */
export type StoreTypes = Record<string, unknown>;

/** One named store of a partition's state: a typed key-value view, changelogged. */
export interface Store<V> {
  /** The value of `key`, if any. */
  get(key: string): V | undefined;
  /** Sets `key`; the change reaches the changelog in this batch's transaction. */
  put(key: string, value: V): void;
  /** Deletes `key` (a tombstone in the changelog). */
  delete(key: string): void;
  /** Every entry of this store. */
  entries(): IterableIterator<[string, V]>;
}

/** How a store is kept in the changelog. */
export interface StoreOptions {
  /**
   * Its keys go into the changelog as they are, without the store prefix
   * (stores.ts): at most one store per processor, e.g. the only store of a
   * processor whose changelog held unprefixed keys before named stores.
   */
  readonly unprefixed?: boolean;
}

/** Every store of a processor, by name: its options. */
export type StoreDeclarations<S> = { readonly [K in keyof S]-?: StoreOptions };

/** An entry of one of a processor's stores: `[store, key, value]`. */
export type StoreEntry<S> = { [K in keyof S & string]: readonly [K, string, S[K]] }[
  keyof S & string
];

/** What `process` and `endBatch` can do. */
export interface ProcessContext<S = StoreTypes> {
  /** The source partition being processed. */
  readonly partition: number;
  /** This partition's store `name` (one of the processor's `stores`). */
  store<K extends keyof S & string>(name: K): Store<S[K]>;
  /** Writes a record in this batch's transaction. */
  emit(record: OutputRecord): void;
  /** Sends the source record to the dead-letter topic with a reason. */
  deadLetter(source: SourceRecord, reason: string, message: string): void;
}

/**
 * A stream job's processing, the part that differs between jobs. `S` names
 * its state stores and their value types ({@link StoreTypes}).
 */
export interface StreamProcessor<T, S = StoreTypes> {
  /** Short job name for logs, metrics and dead-letter headers, e.g. "detect". */
  readonly name: string;
  /** Consumer group id; transactional ids derive from it. */
  readonly groupId: string;
  readonly source: string;
  /** Compacted topic with as many partitions as `source`; omit for a stateless job. */
  readonly changelog?: string;
  /** Its state stores (every key of `S`); they all live in the one `changelog`. */
  readonly stores?: StoreDeclarations<S>;
  /**
   * Where a changelog entry without a store prefix belongs when it is not
   * the unprefixed store's (an entry a version before named stores wrote):
   * the store entries it becomes, or undefined when it is the unprefixed
   * store's after all. Called once per entry after a restore, before the
   * first batch; the entry is then rewritten in the new form (a tombstone
   * for the old key) in that batch's transaction.
   */
  readonly legacy?: (key: string, value: unknown) => ReadonlyArray<StoreEntry<S>> | undefined;
  /** Decodes and validates a record; a rejection goes to the dead-letter topic. */
  parse(record: SourceRecord): Parsed<T>;
  /**
   * Runs before a batch's first record, each time the batch runs: a batch
   * that failed or was abandoned runs again from its first record. A
   * processor that gathers something over a batch for `endBatch` (beside
   * its state) starts afresh here, so nothing of a failed run leaks into
   * the next. Between a partition's `beginBatch` and `endBatch` come only
   * that batch's `process` calls.
   */
  beginBatch?(ctx: ProcessContext<S>): void;
  /** Handles one valid record. */
  process(value: T, record: SourceRecord, ctx: ProcessContext<S>): void;
  /** Runs after every batch of a partition, before the commit (e.g. to close windows). */
  endBatch?(ctx: ProcessContext<S>): void;
}

/** Defaults of {@link RunOptions}, also the stream jobs' flag defaults. */
export const STREAM_DEFAULTS = {
  sessionTimeoutMs: 30_000,
  batchTimeoutMs: 120_000,
  maxBatchBytes: 8 * 1024 * 1024,
} as const;

/** Options of {@link runStream}. */
export interface RunOptions {
  kafka: Kafka;
  logger: Logger;
  deadLetterTopic: string;
  /** Resolves when the job should stop; the batch in progress commits first. */
  stopSignal: Promise<void>;
  /** Most bytes fetched per partition per batch (default 8 MiB); one batch is one transaction. */
  maxBatchBytes?: number;
  /** Consumer group session timeout in ms (default 30 s). */
  sessionTimeoutMs?: number;
  /** Transaction timeout in ms (the broker aborts a transaction open longer). */
  transactionTimeoutMs?: number;
  /**
   * How long one batch may take, taking over its partition included (default
   * 120 s). A batch over it is abandoned: its producer is dropped, the
   * partition is taken over again (which fences the stuck producer) and
   * resumes from its last commit. Three in a row on one partition end the
   * process.
   */
  batchTimeoutMs?: number;
}

/** A batch that ran over its time and was abandoned; the consumer restarts past it. */
export class StuckBatchError extends Error {
  constructor(readonly partition: number, readonly where: string, readonly ms: number) {
    super(`batch of partition ${partition} stuck for ${ms / 1000} s while ${where}`);
    this.name = "StuckBatchError";
  }
}

/** Marks one run of a batch; set once the runtime has given up on it. */
interface BatchRun {
  abandoned: boolean;
  /** What the batch is doing, so a stuck one says where it stuck. */
  step: string;
  /** When it last made progress (a long restore keeps moving this). */
  progressAt: number;
}

/** One source partition this instance owns. */
interface Owned<S> {
  producer: Producer;
  state: PartitionState<S>;
  /**
   * The first offset not yet in `state`, or -1 before the partition's first
   * commit. kafkajs can hand out records again (after it restarts its
   * consumer on an error, it fetches from an older position); records below
   * this are already applied and are skipped.
   */
  next: number;
}

const NO_HEADERS: Readonly<Record<string, string>> = Object.freeze({});

function headersOf(h: Record<string, unknown> | undefined): Readonly<Record<string, string>> {
  let any = false;
  for (const _ in h) {
    any = true;
    break;
  }
  if (!any) return NO_HEADERS; // most records: no per-record object
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h ?? {})) {
    if (v === undefined || v === null) continue;
    out[k] = Array.isArray(v) ? String(v[v.length - 1]) : String(v);
  }
  return out;
}

/** The lists of records kafkajs 2.2.4 keeps in a fetched batch (consumer/batch.js). */
interface BatchLists {
  rawMessages?: FetchedMessage[];
  messagesWithinOffset?: FetchedMessage[];
  messages?: FetchedMessage[];
}
interface FetchedMessage {
  offset: string;
  key?: unknown;
  value?: unknown;
  headers?: unknown;
}

/**
 * Drops a processed batch's records, which kafkajs keeps until the batch's
 * `eachBatch` returns, that is through the batch's whole transaction, and
 * with them the fetched bytes their keys and values are views of (up to
 * `maxBatchBytes` per partition). What kafkajs still reads of the batch
 * (its first and last offsets, whether it is empty) stays the same: each
 * list keeps a stub of its first and last record, offsets only. kafkajs
 * also holds on to the last record itself: its key and value (views of
 * those bytes) go.
 */
export function releaseRecords(batch: unknown): void {
  const b = batch as BatchLists;
  const last = b.messages?.[b.messages.length - 1];
  if (last) {
    last.key = null;
    last.value = null;
    last.headers = {};
  }
  for (const key of ["rawMessages", "messagesWithinOffset", "messages"] as const) {
    const list = b[key];
    if (!Array.isArray(list) || list.length === 0) continue;
    const first = list[0].offset;
    const end = list[list.length - 1].offset;
    b[key] = list.length === 1 ? [{ offset: first }] : [{ offset: first }, { offset: end }];
  }
}

function isFenced(err: unknown): boolean {
  const type = (err as { type?: string })?.type ?? "";
  const message = (err as Error)?.message ?? "";
  return /PRODUCER_FENCED|INVALID_PRODUCER_EPOCH|TRANSACTIONAL_ID_AUTHORIZATION/.test(type) ||
    /fenced|epoch/i.test(message);
}

/**
 * Runs `processor` until `stopSignal` resolves. Resolves after a clean
 * stop; rejects on an unrecoverable error (the caller exits non-zero).
 */
export async function runStream<T, S>(
  processor: StreamProcessor<T, S>,
  options: RunOptions,
): Promise<void> {
  const { kafka, logger } = options;
  const log = logger.child({ "txpipe.processor": processor.groupId });
  const owned = new Map<number, Owned<S>>();
  stuckBatches.inc({ processor: processor.groupId }, 0); // the series exists (at 0) from the start
  eventTimeAhead.inc({ processor: processor.groupId }, 0); // so do these two
  eventTimeLead.set({ processor: processor.groupId }, 0);
  const admin = kafka.admin();
  await admin.connect();
  const router = new PartitionRouter(admin);
  // txpipe_consumer_lag of the partitions assigned here, from the committed offsets.
  const lag = new LagMonitor({
    kafka,
    admin,
    groupId: processor.groupId,
    topic: processor.source,
    logger: log,
  });

  const sessionTimeoutMs = options.sessionTimeoutMs ?? STREAM_DEFAULTS.sessionTimeoutMs;
  const consumer: Consumer = kafka.consumer({
    groupId: processor.groupId,
    readUncommitted: false,
    allowAutoTopicCreation: false,
    sessionTimeout: sessionTimeoutMs,
    heartbeatInterval: Math.min(3_000, Math.floor(sessionTimeoutMs / 5)),
    // Big batches while catching up: each one costs a transaction's round
    // trips (8 MiB instead of 2 MiB took detect from 26k to 37k records/s).
    maxBytesPerPartition: options.maxBatchBytes ?? STREAM_DEFAULTS.maxBatchBytes,
    maxBytes: 64 * 1024 * 1024,
    retry: {
      initialRetryTime: 300,
      maxRetryTime: 5000,
      retries: 10,
      // Kafka errors (rebalances, leader moves, fencing) restart the consumer;
      // a bug in the job's own code does not loop forever.
      restartOnFailure: (err) =>
        Promise.resolve(err.name.startsWith("KafkaJS") || err instanceof StuckBatchError),
    },
  });
  let stopping = false;
  let failure: unknown;

  // The batch in progress per partition: kafkajs may hand out a partition's
  // batch again while the previous one still runs (after an error elsewhere
  // or a rebalance); state must never see the same records twice at once.
  // (Settles when the batch does or when it is abandoned.)
  const busy = new Map<number, Promise<unknown>>();
  const stuckInARow = new Map<number, number>();
  const batchTimeoutMs = options.batchTimeoutMs ?? STREAM_DEFAULTS.batchTimeoutMs;

  const release = async (partition: number, options: { waitForBatch?: boolean } = {}) => {
    if (options.waitForBatch) await busy.get(partition);
    const o = owned.get(partition);
    owned.delete(partition);
    // Another instance reports this partition now: no stale series here.
    // (Its lag follows the assignment instead: see lag.assign.)
    stateEntries.remove({ processor: processor.groupId, partition: String(partition) });
    // Bounded: a producer stuck in a request must not hold up the release.
    if (o) await withTimeout(o.producer.disconnect().catch(() => {}), 10_000);
  };

  consumer.on(consumer.events.GROUP_JOIN, async (e) => {
    const mine = new Set(e.payload.memberAssignment[processor.source] ?? []);
    log.info({ partitions: [...mine] }, `assigned partitions of ${processor.source}`);
    lag.assign(mine); // reported from now on, also while taking them over
    for (const p of [...owned.keys()]) {
      if (!mine.has(p)) await release(p, { waitForBatch: true });
    }
  });
  consumer.on(consumer.events.CRASH, (e) => {
    if (!e.payload.restart) {
      failure = e.payload.error;
      stopping = true;
    }
  });

  // Fences older owners of `partition`, restores its state, and returns the
  // offset processing must start from (the group's committed offset).
  const takeOver = async (partition: number, run: BatchRun): Promise<Owned<S>> => {
    const producer = kafka.producer({
      transactionalId: `${processor.groupId}-${processor.source}-${partition}`,
      idempotent: true,
      // (A transaction begun right after a commit meets CONCURRENT_TRANSACTIONS
      // while the commit markers are written: retried within milliseconds and
      // quietly by concurrent_transactions.ts, below kafkajs's retries.)
      retry: PRODUCER_RETRY,
      createPartitioner: PARTITIONER,
      maxInFlightRequests: 1,
      transactionTimeout: options.transactionTimeoutMs ?? 60_000,
      allowAutoTopicCreation: false,
    });
    run.step = "fencing the previous owner (InitProducerId)";
    await producer.connect(); // InitProducerId: fences and aborts the previous owner's transaction
    const state = new PartitionState<S>();
    if (processor.changelog) {
      run.step = "writing the restore barrier";
      const barrier = crypto.randomUUID();
      const txn = await producer.transaction();
      await txn.send({
        topic: processor.changelog,
        messages: [{ key: BARRIER_KEY, value: barrier, partition }],
      });
      await txn.commit();
      run.step = "restoring state from the changelog";
      const started = Date.now();
      const restored = await restoreState(
        kafka,
        processor.changelog,
        partition,
        barrier,
        state,
        () => run.progressAt = Date.now(),
      );
      restoredStateRecords.inc({ processor: processor.groupId }, restored.records);
      log.info(
        {
          partition,
          records: restored.records,
          entries: state.size,
          "txpipe.next_offset": restored.next,
          "event.duration": (Date.now() - started) * 1e6,
        },
        "state restored from changelog",
      );
      if (restored.next !== undefined) return { producer, state, next: restored.next };
    }
    // A stateless processor, or nothing committed yet: the group's offset.
    // (Read after fencing, so the previous owner's last transaction is done.)
    // None at all (-1): wherever the fetch starts, the topic's first record
    // (retention may have deleted offset 0 and more).
    run.step = "reading the committed offset";
    return { producer, state, next: await committedOffset(partition) };
  };

  // The group's committed offset of `partition`, -1 when it has none.
  const committedOffset = async (partition: number): Promise<number> => {
    const offsets = await admin.fetchOffsets({
      groupId: processor.groupId,
      topics: [processor.source],
    });
    const p = offsets[0]?.partitions.find((x) => x.partition === partition);
    return p && Number(p.offset) >= 0 ? Number(p.offset) : -1;
  };

  const eachBatch = async (payload: EachBatchPayload, run: BatchRun) => {
    const { batch, resolveOffset, heartbeat, isRunning, isStale } = payload;
    const partition = batch.partition;
    if (stopping || !isRunning() || isStale() || batch.messages.length === 0) return;
    let o = owned.get(partition);
    if (!o) {
      const taken = await takeOver(partition, run);
      if (run.abandoned) {
        // Given up on while taking over: a newer run owns the partition now.
        await taken.producer.disconnect().catch(() => {});
        return;
      }
      o = taken;
      owned.set(partition, o);
      await heartbeat();
      // kafkajs starts from the group's offset as it read it at assignment,
      // which can lag behind the last commit (its offsets were not yet
      // materialized) or, in principle, differ from it: the restored offset
      // rules. Records before it are skipped below; a gap is fetched again.
      // Never committed (-1): the fetch starts at the topic's first record.
      if (o.next >= 0 && Number(batch.firstOffset()) > o.next) {
        log.info(
          { partition, next: o.next, fetched: batch.firstOffset() },
          "seeking back to the offset the state is at",
        );
        consumer.seek({ topic: processor.source, partition, offset: String(o.next) });
        return;
      }
    }
    run.step = "processing records";
    const next = o.next;
    // (Usually every record is fresh: no copy of the list then.)
    let fresh: KafkaMessage[] | undefined = Number(batch.messages[0].offset) >= next
      ? batch.messages
      : batch.messages.filter((m) => Number(m.offset) >= next);
    if (fresh.length === 0) {
      resolveOffset(batch.lastOffset()); // all already applied and committed
      return;
    }

    // The batch's records to write, by topic, as kafkajs takes them (one
    // object per output, made when it is emitted), and what the metrics need.
    const byTopic = new Map<string, Message[]>();
    const add = (topic: string, m: Message) => {
      let list = byTopic.get(topic);
      if (!list) byTopic.set(topic, list = []);
      list.push(m);
    };
    const outputCounts = new Map<string, number>();
    const eventTimes: number[] = [];
    const dead: Message[] = [];
    // The pure step (batch.ts), the same the test driver runs.
    processBatch(processor, partition, o.state, fresh, (m): SourceRecord => ({
      topic: batch.topic,
      partition,
      offset: m.offset,
      key: m.key ? m.key.toString() : null,
      // A view of the fetched bytes, not a copy (a dead letter copies what it keeps).
      value: m.value ?? null,
      headers: headersOf(m.headers),
    }), {
      output: (r) => {
        add(r.topic, { key: r.key, value: r.value, headers: r.headers, partition: r.partition });
        outputCounts.set(r.topic, (outputCounts.get(r.topic) ?? 0) + 1);
        if (r.eventTime !== undefined) eventTimes.push(r.eventTime);
      },
      deadLetter: (d) => {
        const { key, value } = d.source;
        dead.push({ key, value: value ? Buffer.from(value) : null, headers: { ...d.headers } });
        deadLetters.inc({ processor: processor.groupId, reason: d.reason });
      },
    });
    // The records are applied: let their memory go while the transaction runs.
    const lastOffset = batch.lastOffset();
    const consumed = fresh.length;
    fresh = undefined;
    releaseRecords(batch);

    const nextOffset = String(Number(lastOffset) + 1);
    run.step = "beginning the transaction";
    const txn = await o.producer.transaction();
    try {
      for (const d of dead) add(options.deadLetterTopic, d);
      if (processor.changelog) {
        for (const [key, value] of o.state.takeChanges()) {
          add(processor.changelog, {
            key,
            value: value === null ? null : JSON.stringify(value),
            partition,
          });
        }
        add(processor.changelog, { key: OFFSET_KEY, value: nextOffset, partition });
      }
      // One send per partition (see sendByPartition: kafkajs can duplicate a
      // send spanning brokers), in requests well under the brokers' 1 MB
      // message.max.bytes, however much state a batch changed.
      run.step = "sending outputs";
      await sendByPartition(
        (topicMessages) => txn.sendBatch({ topicMessages, acks: -1 }),
        router,
        byTopic,
      );
      run.step = "sending offsets to the transaction";
      await txn.sendOffsets({
        consumerGroupId: processor.groupId,
        topics: [{ topic: batch.topic, partitions: [{ partition, offset: nextOffset }] }],
      });
      run.step = "committing the transaction";
      await txn.commit();
    } catch (err) {
      await txn.abort().catch(() => {});
      transactions.inc({ processor: processor.groupId, result: "aborted" });
      if (run.abandoned) throw err; // the partition is not ours to release any more
      if (isFenced(err)) {
        // Another instance owns this partition now; its restore starts from our last commit.
        log.warn({ err, partition }, "fenced by a newer owner of the partition; letting it go");
        await release(partition);
        return;
      }
      throw err;
    }
    transactions.inc({ processor: processor.groupId, result: "committed" });
    if (run.abandoned) return; // committed late; the new run restores from this commit
    o.next = Number(nextOffset);
    resolveOffset(lastOffset);

    const now = Date.now();
    consumedRecords.inc({ processor: processor.groupId, topic: batch.topic }, consumed);
    for (const [topic, n] of outputCounts) {
      outputRecords.inc({ processor: processor.groupId, topic }, n);
    }
    // Latency of those at or behind the clock; those ahead of it counted apart.
    observeEventTimes(processor.groupId, eventTimes, now);
    stateEntries.set({ processor: processor.groupId, partition: String(partition) }, o.state.size);
  };

  await consumer.connect();
  await subscribeWhenKnown(consumer, [processor.source], { fromBeginning: true });
  await consumer.run({
    autoCommit: false,
    eachBatchAutoResolve: false,
    // Partitions are independent (own state, own transactional producer), so their
    // batches overlap: one partition's processing hides another's commit round trips.
    partitionsConsumedConcurrently: 8,
    eachBatch: async (payload) => {
      const partition = payload.batch.partition;
      if (busy.has(partition)) return; // a batch of this partition is still running: fetch again later
      // A batch that never finishes (a request lost in a rebalance) would stall
      // its partition for good: past the deadline it is abandoned, and the
      // partition taken over again from its last commit.
      const run: BatchRun = { abandoned: false, step: "starting", progressAt: Date.now() };
      let timer: ReturnType<typeof setInterval> | undefined;
      const deadline = new Promise<"stuck">((resolve) => {
        timer = setInterval(() => {
          if (Date.now() - run.progressAt > batchTimeoutMs) resolve("stuck");
        }, Math.min(1000, batchTimeoutMs / 4));
      });
      const work = eachBatch(payload, run);
      const outcome = Promise.race([work.then(() => "done" as const), deadline]);
      busy.set(partition, outcome.catch(() => {}));
      try {
        if (await outcome === "stuck") {
          run.abandoned = true;
          work.catch(() => {}); // it fails later, once its producer is gone or fenced
          throw stuck(partition, run.step);
        }
        stuckInARow.delete(partition);
      } catch (err) {
        // The partition's in-memory state may hold this batch's uncommitted
        // changes: drop it, so the next owner (maybe us) restores from the
        // changelog. kafkajs then retries or rejoins the group; errors it
        // cannot recover from arrive as a CRASH event without restart.
        if (!(err instanceof StuckBatchError)) {
          log.warn({ err, partition }, "batch failed; state dropped");
        }
        await release(partition);
        throw err;
      } finally {
        clearInterval(timer);
        busy.delete(partition);
      }
    },
  });

  // Counts an abandoned batch; the third in a row on one partition ends the process.
  function stuck(partition: number, where: string): StuckBatchError {
    const err = new StuckBatchError(partition, where, batchTimeoutMs);
    const n = (stuckInARow.get(partition) ?? 0) + 1;
    stuckInARow.set(partition, n);
    stuckBatches.inc({ processor: processor.groupId });
    if (n >= 3) {
      const message = `${processor.name}: ${err.message}, ${n} times in a row; exiting ` +
        "(a restart resumes from the last commit)";
      log.error({ partition, "event.action": "batch-stuck" }, message);
      console.error(message);
      Deno.exit(1);
    }
    log.error(
      { partition, "event.action": "batch-abandoned" },
      `${processor.name}: ${err.message}; abandoning it and taking the partition over again ` +
        "from its last commit",
    );
    return err;
  }

  await Promise.race([
    options.stopSignal,
    new Promise<void>((resolve) => {
      const check = setInterval(() => {
        if (stopping) {
          clearInterval(check);
          resolve();
        }
      }, 100);
    }),
  ]);
  stopping = true;
  await consumer.disconnect().catch(() => {});
  for (const p of [...owned.keys()]) await release(p);
  await lag.stop();
  await admin.disconnect().catch(() => {});
  if (failure) throw failure;
}

/**
 * Reads partition `partition` of `changelog` (read_committed) into `state`
 * until the barrier record with value `barrier`. Returns how many state
 * records it read and the source offset the state is at (undefined when no
 * batch was ever committed).
 */
async function restoreState<S>(
  kafka: Kafka,
  changelog: string,
  partition: number,
  barrier: string,
  state: PartitionState<S>,
  onProgress: () => void,
): Promise<{ records: number; next?: number }> {
  const consumer = kafka.consumer({
    groupId: `txpipe-restore-${crypto.randomUUID()}`,
    readUncommitted: false,
    allowAutoTopicCreation: false,
    maxBytesPerPartition: 8 * 1024 * 1024,
    // The barrier becomes readable (read_committed) only once its commit
    // markers are written, just after the commit returns: poll briskly
    // instead of parking in the broker's default 5 s fetch wait.
    maxWaitTimeInMs: 100,
  });
  let count = 0;
  let next: number | undefined;
  let done = false;
  let progressAt = Date.now();
  await consumer.connect();
  await subscribeWhenKnown(consumer, [changelog], { fromBeginning: true });
  const finished = new Promise<void>((resolve, reject) => {
    consumer.on(consumer.events.CRASH, (e) => reject(e.payload.error));
    consumer.run({
      autoCommit: false,
      // deno-lint-ignore require-await
      eachBatch: async ({ batch, pause }) => {
        if (batch.partition !== partition) {
          pause();
          return;
        }
        for (const m of batch.messages) {
          const key = m.key?.toString() ?? "";
          if (key === BARRIER_KEY) {
            if (m.value?.toString() === barrier) {
              done = true;
              resolve();
              return;
            }
            continue;
          }
          if (key === OFFSET_KEY) {
            next = Number(m.value?.toString());
            continue;
          }
          state.restore(key, m.value ? JSON.parse(m.value.toString()) as S : null);
          count++;
        }
        progressAt = Date.now();
        onProgress();
      },
    }).catch(reject);
  });
  // Gives up when 30 s pass without a fetched batch: a large changelog may
  // take long, a stalled read never ends.
  let idle: ReturnType<typeof setInterval> | undefined;
  const stalled = new Promise<never>((_, reject) => {
    idle = setInterval(() => {
      if (!done && Date.now() - progressAt > 30_000) {
        reject(new Error(`restoring ${changelog}/${partition}: no progress for 30 s`));
      }
    }, 5_000);
  });
  try {
    await Promise.race([finished, stalled]);
  } finally {
    clearInterval(idle);
    // Bounded: kafkajs can wait long on a consumer still joining its group.
    await withTimeout(consumer.disconnect().catch(() => {}), 10_000);
  }
  return { records: count, next };
}

/** Waits for `promise`, but no longer than `ms`; resolves either way. */
function withTimeout(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise.then(() => {}),
    new Promise<void>((resolve) => timer = setTimeout(resolve, ms)),
  ]).finally(() => clearTimeout(timer));
}
