/**
 * Event-time alignment of a stream job's input partitions, as Flink's
 * watermark alignment does for its sources: a partition whose event time is
 * more than `maxDriftMs` ahead of the slowest partition that still has
 * records to read is not fetched until the slowest catches up.
 *
 * Why: a window closes only when every input partition's watermark has
 * passed it. Catching up on a backlog, kafkajs fetches each broker's
 * partitions in turn, so a partition that shares its broker with fewer
 * others runs ahead: over the bench's 1 000 000-record backlog the input
 * partitions' watermarks drifted up to 43 minutes apart, and the windows
 * stage 2 had to keep open grew to 41 000 (docs/benchmarks.md, "Aligned
 * input partitions"). Pausing the partitions ahead bounds both, and changes
 * no output: which window a record falls in, and when a window closes
 * relative to the records, depend only on event times and the lowest
 * watermark, never on the order partitions are read in.
 *
 * A partition counts as slowest only while it has records to read (its last
 * fetch did not reach the end of what is committed): one that has caught up,
 * or has not been fetched yet, holds nobody back. The slowest one itself is
 * never paused, so the set always moves on.
 *
 * This class is the decision alone (no Kafka): the runtime (stream.ts) feeds
 * it each applied fetch and pauses and resumes what it returns.
 *
 * @module
 */

/** What to do after an update: partitions to pause, and to resume. */
export interface AlignmentChange {
  readonly pause: number[];
  readonly resume: number[];
}

interface PartitionProgress {
  /** Highest event time applied; undefined until a record of it was. */
  eventTime: number | undefined;
  /** Its last fetch reached the end of what there is to read. */
  drained: boolean;
}

/** Which of one instance's input partitions to fetch; see the module documentation. */
export class EventTimeAlignment {
  readonly #partitions = new Map<number, PartitionProgress>();
  readonly #paused = new Set<number>();

  /** `maxDriftMs`: how far ahead of the slowest partition a partition may run. */
  constructor(readonly maxDriftMs: number) {}

  /** The partitions paused now. */
  get paused(): ReadonlySet<number> {
    return this.#paused;
  }

  /** After a fetch of `partition` was applied: its event time now, and whether it drained. */
  update(partition: number, eventTime: number | undefined, drained: boolean): AlignmentChange {
    this.#partitions.set(partition, { eventTime, drained });
    return this.#decide();
  }

  /** `partition` left this instance (a rebalance, a failure). */
  remove(partition: number): AlignmentChange {
    this.#partitions.delete(partition);
    const wasPaused = this.#paused.delete(partition);
    const change = this.#decide();
    return wasPaused ? { pause: change.pause, resume: [partition, ...change.resume] } : change;
  }

  /** Forgets everything; returns the partitions that were paused, to resume them. */
  reset(): number[] {
    const paused = [...this.#paused];
    this.#paused.clear();
    this.#partitions.clear();
    return paused;
  }

  #decide(): AlignmentChange {
    let slowest = Infinity;
    for (const p of this.#partitions.values()) {
      if (!p.drained && p.eventTime !== undefined && p.eventTime < slowest) slowest = p.eventTime;
    }
    const pause: number[] = [];
    const resume: number[] = [];
    for (const [partition, p] of this.#partitions) {
      const ahead = p.eventTime !== undefined && p.eventTime > slowest + this.maxDriftMs;
      if (ahead && !this.#paused.has(partition)) {
        this.#paused.add(partition);
        pause.push(partition);
      } else if (!ahead && this.#paused.has(partition)) {
        this.#paused.delete(partition);
        resume.push(partition);
      }
    }
    return { pause, resume };
  }
}
