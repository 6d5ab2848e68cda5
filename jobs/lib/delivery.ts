/**
 * Delivery of the producer job's records through Kafka outages: an
 * idempotent kafkajs producer, retried with backoff for as long as the
 * delivery timeout allows (by default without limit), replaced by a new one
 * when its idempotence state is lost, with the outage reported once when it
 * starts and once when it ends.
 *
 * How a batch goes out: split by partition (one kafkajs send per partition,
 * as sendByPartition in kafka.ts does, for the same reason), each
 * partition's requests in order, each request's records encoded once
 * (record_batch.ts: the same bytes kafkajs would write, reused by every
 * attempt). Several batches may be in flight ({@link Delivery.send} may be
 * called again before the last call resolved): each partition's requests
 * queue behind the same partition's requests of earlier batches, so a
 * partition's next request goes out as soon as its previous one is
 * acknowledged, without waiting for the other partitions (one request per
 * partition at a time: kafkajs's idempotent sequence numbers need it), and
 * once a partition's request fails for good, its later ones (those of later
 * sends too) fail with the same error, unsent (no gap in a partition). A request that fails is sent
 * again, identical, by the same producer:
 *
 * - kafkajs rolls a partition's sequence number back when a request fails,
 *   so the same records go again under the same producer id and sequence
 *   numbers, and a broker that did write them the first time answers with
 *   the original offsets instead of writing them twice. This is what carries
 *   a send through a full outage: kafkajs gives a send up after about 20 s
 *   of refused connections ("Connection error: connect ECONNREFUSED", a
 *   non-retriable error of kafkajs's cluster connect, whatever the
 *   producer's own retry settings), and here it is simply sent again, as
 *   long as it takes. Brokers keep producer ids and sequence numbers in
 *   their logs, across restarts.
 * - A produce request that times out (a broker cut off without a reset)
 *   ends its connection, so kafkajs asks another broker for the new leader
 *   (produce_timeout.ts). Without this, kafkajs retried on the frozen
 *   broker until it came back (measured: a 70 s freeze, 70 s without an
 *   acknowledgement; with it, producing again 30 s into a 150 s freeze).
 * - A send kafkajs has not settled within the attempt timeout (60 s) is
 *   revoked: kafkajs refuses to send it again (produce_timeout.ts) and gives
 *   it up at its next retry; the request it may still have on the wire is
 *   awaited (`revokeGraceMs`): acknowledged, it counts; failed, the same
 *   producer sends the records again, with kafkajs's rolled-back sequence
 *   numbers.
 *
 * Only when the producer's idempotence state is lost or unknown is a new
 * producer created (InitProducerId: a new producer id) and the records not
 * acknowledged sent again with it, as the Java client bumps its epoch: the
 * broker answers OUT_OF_ORDER_SEQUENCE_NUMBER, UNKNOWN_PRODUCER_ID or
 * INVALID_PRODUCER_EPOCH, kafkajs's own state is broken (a TypeError from
 * its internals), or a revoked send does not settle (kafkajs stuck). The old
 * producer cannot write revoked records any more, but a request of it that
 * reached a broker unanswered may still be written: its records are then in
 * the topic twice, once per producer id, which idempotence cannot recognise.
 * Such records are counted (`txpipe_produce_resent_records_total`,
 * {@link DeliveryStatus.resent}). Measured: a new producer taking over while a
 * request waited in a leader for its frozen follower wrote those 2 records
 * twice (with an attempt timeout of 8 s, for the experiment); in the outages
 * of tests/produce_outage_test.ts (every broker stopped for 35 s, one broker
 * frozen for 150 s) no new producer was needed.
 *
 * Errors no retry can fix (a record too large, no authorization, an invalid
 * topic) end the batch with that error; so does the delivery timeout, and a
 * stop ({@link Delivery.stop}) once its grace period is over.
 *
 * @module
 */
import { CompressionTypes, logLevel as KafkaLogLevel } from "kafkajs";
import type { logCreator, Message, ProducerBatch, RecordMetadata } from "kafkajs";
import type { Logger } from "./log.ts";
import { type PartitionRouter, requestChunks } from "./kafka.ts";
import { revoke, REVOKED_MESSAGE, wasSent } from "./produce_timeout.ts";
import { type EncodedRecords, encodeRecords, prepare } from "./record_batch.ts";
import {
  produceOutages,
  produceOutageSeconds,
  producerConnected,
  produceResentRecords,
} from "./metrics.ts";

