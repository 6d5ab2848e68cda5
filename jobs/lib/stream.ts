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
 * - exactly-once read-process-write: for every batch of a partition (one or
 *   more fetches, partition_task.ts), one Kafka transaction holds the
 *   outputs, the dead letters, the state changes (changelog) and the
 *   consumed offsets (`sendOffsets`); the transactional id is per source
 *   partition, so a new owner of a partition fences the old one (zombie
 *   fencing);
 * - state recovery: the changelog topic (compacted, one partition per source
 *   partition) is read back when a partition is assigned, up to a barrier
 *   record this owner wrote after fencing, so no update is missed; the
 *   source offset the state is at is restored with it, and processing
 *   resumes there;
 * - a batch stuck past its deadline is abandoned and its partition taken
 *   over again (see {@link RunOptions.batchTimeoutMs});
 * - a control topic, when the processor follows one ({@link ControlSpec}):
 *   read from its beginning before the first batch and followed after, so
 *   each batch begins with the latest accepted control record
 *   ({@link ProcessContext.control}), e.g. detect's rules;
 * - event-time alignment, when the processor declares it
 *   ({@link StreamProcessor.alignment}, alignment.ts): a source partition
 *   too far ahead of the slowest is not fetched until that one catches up;
 * - dead letters: a record the parse step rejects goes to the dead-letter
 *   topic with its original key and value and reason headers;
 * - metrics, ECS logs and a graceful stop (the batches open commit).
 *
 * Any failure it cannot reason about ends the process (crash-only): state
 * lives in Kafka, so a restart resumes exactly where the last commit left.
 *
 * @module
 */
import type { Consumer, EachBatchPayload, Kafka, KafkaMessage } from "kafkajs";
import type { Logger } from "./log.ts";
import { FETCH_MAX_WAIT_MS, PartitionRouter, subscribeWhenKnown, withTimeout } from "./kafka.ts";
import {
  alignmentPauses,
  eventTimeAhead,
  eventTimeLead,
  stateEntries,
  stuckBatches,
} from "./metrics.ts";
import { LagMonitor } from "./lag.ts";
import { type BatchRun, PartitionTask, type TaskContext } from "./partition_task.ts";
import { lastStableOffset } from "./read_committed.ts";
import { ControlReader } from "./control.ts";
import { type AlignmentChange, EventTimeAlignment } from "./alignment.ts";
import { whileCoordinatorMoves } from "./coordinators.ts";
import { exitProcess } from "./threads.ts";
// kafkajs's own test of a rebalance error (REBALANCE_IN_PROGRESS, NOT_COORDINATOR, ILLEGAL_GENERATION).
import kafkaErrors from "kafkajs/src/errors.js";

/** Header names of a dead letter. */
export const DLQ_HEADERS = {
  reason: "txpipe-dlq-reason",
  message: "txpipe-dlq-message",
  topic: "txpipe-dlq-source-topic",
  partition: "txpipe-dlq-source-partition",
  offset: "txpipe-dlq-source-offset",
  job: "txpipe-dlq-job",
} as const;

/** Changelog key of the barrier a new owner writes before it restores (partition_task.ts). */
export const BARRIER_KEY = "__txpipe_restore_barrier__";
/**
 * Changelog key of the source offset the state is at: written in every
 * batch's transaction, so the state restored and the offset to resume from
 * always come from the same commits.
 */
export const OFFSET_KEY = "__txpipe_next_offset__";

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

/**
 * A compacted control topic a processor follows beside its source, e.g. the
 * detection rules (jobs/lib/detect_rules.ts): the runtime reads the records
 * of `key` from the topic's beginning (read_committed) before the first
 * batch, then follows new ones, and hands each batch the latest one it
 * accepted ({@link ProcessContext.control}). A batch sees one control value
 * from its first record to its last: a change takes effect at a batch
 * boundary, and what the processor makes of it goes into its state, in the
 * batch's transaction.
 */
export interface ControlSpec<C> {
  /** The control topic (one partition). */
  readonly topic: string;
  /** The key this processor follows; other keys are ignored. */
  readonly key: string;
  /**
   * The control value of a record of `key` (value null: a tombstone), at
   * `offset` of the topic, given the value in force before it (undefined:
   * none yet). Throws to refuse the record: the refusal is logged and the
   * value before it stays in force.
   */
  decode(value: string | null, offset: number, previous: C | undefined): C;
}

