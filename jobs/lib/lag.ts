/**
 * `txpipe_consumer_lag` as Kafka's own tools compute it.
 *
 * What the metric means, per source partition of a stream processor:
 *
 *     lag = log end offset − the group's committed offset
 *
 * exactly the LAG column of `kafka-consumer-groups --describe`
 * (ConsumerGroupCommand): its log end offset is a ListOffsets "latest" read
 * uncommitted, i.e. the high watermark, and its committed offset is the
 * group's last committed one (our transactions commit it with `sendOffsets`,
 * so it moves when a batch's transaction commits). Two consequences an
 * operator sees in both:
 *
 * - on a topic written in transactions (the aggregation's repartition
 *   topic), records of still-open transactions count (a read_committed
 *   consumer cannot read them yet), and an idle partition can show 1 or a
 *   few: commit markers after the last record, which the consumer skips
 *   without committing an offset past them;
 * - a partition with nothing committed yet counts from its first record
 *   (log end − log start: processing starts there), where the tool prints
 *   `-`.
 *
 * Only the instance a partition is assigned to exports it, from the moment
 * of the assignment: also while it fences the previous owner and restores
 * the state, since the committed offset does not depend on who holds the
 * partition. The value is recomputed every {@link LAG_INTERVAL_MS} and at
 * every scrape: one OffsetFetch and one ListOffsets per partition leader,
 * whatever the record rate.
 *
 * Why not kafkajs's numbers: `batch.offsetLag()` (and the high watermark of a
 * fetched batch) is the end at the moment of that fetch, against the batch's
 * own last offset. When each fetch drains what was there, it reads 0 while
 * the records produced since (during processing and commit) and the commit
 * still to come make a real lag of thousands; and it changes only when a
 * batch commits, so an idle or stuck partition keeps its last value. And
 * kafkajs's `admin.fetchTopicOffsets` lists offsets read_committed (its
 * ListOffsets default; the admin has no option), which answers the last
 * stable offset instead of the high watermark: less than Kafka's tools show
 * on a transactional topic under load. So the end offsets here come from a
 * kafkajs cluster client made read_uncommitted, as Java's AdminClient lists
 * them by default.
 *
 * @module
 */
import type { Admin, Kafka } from "kafkajs";
import ISOLATION_LEVEL from "kafkajs/src/protocol/isolationLevel.js";
import type { Logger } from "./log.ts";
import { withTimeout } from "./kafka.ts";
import { consumerLag, refreshLagOnScrape } from "./metrics.ts";

/** How often lag is recomputed between scrapes. */
export const LAG_INTERVAL_MS = 5_000;
/** How long a scrape waits for fresh lag; past it, the scrape gets the last values. */
export const LAG_SCRAPE_WAIT_MS = 2_000;
/** A computation started this recently serves a scrape without new requests. */
export const LAG_FRESH_MS = 1_000;

/**
 * The lag of one partition from its offsets: `end − committed`, or
 * `end − start` when nothing is committed (`committed` < 0); never below 0.
 */
export function partitionLag(
  offsets: { end: number; committed: number; start: number },
): number {
  const from = offsets.committed >= 0 ? offsets.committed : offsets.start;
  return Math.max(0, offsets.end - from);
}

/** The part of kafkajs's internal Cluster used here (kafkajs 2.2.4, src/cluster/index.js). */
interface KafkajsCluster {
  connect(): Promise<void>;
  disconnect(): Promise<void>;
  addTargetTopic(topic: string): Promise<void>;
  refreshMetadata(): Promise<void>;
  refreshMetadataIfNecessary(): Promise<void>;
  fetchTopicsOffset(
    topics: Array<{
      topic: string;
      fromBeginning: boolean;
      partitions: Array<{ partition: number }>;
    }>,
  ): Promise<Array<{ topic: string; partitions: Array<{ partition: number; offset: string }> }>>;
}

/**
 * A kafkajs cluster client of `kafka` (same brokers, retries and logger)
 * that lists offsets read_uncommitted. kafkajs builds every client's cluster
 * with this factory of the Kafka object; it keeps it under a private symbol
 * and gives its admin no isolation level (so ListOffsets defaults to
 * read_committed).
 */
function readUncommittedCluster(kafka: Kafka): KafkajsCluster {
  const key = Object.getOwnPropertySymbols(kafka)
    .find((s) => s.description === "private:Kafka:createCluster");
  if (!key) {
    throw new Error("kafkajs Kafka[private:Kafka:createCluster] not found: expected kafkajs 2.2.4");
  }
  const create = (kafka as unknown as Record<symbol, (o: object) => KafkajsCluster>)[key];
  return create({
    allowAutoTopicCreation: false,
    isolationLevel: ISOLATION_LEVEL.READ_UNCOMMITTED,
  });
}

/** Options of {@link LagMonitor}. */
export interface LagMonitorOptions {
  kafka: Kafka;
  /** A connected admin of the same cluster (reads the committed offsets). */
  admin: Admin;
  /** The consumer group (the metric's `processor` label). */
  groupId: string;
  /** The source topic. */
  topic: string;
  logger: Logger;
  /** Default {@link LAG_INTERVAL_MS}. */
  intervalMs?: number;
}