/** What {@link Delivery} needs of a kafkajs producer (an idempotent one, acks=all). */
export interface DeliveryProducer {
  connect(): Promise<void>;
  disconnect(): Promise<void>;
  sendBatch(batch: ProducerBatch): Promise<RecordMetadata[]>;
}

/** Defaults of {@link DeliveryOptions}. */
export const DELIVERY_DEFAULTS = {
  /** A send still pending after this long is revoked (kafkajs retries it no more). */
  attemptTimeoutMs: 60_000,
  /**
   * How long a revoked send may still settle (its request on the wire be
   * answered: kafkajs's request timeout is 30 s); then the producer is replaced.
   */
  revokeGraceMs: 35_000,
  /** A batch unacknowledged for this long counts as an outage. */
  stallMs: 5_000,
  /** After {@link Delivery.stop}, how long pending records still have to be acknowledged. */
  stopGraceMs: 10_000,
  initialBackoffMs: 500,
  maxBackoffMs: 5_000,
  /** How long closing waits for a producer to disconnect. */
  closeTimeoutMs: 5_000,
} as const;

/** Options of {@link Delivery}. */
export interface DeliveryOptions {
  /**
   * A new, unconnected idempotent producer (acks=all is set per send), whose
   * kafkajs client logs through `logCreator`: each connect gets a new
   * producer id.
   */
  createProducer: (logCreator: logCreator) => DeliveryProducer;
  router: PartitionRouter;
  topic: string;
  log: Logger;
  /** Give a batch up when it is not acknowledged within this long; 0 = never. */
  deliveryTimeoutMs: number;
  attemptTimeoutMs?: number;
  revokeGraceMs?: number;
  stallMs?: number;
  stopGraceMs?: number;
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  closeTimeoutMs?: number;
}

/** What became of a batch handed to {@link Delivery.send}. */
export interface DeliveryResult {
  acknowledged: number;
  /** Value bytes of the acknowledged records. */
  acknowledgedBytes: number;
  /** Records not acknowledged (only with `error`). */
  unacknowledged: number;
  /** Why some records were not acknowledged. */
  error?: Error;
}

/** A batch was not acknowledged within the delivery timeout. */
export class DeliveryTimeoutError extends Error {
  constructor(timeoutMs: number, cause?: string) {
    super(
      `not acknowledged within the delivery timeout of ${timeoutMs / 1000} s` +
        (cause ? ` (last error: ${cause})` : ""),
    );
    this.name = "DeliveryTimeoutError";
  }
}

/** The delivery was stopped before a batch was acknowledged. */
export class DeliveryStoppedError extends Error {
  constructor(graceMs: number, cause?: string) {
    super(
      `stopped: not acknowledged within ${graceMs / 1000} s of the stop` +
        (cause ? ` (last error: ${cause})` : ""),
    );
    this.name = "DeliveryStoppedError";
  }
}

/** How the producer is doing, for the live line, the logs and the summary. */
export interface DeliveryStatus {
  /** False from a failed send or a batch waiting over the stall time until a batch is acknowledged. */
  connected: boolean;
  /** When (epoch ms) the current outage began. */
  outageSince?: number;
  /** The last error of the current or last outage. */
  lastError?: string;
  /** Outages so far. */
  outages: number;
  /** Seconds spent in outages so far. */
  outageSeconds: number;
  /** Records sent again by a new producer after an attempt that may have reached a broker. */
  resent: number;
  /** Producers created (the first one and every replacement). */
  producers: number;
}

/** What to do about a failed send: give up, replace the producer, or send again. */
export type SendErrorKind = "fatal" | "reset" | "retry" | "written";

/** The broker says the producer's idempotence state does not match its own. */
const SEQUENCE_ERRORS = new Set([
  "OUT_OF_ORDER_SEQUENCE_NUMBER",
  "UNKNOWN_PRODUCER_ID",
  "INVALID_PRODUCER_EPOCH",
  "INVALID_PRODUCER_ID_MAPPING",
  "PRODUCER_FENCED",
]);

