/**
 * The pure step of a stream job: one batch of one source partition through a
 * {@link StreamProcessor}. Records and the partition's state go in; the
 * outputs, the dead letters and the state changes come out. No Kafka, no
 * clock, no metrics: the runtime (stream.ts) wraps what comes out in the
 * batch's transaction, and the test driver (test_driver.ts) in memory, so a
 * processor behaves the same under both.
 *
 * The order: `beginBatch`, then for each record `parse` and `process` (or a
 * dead letter with the parse step's reason), then `endBatch`. The processor
 * sees the state through its named stores (stores.ts); the first batch after
 * a restore first rewrites the entries of older versions into them. The changes
 * are the keys the batch put or deleted, with their values after the batch
 * (null: deleted), kept by the state until taken for the commit: a batch
 * that is not committed must not be applied again to the same state object
 * (the runtime restores it from the changelog instead).
 *
 * @module
 */
import type { Logger } from "./log.ts";
import { DLQ_HEADERS, type OutputRecord, type PartitionState } from "./stream.ts";
import type { ProcessContext, SourceRecord, StreamProcessor } from "./stream.ts";
import { storeLayout } from "./stores.ts";

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

/** Where a batch's outputs and dead letters go as the processor makes them. */
export interface BatchSink {
  output(record: OutputRecord): void;
  /** A rejected record; its source's value may be a view of fetched bytes: copy what you keep. */
  deadLetter(letter: DeadLetter): void;
  /** What the processor asks to run once the batch has committed (dropped when absent). */
  afterCommit?(fn: (log: Logger) => void): void;
}

/** Where a batch starts: its first source offset and the control value in force. */
export interface BatchStart {
  readonly firstOffset: string;
  /** The processor's control value when the batch began (see ControlSpec in stream.ts). */
  readonly control?: unknown;
}

/**
 * The context `processor` runs in on `partition`, for the batch that begins
 * at `start`: its stores over `state`, and `sink` for outputs and dead
 * letters. Entries an older version wrote are rewritten into the stores
 * first (once per state object, stores.ts).
 */
export function batchContext<T, S, C>(
  processor: StreamProcessor<T, S, C>,
  partition: number,
  state: PartitionState,
  sink: BatchSink,
  start: BatchStart = { firstOffset: "-1" },
): ProcessContext<S, C> {
  const layout = storeLayout(processor);
  layout.migrate(state);
  return {
    partition,
    firstOffset: start.firstOffset,
    control: start.control as C | undefined,
    store: (name) => layout.view(state, name),
    emit: (r) => sink.output(r),
    afterCommit: (fn) => sink.afterCommit?.(fn),
    deadLetter: (source, reason, message) => {
      const text = message.slice(0, 1000);
      sink.deadLetter({
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
}

/**
 * One batch of one partition in parts, as the runtime runs it when a batch
 * gathers several fetches: `begin` (`beginBatch`), `records` once per
 * fetched slice (each record's `parse` and `process`, or a dead letter),
 * `end` (`endBatch`). The same calls, in the same order, as
 * {@link processBatch} over the slices joined.
 */
export interface BatchStep<R> {
  begin(): void;
  records(records: readonly R[]): void;
  end(): void;
}

/**
 * A {@link BatchStep} of `processor` over `state` for `partition`, the batch
 * beginning at `start`: `toRecord` gives each record as the processor sees
 * it; outputs and dead letters go to `sink` as they come.
 */
export function batchStep<T, S, R, C = unknown>(
  processor: StreamProcessor<T, S, C>,
  partition: number,
  state: PartitionState,
  toRecord: (r: R) => SourceRecord,
  sink: BatchSink,
  start?: BatchStart,
): BatchStep<R> {
  const ctx = batchContext(processor, partition, state, sink, start);
  return {
    begin: () => processor.beginBatch?.(ctx),
    records: (records) => {
      for (let i = 0; i < records.length; i++) {
        const record = toRecord(records[i]);
        const parsed = processor.parse(record);
        if (parsed.ok) processor.process(parsed.value, record, ctx);
        else ctx.deadLetter(record, parsed.reason, parsed.message);
      }
    },
    end: () => processor.endBatch?.(ctx),
  };
}

/**
 * Runs `records` (one partition's, in offset order; `toRecord` gives each
 * as the processor sees it) through `processor` over `state`, handing the
 * outputs and dead letters to `sink` as they come. The state's changes stay
 * in `state` (`takeChanges`) for the caller's commit.
 */
export function processBatch<T, S, R, C = unknown>(
  processor: StreamProcessor<T, S, C>,
  partition: number,
  state: PartitionState,
  records: readonly R[],
  toRecord: (r: R) => SourceRecord,
  sink: BatchSink,
  start?: BatchStart,
): void {
  const step = batchStep(processor, partition, state, toRecord, sink, start);
  step.begin();
  step.records(records);
  step.end();
}

/** What a batch produced, gathered ({@link collectBatch}). */
export interface BatchOutcome {
  readonly outputs: OutputRecord[];
  readonly deadLetters: DeadLetter[];
  /** The state's changed changelog keys and their values after the batch (null = deleted). */
  readonly changes: Array<[string, unknown]>;
  /** What to run once the batch has committed ({@link ProcessContext.afterCommit}). */
  readonly afterCommit: Array<(log: Logger) => void>;
}

/**
 * {@link processBatch} over source records, its outputs, dead letters and
 * state changes gathered; the batch begins at its first record's offset
 * with `control` in force.
 */
export function collectBatch<T, S, C = unknown>(
  processor: StreamProcessor<T, S, C>,
  partition: number,
  state: PartitionState,
  records: readonly SourceRecord[],
  control?: C,
): BatchOutcome {
  const outputs: OutputRecord[] = [];
  const deadLetters: DeadLetter[] = [];
  const afterCommit: Array<(log: Logger) => void> = [];
  processBatch(processor, partition, state, records, (r) => r, {
    output: (r) => outputs.push(r),
    deadLetter: (d) => deadLetters.push(d),
    afterCommit: (fn) => afterCommit.push(fn),
  }, { firstOffset: records[0]?.offset ?? "-1", control });
  return { outputs, deadLetters, changes: state.takeChanges(), afterCommit };
}
