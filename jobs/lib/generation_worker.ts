/**
 * The producer job's records made on a second thread: a Web Worker (this
 * module, loaded as one) runs the seeded generator, writes each record's key
 * and JSON value into one buffer per batch and picks its partition, and hands
 * the batch back with its buffers transferred, not copied. The send loop's
 * thread is left with sending: generation and JSON encoding took 38 % of its
 * busy time (profiled, 300 k records), on one core of two.
 *
 * The records are the generator's own, in its order: batch after batch, the
 * worker takes the next records of one `TransactionGenerator` (`next()`, the
 * unthrottled arrivals; a paced run generates in the send loop, its event
 * time following the clock). {@link GenerationWorker} asks for the next batch
 * as soon as it hands one out, so that it is ready when the send loop wants
 * it; what it made but nobody took was never sent (as records a generator did
 * not make yet).
 *
 * An error in the worker rejects the batch asked for with one
 * {@link GenerationError} (the worker reports it instead of throwing, so the
 * runtime does not print it a second time); {@link GenerationWorker.close}
 * ends the worker, and it ends with the process.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { partitionOf } from "./partitioner.ts";
import type { Message } from "kafkajs";
import {
  FRAUD_INSTANCE_HEADER,
  FRAUD_PATTERN_HEADER,
  type FraudPattern,
  generatedJson,
  type GeneratedRecord,
  type GeneratorOptions,
  HARD_NEGATIVE_HEADER,
  HARD_NEGATIVE_INSTANCE_HEADER,
  type HardNegativeKind,
  TransactionGenerator,
} from "./generator.ts";

/** Where records go: the topic and its partition count (for the partitioner). */
export interface Destination {
  topic: string;
  partitions: number;
}

/** Records of one batch, in generator order, as bytes. */
export interface EncodedBatch {
  count: number;
  /** The keys, one after the other; key i ends at `keyEnds[i]`. */
  keys: Uint8Array;
  keyEnds: Uint32Array;
  /** The JSON values, likewise. */
  values: Uint8Array;
  valueEnds: Uint32Array;
  /** Each record's partition, as the producer's partitioner picks it from the key. */
  partitions: Int32Array;
  /** The fraud labels of the labelled records (by index). */
  labels: Array<{ index: number; pattern: FraudPattern; instanceId: string }>;
  /** The hard-negative labels of the records that have one (by index). */
  hardNegatives: Array<{ index: number; kind: HardNegativeKind; instanceId: string }>;
}

/**
 * Record keys (user ids) as bytes, with their partition, made once per user:
 * otherwise every record's string key is encoded twice (by the partitioner's
 * murmur2 and by the record encoder) and hashed, for 12 % of the producer's
 * busy time. The partition is the one the delivery's router would pick (the
 * same partitioner, Kafka's default, over the topic's partitions). Users are
 * looked up by their index in the generator's population (a Map lookup by
 * the key string cost 7 % of the generation worker's time).
 */
export class KeyRouting {
  readonly #byUser: Array<{ key: Buffer; partition: number } | undefined> = [];
  readonly #partitions: number;
  readonly #max: number;

  constructor({ partitions }: Destination, max = 500_000) {
    this.#partitions = partitions;
    this.#max = max;
  }

