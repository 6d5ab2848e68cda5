/**
 * Reads partitions of a topic, read_committed, from their first record,
 * without a consumer group: how a stream job's takeover restores its state
 * (partition_task.ts), how detect and `deno task rules` read the rules'
 * control topic (control.ts), and how `deno task consume` and
 * `deno task evaluate` read.
 *
 * Why not a kafkajs consumer: kafkajs reads only in a group, and a new
 * group's first join waits out the broker's `group.initial.rebalance.delay.ms`
 * (Kafka's default is 3 s; the local cluster and the Docker stack set 0) before
 * it is given a partition. A restore per partition in a group of its own paid
 * that on every takeover, besides a JoinGroup, a SyncGroup and a coordinator
 * that could be moving. The Java client reads changelogs the same way, with
 * `assign()` and no group.
 *
 * How: kafkajs's own `Cluster` (metadata, connections, SASL and TLS as the
 * client is configured), made by the factory a kafkajs `Kafka` client keeps
 * under a private symbol, and its brokers' `fetch`. The Fetch responses go
 * through txpipe's decoder and read_committed filter (fetch_decode.ts,
 * read_committed.ts): the records of aborted transactions come back flagged
 * as control records, like the transaction markers, and are passed over
 * here. Needs kafkajs 2.2.4 (deno.json); without its factory this throws.
 *
 * @module
 */
import type { Kafka } from "kafkajs";
import type { DecodedRecord, FetchResponseV11 } from "./fetch_decode.ts";
import { whileTopicUnknown } from "./kafka.ts";

/** The description of the symbol a kafkajs 2.2.4 `Kafka` keeps its cluster factory under. */
const CREATE_CLUSTER = "private:Kafka:createCluster";
/** kafkajs's protocol/isolationLevel.js. */
const READ_COMMITTED = 1;
/** The most bytes one fetch returns for the partition, unless told otherwise. */
const FETCH_BYTES = 8 * 1024 * 1024;

interface FetchRequest {
  replicaId: number;
  isolationLevel: number;
  maxWaitTime: number;
  minBytes: number;
  maxBytes: number;
  topics: Array<{
    topic: string;
    partitions: Array<{ partition: number; fetchOffset: string; maxBytes: number }>;
  }>;
}

/** The parts of kafkajs's `Cluster` (src/cluster/index.js) used here. */
interface KafkajsCluster {
  connect(): Promise<void>;
  disconnect(): Promise<void>;
  addTargetTopic(topic: string): Promise<void>;
  refreshMetadata(): Promise<void>;
  findLeaderForPartitions(topic: string, partitions: number[]): Record<string, number[]>;
  findBroker(o: { nodeId: string }): Promise<{ fetch(r: FetchRequest): Promise<FetchResponseV11> }>;
  fetchTopicsOffset(
    topics: Array<
      { topic: string; partitions: Array<{ partition: number }>; fromBeginning: boolean }
    >,
  ): Promise<Array<{ topic: string; partitions: Array<{ partition: number; offset: string }> }>>;
}

type ClusterFactory = (o: {
  allowAutoTopicCreation: boolean;
  isolationLevel: number;
  metadataMaxAge: number;
}) => KafkajsCluster;

function clusterFactory(kafka: Kafka): ClusterFactory {
  const symbol = Object.getOwnPropertySymbols(kafka).find((s) => s.description === CREATE_CLUSTER);
  const create = symbol && (kafka as unknown as Record<symbol, unknown>)[symbol];
  if (typeof create !== "function") {
    throw new Error("kafkajs's cluster factory not found: txpipe needs kafkajs 2.2.4 (deno.json)");
  }
  return create as ClusterFactory;
}

/** Errors after which the next read refreshes metadata and tries again. */
function isTransient(err: unknown): boolean {
  const e = err as { retriable?: boolean; name?: string };
  return e?.retriable === true || e?.name === "KafkaJSConnectionError" ||
    e?.name === "KafkaJSRequestTimeoutError" || e?.name === "KafkaJSBrokerNotFound";
}

/** A cluster connection shared by the readers of one {@link PartitionReader.openAll}. */
interface Shared {
  cluster: KafkajsCluster;
  readers: number;
  fetchBytes: number;
}

/** One partition read from its first record on, read_committed, with no consumer group. */
export class PartitionReader {
  #position = -1;
  #closed = false;

  private constructor(
    private readonly shared: Shared,
    readonly topic: string,
    readonly partition: number,
  ) {}

  /** Connects (with `kafka`'s brokers, security and retries) and finds the partition's leader. */
  static async open(kafka: Kafka, topic: string, partition: number): Promise<PartitionReader> {
    return (await PartitionReader.openAll(kafka, topic, [partition]))[0];
  }

