/**
 * One source partition a stream job owns (stream.ts runs one per assigned
 * partition): its transactional producer, its state, and the batch open on
 * it.
 *
 * - **Taking over** ({@link PartitionTask.takeOver}): the producer's
 *   InitProducerId fences every older owner and aborts its open
 *   transaction; the state is restored from the changelog up to a barrier
 *   record this owner wrote after fencing, with the source offset it is at.
 * - **A batch gathers fetches** ({@link PartitionTask.apply}): each fetched
 *   slice of records goes through the pure step (batch.ts) into the open
 *   batch and is then let go, so memory holds one fetch (`--fetch-bytes`)
 *   while a batch, and its transaction, can span several
 *   (`--max-batch-bytes`): the transaction's round trips are paid per batch,
 *   the memory per fetch.
 * - **Committing** ({@link PartitionTask.commit}): `endBatch`, then one Kafka
 *   transaction with the outputs, the dead letters, the state changes
 *   (changelog, each changed key once however often the batch changed it),
 *   the source offset the state is at, and the consumed offsets.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import type { Kafka, KafkaMessage, Message, Producer } from "kafkajs";
import type { Logger } from "./log.ts";
import {
  PARTITIONER,
  type PartitionRouter,
  PRODUCER_RETRY,
  sendByPartition,
  withTimeout,
} from "./kafka.ts";
import { PartitionReader } from "./partition_reader.ts";
import {
  consumedRecords,
  deadLetters,
  observeEventTimes,
  outputRecords,
  restoredStateRecords,
  stateEntries,
  transactions,
} from "./metrics.ts";
import { type BatchStep, batchStep } from "./batch.ts";
import {
  BARRIER_KEY,
  OFFSET_KEY,
  PartitionState,
  type SourceRecord,
  type StreamProcessor,
} from "./stream.ts";

/** Marks one run of a batch step; set once the runtime has given up on it. */
export interface BatchRun {
  abandoned: boolean;
  /** What the batch is doing, so a stuck one says where it stuck. */
  step: string;
  /** When it last made progress (a long restore keeps moving this). */
  progressAt: number;
}

/** What a partition task needs of its job. */
export interface TaskContext<T, S> {
  kafka: Kafka;
  processor: StreamProcessor<T, S>;
  log: Logger;
  router: PartitionRouter;
  deadLetterTopic: string;
  transactionTimeoutMs: number;
  /** The group's committed offset of a partition, -1 when it has none. */
  committedOffset(partition: number): Promise<number>;
  /** The processor's control value in force now (see ControlSpec in stream.ts), if it has one. */
  control?: () => unknown;
}

/** The batch open on a partition: what its fetches produced so far. */
interface OpenBatch {
  step: BatchStep<KafkaMessage>;
  /** Its records to write, by topic, as kafkajs takes them. */
  byTopic: Map<string, Message[]>;
  outputCounts: Map<string, number>;
  eventTimes: number[];
  /** Source records consumed, and their key and value bytes. */
  consumed: number;
  bytes: number;
  openedAt: number;
  /** What the processor asked to run once the batch has committed. */
  afterCommit: Array<(log: Logger) => void>;
}

/** The outcome of a commit: done, or fenced by a newer owner or its producer unknown to the coordinator (let the partition go). */
export type CommitResult = "committed" | "fenced";

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

/**
 * The transaction coordinator no longer maps this producer's id to its
 * transactional id (INVALID_PRODUCER_ID_MAPPING): seen on the local cluster
 * once in 13 runs of tests/detect_test.ts's coordinator moves, on an EndTxn
 * just after two moves a second apart. The producer cannot go on (the Java
 * client makes it fatal, KIP-1050); the partition is let go as when fenced,
 * and taken over again, with a new producer, from the last commit.
 */
function isUnknownProducer(err: unknown): boolean {
  return (err as { type?: string })?.type === "INVALID_PRODUCER_ID_MAPPING";
}

function isFenced(err: unknown): boolean {
  const type = (err as { type?: string })?.type ?? "";
  const message = (err as Error)?.message ?? "";
  return /PRODUCER_FENCED|INVALID_PRODUCER_EPOCH|TRANSACTIONAL_ID_AUTHORIZATION/.test(type) ||
    /fenced|epoch/i.test(message);
}

/** One owned source partition. */
export class PartitionTask<T, S> {
  /**
   * The first offset not yet in `state` (applied, maybe not yet committed),
   * or -1 before the partition's first commit. kafkajs can hand out records
   * again (after it restarts its consumer on an error, it fetches from an
   * older position); records below this are already applied and skipped.
   */
  next: number;
  /** The first offset not yet committed (-1: none committed yet). */
  committed: number;
  #open: OpenBatch | undefined;
  #topic: string;

  private constructor(
    readonly partition: number,
    readonly producer: Producer,
    readonly state: PartitionState,
    next: number,
    private readonly ctx: TaskContext<T, S>,
  ) {
    this.next = next;
    this.committed = next;
    this.#topic = ctx.processor.source;
  }