  /** The key's bytes and partition; `user` is the key's index in the population. */
  of(key: string, user: number): { key: Buffer; partition: number } {
    let r = this.#byUser[user];
    if (r === undefined) {
      const bytes = Buffer.from(key);
      r = { key: bytes, partition: partitionOf(bytes, this.#partitions) };
      if (user < this.#max) this.#byUser[user] = r;
    }
    return r;
  }
}

const utf8 = new TextEncoder();

/**
 * `records` as an {@link EncodedBatch}: keys and JSON values written straight
 * into one buffer each (no buffer per record, no copying them together).
 */
export function encodeBatch(records: readonly GeneratedRecord[], keys: KeyRouting): EncodedBatch {
  const n = records.length;
  const partitions = new Int32Array(n);
  const keyEnds = new Uint32Array(n);
  const valueEnds = new Uint32Array(n);
  const labels: EncodedBatch["labels"] = [];
  const hardNegatives: EncodedBatch["hardNegatives"] = [];
  const routes = new Array<{ key: Buffer; partition: number }>(n);
  let keyBytes = 0;
  for (let i = 0; i < n; i++) {
    const record = records[i];
    const route = keys.of(record.key, record.user);
    routes[i] = route;
    partitions[i] = route.partition;
    keyBytes += route.key.byteLength;
    keyEnds[i] = keyBytes;
    if (record.label) labels.push({ index: i, ...record.label });
    else if (record.hardNegative) hardNegatives.push({ index: i, ...record.hardNegative });
  }
  const keyBuf = new Uint8Array(keyBytes);
  for (let i = 0; i < n; i++) keyBuf.set(routes[i].key, i === 0 ? 0 : keyEnds[i - 1]);
  let values = new Uint8Array(Math.max(1024, n * 320));
  let at = 0;
  for (let i = 0; i < n; i++) {
    const json = generatedJson(records[i].tx);
    // UTF-8 takes at most 3 bytes per UTF-16 unit: grow until it surely fits.
    if (values.length - at < json.length * 3) {
      const grown = new Uint8Array(Math.max(values.length * 2, at + json.length * 3));
      grown.set(values.subarray(0, at));
      values = grown;
    }
    at += utf8.encodeInto(json, values.subarray(at)).written;
    valueEnds[i] = at;
  }
  return {
    count: n,
    keys: keyBuf,
    keyEnds,
    values: values.subarray(0, at),
    valueEnds,
    partitions,
    labels,
    hardNegatives,
  };
}

/** kafkajs messages of a batch (views of its buffers), and their value bytes. */
export function batchMessages(batch: EncodedBatch): { messages: Message[]; bytes: number } {
  const messages: Message[] = new Array(batch.count);
  const { keys, values, keyEnds, valueEnds, partitions } = batch;
  let keyAt = 0;
  let valueAt = 0;
  for (let i = 0; i < batch.count; i++) {
    messages[i] = {
      key: Buffer.from(keys.buffer, keys.byteOffset + keyAt, keyEnds[i] - keyAt),
      value: Buffer.from(values.buffer, values.byteOffset + valueAt, valueEnds[i] - valueAt),
      partition: partitions[i],
    };
    keyAt = keyEnds[i];
    valueAt = valueEnds[i];
  }
  for (const { index, pattern, instanceId } of batch.labels) {
    messages[index].headers = {
      [FRAUD_PATTERN_HEADER]: pattern,
      [FRAUD_INSTANCE_HEADER]: instanceId,
    };
  }
  for (const { index, kind, instanceId } of batch.hardNegatives) {
    messages[index].headers = {
      [HARD_NEGATIVE_HEADER]: kind,
      [HARD_NEGATIVE_INSTANCE_HEADER]: instanceId,
    };
  }
  return { messages, bytes: batch.count > 0 ? valueEnds[batch.count - 1] : 0 };
}

/** The worker failed: its error, as one message (its stack, the worker's, for the logs). */
export class GenerationError extends Error {
  constructor(message: string, stack?: string) {
    super(`the generation worker failed: ${message}`);
    this.name = "GenerationError";
    if (stack) this.stack = `${this.name}: ${this.message}\n${stack}`;
  }
}

type ToWorker =
  | { start: { generator: GeneratorOptions; destination: Destination } }
  | { take: number };
type FromWorker = { batch: EncodedBatch } | { error: string; stack?: string };

/**
 * The send loop's side of the worker: {@link take} resolves with the next
 * `size` records (fewer only when asked for fewer), made one batch ahead.
 */
export class GenerationWorker {
  readonly #worker: Worker;
  readonly #size: number;
  /** Batches asked for, oldest first: each resolves with the worker's answer. */
  readonly #waiting: Array<{ resolve: (b: EncodedBatch) => void; reject: (e: Error) => void }> = [];
  #ahead: Promise<EncodedBatch> | undefined;
  #failure: GenerationError | undefined;
  /** Records of the batch being handed out in parts (a `take` smaller than the batch). */
  #rest: EncodedBatch | undefined;

  constructor(generator: GeneratorOptions, destination: Destination, size: number) {
    this.#size = size;
    this.#worker = new Worker(import.meta.url, { type: "module" });
    this.#worker.onmessage = (e: MessageEvent<FromWorker>) => {
      const waiter = this.#waiting.shift();
      if ("error" in e.data) this.#fail(e.data.error, waiter, e.data.stack);
      else waiter?.resolve(e.data.batch);
    };
    // A worker that cannot even load (its own errors are reported as messages).
    this.#worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      this.#fail(e.message, this.#waiting.shift());
    };
    this.#post({ start: { generator, destination } });
  }

  /** The next `n` records (n ≤ the batch size). */
  async take(n: number): Promise<EncodedBatch> {
    if (this.#failure) throw this.#failure;
    const batch = this.#rest ?? await (this.#ahead ?? this.#ask());
    this.#rest = undefined;
    this.#ahead = undefined;
    if (n < batch.count) {
      this.#rest = slice(batch, n, batch.count); // handed out first next time
      return slice(batch, 0, n);
    }
    this.#ahead = this.#ask(); // the next batch is made while this one is sent
    return batch;
  }

  /** Ends the worker. */
  close(): void {
    this.#worker.terminate();
    this.#fail("closed", undefined);
  }

  #ask(): Promise<EncodedBatch> {
    const p = new Promise<EncodedBatch>((resolve, reject) => {
      this.#waiting.push({ resolve, reject });
    });
    p.catch(() => {}); // rejected only with #failure, which take() throws
    this.#post({ take: this.#size });
    return p;
  }

  #post(m: ToWorker): void {
    this.#worker.postMessage(m);
  }

