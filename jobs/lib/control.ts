/**
 * Reading a compacted control topic (stream.ts's {@link ControlSpec}): the
 * records of one key, decoded in offset order, each given the value in
 * force before it, so the value in force is the same for every reader that
 * read the same records. A refused record is logged and skipped.
 *
 * Why a consumer of its own, not a fetch per batch: the control topic
 * changes rarely, and a batch must not wait for a round trip to learn that
 * nothing changed. The reader reads the topic from its beginning to the end
 * offsets it had at the start before the job's first batch (so a fresh
 * instance begins with the published value, not with its own), then, when
 * following, keeps reading in the background; a batch takes the latest
 * value in memory. It is `read_committed` (the publisher writes in
 * transactions) and never commits an offset.
 *
 * kafkajs 2.2.4 cannot read without a consumer group (it has no `assign`),
 * so each reader joins a throwaway group named after its owner's (a job's
 * principal may use only groups named after its app id), as the state
 * restore does (partition_task.ts). A one-partition topic read from its
 * beginning needs nothing else of a group.
 *
 * @module
 */
import type { Admin, Consumer, Kafka } from "kafkajs";
import type { Logger } from "./log.ts";
import { FETCH_MAX_WAIT_MS, subscribeWhenKnown, withTimeout } from "./kafka.ts";
import type { ControlSpec } from "./stream.ts";

/** Options of {@link ControlReader.start}. */
export interface ControlReaderOptions<C> {
  kafka: Kafka;
  /** Lists the topic's end offsets at the start. */
  admin: Admin;
  spec: ControlSpec<C>;
  /** The throwaway consumer group (unique; named so the principal may use it). */
  groupId: string;
  /** Keep reading after the end offsets of the start (a job), or stop there (a command). */
  follow: boolean;
  /** Where refusals and a failed reader are logged (default: nowhere). */
  log?: Logger;
  /** Longest the first read to the end may take (default 30 s). */
  timeoutMs?: number;
}

/** A refused control record: where it was, and why. */
export interface Refusal {
  readonly offset: number;
  readonly reason: string;
}

/** A reader of one key of a control topic; see the module documentation. */
export class ControlReader<C> {
  #current: C | undefined;
  #refusals: Refusal[] = [];
  #failure: unknown;
  /** Read to the end offsets of the start: what comes now is news, logged. */
  #caughtUp = false;
  /**
   * The next offset to decode: kafkajs reads from the beginning again when
   * it restarts its consumer after an error (nothing is committed), and a
   * record must be decoded once, in order, or the value in force could step
   * back for a moment.
   */
  #next = 0;

  private constructor(
    private readonly consumer: Consumer,
    private readonly o: ControlReaderOptions<C>,
  ) {}

  /**
   * Starts reading and resolves once the records up to the topic's end
   * offsets at the start are decoded. Throws when that takes longer than
   * `timeoutMs` or the reader fails on the way.
   */
  static async start<C>(o: ControlReaderOptions<C>): Promise<ControlReader<C>> {
    const consumer = o.kafka.consumer({
      groupId: o.groupId,
      readUncommitted: false,
      allowAutoTopicCreation: false,
      maxWaitTimeInMs: FETCH_MAX_WAIT_MS, // its stop waits for the fetch in flight
    });
    const reader = new ControlReader<C>(consumer, o);
    await reader.#run();
    return reader;
  }

  /** The value in force: the last accepted record's decoding (undefined: none). */
  get current(): C | undefined {
    return this.#current;
  }

  /** The records refused so far, oldest first. */
  get refusals(): readonly Refusal[] {
    return this.#refusals;
  }

  /** Why the reader stopped working, if it did (a following reader's owner should end). */
  get failure(): unknown {
    return this.#failure;
  }

  /** Stops reading and leaves the group. */
  async stop(): Promise<void> {
    await withTimeout(this.consumer.disconnect().catch(() => {}), 10_000);
  }

  async #run(): Promise<void> {
    const { admin, spec, log } = this.o;
    const ends = new Map<number, number>();
    const partitions = await admin.fetchTopicOffsets(spec.topic);
    if (partitions.length !== 1) {
      // Offsets order the records of one partition only.
      throw new Error(
        `the control topic ${spec.topic} must have one partition, it has ${partitions.length}`,
      );
    }
    for (const p of partitions) {
      if (Number(p.high) > Number(p.low)) ends.set(p.partition, Number(p.high));
    }
    let caughtUp!: () => void;
    let failed!: (err: unknown) => void;
    const ready = new Promise<void>((resolve, reject) => {
      caughtUp = resolve;
      failed = reject;
    });
    if (ends.size === 0) caughtUp(); // empty: nothing to read first
    const consumer = this.consumer;
    consumer.on(consumer.events.END_BATCH_PROCESS, ({ payload }) => {
      const end = ends.get(payload.partition);
      if (end !== undefined && Number(payload.lastOffset) + 1 >= end) {
        ends.delete(payload.partition);
      }
      if (ends.size === 0) caughtUp();
    });
    consumer.on(consumer.events.CRASH, ({ payload }) => {
      if (payload.restart) return;
      this.#failure = payload.error;
      log?.error(
        { err: payload.error, "event.action": "control-reader-failed" },
        `the reader of ${spec.topic} failed`,
      );
      failed(payload.error);
    });
    await consumer.connect();
    await subscribeWhenKnown(consumer, [spec.topic], { fromBeginning: true });
    await consumer.run({
      autoCommit: false,
      // deno-lint-ignore require-await
      eachBatch: async ({ batch }) => {
        for (const m of batch.messages) {
          const offset = Number(m.offset);
          if (offset < this.#next) continue; // decoded before a restart of the consumer
          this.#next = offset + 1;
          if (m.key?.toString() !== spec.key) continue;
          this.#apply(m.value === null ? null : m.value.toString(), offset);
        }
      },
    });
    const timeoutMs = this.o.timeoutMs ?? 30_000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new Error(
              `could not read the control topic ${spec.topic} to its end within ${
                timeoutMs / 1000
              } s`,
            ),
          ),
        timeoutMs,
      );
    });
    try {
      await Promise.race([ready, late]);
      this.#caughtUp = true;
    } catch (err) {
      await this.stop();
      throw err;
    } finally {
      clearTimeout(timer);
    }
    if (!this.o.follow) await this.stop();
  }

  #apply(value: string | null, offset: number): void {
    try {
      this.#current = this.o.spec.decode(value, offset, this.#current);
      if (this.#caughtUp) {
        this.o.log?.info(
          {
            "event.action": "control-updated",
            "txpipe.control_topic": this.o.spec.topic,
            "txpipe.control_offset": offset,
          },
          `${this.o.spec.topic}@${offset} (key ${this.o.spec.key}) accepted: each partition ` +
            "takes it at its next batch",
        );
      }
    } catch (err) {
      const reason = (err as Error)?.message ?? String(err);
      this.#refusals.push({ offset, reason });
      this.o.log?.error(
        {
          "event.action": "control-refused",
          "txpipe.control_topic": this.o.spec.topic,
          "txpipe.control_offset": offset,
        },
        `${this.o.spec.topic}@${offset} (key ${this.o.spec.key}) refused: ${reason}; ` +
          "what was in force stays in force",
      );
    }
  }
}