/**
 * Keeps `txpipe_consumer_lag` of one consumer group's source partitions that
 * this instance is assigned (see the module documentation).
 */
export class LagMonitor {
  readonly #o: LagMonitorOptions;
  readonly #cluster: KafkajsCluster;
  #connected: Promise<void> | undefined;
  #assigned = new Set<number>();
  #running: Promise<void> | undefined;
  #startedAt = 0;
  #stopped = false;
  #warnedAt = 0;
  readonly #timer: ReturnType<typeof setInterval>;
  readonly #unregister: () => void;

  constructor(options: LagMonitorOptions) {
    this.#o = options;
    this.#cluster = readUncommittedCluster(options.kafka);
    this.#timer = setInterval(() => this.refresh(), options.intervalMs ?? LAG_INTERVAL_MS);
    Deno.unrefTimer(Number(this.#timer)); // never what keeps a process alive
    this.#unregister = refreshLagOnScrape(() => this.#atScrape());
  }

  /**
   * The partitions now assigned to this instance: the others' series go (their
   * owner reports them), the new ones are computed right away.
   */
  assign(partitions: Iterable<number>): void {
    const next = new Set(partitions);
    for (const p of this.#assigned) {
      if (!next.has(p)) consumerLag.remove(this.#labels(p));
    }
    this.#assigned = next;
    // After a computation in progress, which may not have had them.
    if (next.size > 0) (this.#running ?? Promise.resolve()).then(() => this.refresh());
  }

  /** Recomputes the lag of the assigned partitions (joins a computation in progress). */
  refresh(): Promise<void> {
    if (this.#stopped) return Promise.resolve();
    this.#running ??= (async () => {
      this.#startedAt = Date.now();
      try {
        await this.#compute();
      } catch (err) {
        // The last values stay; the next interval or scrape tries again.
        if (Date.now() - this.#warnedAt > 60_000) {
          this.#warnedAt = Date.now();
          this.#o.logger.warn(
            { err, "event.action": "lag-not-refreshed" },
            `consumer lag of ${this.#o.groupId} on ${this.#o.topic} not refreshed; ` +
              "serving the last values",
          );
        }
        await this.#cluster.refreshMetadata().catch(() => {}); // a leader may have moved
      } finally {
        this.#running = undefined;
      }
    })();
    return this.#running;
  }

  /** Stops refreshing and removes this instance's series. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#timer);
    this.#unregister();
    await withTimeout(this.#running ?? Promise.resolve(), 5_000);
    for (const p of this.#assigned) consumerLag.remove(this.#labels(p));
    this.#assigned = new Set();
    await withTimeout(this.#cluster.disconnect().catch(() => {}), 5_000);
  }

  /** At a scrape: values from a computation started at most LAG_FRESH_MS ago, if in time. */
  #atScrape(): Promise<void> {
    return withTimeout(
      (async () => {
        if (this.#running) await this.#running;
        if (Date.now() - this.#startedAt > LAG_FRESH_MS) await this.refresh();
      })(),
      LAG_SCRAPE_WAIT_MS,
    );
  }

  async #compute(): Promise<void> {
    const partitions = [...this.#assigned];
    if (partitions.length === 0) return;
    const [offsets, ends] = await Promise.all([
      this.#o.admin.fetchOffsets({ groupId: this.#o.groupId, topics: [this.#o.topic] }),
      this.#listOffsets(partitions, false),
    ]);
    const committed = new Map<number, number>();
    for (const p of offsets[0]?.partitions ?? []) committed.set(p.partition, Number(p.offset));
    const never = partitions.filter((p) => !((committed.get(p) ?? -1) >= 0));
    const starts = never.length > 0 ? await this.#listOffsets(never, true) : new Map();
    if (this.#stopped) return;
    for (const p of partitions) {
      const end = ends.get(p);
      // Reassigned meanwhile: the new owner reports it.
      if (end === undefined || !this.#assigned.has(p)) continue;
      consumerLag.set(
        this.#labels(p),
        partitionLag({ end, committed: committed.get(p) ?? -1, start: starts.get(p) ?? 0 }),
      );
    }
  }

  /** Each partition's log end (high watermark) or, `fromBeginning`, log start offset. */
  async #listOffsets(partitions: number[], fromBeginning: boolean): Promise<Map<number, number>> {
    this.#connected ??= (async () => {
      await this.#cluster.connect();
      await this.#cluster.addTargetTopic(this.#o.topic);
    })().catch((err) => {
      this.#connected = undefined; // connect again next time
      throw err;
    });
    await this.#connected;
    await this.#cluster.refreshMetadataIfNecessary();
    const [listed] = await this.#cluster.fetchTopicsOffset([{
      topic: this.#o.topic,
      fromBeginning,
      partitions: partitions.map((partition) => ({ partition })),
    }]);
    return new Map((listed?.partitions ?? []).map((p) => [p.partition, Number(p.offset)]));
  }

  #labels(partition: number) {
    return { processor: this.#o.groupId, topic: this.#o.topic, partition: String(partition) };
  }
}