/** What `process` and `endBatch` can do. */
export interface ProcessContext<S = StoreTypes, C = unknown> {
  /** The source partition being processed. */
  readonly partition: number;
  /** The source offset of the batch's first record. */
  readonly firstOffset: string;
  /**
   * The control value in force when the batch began (the processor's
   * {@link StreamProcessor.control}); undefined when there is none.
   */
  readonly control: C | undefined;
  /** This partition's store `name` (one of the processor's `stores`). */
  store<K extends keyof S & string>(name: K): Store<S[K]>;
  /** Writes a record in this batch's transaction. */
  emit(record: OutputRecord): void;
  /** Sends the source record to the dead-letter topic with a reason. */
  deadLetter(source: SourceRecord, reason: string, message: string): void;
  /**
   * Runs `fn` once this batch has committed (never for a batch that fails
   * or is abandoned): for what must happen once per committed change, e.g.
   * its log line and its count. `log` is the processor's logger.
   */
  afterCommit(fn: (log: Logger) => void): void;
}

/**
 * A stream job's processing, the part that differs between jobs. `S` names
 * its state stores and their value types ({@link StoreTypes}).
 */
export interface StreamProcessor<T, S = StoreTypes, C = unknown> {
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
  /** A control topic the processor follows, see {@link ControlSpec}. */
  readonly control?: ControlSpec<C>;
  /**
   * Event-time alignment of the source's partitions (alignment.ts): a
   * partition more than `maxDriftMs` ahead of the slowest one with records
   * left to read is not fetched until that one catches up. `eventTime` is a
   * partition's highest event time applied so far (undefined: none yet).
   */
  readonly alignment?: {
    readonly maxDriftMs: number;
    eventTime(partition: number): number | undefined;
  };
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
  beginBatch?(ctx: ProcessContext<S, C>): void;
  /** Handles one valid record. */
  process(value: T, record: SourceRecord, ctx: ProcessContext<S, C>): void;
  /** Runs after every batch of a partition, before the commit (e.g. to close windows). */
  endBatch?(ctx: ProcessContext<S, C>): void;
  /**
   * Runs when this instance lets a partition go (a rebalance, a stop, a
   * failure): e.g. to drop the partition's own metric series, which the new
   * owner reports now.
   */
  releasePartition?(partition: number): void;
}

/** Defaults of {@link RunOptions}, also the stream jobs' flag defaults. */
export const STREAM_DEFAULTS = {
  sessionTimeoutMs: 30_000,
  batchTimeoutMs: 120_000,
  maxBatchBytes: 8 * 1024 * 1024,
  fetchBytes: 512 * 1024,
  maxBatchTimeMs: 1_000,
} as const;

