/**
 * Reading a compacted control topic (stream.ts's {@link ControlSpec}): the
 * records of one key, decoded in offset order, each given the value in
 * force before it, so the value in force is the same for every reader that
 * read the same records. A refused record is logged and skipped.
 *
 * Why a reader of its own, not a fetch per batch: the control topic
 * changes rarely, and a batch must not wait for a round trip to learn that
 * nothing changed. The reader reads the topic from its beginning to the end
 * offsets it had at the start before the job's first batch (so a fresh
 * instance begins with the published value, not with its own), then, when
 * following, keeps reading in the background; a batch takes the latest
 * value in memory. It is `read_committed` (the publisher writes in
 * transactions) and never commits an offset.
 *
 * It reads the one partition with no consumer group
 * (partition_reader.ts): a new group's first join would wait out the
 * broker's `group.initial.rebalance.delay.ms` (3 s by Kafka's default)
 * before the job's first batch, and the reader needs nothing of a group.
 *
 * @module
 */
import type { Admin, Kafka } from "kafkajs";
import type { Logger } from "./log.ts";
import { FETCH_MAX_WAIT_MS, withTimeout } from "./kafka.ts";
import { PartitionReader, readEach, type Reading } from "./partition_reader.ts";
import type { DecodedRecord } from "./fetch_decode.ts";
import type { ControlSpec } from "./stream.ts";

/** Options of {@link ControlReader.start}. */
export interface ControlReaderOptions<C> {
  kafka: Kafka;
  /** Lists the topic's end offsets at the start. */
  admin: Admin;
  spec: ControlSpec<C>;
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
  #reading: Reading | undefined;

  private constructor(
    private readonly reader: PartitionReader,
    private readonly o: ControlReaderOptions<C>,
  ) {}

  /**
   * Starts reading and resolves once the records up to the topic's end
   * offsets at the start are decoded. Throws when that takes longer than
   * `timeoutMs` or the reader fails on the way.
   */
  static async start<C>(o: ControlReaderOptions<C>): Promise<ControlReader<C>> {
    const { admin, spec } = o;
    const partitions = await admin.fetchTopicOffsets(spec.topic);
    if (partitions.length !== 1) {
      // Offsets order the records of one partition only.
      throw new Error(
        `the control topic ${spec.topic} must have one partition, it has ${partitions.length}`,
      );
    }
    const [{ partition, high, low }] = partitions;
    const control = new ControlReader<C>(
      await PartitionReader.open(o.kafka, spec.topic, partition),
      o,
    );
    const timeoutMs = o.timeoutMs ?? 30_000;
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
      // Empty (high = low): nothing to read first.
      if (Number(high) > Number(low)) {
        const end = Number(high);
        await Promise.race([control.#read((r) => r.position < end).done, late]);
      }
      control.#caughtUp = true;
    } catch (err) {
      await control.stop();
      throw err;
    } finally {
      clearTimeout(timer);
    }
    if (o.follow) control.#follow();
    else await control.stop();
    return control;
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

  /** Stops reading. */
  async stop(): Promise<void> {
    await withTimeout(this.#reading?.stop() ?? this.reader.close(), 10_000);
  }

  /** Reads while `more`, decoding every record of the key. */
  #read(more?: (r: PartitionReader) => boolean): Reading {
    this.#reading = readEach([this.reader], {
      maxWaitMs: FETCH_MAX_WAIT_MS,
      more,
      onFetch: (_, records) => this.#decode(records),
    });
    return this.#reading;
  }

  #follow(): void {
    this.#read().done.catch((err) => {
      this.#failure = err;
      this.o.log?.error(
        { err, "event.action": "control-reader-failed" },
        `the reader of ${this.o.spec.topic} failed`,
      );
    });
  }

  #decode(records: readonly DecodedRecord[]): void {
    for (const m of records) {
      if (m.key?.toString() !== this.o.spec.key) continue;
      this.#apply(m.value === null ? null : m.value.toString(), Number(m.offset));
    }
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