/** Broker errors no retry can fix. */
const FATAL_ERRORS = new Set([
  "MESSAGE_TOO_LARGE",
  "RECORD_LIST_TOO_LARGE",
  "INVALID_RECORD",
  "INVALID_TOPIC_EXCEPTION",
  "INVALID_REQUIRED_ACKS",
  "TOPIC_AUTHORIZATION_FAILED",
  "CLUSTER_AUTHORIZATION_FAILED",
  "SASL_AUTHENTICATION_FAILED",
  "UNSUPPORTED_VERSION",
  "UNSUPPORTED_FOR_MESSAGE_FORMAT",
  "UNSUPPORTED_COMPRESSION_TYPE",
  "POLICY_VIOLATION",
]);

/** JavaScript errors: thrown by kafkajs's code, they mean its own state is broken. */
const JS_ERRORS = new Set(["TypeError", "RangeError", "ReferenceError", "SyntaxError"]);

/**
 * What a failed kafkajs send means for the records: "fatal" (no retry can
 * fix it), "reset" (the producer's idempotence state is lost or kafkajs is
 * broken: a new producer), "written" (the broker already has them), or
 * "retry" (anything else: the cluster is unreachable, a leader moves, a
 * request timed out; the same producer sends them again). kafkajs wraps
 * errors in others, so the whole `cause` chain is read.
 */
export function classifySendError(err: unknown): SendErrorKind {
  const chain: Array<{ name?: string; type?: string; message?: string; cause?: unknown }> = [];
  for (let e = err, i = 0; e && typeof e === "object" && i < 10; i++) {
    const link = e as { name?: string; type?: string; message?: string; cause?: unknown };
    chain.push(link);
    e = link.cause === e ? undefined : link.cause;
  }
  if (chain.length === 0) return "retry";
  const types = chain.map((e) => e.type ?? "");
  if (types.some((t) => FATAL_ERRORS.has(t))) return "fatal";
  if (types.includes("DUPLICATE_SEQUENCE_NUMBER")) return "written";
  if (types.some((t) => SEQUENCE_ERRORS.has(t))) return "reset";
  if (chain.some((e) => JS_ERRORS.has(e.name ?? ""))) return "reset";
  const first = chain[0];
  if (first.message === REVOKED_MESSAGE) return "retry"; // (see Delivery's attempts)
  if (/^The producer is disconnect/.test(first.message ?? "")) return "reset";
  // kafkajs rejects a send it cannot make at all (no topic, a message without
  // a value) with a non-retriable error of its own, caused by nothing.
  if (first.name === "KafkaJSNonRetriableError" && chain.length === 1) return "fatal";
  return "retry";
}

/**
 * A kafkajs logCreator that writes every kafkajs line at debug level: the
 * delivery reports what happens itself (one warning when an outage starts,
 * one line when it ends), where kafkajs writes several errors per retry.
 */
export function quietKafkaLogCreator(
  log: Logger,
  onProblem: (message: string) => void = () => {},
): logCreator {
  return () => ({ namespace, level, log: entry }) => {
    const { message, ...extra } = entry;
    if (level <= KafkaLogLevel.WARN) onProblem(message);
    log.debug(
      { "log.logger": namespace ? `kafkajs.${namespace}` : "kafkajs", kafka: extra },
      message,
    );
  };
}

/** One producer and what is in flight on it. */
interface Generation {
  id: number;
  producer: DeliveryProducer;
  ready: Promise<void>;
  /** Its sends not settled yet. */
  pending: Set<Promise<unknown>>;
  retired: boolean;
}

/** One batch handed to {@link Delivery.send}. */
interface Batch {
  started: number;
  deadline: number;
  failure?: Error;
  acknowledged: number;
  acknowledgedBytes: number;
}

type Settled =
  | { kind: "ok" }
  | { kind: "error"; error: unknown }
  | { kind: "abandoned"; limit?: Error };

/**
 * Sends batches of records to one topic and gets each acknowledged (acks=all,
 * idempotent) through outages; see the module documentation.
 */