  /**
   * Fences older owners of `partition`, restores its state and the offset
   * processing resumes from (the group's committed offset for a stateless
   * processor or one never committed).
   */
  static async takeOver<T, S>(
    ctx: TaskContext<T, S>,
    partition: number,
    run: BatchRun,
  ): Promise<PartitionTask<T, S>> {
    const { processor, log } = ctx;
    const producer = ctx.kafka.producer({
      transactionalId: `${processor.groupId}-${processor.source}-${partition}`,
      idempotent: true,
      // (A transaction begun right after a commit meets CONCURRENT_TRANSACTIONS
      // while the commit markers are written: retried within milliseconds and
      // quietly by concurrent_transactions.ts, below kafkajs's retries.)
      retry: PRODUCER_RETRY,
      createPartitioner: PARTITIONER,
      maxInFlightRequests: 1,
      transactionTimeout: ctx.transactionTimeoutMs,
      allowAutoTopicCreation: false,
    });
    run.step = "fencing the previous owner (InitProducerId)";
    await producer.connect(); // InitProducerId: fences and aborts the previous owner's transaction
    const state = new PartitionState();
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
        ctx.kafka,
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
      if (restored.next !== undefined) {
        return new PartitionTask(partition, producer, state, restored.next, ctx);
      }
    }
    // A stateless processor, or nothing committed yet: the group's offset.
    // (Read after fencing, so the previous owner's last transaction is done.)
    // None at all (-1): wherever the fetch starts, the topic's first record
    // (retention may have deleted offset 0 and more).
    run.step = "reading the committed offset";
    const next = await ctx.committedOffset(partition);
    return new PartitionTask(partition, producer, state, next, ctx);
  }

  /** Whether a batch is open (records applied, not yet committed). */
  get open(): boolean {
    return this.#open !== undefined;
  }

  /** How long the open batch has been open, in ms (0 when none is). */
  age(now: number): number {
    return this.#open ? now - this.#open.openedAt : 0;
  }

  /** The key and value bytes of the open batch's records (0 when none is). */
  get bytes(): number {
    return this.#open?.bytes ?? 0;
  }

  /**
   * Applies `records` (fetched, in offset order, none below `next`) to the
   * open batch, opening one if none is; `lastOffset` is the fetch's last
   * offset (control records included), where `next` moves past. The
   * records' memory can go once this returns: outputs are their own
   * strings, dead letters copies.
   */
  apply(records: readonly KafkaMessage[], lastOffset: string): void {
    const open = this.#open ?? this.#begin(records[0]?.offset ?? String(this.next));
    let bytes = 0;
    for (let i = 0; i < records.length; i++) {
      bytes += (records[i].key?.length ?? 0) + (records[i].value?.length ?? 0);
    }
    open.step.records(records);
    open.consumed += records.length;
    open.bytes += bytes;
    this.next = Number(lastOffset) + 1;
  }

  /** Opens a batch whose first record is at `firstOffset`. */
  #begin(firstOffset: string): OpenBatch {
    const { processor } = this.ctx;
    const afterCommit: Array<(log: Logger) => void> = [];
    const partition = this.partition;
    const topic = this.#topic;
    const byTopic = new Map<string, Message[]>();
    const add = (t: string, m: Message) => {
      let list = byTopic.get(t);
      if (!list) byTopic.set(t, list = []);
      list.push(m);
    };
    const outputCounts = new Map<string, number>();
    const eventTimes: number[] = [];
    const deadLetterTopic = this.ctx.deadLetterTopic;
    const step = batchStep<T, S, KafkaMessage>(
      processor,
      partition,
      this.state,
      (m): SourceRecord => ({
        topic,
        partition,
        offset: m.offset,
        key: m.key ? m.key.toString() : null,
        // A view of the fetched bytes, not a copy (a dead letter copies what it keeps).
        value: m.value ?? null,
        headers: headersOf(m.headers),
      }),
      {
        output: (r) => {
          add(r.topic, { key: r.key, value: r.value, headers: r.headers, partition: r.partition });
          outputCounts.set(r.topic, (outputCounts.get(r.topic) ?? 0) + 1);
          if (r.eventTime !== undefined) eventTimes.push(r.eventTime);
        },
        deadLetter: (d) => {
          const { key, value } = d.source;
          add(deadLetterTopic, {
            key,
            value: value ? Buffer.from(value) : null,
            headers: { ...d.headers },
          });
          deadLetters.inc({ processor: processor.groupId, reason: d.reason });
        },
        afterCommit: (fn) => afterCommit.push(fn),
      },
      // The control value stays the same for the whole batch: a change takes effect at the next.
      { firstOffset, control: this.ctx.control?.() },
    );
    const open: OpenBatch = {
      step,
      byTopic,
      outputCounts,
      eventTimes,
      consumed: 0,
      bytes: 0,
      openedAt: Date.now(),
      afterCommit,
    };
    this.#open = open;
    step.begin();
    return open;
  }

  /**
   * Ends the open batch (`endBatch`) and commits it in one transaction. A
   * failure other than fencing throws: the caller drops this task (its state
   * holds the batch) and the next owner restores from the last commit.
   */
  async commit(run: BatchRun): Promise<CommitResult> {
    const open = this.#open;
    if (!open) return "committed";
    const { processor, log } = this.ctx;
    const partition = this.partition;
    open.step.end();
    const nextOffset = String(this.next);
    if (processor.changelog) {
      const changelog: Message[] = [];
      for (const [key, value] of this.state.takeChanges()) {
        changelog.push({ key, value: value === null ? null : JSON.stringify(value), partition });
      }
      changelog.push({ key: OFFSET_KEY, value: nextOffset, partition });
      open.byTopic.set(processor.changelog, changelog);
    }
    run.step = "beginning the transaction";
    const txn = await this.producer.transaction();
    try {
      // One send per partition (see sendByPartition: kafkajs can duplicate a
      // send spanning brokers), in requests well under the brokers' 1 MB
      // message.max.bytes, however much state a batch changed.
      run.step = "sending outputs";
      await sendByPartition(
        (topicMessages) => txn.sendBatch({ topicMessages, acks: -1 }),
        this.ctx.router,
        open.byTopic,
      );
      run.step = "sending offsets to the transaction";
      await txn.sendOffsets({
        consumerGroupId: processor.groupId,
        topics: [{ topic: this.#topic, partitions: [{ partition, offset: nextOffset }] }],
      });
      run.step = "committing the transaction";
      await txn.commit();
    } catch (err) {
      await txn.abort().catch(() => {});
      transactions.inc({ processor: processor.groupId, result: "aborted" });
      if (!run.abandoned && isFenced(err)) {
        // Another instance owns this partition now; its restore starts from our last commit.
        log.warn({ err, partition }, "fenced by a newer owner of the partition; letting it go");
        return "fenced";
      }
      if (!run.abandoned && isUnknownProducer(err)) {
        log.warn(
          { err, partition },
          "the transaction coordinator no longer knows this producer; taking the partition over again",
        );
        return "fenced";
      }
      throw err;
    }
    transactions.inc({ processor: processor.groupId, result: "committed" });
    this.#open = undefined;
    this.committed = this.next;

    const now = Date.now();
    consumedRecords.inc({ processor: processor.groupId, topic: this.#topic }, open.consumed);
    for (const [topic, n] of open.outputCounts) {
      outputRecords.inc({ processor: processor.groupId, topic }, n);
    }
    // Latency of those at or behind the clock; those ahead of it counted apart.
    observeEventTimes(processor.groupId, open.eventTimes, now);
    stateEntries.set(
      { processor: processor.groupId, partition: String(partition) },
      this.state.size,
    );
    for (const fn of open.afterCommit) {
      try {
        fn(log);
      } catch (err) {
        log.warn({ err, partition }, "an after-commit step failed (the batch is committed)");
      }
    }
    return "committed";
  }

  /** Lets the producer go (an open batch's transaction is left to the next owner to abort). */
  async close(): Promise<void> {
    this.#open = undefined;
    // Bounded: a producer stuck in a request must not hold up the release.
    await withTimeout(this.producer.disconnect().catch(() => {}), 10_000);
  }
}

/**
 * Reads partition `partition` of `changelog` (read_committed, with no consumer
 * group: partition_reader.ts) into `state` until the barrier record with
 * value `barrier`. Returns how many state records it read and the source
 * offset the state is at (undefined when no batch was ever committed).
 */
async function restoreState(
  kafka: Kafka,
  changelog: string,
  partition: number,
  barrier: string,
  state: PartitionState,
  onProgress: () => void,
): Promise<{ records: number; next?: number }> {
  const reader = await PartitionReader.open(kafka, changelog, partition);
  let count = 0;
  let next: number | undefined;
  let progressAt = Date.now();
  try {
    for (;;) {
      // The barrier becomes readable (read_committed) only once its commit
      // markers are written, just after the commit returns: poll briskly.
      const from = reader.position;
      const records = await reader.next(100);
      for (const m of records) {
        const key = m.key?.toString() ?? "";
        if (key === BARRIER_KEY) {
          if (m.value?.toString() === barrier) return { records: count, next };
          continue;
        }
        if (key === OFFSET_KEY) {
          next = Number(m.value?.toString());
          continue;
        }
        state.restore(key, m.value ? JSON.parse(m.value.toString()) : null);
        count++;
      }
      // (Moving past aborted records or markers is progress too.)
      if (reader.position !== from) {
        progressAt = Date.now();
        onProgress();
      } else if (Date.now() - progressAt > 30_000) {
        // A large changelog may take long; a read that stalls never ends.
        throw new Error(`restoring ${changelog}/${partition}: no progress for 30 s`);
      }
    }
  } finally {
    // Bounded: a broker that went away must not hold up the takeover's end.
    await withTimeout(reader.close(), 10_000);
  }
}
