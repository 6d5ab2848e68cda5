/**
 * The pure step of a stream job: one batch of one source partition through a
 * {@link StreamProcessor}. Records and the partition's state go in; the
 * outputs, the dead letters and the state changes come out. No Kafka, no
 * clock, no metrics: the runtime (stream.ts) wraps what comes out in the
 * batch's transaction, and the test driver (test_driver.ts) in memory, so a
 * processor behaves the same under both.
 *
 * The order is the runtime's: `beginBatch`, then for each record `parse` and
 * `process` (or a dead letter with the parse step's reason), then
 * `endBatch`. The changes are the keys the batch put or deleted, with their
 * values after the batch (null: deleted), taken from the state: a batch that
 * is not committed must not be applied again to the same state object (the
 * runtime restores it from the changelog instead).
 *
 * @module
 */
import { DLQ_HEADERS, type OutputRecord, type PartitionState } from "./stream.ts";
import type { ProcessContext, SourceRecord, StreamProcessor } from "./stream.ts";

/** A record the parse step rejected, as it goes to the dead-letter topic. */
export interface DeadLetter {
  /** The source record, unchanged. */
  readonly source: SourceRecord;
  /** A short, stable reason code (e.g. `malformed_json`). */
  readonly reason: string;
  /** A human message (at most 1 000 characters). */
  readonly message: string;
  /** The dead letter's headers: reason, message, source topic, partition, offset and job. */
  readonly headers: Readonly<Record<string, string>>;
}

/** What a batch produced. */
export interface BatchOutcome<S> {
  readonly outputs: OutputRecord[];
  readonly deadLetters: DeadLetter[];
  /** The state's changed keys and their values after the batch (null = deleted). */
  readonly changes: Array<[string, S | null]>;
}

/** Runs `records` (one partition's, in offset order) through `processor` over `state`. */
export function processBatch<T, S>(
  processor: StreamProcessor<T, S>,
  partition: number,
  state: PartitionState<S>,
  records: readonly SourceRecord[],
): BatchOutcome<S> {
  const outputs: OutputRecord[] = [];
  const deadLetters: DeadLetter[] = [];
  const ctx: ProcessContext<S> = {
    partition,
    state,
    emit: (r) => outputs.push(r),
    deadLetter: (source, reason, message) => {
      const text = message.slice(0, 1000);
      deadLetters.push({
        source,
        reason,
        message: text,
        headers: {
          [DLQ_HEADERS.reason]: reason,
          [DLQ_HEADERS.message]: text,
          [DLQ_HEADERS.topic]: source.topic,
          [DLQ_HEADERS.partition]: String(source.partition),
          [DLQ_HEADERS.offset]: source.offset,
          [DLQ_HEADERS.job]: processor.name,
        },
      });
    },
  };
  processor.beginBatch?.(ctx);
  for (const record of records) {
    const parsed = processor.parse(record);
    if (parsed.ok) processor.process(parsed.value, record, ctx);
    else ctx.deadLetter(record, parsed.reason, parsed.message);
  }
  processor.endBatch?.(ctx);
  return { outputs, deadLetters, changes: state.takeChanges() };
}
