/**
 * The benchmark's independent reader: a read_committed consumer (txpipe's
 * patched kafkajs, jobs/lib/read_committed.ts) that follows an output topic
 * from its beginning and notes the wall-clock time each record was received.
 * It measures every contender the same way: the first output of a catch-up
 * run, and end-to-end latency under a paced load. No offsets are committed
 * and the throwaway group is deleted at stop.
 *
 * So a rejoin (the group's coordinator moved, or kafkajs restarted the
 * consumer after a crash) starts the group again from the beginning: a
 * record at or below the last offset received from its partition is not
 * received again. Before this, each rejoin counted every earlier output a
 * second time, seconds later, which made the latency bench's p99 through
 * coordinator moves 12–26 s (docs/benchmarks.md, "Coordinators that move").
 *
 * @module
 */
import type { Consumer } from "kafkajs";
import { createKafka, subscribeWhenKnown } from "../../jobs/lib/kafka.ts";
import { BROKERS } from "../helpers/cluster.ts";

/** One received record. */
export interface Received {
  partition: number;
  offset: string;
  key: string | null;
  value: string;
  /** Wall clock (epoch ms) when the reader received it. */
  receivedAt: number;
}

/** A running reader. */
export interface OutputReader {
  readonly records: Received[];
  /** Epoch ms of the first record received, if any yet. */
  readonly firstAt: number | undefined;
  /** Resolves once `n` records have arrived in all. */
  waitFor(n: number, timeoutMs: number): Promise<boolean>;
  stop(): Promise<void>;
}

/**
 * Follows `topic` from its beginning. `onRecord` (optional) sees each record
 * as it arrives; records are kept in `records` unless `keep` is false.
 */
export async function startReader(
  topic: string,
  o: { keep?: boolean; onRecord?: (r: Received) => void } = {},
): Promise<OutputReader> {
  const kafka = createKafka({
    principal: "admin",
    clientId: "txpipe-bench-reader",
    brokers: BROKERS,
  });
  const groupId = `txpipe-bench-reader-${crypto.randomUUID()}`;
  const consumer: Consumer = kafka.consumer({
    groupId,
    readUncommitted: false,
    allowAutoTopicCreation: false,
    maxWaitTimeInMs: 100, // receipt times within 100 ms of availability
  });
  consumer.on(consumer.events.CRASH, ({ payload }) => {
    const e = payload.error as Error;
    console.error(
      `bench reader of ${topic}: its consumer failed (${e.name}: ${e.message}); ` +
        (payload.restart ? "kafkajs restarts it" : "it stops"),
    );
  });
  const records: Received[] = [];
  /** The last offset received from each partition. */
  const lastOffset = new Map<number, number>();
  let count = 0;
  let firstAt: number | undefined;
  const waiters: Array<{ n: number; resolve: (ok: boolean) => void }> = [];
  const decoder = new TextDecoder();
  await consumer.connect();
  await subscribeWhenKnown(consumer, [topic], { fromBeginning: true, timeoutMs: 30_000 });
  await consumer.run({
    autoCommit: false,
    eachBatch: ({ batch }) => {
      const now = Date.now();
      const last = lastOffset.get(batch.partition) ?? -1;
      for (const m of batch.messages) {
        if (Number(m.offset) <= last) continue; // read before a rejoin
        lastOffset.set(batch.partition, Number(m.offset));
        const r: Received = {
          partition: batch.partition,
          offset: m.offset,
          key: m.key ? decoder.decode(m.key) : null,
          value: m.value ? decoder.decode(m.value) : "",
          receivedAt: now,
        };
        firstAt ??= now;
        count++;
        if (o.keep !== false) records.push(r);
        o.onRecord?.(r);
      }
      for (let i = waiters.length - 1; i >= 0; i--) {
        if (count >= waiters[i].n) waiters.splice(i, 1)[0].resolve(true);
      }
      return Promise.resolve();
    },
  });
  return {
    records,
    get firstAt() {
      return firstAt;
    },
    waitFor(n, timeoutMs) {
      if (count >= n) return Promise.resolve(true);
      return new Promise((resolve) => {
        const w = { n, resolve };
        waiters.push(w);
        setTimeout(() => {
          const i = waiters.indexOf(w);
          if (i >= 0) waiters.splice(i, 1)[0].resolve(false);
        }, timeoutMs);
      });
    },
    async stop() {
      await consumer.disconnect().catch(() => {});
      const admin = kafka.admin();
      await admin.connect();
      try {
        await admin.deleteGroups([groupId]).catch(() => {});
      } finally {
        await admin.disconnect();
      }
    },
  };
}