export class Delivery {
  readonly #o: Required<DeliveryOptions>;
  #gen: Generation | undefined;
  #generations = 0;
  /** Replaced producers waiting for their sends to settle before they are disconnected. */
  readonly #retired = new Map<Generation, () => void>();
  readonly #disconnects = new Set<Promise<void>>();
  readonly #batches = new Set<Batch>();
  /** Routing in the order of the sends, so that partitions queue batches in that order. */
  #routing: Promise<unknown> = Promise.resolve();
  /** Per partition: its requests so far settled, with the error that ended them (kept), if any. */
  readonly #tails = new Map<number, Promise<Error | undefined>>();
  #watch: ReturnType<typeof setInterval> | undefined;
  #stopAt: number | undefined;
  #wakeOnStop!: () => void;
  readonly #stopped = new Promise<"stop">((r) => this.#wakeOnStop = () => r("stop"));
  #outageSince: number | undefined;
  #accountedAt = 0;
  #lastError: string | undefined;
  #lastKafkaProblem: string | undefined;
  #outages = 0;
  #outageSeconds = 0;
  #resent = 0;

  constructor(options: DeliveryOptions) {
    this.#o = { ...DELIVERY_DEFAULTS, ...options };
    producerConnected.set(1);
  }

  /** How the producer is doing now. */
  status(): DeliveryStatus {
    this.#accrue();
    return {
      connected: this.#outageSince === undefined,
      outageSince: this.#outageSince,
      lastError: this.#lastError,
      outages: this.#outages,
      outageSeconds: this.#outageSeconds,
      resent: this.#resent,
      producers: this.#generations,
    };
  }