/** Options of {@link runStream}. */
export interface RunOptions {
  kafka: Kafka;
  logger: Logger;
  deadLetterTopic: string;
  /** Resolves when the job should stop; the batches open commit first. */
  stopSignal: Promise<void>;
  /**
   * Most key and value bytes per partition in one batch, that is one Kafka
   * transaction, gathered over one or more fetches (default 8 MiB).
   */
  maxBatchBytes?: number;
  /**
   * Most bytes fetched per partition per request (default 512 KiB, and at
   * most `maxBatchBytes`): a fetch's records are let go once processed, so
   * this, not the batch, is what memory holds.
   */
  fetchBytes?: number;
  /**
   * Longest a batch stays open while its partition still has records to
   * fetch (default 1 s). A batch that has read all there is commits at once.
   */
  maxBatchTimeMs?: number;
  /** Consumer group session timeout in ms (default 30 s). */
  sessionTimeoutMs?: number;
  /** Transaction timeout in ms (the broker aborts a transaction open longer). */
  transactionTimeoutMs?: number;
  /**
   * How long one step of a batch may take, taking over its partition
   * included (default 120 s). A step over it is abandoned: its producer is
   * dropped, the partition is taken over again (which fences the stuck
   * producer) and resumes from its last commit. Three in a row on one
   * partition end the process.
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
 * Drops a processed fetch's records, which kafkajs keeps until `eachBatch`
 * returns, and with them the fetched bytes their keys and values are views
 * of (up to `fetchBytes` per partition). What kafkajs still reads of the
 * batch (its first and last offsets, whether it is empty) stays the same:
 * each list keeps a stub of its first and last record, offsets only.
 * kafkajs also holds on to the last record itself: its key and value
 * (views of those bytes) go.
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

/**
 * Runs `processor` until `stopSignal` resolves. Resolves after a clean
 * stop; rejects on an unrecoverable error (the caller exits non-zero).
 *
 * The runtime's part: the consumer group, one {@link PartitionTask} per
 * assigned partition (taking over, the open batch, its commit), when a
 * batch commits, and a deadline on every step of a partition.
 */
export async function runStream<T, S, C>(
  processor: StreamProcessor<T, S, C>,
  options: RunOptions,
): Promise<void> {
  const { kafka, logger } = options;
  const log = logger.child({ "txpipe.processor": processor.groupId });
  const tasks = new Map<number, PartitionTask<T, S>>();
  stuckBatches.inc({ processor: processor.groupId }, 0); // the series exists (at 0) from the start
  eventTimeAhead.inc({ processor: processor.groupId }, 0); // so do these two
  eventTimeLead.set({ processor: processor.groupId }, 0);
  if (processor.alignment) alignmentPauses.inc({ processor: processor.groupId }, 0);
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

  const maxBatchBytes = options.maxBatchBytes ?? STREAM_DEFAULTS.maxBatchBytes;
  const fetchBytes = Math.min(options.fetchBytes ?? STREAM_DEFAULTS.fetchBytes, maxBatchBytes);
  const maxBatchTimeMs = options.maxBatchTimeMs ?? STREAM_DEFAULTS.maxBatchTimeMs;
  const sessionTimeoutMs = options.sessionTimeoutMs ?? STREAM_DEFAULTS.sessionTimeoutMs;
  const consumer: Consumer = kafka.consumer({
    groupId: processor.groupId,
    readUncommitted: false,
    allowAutoTopicCreation: false,
    sessionTimeout: sessionTimeoutMs,
    heartbeatInterval: Math.min(3_000, Math.floor(sessionTimeoutMs / 5)),
    // Small fetches, let go once processed; a batch (one transaction) gathers several.
    maxBytesPerPartition: fetchBytes,
    maxWaitTimeInMs: FETCH_MAX_WAIT_MS, // a stop waits for the fetches in flight
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

  // The control topic, read to its end before the first batch, then followed.
  const control = processor.control === undefined ? undefined : await ControlReader.start({
    kafka,
    admin,
    spec: processor.control,
    follow: true,
    log,
  });
  if (control) {
    log.info(
      { "event.action": "control-read", "txpipe.control_topic": processor.control!.topic },
      `read the control topic ${processor.control!.topic} (key ${processor.control!.key})`,
    );
  }

  const ctx: TaskContext<T, S> = {
    kafka,
    processor,
    log,
    router,
    deadLetterTopic: options.deadLetterTopic,
    transactionTimeoutMs: options.transactionTimeoutMs ?? 60_000,
    committedOffset: async (partition) => {
      // Asked of the group's coordinator: waited for while it loads or moves.
      const offsets = await whileCoordinatorMoves(() =>
        admin.fetchOffsets({ groupId: processor.groupId, topics: [processor.source] })
      );
      const p = offsets[0]?.partitions.find((x) => x.partition === partition);
      return p && Number(p.offset) >= 0 ? Number(p.offset) : -1;
    },
    control: control && (() => control.current),
  };

  // The step in progress per partition (a fetch applied, a commit): kafkajs
  // may hand out a partition's batch again while the previous one still
  // runs (after an error elsewhere or a rebalance); state must never see
  // the same records twice at once. (Settles when the step does or when it
  // is abandoned.)
  const busy = new Map<number, Promise<unknown>>();
  const stuckInARow = new Map<number, number>();
  const batchTimeoutMs = options.batchTimeoutMs ?? STREAM_DEFAULTS.batchTimeoutMs;
  // A batch left open waiting for more records commits when its time is up.
  const commitTimers = new Map<number, ReturnType<typeof setTimeout>>();

  // Partitions ahead in event time wait for the slowest (alignment.ts).
  const alignment = processor.alignment && processor.alignment.maxDriftMs > 0
    ? new EventTimeAlignment(processor.alignment.maxDriftMs)
    : undefined;
  const realign = (change: AlignmentChange) => {
    const topic = processor.source;
    if (change.pause.length > 0) {
      consumer.pause([{ topic, partitions: change.pause }]);
      alignmentPauses.inc({ processor: processor.groupId }, change.pause.length);
    }
    if (change.resume.length > 0) consumer.resume([{ topic, partitions: change.resume }]);
  };
  const aligned = (partition: number, drained: boolean) => {
    if (alignment) {
      realign(alignment.update(partition, processor.alignment!.eventTime(partition), drained));
    }
  };

  const release = async (partition: number, options: { waitForBatch?: boolean } = {}) => {
    if (options.waitForBatch) await busy.get(partition);
    clearTimeout(commitTimers.get(partition));
    commitTimers.delete(partition);
    const task = tasks.get(partition);
    tasks.delete(partition);
    if (alignment) realign(alignment.remove(partition));
    // Another instance reports this partition now: no stale series here.
    // (Its lag follows the assignment instead: see lag.assign.)
    stateEntries.remove({ processor: processor.groupId, partition: String(partition) });
    processor.releasePartition?.(partition);
    await task?.close();
  };

  consumer.on(consumer.events.GROUP_JOIN, async (e) => {
    const mine = new Set(e.payload.memberAssignment[processor.source] ?? []);
    log.info({ partitions: [...mine] }, `assigned partitions of ${processor.source}`);
    lag.assign(mine); // reported from now on, also while taking them over
    // Each (re)join aligns afresh: a consumer kafkajs restarted no longer holds our pauses.
    if (alignment) realign({ pause: [], resume: alignment.reset() });
    for (const p of [...tasks.keys()]) {
      if (!mine.has(p)) await release(p, { waitForBatch: true });
    }
  });
  consumer.on(consumer.events.CRASH, (e) => {
    if (!e.payload.restart) {
      failure = e.payload.error;
      stopping = true;
    }
  });

  // Commits the open batch of `task`; fenced, the partition goes.
  const commit = async (task: PartitionTask<T, S>, run: BatchRun) => {
    clearTimeout(commitTimers.get(task.partition));
    commitTimers.delete(task.partition);
    if ((await task.commit(run)) === "fenced") await release(task.partition);
  };

  const applyFetch = async (payload: EachBatchPayload, run: BatchRun) => {
    const { batch, resolveOffset, heartbeat, isRunning, isStale } = payload;
    const partition = batch.partition;
    if (stopping || !isRunning() || isStale() || batch.messages.length === 0) return;
    let task = tasks.get(partition);
    if (!task) {
      const taken = await PartitionTask.takeOver(ctx, partition, run);
      if (run.abandoned) {
        // Given up on while taking over: a newer run owns the partition now.
        await taken.close();
        return;
      }
      task = taken;
      tasks.set(partition, task);
      await heartbeat();
      // kafkajs starts from the group's offset as it read it at assignment,
      // which can lag behind the last commit (its offsets were not yet
      // materialized) or, in principle, differ from it: the restored offset
      // rules. Records before it are skipped below; a gap is fetched again.
      // Never committed (-1): the fetch starts at the topic's first record.
      if (task.next >= 0 && Number(batch.firstOffset()) > task.next) {
        log.info(
          { partition, next: task.next, fetched: batch.firstOffset() },
          "seeking back to the offset the state is at",
        );
        consumer.seek({ topic: processor.source, partition, offset: String(task.next) });
        return;
      }
    }
    run.step = "processing records";
    const next = task.next;
    // (Usually every record is fresh: no copy of the list then.)
    let fresh: KafkaMessage[] | undefined = Number(batch.messages[0].offset) >= next
      ? batch.messages
      : batch.messages.filter((m) => Number(m.offset) >= next);
    const lastOffset = batch.lastOffset();
    // All there is to read for now: the fetch reached the last stable offset.
    const stable = lastStableOffset((batch as unknown as BatchLists).rawMessages);
    const drained = stable === undefined || Number(lastOffset) + 1 >= stable;
    if (fresh.length === 0) {
      resolveOffset(lastOffset); // all already applied
      aligned(partition, drained);
      if (task.open && drained) await commit(task, run);
      return;
    }
    // The pure step (batch.ts), the same the test driver runs.
    task.apply(fresh, lastOffset);
    aligned(partition, drained);
    // The records are applied: let their memory go.
    fresh = undefined;
    releaseRecords(batch);
    // kafkajs fetches on from here; the group's offset moves when the batch commits.
    resolveOffset(lastOffset);
    if (
      drained || stopping || task.bytes >= maxBatchBytes || task.age(Date.now()) >= maxBatchTimeMs
    ) {
      await commit(task, run);
      return;
    }
    // More is coming: the batch stays open for the next fetch, but not past its time.
    if (!commitTimers.has(partition)) {
      commitTimers.set(
        partition,
        setTimeout(() => {
          commitTimers.delete(partition);
          commitWhenDue(partition);
        }, Math.max(1, maxBatchTimeMs - task.age(Date.now()))),
      );
    }
  };

  // The timer's commit of a batch no fetch came to close. A failure drops the
  // partition's state and rewinds it to its last commit (in guarded), so
  // kafkajs fetches the uncommitted records again for the next owner (maybe us).
  const commitWhenDue = (partition: number) => {
    const task = tasks.get(partition);
    if (!task?.open || stopping) return;
    if (busy.has(partition)) { // a step is running: try again just after it
      commitTimers.set(
        partition,
        setTimeout(() => {
          commitTimers.delete(partition);
          commitWhenDue(partition);
        }, 20),
      );
      return;
    }
    guarded(partition, (run) => commit(task, run)).catch((err) => {
      if (!(err instanceof StuckBatchError)) {
        log.warn({ err, partition }, "batch commit failed; state dropped");
      }
    });
  };

  // Moves the consumer's position of `partition` back to its last commit
  // after a failed or abandoned step. kafkajs's own position is already past
  // the step's records (resolveOffset runs before the commit), and nothing
  // else brings it back: not a later fetch when the step held the
  // partition's last records, not the takeover when nothing was committed
  // yet. Earlier than the commit is safe (a takeover skips what its state
  // already holds); later never is. Never committed: the earliest offset.
  // (Asking Kafka, when nothing was committed, is waited for 10 s at most:
  // the error path must not hang on an unreachable cluster.)
  const rewind = (partition: number, committed: number) =>
    withTimeout(
      (async () => {
        let offset = committed >= 0 ? committed : await ctx.committedOffset(partition);
        if (offset < 0) {
          const offsets = await admin.fetchTopicOffsets(processor.source);
          offset = Number(offsets.find((o) => o.partition === partition)?.low ?? 0);
        }
        if (!stopping) {
          consumer.seek({ topic: processor.source, partition, offset: String(offset) });
        }
      })().catch((err) =>
        // The consumer restarts or rejoins then: it fetches from the group's offsets.
        log.warn({ err, partition }, "could not move back to the last commit")
      ),
      10_000,
    );

  // Runs one step of `partition` (a fetch applied, a commit) under the
  // deadline: past it, the step is abandoned and StuckBatchError thrown.
  // A failed step's partition state may hold uncommitted changes: it is
  // dropped, so the next owner (maybe us) restores from the changelog, and
  // the partition is rewound to its last commit.
  const guarded = async (partition: number, step: (run: BatchRun) => Promise<void>) => {
    const run: BatchRun = { abandoned: false, step: "starting", progressAt: Date.now() };
    let timer: ReturnType<typeof setInterval> | undefined;
    const deadline = new Promise<"stuck">((resolve) => {
      timer = setInterval(() => {
        if (Date.now() - run.progressAt > batchTimeoutMs) resolve("stuck");
      }, Math.min(1000, batchTimeoutMs / 4));
    });
    const work = step(run);
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
      const task = tasks.get(partition);
      // A rebalance met while no batch is open (the heartbeat just after a
      // takeover, when a coordinator moved): the state is the committed one
      // and stays; kafkajs rejoins, and the join releases the partition if
      // it goes elsewhere.
      if (!task || task.open || !kafkaErrors.isRebalancing(err)) {
        await release(partition);
        await rewind(partition, task?.committed ?? -1);
      }
      throw err;
    } finally {
      clearInterval(timer);
      busy.delete(partition);
    }
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
      if (busy.has(partition)) return; // a step of this partition is still running: fetch again later
      try {
        await guarded(partition, (run) => applyFetch(payload, run));
      } catch (err) {
        // kafkajs then retries or rejoins the group; errors it cannot
        // recover from arrive as a CRASH event without restart.
        if (tasks.has(partition)) {
          log.info({ err, partition }, "the group is rebalancing; the partition's state stays");
        } else if (!(err instanceof StuckBatchError)) {
          log.warn({ err, partition }, "batch failed; state dropped");
        }
        throw err;
      }
    },
  });

  // Counts an abandoned step; the third in a row on one partition ends the process.
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
      exitProcess(1); // (from a stream thread too, threads.ts)
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
        if (control?.failure !== undefined && failure === undefined) {
          failure = control.failure; // crash-only: a restart reads the control topic again
          stopping = true;
        }
        if (stopping) {
          clearInterval(check);
          resolve();
        }
      }, 100);
    }),
  ]);
  const failed = stopping; // a crash, not a stop: nothing more to commit
  stopping = true;
  // The batches open commit before the consumer leaves its group.
  for (const [partition, task] of [...tasks]) {
    await busy.get(partition);
    if (failed || !task.open || tasks.get(partition) !== task) continue;
    await guarded(partition, (run) => commit(task, run)).catch((err) =>
      log.warn({ err, partition }, "the open batch did not commit at stop; the next run redoes it")
    );
  }
  await consumer.disconnect().catch(() => {});
  for (const p of [...tasks.keys()]) await release(p);
  await control?.stop();
  await lag.stop();
  await admin.disconnect().catch(() => {});
  if (failure) throw failure;
}