  /**
   * Readers of several partitions of `topic` on one set of connections,
   * which goes once every reader is closed; each fetch of a reader returns
   * at most `fetchBytes` (default 8 MiB; more when one record batch is
   * larger, as Kafka sends a whole batch).
   */
  static async openAll(
    kafka: Kafka,
    topic: string,
    partitions: readonly number[],
    fetchBytes = FETCH_BYTES,
  ): Promise<PartitionReader[]> {
    const cluster = clusterFactory(kafka)({
      allowAutoTopicCreation: false,
      isolationLevel: READ_COMMITTED,
      metadataMaxAge: 300_000,
    });
    try {
      await cluster.connect();
      await whileTopicUnknown(() => cluster.addTargetTopic(topic));
    } catch (err) {
      await cluster.disconnect().catch(() => {});
      throw err;
    }
    const shared: Shared = { cluster, readers: partitions.length, fetchBytes };
    return partitions.map((p) => new PartitionReader(shared, topic, p));
  }

  private get cluster(): KafkajsCluster {
    return this.shared.cluster;
  }

  /** The offset the next read starts at (-1 before the first). */
  get position(): number {
    return this.#position;
  }

  /**
   * The next records from the position on, in offset order, without control
   * records and records of aborted transactions; the position moves past all
   * of them. Empty when there is nothing new after waiting up to
   * `maxWaitMs` at the broker, or after a transient error (a leader that
   * moved, a broker that went away), which the next call recovers from.
   */
  async next(maxWaitMs: number): Promise<DecodedRecord[]> {
    try {
      if (this.#position < 0) this.#position = await this.#firstOffset();
      const leaders = this.cluster.findLeaderForPartitions(this.topic, [this.partition]);
      const nodeId = Object.keys(leaders)[0];
      if (nodeId === undefined) throw Object.assign(new Error("no leader"), { retriable: true });
      const broker = await this.cluster.findBroker({ nodeId });
      const response = await broker.fetch({
        replicaId: -1,
        isolationLevel: READ_COMMITTED,
        maxWaitTime: maxWaitMs,
        minBytes: 1,
        maxBytes: this.shared.fetchBytes,
        topics: [{
          topic: this.topic,
          partitions: [{
            partition: this.partition,
            fetchOffset: String(this.#position),
            maxBytes: this.shared.fetchBytes,
          }],
        }],
      });
      const fetched = response.responses[0]?.partitions
        .find((p) => p.partition === this.partition)?.messages ?? [];
      const records: DecodedRecord[] = [];
      let last = this.#position - 1;
      for (const r of fetched) {
        const offset = Number(r.offset);
        // A fetch returns whole record batches: those before the position are read already.
        if (offset < this.#position) continue;
        last = offset;
        if (!r.isControlRecord) records.push(r);
      }
      this.#position = last + 1;
      return records;
    } catch (err) {
      if (this.#closed || !isTransient(err)) throw err;
      await this.cluster.refreshMetadata().catch(() => {});
      await new Promise((r) => setTimeout(r, 100));
      return [];
    }
  }

  async #firstOffset(): Promise<number> {
    const [topic] = await this.cluster.fetchTopicsOffset([
      { topic: this.topic, partitions: [{ partition: this.partition }], fromBeginning: true },
    ]);
    const p = topic?.partitions.find((x) => x.partition === this.partition);
    if (!p) throw new Error(`${this.topic}/${this.partition}: no such partition`);
    return Number(p.offset);
  }

  /** Stops this reader; the connections go with the last reader that shares them. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (--this.shared.readers === 0) await this.cluster.disconnect().catch(() => {});
  }
}

/** Readers being read, each in a loop of its own: {@link readEach}. */
export interface Reading {
  /**
   * Resolves once every reader's `more` said no; rejects with the first
   * reader's error (the others are then stopped). Never settles while
   * reading on and not stopped.
   */
  readonly done: Promise<void>;
  /** Stops: closes the readers, which ends their fetches in flight; a stop's errors are none. */
  stop(): Promise<void>;
}

/**
 * Reads each of `readers` in a loop of its own: a fetch waiting up to
 * `maxWaitMs` at the broker, then `onFetch(reader, records)`, awaited before
 * that reader fetches again, while `more(reader)` holds (default: until
 * stopped). `records` may be empty: nothing came, or the position moved past
 * transaction markers or aborted records only. The readers stay open when
 * every `more` is done (the caller may read on); a stop or a failure closes
 * them.
 */
export function readEach(
  readers: readonly PartitionReader[],
  o: {
    maxWaitMs: number;
    onFetch: (reader: PartitionReader, records: DecodedRecord[]) => unknown;
    more?: (reader: PartitionReader) => boolean;
  },
): Reading {
  let stopped = false;
  const close = () => Promise.all(readers.map((r) => r.close()));
  const loop = async (r: PartitionReader) => {
    while (!stopped && (o.more?.(r) ?? true)) {
      const records = await r.next(o.maxWaitMs);
      if (stopped) return;
      await o.onFetch(r, records);
    }
  };
  const done = Promise.all(readers.map((r) =>
    loop(r).catch(async (err) => {
      if (stopped) return; // (a stop closes the fetches in flight)
      stopped = true;
      await close();
      throw err;
    })
  )).then(() => {});
  done.catch(() => {}); // (seen by whoever awaits it)
  return {
    done,
    stop: async () => {
      stopped = true;
      await close();
      await done.catch(() => {});
    },
  };
}
