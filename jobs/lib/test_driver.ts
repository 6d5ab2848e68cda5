/**
 * A test driver for stream processors, what TopologyTestDriver is to Kafka
 * Streams: a topology of {@link StreamProcessor}s runs in memory, batch by
 * batch as the runtime runs it, in milliseconds. Tests feed records into
 * topics, run, and read the outputs, the dead letters and the state; they can
 * crash the processors (state restored from the changelog, processing resumed
 * from the last commit) and fail batches halfway.
 *
 * What it keeps of the runtime (jobs/lib/stream.ts):
 * - the same pure batch step (processBatch in batch.ts) over each source
 *   partition, in offset order;
 * - a batch commits whole or not at all: its outputs, dead letters, state
 *   changes (the changelog, as JSON, compacted) and its source position;
 * - outputs are partitioned as the jobs' producers partition them: an
 *   explicit partition, else Kafka's default murmur2 hash of the key;
 * - a crash discards the in-memory state; the processor resumes from the
 *   changelog (JSON, so state that does not survive JSON is caught) and from
 *   the position of its last committed batch;
 * - a processor's control topic ({@link StreamProcessor.control}) is a
 *   topic of the driver like any other: a record piped into it is decoded
 *   before the next batch of each partition, which begins with it in force,
 *   as the runtime's control reader does (control.ts); a crash reads it
 *   again from the beginning;
 * - what a processor asks to run after a commit runs after the batch's
 *   commit, with the driver's logger;
 * - an upgrade is a crash with a new version of a processor taking over
 *   (the same group): it restores the changelog the old version wrote,
 *   through its named stores (stores.ts), and resumes after the old
 *   version's last committed batch.
 *
 * What it leaves to the real-cluster tests: Kafka itself (transactions,
 * fencing, rebalances, kill -9), which the driver does not simulate.
 *
 * Batch sizes are the caller's choice (a number, or a function for random
 * sizes, per processor and partition if need be), since window closing and
 * watermarks depend on where batches end.
 *
 * @module
 */
import { PARTITIONER, partitionMetadata } from "./kafka.ts";
import { PartitionState, type SourceRecord, type StreamProcessor } from "./stream.ts";
import { collectBatch, type DeadLetter, processBatch } from "./batch.ts";
import { storeLayout } from "./stores.ts";
import { createLogger, type Logger } from "./log.ts";

/** A record in one of the driver's topics. */
export interface DriverRecord {
  readonly topic: string;
  readonly partition: number;
  readonly offset: number;
  readonly key: string | null;
  readonly value: Uint8Array | null;
  readonly headers: Readonly<Record<string, string>>;
}

/** A record to feed: the partition is the key's (murmur2) unless given. */
export interface InputRecord {
  readonly key?: string | null;
  readonly value: Uint8Array | string | null;
  readonly headers?: Readonly<Record<string, string>>;
  readonly partition?: number;
}

/** Options of {@link TestDriver}. */
export interface DriverOptions {
  /** Every topic and its partition count (sources, outputs, the dead-letter topic). */
  readonly topics: Readonly<Record<string, number>>;
  // deno-lint-ignore no-explicit-any
  readonly processors: ReadonlyArray<StreamProcessor<any, any>>;
  /** Where dead letters go (default `dead_letters`; it need not be listed in `topics`). */
  readonly deadLetterTopic?: string;
  /** The processors' logger (after-commit steps, refused control records); default: silent. */
  readonly logger?: Logger;
}

/** A control record the driver refused for a processor (its decode threw). */
export interface ControlRefusal {
  readonly groupId: string;
  readonly offset: number;
  readonly reason: string;
}

/** The batch about to run, as {@link RunOptions}' functions see it. */
export interface BatchInfo {
  /** The processor's name and group id (two processors of a job may share a name). */
  readonly name: string;
  readonly groupId: string;
  readonly partition: number;
}

/** Options of {@link TestDriver.run}. */
export interface RunOptions {
  /** Records per batch (default 500), or a function giving each batch's size. */
  readonly batchSize?: number | ((batch: BatchInfo) => number);
  /**
   * Called before each batch: true makes it fail halfway first: it begins,
   * processes half its records, then throws (no `endBatch`), and nothing of
   * it commits; then it runs again, whole.
   */
  readonly failBatch?: (batch: BatchInfo) => boolean;
  /** Stop after this many batches (e.g. to crash in the middle of a run). */
  readonly maxBatches?: number;
}