  #fail(
    message: string,
    waiter: { reject: (e: Error) => void } | undefined,
    stack?: string,
  ): void {
    this.#failure ??= new GenerationError(message, stack);
    waiter?.reject(this.#failure);
    for (const w of this.#waiting.splice(0)) w.reject(this.#failure);
  }
}

/** Records `from` to `to` of a batch, as a batch (views, no copies). */
function slice(b: EncodedBatch, from: number, to: number): EncodedBatch {
  const keyStart = from === 0 ? 0 : b.keyEnds[from - 1];
  const valueStart = from === 0 ? 0 : b.valueEnds[from - 1];
  return {
    count: to - from,
    keys: b.keys.subarray(keyStart),
    keyEnds: b.keyEnds.subarray(from, to).map((e) => e - keyStart),
    values: b.values.subarray(valueStart),
    valueEnds: b.valueEnds.subarray(from, to).map((e) => e - valueStart),
    partitions: b.partitions.subarray(from, to),
    labels: b.labels.filter((l) => l.index >= from && l.index < to)
      .map((l) => ({ ...l, index: l.index - from })),
    hardNegatives: b.hardNegatives.filter((l) => l.index >= from && l.index < to)
      .map((l) => ({ ...l, index: l.index - from })),
  };
}

/** The worker: makes batches when asked, reports its errors as messages. */
function serve(scope: {
  onmessage: ((e: MessageEvent<ToWorker>) => void) | null;
  postMessage(m: FromWorker, transfer: Transferable[]): void;
}): void {
  let generator: TransactionGenerator | undefined;
  let keys: KeyRouting | undefined;
  scope.onmessage = (e) => {
    try {
      if ("start" in e.data) {
        generator = new TransactionGenerator(e.data.start.generator);
        keys = new KeyRouting(e.data.start.destination);
        return;
      }
      const batch = encodeBatch(generator!.take(e.data.take), keys!);
      const { keys: k, keyEnds, values, valueEnds, partitions } = batch;
      const buffers = [k, keyEnds, values, valueEnds, partitions].map((a) => a.buffer);
      scope.postMessage({ batch }, buffers as ArrayBuffer[]);
    } catch (err) {
      scope.postMessage({ error: String(err), stack: (err as Error)?.stack }, []);
    }
  };
}

if (import.meta.main && "WorkerGlobalScope" in globalThis) {
  serve(self as unknown as Parameters<typeof serve>[0]);
}