  /**
   * Sends `messages` and resolves once each is acknowledged, or when the
   * batch cannot be: the delivery timeout, a stop, an error no retry fixes
   * (then `error` says which; some records may be acknowledged). Never
   * rejects. Batches sent before this one's end come first in each partition.
   */
  async send(messages: readonly Message[]): Promise<DeliveryResult> {
    const batch = this.#newBatch();
    this.#batches.add(batch);
    this.#watch ??= setInterval(() => this.#check(), 1000);
    try {
      await this.#sendInOrder(messages, batch);
    } catch (err) {
      batch.failure ??= err as Error;
    } finally {
      this.#batches.delete(batch);
      if (this.#batches.size === 0) {
        clearInterval(this.#watch);
        this.#watch = undefined;
      }
    }
    if (!batch.failure) this.#recovered(batch, messages.length);
    return {
      acknowledged: batch.acknowledged,
      acknowledgedBytes: batch.acknowledgedBytes,
      unacknowledged: messages.length - batch.acknowledged,
      ...(batch.failure ? { error: batch.failure } : {}),
    };
  }

  /**
   * Stops retrying: what is pending has the stop grace period
   * (`stopGraceMs`) left to be acknowledged, then its send ends with
   * {@link DeliveryStoppedError}.
   */
  stop(): void {
    if (this.#stopAt !== undefined) return;
    this.#stopAt = Date.now() + this.#o.stopGraceMs;
    this.#wakeOnStop();
  }

  /** Stops and disconnects every producer, each within `closeTimeoutMs`. */
  async close(): Promise<void> {
    this.stop();
    clearInterval(this.#watch);
    this.#watch = undefined;
    this.#accrue();
    for (const [gen, cancel] of this.#retired) {
      cancel();
      this.#retired.delete(gen);
      this.#disconnect(gen);
    }
    if (this.#gen) this.#disconnect(this.#gen);
    this.#gen = undefined;
    await Promise.allSettled([...this.#disconnects]);
  }

  /** A kafkajs warning or error (see {@link quietKafkaLogCreator}): named when an outage starts. */
  noteKafkaProblem(message: string): void {
    this.#lastKafkaProblem = message;
  }

  #newBatch(): Batch {
    const started = Date.now();
    const timeout = this.#o.deliveryTimeoutMs;
    return {
      started,
      deadline: timeout > 0 ? started + timeout : Infinity,
      acknowledged: 0,
      acknowledgedBytes: 0,
    };
  }

  /** The time sending must end by, and the error then. */
  #limit(batch: Batch): { at: number; error: () => Error } {
    const stopAt = this.#stopAt ?? Infinity;
    if (stopAt < batch.deadline) {
      return {
        at: stopAt,
        error: () => new DeliveryStoppedError(this.#o.stopGraceMs, this.#lastError),
      };
    }
    return {
      at: batch.deadline,
      error: () => new DeliveryTimeoutError(this.#o.deliveryTimeoutMs, this.#lastError),
    };
  }

  /**
   * Sends `messages` by partition, each partition's requests after those of
   * earlier batches (see the module documentation); rejects with the first
   * error of any partition once every partition has settled.
   */
  async #sendInOrder(messages: readonly Message[], batch: Batch): Promise<void> {
    const topic = this.#o.topic;
    const queued = this.#routing.then(async () => {
      const byPartition = await this.#o.router.route(topic, messages);
      const sends: Array<Promise<Error | undefined>> = [];
      for (const [partition, list] of byPartition) {
        const before = this.#tails.get(partition);
        const send = (async () => {
          const earlier = await before;
          if (earlier) throw earlier; // not after a gap: this partition's sending is over
          for (const chunk of requestChunks(list)) {
            await this.#deliver(topic, partition, chunk, batch);
          }
        })().then(() => undefined, (err: Error) => err);
        this.#tails.set(partition, send);
        send.then((error) => {
          // A failure stays: no later batch writes this partition after a gap.
          if (!error && this.#tails.get(partition) === send) this.#tails.delete(partition);
        });
        sends.push(send);
      }
      return sends;
    });
    this.#routing = queued.catch(() => {});
    const failed = (await Promise.all(await queued)).find((e) => e !== undefined);
    if (failed) throw failed;
  }

  /** Sends one partition's request until it is acknowledged or the batch ends. */
  async #deliver(
    topic: string,
    partition: number,
    messages: readonly Message[],
    batch: Batch,
  ): Promise<void> {
    const fail = (err: Error): Error => batch.failure ??= err;
    const maybeWrittenBy = new Set<number>(); // producers whose attempt may have reached a broker
    let counted = false;
    let backoff = this.#o.initialBackoffMs;
    // Encoded once for every attempt (the bytes do not depend on the producer id or sequence).
    const records = encodedOrNone(messages);
    for (;;) {
      if (batch.failure) throw batch.failure;
      const gen = await this.#ready(batch).catch((err) => {
        throw fail(err);
      });
      if (!counted && [...maybeWrittenBy].some((id) => id !== gen.id)) {
        counted = true;
        this.#resent += messages.length;
        produceResentRecords.inc({ topic }, messages.length);
      }
      // Fresh objects per attempt: revoking one attempt leaves the next alone.
      const attempt = messages.map((m) => ({ ...m, partition }));
      if (records) prepare(attempt, records);
      const settled = await this.#attempt(gen, topic, attempt, batch);
      const kind = settled.kind === "error" ? classifySendError(settled.error) : undefined;
      if (settled.kind === "ok" || kind === "written") {
        batch.acknowledged += messages.length;
        batch.acknowledgedBytes += messages.reduce((n, m) => n + valueBytes(m), 0);
        return;
      }
      if (wasSent(attempt)) maybeWrittenBy.add(gen.id);
      if (settled.kind === "abandoned") {
        if (settled.limit) throw fail(settled.limit);
        // Revoked, yet still unsettled: kafkajs is stuck, and its sequence
        // numbers may still change. A new producer takes over.
        const why = `a send had no answer within ${
          (this.#o.attemptTimeoutMs + this.#o.revokeGraceMs) / 1000
        } s`;
        this.#noteFailure(why);
        this.#retire(gen, why);
        continue; // it waited long enough: no backoff
      }
      const error = settled.error as Error;
      if (kind === "fatal") throw fail(error);
      const message = error?.message ?? String(error);
      this.#noteFailure(message);
      this.#o.log.debug(
        {
          "event.action": "send-retry",
          "error.message": message,
          "kafka.partition": attempt[0]?.partition,
        },
        `send failed (${kind}); again in ${Math.round(backoff)} ms`,
      );
      if (kind === "reset") this.#retire(gen, message);
      if (!(await this.#sleep(backoff * (0.8 + 0.4 * Math.random()), batch))) {
        throw fail(this.#limit(batch).error());
      }
      backoff = Math.min(backoff * 2, this.#o.maxBackoffMs);
    }
  }

  /**
   * One kafkajs send of `messages`, until it settles or the batch must end
   * (then it is revoked). A send still pending after the attempt timeout is
   * revoked, so that kafkajs gives it up at its next retry, and awaited for
   * `revokeGraceMs` more: the request it has on the wire may still be
   * answered (written: acknowledged, no resend needed), and once it has
   * failed, the same producer can send the records again, as kafkajs would
   * have (its sequence numbers rolled back). Only a send that does not
   * settle even then is "abandoned".
   */
  async #attempt(
    gen: Generation,
    topic: string,
    messages: Message[],
    batch: Batch,
  ): Promise<Settled> {
    const sent: Promise<Settled> = gen.producer
      .sendBatch({
        topicMessages: [{ topic, messages }],
        acks: -1,
        compression: CompressionTypes.None,
      })
      .then(() => ({ kind: "ok" as const }), (error) => ({ kind: "error" as const, error }));
    gen.pending.add(sent);
    sent.finally(() => gen.pending.delete(sent));
    let end = Date.now() + this.#o.attemptTimeoutMs;
    let revoked = false;
    for (;;) {
      const limit = this.#limit(batch);
      const timer = later(Math.min(limit.at, end) - Date.now());
      const first = await Promise.race([sent, timer.promise, this.#stopWake()]);
      timer.cancel();
      if (first === "stop") continue; // the stop's deadline applies from now on
      if (first !== "time") return first;
      if (Date.now() >= limit.at) {
        revoke(messages); // kafkajs may still be retrying it: it must never go out again
        return { kind: "abandoned", limit: limit.error() };
      }
      if (Date.now() < end) continue;
      if (revoked) return { kind: "abandoned" };
      revoke(messages);
      revoked = true;
      end = Date.now() + this.#o.revokeGraceMs;
    }
  }

  /** The current producer, connected; a new one when there is none. Retries until the batch ends. */
  async #ready(batch: Batch): Promise<Generation> {
    let backoff = this.#o.initialBackoffMs;
    for (;;) {
      this.#gen ??= this.#newGeneration();
      const gen = this.#gen;
      const limit = this.#limit(batch);
      const timer = later(limit.at - Date.now());
      const first = await Promise.race([
        gen.ready.then(() => "ready" as const, (err) => err as Error),
        timer.promise,
        this.#stopWake(),
      ]);
      timer.cancel();
      if (first === "ready") return gen;
      if (first === "stop") continue;
      if (first === "time") {
        if (Date.now() >= limit.at) throw limit.error();
        continue; // a timer's longest wait (24 days) passed: wait on
      }
      this.#noteFailure(`connecting: ${first?.message ?? String(first)}`);
      if (this.#gen === gen) {
        this.#gen = undefined;
        this.#disconnect(gen);
      }
      if (!(await this.#sleep(backoff * (0.8 + 0.4 * Math.random()), batch))) {
        throw this.#limit(batch).error();
      }
      backoff = Math.min(backoff * 2, this.#o.maxBackoffMs);
    }
  }

  #newGeneration(): Generation {
    const producer = this.#o.createProducer(
      quietKafkaLogCreator(this.#o.log, (m) => this.noteKafkaProblem(m)),
    );
    const ready = producer.connect();
    ready.catch(() => {}); // awaited by #ready, which handles a failure
    return { id: ++this.#generations, producer, ready, pending: new Set(), retired: false };
  }

  /**
   * Replaces `gen` by a new producer for every later send (its own sends
   * still pending may complete), and disconnects it once they have settled
   * (or the attempt timeout has passed).
   */
  #retire(gen: Generation, why: string): void {
    if (gen.retired) return;
    gen.retired = true;
    if (this.#gen === gen) this.#gen = undefined;
    this.#o.log.warn(
      { "event.action": "producer-replaced", "error.message": why },
      `replacing the producer (its idempotence state is lost or unknown after: ${why}); ` +
        "records not acknowledged are sent again under a new producer id " +
        "(any an unanswered request did write are then written twice)",
    );
    const timer = later(this.#o.attemptTimeoutMs);
    this.#retired.set(gen, timer.cancel);
    Promise.race([Promise.allSettled([...gen.pending]), timer.promise]).then(() => {
      timer.cancel();
      if (this.#retired.delete(gen)) this.#disconnect(gen);
    });
  }

  /** Disconnects `gen` in the background, within `closeTimeoutMs`. */
  #disconnect(gen: Generation): void {
    gen.retired = true;
    const timer = later(this.#o.closeTimeoutMs);
    const done: Promise<void> = Promise.race([
      gen.producer.disconnect().catch(() => {}),
      timer.promise,
    ]).then(() => timer.cancel());
    this.#disconnects.add(done);
    done.finally(() => this.#disconnects.delete(done));
  }

  /** Resolves with "stop" when {@link stop} is called (never once it has been). */
  #stopWake(): Promise<"stop"> {
    return this.#stopAt === undefined ? this.#stopped : NEVER;
  }

  /**
   * Waits `ms`, cut short by the batch's limit (a stop brings it closer);
   * false when the limit has been reached.
   */
  async #sleep(ms: number, batch: Batch): Promise<boolean> {
    const until = Date.now() + ms;
    for (;;) {
      const limit = this.#limit(batch).at;
      const wait = Math.min(until, limit) - Date.now();
      if (wait <= 0) return Date.now() < limit;
      const timer = later(wait);
      await Promise.race([timer.promise, this.#stopWake()]);
      timer.cancel();
    }
  }

  /** A send failed: the start of an outage unless one is on. */
  #noteFailure(message: string): void {
    this.#lastError = message;
    this.#startOutage(message);
  }

  #startOutage(why: string): void {
    if (this.#outageSince !== undefined) return;
    this.#outageSince = this.#accountedAt = Date.now();
    this.#outages++;
    produceOutages.inc();
    producerConnected.set(0);
    const limit = this.#o.deliveryTimeoutMs > 0
      ? `for up to ${this.#o.deliveryTimeoutMs / 1000} s per batch (--delivery-timeout)`
      : "until it answers (no --delivery-timeout)";
    this.#o.log.warn(
      { "event.action": "kafka-outage", "error.message": why },
      `Kafka is not acknowledging (${why}); retrying with backoff ${limit}; ` +
        "no new records are sent meanwhile",
    );
  }

  /** Every second while a batch is pending: a stall starts an outage; outage time is counted. */
  #check(): void {
    const now = Date.now();
    for (const b of this.#batches) {
      if (now - b.started >= this.#o.stallMs) {
        const kafka = this.#lastKafkaProblem ? `; kafkajs: ${this.#lastKafkaProblem}` : "";
        this.#startOutage(
          `no acknowledgement for ${Math.round((now - b.started) / 1000)} s${kafka}`,
        );
      }
    }
    this.#accrue();
  }

  #accrue(): void {
    if (this.#outageSince === undefined) return;
    const now = Date.now();
    const seconds = (now - this.#accountedAt) / 1000;
    this.#accountedAt = now;
    this.#outageSeconds += seconds;
    produceOutageSeconds.inc(seconds);
  }

  /** A batch was acknowledged in full: the end of an outage if one is on. */
  #recovered(batch: Batch, records: number): void {
    this.#lastKafkaProblem = undefined;
    if (this.#outageSince === undefined) return;
    this.#accrue();
    const seconds = (Date.now() - this.#outageSince) / 1000;
    this.#outageSince = undefined;
    producerConnected.set(1);
    const waited = (Date.now() - batch.started) / 1000;
    this.#o.log.info(
      {
        "event.action": "kafka-recovered",
        "event.duration": Math.round(seconds * 1e9),
        "error.message": this.#lastError,
      },
      `Kafka acknowledges again after ${seconds.toFixed(1)} s of outage ` +
        `(a batch of ${records} records waited ${waited.toFixed(1)} s); producing` +
        (this.#resent > 0 ? `; ${this.#resent} records resent by a new producer so far` : ""),
    );
    this.#lastError = undefined;
  }
}

const NEVER = new Promise<never>(() => {});

/** A promise of "time" after `ms`, and a way to cancel its timer. */
function later(ms: number): { promise: Promise<"time">; cancel: () => void } {
  let id: ReturnType<typeof setTimeout> | undefined;
  const promise = new Promise<"time">((r) => {
    id = setTimeout(() => r("time"), Math.max(0, Math.min(ms, 2 ** 31 - 1)));
  });
  return { promise, cancel: () => clearTimeout(id) };
}

/** The records of a send encoded by record_batch.ts, or undefined to leave them to kafkajs. */
function encodedOrNone(messages: readonly Message[]): EncodedRecords | undefined {
  if (messages.some((m) => m.timestamp !== undefined && m.timestamp !== null)) return undefined;
  return encodeRecords(messages);
}

function valueBytes(m: Message): number {
  const v = m.value;
  if (v === null || v === undefined) return 0;
  return typeof v === "string" ? new TextEncoder().encode(v).byteLength : v.byteLength;
}