// deno-lint-ignore no-explicit-any
type AnyProcessor = StreamProcessor<any, any>;

interface ProcessorRun {
  processor: AnyProcessor;
  // deno-lint-ignore no-explicit-any
  states: Array<PartitionState<any>>;
  /** Next source offset per partition: the committed position. */
  readonly positions: number[];
  /** The changelog per partition, compacted: key → JSON value. */
  readonly changelog: Array<Map<string, string>>;
  /** The processor's control value in force, and the control topic's next offset to decode. */
  control: { value: unknown; next: number };
}

const utf8 = new TextEncoder();
const text = new TextDecoder();

/** The in-memory topology; see the module documentation. */
export class TestDriver {
  readonly #topics = new Map<string, DriverRecord[][]>();
  readonly #runs: ProcessorRun[];
  readonly #deadLetterTopic: string;
  readonly #deadLetters: DeadLetter[] = [];
  readonly #partitioner = PARTITIONER();
  readonly #roundRobin = new Map<string, number>();
  readonly #log: Logger;
  readonly #refusals: ControlRefusal[] = [];
  #batches = 0;

  constructor(o: DriverOptions) {
    this.#log = o.logger ?? createLogger("test-driver", { level: "silent", format: "ecs" });
    this.#deadLetterTopic = o.deadLetterTopic ?? "dead_letters";
    for (const [topic, partitions] of Object.entries(o.topics)) this.#addTopic(topic, partitions);
    if (!this.#topics.has(this.#deadLetterTopic)) this.#addTopic(this.#deadLetterTopic, 1);
    this.#runs = o.processors.map((processor) => {
      const n = this.#partitionsOf(processor.source, `${processor.name}'s source`);
      if (processor.changelog !== undefined && !this.#topics.has(processor.changelog)) {
        this.#addTopic(processor.changelog, n);
      }
      if (processor.control !== undefined && !this.#topics.has(processor.control.topic)) {
        this.#addTopic(processor.control.topic, 1);
      }
      return {
        processor,
        states: Array.from({ length: n }, () => new PartitionState()),
        positions: new Array<number>(n).fill(0),
        changelog: Array.from({ length: n }, () => new Map<string, string>()),
        control: { value: undefined, next: 0 },
      };
    });
  }

  /** Appends records to `topic`, as a producer would. */
  pipe(topic: string, records: readonly InputRecord[]): void {
    for (const r of records) {
      const value = typeof r.value === "string" ? utf8.encode(r.value) : r.value;
      this.#append(topic, r.key ?? null, value, r.headers ?? {}, r.partition);
    }
  }

  /**
   * Runs every processor until none has unread records: processors in the
   * order given, each over its source partitions in turn, one batch at a
   * time, so a downstream processor reads what an upstream one wrote
   * (or until `maxBatches`). Returns the number of batches committed.
   */
  run(o: RunOptions = {}): number {
    const batchSize = o.batchSize ?? 500;
    const size = typeof batchSize === "function" ? batchSize : () => batchSize;
    const before = this.#batches;
    const limit = before + (o.maxBatches ?? Infinity);
    for (let progress = true; progress;) {
      progress = false;
      for (const run of this.#runs) {
        const log = this.#topics.get(run.processor.source)!;
        for (let p = 0; p < log.length; p++) {
          const from = run.positions[p];
          if (this.#batches >= limit) return this.#batches - before;
          if (from >= log[p].length) continue;
          const info = { name: run.processor.name, groupId: run.processor.groupId, partition: p };
          const n = Math.max(1, Math.floor(size(info)));
          const batch = log[p].slice(from, from + n).map(sourceRecord);
          if (o.failBatch?.(info)) this.#failHalfway(run, p, batch);
          this.#commit(run, p, batch);
          progress = true;
        }
      }
    }
    return this.#batches - before;
  }

  /**
   * Crashes the processors (those named, or all): their in-memory state is
   * dropped and restored from their changelogs; they resume after their
   * last committed batch.
   */
  crash(...names: string[]): void {
    for (const run of this.#runs) {
      if (names.length > 0 && !names.includes(run.processor.name)) continue;
      run.states = run.changelog.map(restored);
      run.control = { value: undefined, next: 0 }; // read again from the beginning
    }
  }

  /**
   * Deploys new versions of processors: each takes over from the processor
   * of the same group id, as after a crash (state restored from the
   * changelog the old version wrote, processing resumed after its last
   * committed batch). Same source and changelog required.
   */
  // deno-lint-ignore no-explicit-any
  upgrade(...processors: ReadonlyArray<StreamProcessor<any, any>>): void {
    for (const processor of processors) {
      const run = this.#runs.find((r) => r.processor.groupId === processor.groupId);
      if (!run) throw new Error(`no processor of group ${processor.groupId} to upgrade`);
      if (run.processor.source !== processor.source) {
        throw new Error(`${processor.groupId}: the new version reads another source`);
      }
      if (run.processor.changelog !== processor.changelog) {
        throw new Error(`${processor.groupId}: the new version has another changelog`);
      }
      run.processor = processor;
      run.states = run.changelog.map(restored);
      run.control = { value: undefined, next: 0 };
    }
  }

  /** The records of `topic`, partition by partition, in offset order. */
  read(topic: string): DriverRecord[] {
    const log = this.#topics.get(topic);
    if (!log) {
      throw new Error(`unknown topic ${topic}: expected one of ${[...this.#topics.keys()]}`);
    }
    return log.flat();
  }

  /** The JSON values of `topic`'s records, partition by partition, in offset order. */
  readValues<V = unknown>(topic: string): V[] {
    return this.read(topic).map((r) => JSON.parse(text.decode(r.value!)) as V);
  }

  /** Every dead letter so far, in the order they were committed. */
  deadLetters(): readonly DeadLetter[] {
    return this.#deadLetters;
  }

  /**
   * The state of processor `name` (a name or a group id) on `partition`, as
   * the changelog holds it: changelog keys (store prefixes included) to values.
   */
  state<S = unknown>(name: string, partition: number): ReadonlyMap<string, S> {
    return new Map(this.#run(name).states[partition].entries()) as Map<string, S>;
  }

  /**
   * Store `store` of processor `name` (a name or a group id) on `partition`
   * (after a restore, the entries an older version wrote are first rewritten
   * into the stores, as the next batch would).
   */
  store<V = unknown>(name: string, partition: number, store: string): ReadonlyMap<string, V> {
    const run = this.#run(name);
    const layout = storeLayout(run.processor);
    layout.migrate(run.states[partition]);
    const view = layout.view(run.states[partition], store);
    return new Map(view.entries()) as Map<string, V>;
  }

  /** The changelog of processor `name` (a name or a group id) on `partition`: key → JSON value. */
  changelog(name: string, partition: number): ReadonlyMap<string, string> {
    return new Map(this.#run(name).changelog[partition]);
  }

  /** Batches committed so far. */
  get batches(): number {
    return this.#batches;
  }

  /** The control records refused so far (each processor decodes its control topic itself). */
  controlRefusals(): readonly ControlRefusal[] {
    return this.#refusals;
  }

  /** The control value in force for processor `name` (a name or a group id) now. */
  control<C = unknown>(name: string): C | undefined {
    const run = this.#run(name);
    this.#readControl(run);
    return run.control.value as C | undefined;
  }

  /** Decodes the records of the run's control key not decoded yet, in offset order. */
  #readControl(run: ProcessorRun): void {
    const spec = run.processor.control;
    if (spec === undefined) return;
    const log = this.#topics.get(spec.topic)![0];
    for (; run.control.next < log.length; run.control.next++) {
      const r = log[run.control.next];
      if (r.key !== spec.key) continue;
      try {
        run.control.value = spec.decode(
          r.value === null ? null : text.decode(r.value),
          r.offset,
          run.control.value,
        );
      } catch (err) {
        const reason = (err as Error).message;
        this.#refusals.push({ groupId: run.processor.groupId, offset: r.offset, reason });
        this.#log.error({ "event.action": "control-refused" }, reason);
      }
    }
  }

  #run(name: string): ProcessorRun {
    const byGroup = this.#runs.find((r) => r.processor.groupId === name);
    if (byGroup) return byGroup;
    const byName = this.#runs.filter((r) => r.processor.name === name);
    if (byName.length === 1) return byName[0];
    if (byName.length === 0) throw new Error(`unknown processor ${name}`);
    throw new Error(`${byName.length} processors named ${name}: give a group id`);
  }

  #addTopic(topic: string, partitions: number): void {
    this.#topics.set(topic, Array.from({ length: partitions }, () => []));
  }

  #partitionsOf(topic: string, what: string): number {
    const log = this.#topics.get(topic);
    if (!log) throw new Error(`${what} ${topic} is not among the driver's topics`);
    return log.length;
  }

  #append(
    topic: string,
    key: string | null,
    value: Uint8Array | null,
    headers: Readonly<Record<string, string>>,
    partition?: number,
  ): void {
    const log = this.#topics.get(topic);
    if (!log) {
      throw new Error(`unknown topic ${topic}: expected one of ${[...this.#topics.keys()]}`);
    }
    const p = partition ?? this.#partitionOf(topic, key, log.length);
    if (!(p >= 0 && p < log.length)) {
      throw new Error(`${topic} has ${log.length} partitions, given partition ${p}`);
    }
    log[p].push({ topic, partition: p, offset: log[p].length, key, value, headers });
  }

  #partitionOf(topic: string, key: string | null, partitions: number): number {
    if (key === null) {
      const next = this.#roundRobin.get(topic) ?? 0;
      this.#roundRobin.set(topic, next + 1);
      return next % partitions;
    }
    return this.#partitioner({
      topic,
      partitionMetadata: partitionMetadata(partitions),
      message: { key, value: null },
    });
  }

  /**
   * A failed attempt, on a state restored from the changelog: the batch
   * begins, half its records are processed, then it throws before the rest
   * and before `endBatch`; all of it is dropped.
   */
  #failHalfway(run: ProcessorRun, partition: number, batch: SourceRecord[]): void {
    const half = Math.ceil(batch.length / 2);
    let taken = 0;
    const failure = new Error("failed halfway");
    const failing: AnyProcessor = {
      ...run.processor,
      endBatch: () => {
        throw failure;
      },
    };
    this.#readControl(run);
    try {
      processBatch(
        failing,
        partition,
        restored(run.changelog[partition]),
        batch,
        (r) => {
          if (taken++ === half) throw failure;
          return r;
        },
        { output: () => {}, deadLetter: () => {}, afterCommit: () => {} },
        {
          firstOffset: batch[0].offset,
          control: run.control.value,
        },
      );
    } catch (err) {
      if (err !== failure) throw err;
    }
  }

  #commit(run: ProcessorRun, partition: number, batch: SourceRecord[]): void {
    this.#readControl(run);
    const out = collectBatch(
      run.processor,
      partition,
      run.states[partition],
      batch,
      run.control.value,
    );
    for (const r of out.outputs) {
      this.#append(
        r.topic,
        r.key,
        r.value === null ? null : utf8.encode(r.value),
        r.headers ?? {},
        r.partition,
      );
    }
    for (const d of out.deadLetters) {
      this.#append(this.#deadLetterTopic, d.source.key, d.source.value, d.headers);
      this.#deadLetters.push(d);
    }
    const changelog = run.changelog[partition];
    for (const [key, value] of out.changes) {
      if (value === null) changelog.delete(key);
      else changelog.set(key, JSON.stringify(value));
    }
    run.positions[partition] += batch.length;
    this.#batches++;
    for (const fn of out.afterCommit) fn(this.#log);
  }
}

/** A partition's state restored from its changelog (JSON values). */
function restored(changelog: ReadonlyMap<string, string>): PartitionState {
  const state = new PartitionState();
  for (const [key, json] of changelog) state.restore(key, JSON.parse(json));
  return state;
}

function sourceRecord(r: DriverRecord): SourceRecord {
  return {
    topic: r.topic,
    partition: r.partition,
    offset: String(r.offset),
    key: r.key,
    value: r.value,
    headers: r.headers,
  };
}
