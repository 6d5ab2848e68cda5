/**
 * Kafka client plumbing shared by every txpipe process: client creation from
 * the topology, connecting with a clear message and backoff when the cluster
 * is unreachable, and idempotent topic creation from the spec.
 *
 * @module
 */
// First, before kafkajs loads (group_by_partition.ts must be in time): txpipe's patches to kafkajs.
import { patchKafkajs } from "./kafkajs_patches.ts";
import { ConfigResourceTypes, Kafka, logLevel } from "kafkajs";
import { JavaCompatiblePartitioner } from "./partitioner.ts";
import type {
  Admin,
  Consumer,
  ITopicConfig,
  logCreator,
  Message,
  PartitionMetadata,
  RetryOptions as KafkaRetryOptions,
} from "kafkajs";
import type { Buffer } from "node:buffer";
import { encodeRecords, prepare } from "./record_batch.ts";
import type { Logger } from "./log.ts";
import { kafkaLogCreator } from "./log.ts";
import type { TopicSpec } from "../../stacks/topology.ts";
import { waitForLeaders, type WaitForLeadersOptions } from "./leaders.ts";
import {
  type KafkaAuth,
  kafkaAuth,
  kafkaConnection,
  kafkajsSecurity,
  rememberSecurity,
} from "./credentials.ts";
import { KAFKA_USERS, type PrincipalName } from "../../stacks/security.ts";
import process from "node:process";

// kafkajs 2.2.4 schedules a timer with a negative delay on every connection
// (tulios/kafkajs#1751, harmless: the runtime clamps it to 1 ms). Drop just
// that warning so it does not reach a user's terminal on every start.
const emitWarning = process.emitWarning;
process.emitWarning = function (warning: string | Error, ...rest: unknown[]) {
  const type = typeof rest[0] === "string" ? rest[0] : (rest[0] as { type?: string })?.type;
  const name = warning instanceof Error ? warning.name : type;
  if (name === "TimeoutNegativeWarning") return;
  // deno-lint-ignore no-explicit-any
  return (emitWarning as any).call(process, warning, ...rest);
} as typeof process.emitWarning;

/** Options for {@link createKafka}. */
export interface KafkaOptions {
  clientId: string;
  brokers: string[];
  /**
   * Who connects (stacks/security.ts): its credentials, TLS and SASL
   * mechanism are found by jobs/lib/credentials.ts's rules
   * (`kafkaConnection`), unless `auth` gives the credentials.
   */
  principal: PrincipalName;
  /** These credentials instead of the principal's; `null`: none (no SASL). TLS stays as configured. */
  auth?: KafkaAuth | null;
  /** kafkajs log lines go here (ECS JSON); without it kafkajs is silent. */
  logger?: Logger;
  /** Writes kafkajs's warnings and errors instead of `logger` (e.g. quieter, see delivery.ts). */
  logCreator?: logCreator;
  /** Per-connection timeout in ms. */
  connectionTimeout?: number;
  /** kafkajs's retries of a failed request (default: 5, from 300 ms up to 3 s apart). */
  retry?: KafkaRetryOptions;
}

/**
 * Retry settings for idempotent and transactional producers: kafkajs warns
 * that bounded retries may break exactly-once, so they retry without bound
 * (with backoff); callers put their own deadline around a send when needed.
 */
export const PRODUCER_RETRY = {
  retries: Number.MAX_SAFE_INTEGER,
  initialRetryTime: 300,
  maxRetryTime: 5000,
} as const;

/**
 * Kafka's default partitioner: kafkajs 2's default, Java-compatible one
 * computed without kafkajs's BigInt arithmetic (partitioner.ts), and named,
 * so that kafkajs does not warn about its change of default on every
 * producer. `sendByPartition` sets each record's partition itself, with the
 * same partitioner.
 */
export const PARTITIONER = JavaCompatiblePartitioner;

/**
 * How long txpipe's consumers let a fetch wait at the broker when no records
 * are there (ms): Kafka's own consumer default, `fetch.max.wait.ms`, not
 * kafkajs's 5 s. A consumer's `disconnect()` waits for its fetches in flight,
 * so a stream job's stop took 2.4-3.6 s to let go of its group.
 */
export const FETCH_MAX_WAIT_MS = 500;

/** A kafkajs client for `brokers`, its logs routed into the ECS logger. */
export function createKafka(options: KafkaOptions): Kafka {
  patchKafkajs(); // every txpipe client has txpipe's fixes to kafkajs (idempotent)
  const security = kafkajsSecurity(
    kafkaConnection(options.principal, options.auth === undefined ? {} : { auth: options.auth }),
  );
  const kafka = new Kafka({
    clientId: options.clientId,
    brokers: options.brokers,
    ...security,
    connectionTimeout: options.connectionTimeout ?? 3000,
    requestTimeout: 30_000,
    retry: options.retry ?? { initialRetryTime: 300, maxRetryTime: 3000, retries: 5 },
    logLevel: options.logger || options.logCreator ? logLevel.WARN : logLevel.NOTHING,
    logCreator: options.logCreator ??
      (options.logger ? kafkaLogCreator(options.logger) : undefined),
  });
  // Its admin clients' TLS and credentials, for waitForLeaders's own connections.
  const admin = kafka.admin.bind(kafka);
  kafka.admin = (config) => {
    const client = admin(config);
    rememberSecurity(client, security);
    return client;
  };
  return kafka;
}

/** A failure to connect to Kafka, said in one sentence: printed as such, never as a stack trace. */
export class KafkaConnectError extends Error {}

/** Thrown when Kafka stays unreachable through every retry. */
export class KafkaUnreachableError extends KafkaConnectError {
  constructor(brokers: string[], attempts: number, cause: unknown, hint = "") {
    const why = cause instanceof Error ? cause.message : String(cause);
    super(
      `cannot reach Kafka at ${brokers.join(",")} after ${attempts} attempts (${why}). ` +
        "Is the cluster up? Start it with `deno task cluster up`, or pass --brokers." +
        (hint ? ` ${hint}` : ""),
    );
    this.name = "KafkaUnreachableError";
  }
}

/** Thrown when Kafka refuses the credentials: retrying cannot help. */
export class KafkaAuthError extends KafkaConnectError {
  constructor(brokers: string[], cause: unknown, who = "") {
    const why = cause instanceof Error ? cause.message : String(cause);
    super(
      `Kafka at ${brokers.join(",")} refused the credentials${who ? ` of ${who}` : ""} (${why}). ` +
        "Check TXPIPE_KAFKA_USER and TXPIPE_KAFKA_PASSWORD (or _FILE), TXPIPE_KAFKA_SASL_MECHANISM " +
        "and TXPIPE_KAFKA_CONFIG's sasl.jaas.config, or, on the local " +
        "cluster, the password files under $TXPIPE_HOME/secrets (docs/security.md).",
    );
    this.name = "KafkaAuthError";
  }
}

/** Whether `err` is Kafka refusing a client's SASL credentials. */
export function isAuthFailure(err: unknown): boolean {
  return (err as { name?: string })?.name === "KafkaJSSASLAuthenticationError";
}

/**
 * What to add to "cannot reach Kafka" when `principal` has no credentials:
 * a cluster that requires authentication closes such a client's connection.
 */
export function missingCredentialsHint(principal: PrincipalName): string {
  if (kafkaAuth(principal)) return "";
  return `No Kafka credentials were found for ${KAFKA_USERS[principal]} (TXPIPE_KAFKA_USER, ` +
    "or the local cluster's password files under $TXPIPE_HOME/secrets): a cluster that " +
    "requires authentication closes the connection of a client without them.";
}

/** Options for {@link withRetry}. */
export interface RetryOptions {
  attempts?: number;
  initialDelayMs?: number;
  maxDelayMs?: number;
  /** Called before each wait with the attempt number, the delay and the error. */
  onRetry?: (attempt: number, delayMs: number, err: unknown) => void;
  /** Added to the unreachable message (see {@link missingCredentialsHint}). */
  hint?: string;
  /** Who connects, for the refused-credentials message. */
  who?: string;
}

/**
 * Runs `connect` until it succeeds, with exponential backoff between
 * attempts; throws {@link KafkaUnreachableError} after the last attempt.
 */
export async function connectWithRetry<T>(
  brokers: string[],
  connect: () => Promise<T>,
  options: RetryOptions = {},
): Promise<T> {
  const attempts = options.attempts ?? 4;
  let delay = options.initialDelayMs ?? 1000;
  for (let attempt = 1;; attempt++) {
    try {
      return await connect();
    } catch (err) {
      if (isAuthFailure(err)) throw new KafkaAuthError(brokers, err, options.who);
      if (attempt >= attempts) {
        throw new KafkaUnreachableError(brokers, attempt, err, options.hint);
      }
      options.onRetry?.(attempt, delay, err);
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, options.maxDelayMs ?? 8000);
    }
  }
}

/**
 * Connects to `brokers` once, trying each of them once, and disconnects:
 * resolves when one answers, rejects when none does. Its client logs
 * nothing, so a caller retrying it (see {@link connectWithRetry}) says
 * itself what happens instead of kafkajs's lines per broker and attempt.
 */
export async function probeKafka(
  brokers: string[],
  clientId: string,
  principal: PrincipalName,
): Promise<void> {
  const admin = createKafka({
    clientId,
    brokers,
    principal,
    // kafkajs moves to the next bootstrap server on each retry.
    retry: { retries: brokers.length - 1, initialRetryTime: 100, maxRetryTime: 100 },
  }).admin();
  try {
    await admin.connect();
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

/**
 * Calls `request` again, for up to `timeoutMs`, while a broker does not know
 * a topic yet. A topic created a moment ago (by {@link ensureTopics} here, or
 * by another process) reaches each broker's metadata a little later, and
 * kafkajs fails on the first broker that answers "This server does not host
 * this topic-partition" (seen when the aggregation and the evaluator started
 * on topics created a moment before: both exited 1).
 */
export async function whileTopicUnknown<T>(
  request: () => Promise<T>,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await request();
    } catch (err) {
      const type = (err as { type?: string })?.type;
      const unknown = type === "UNKNOWN_TOPIC_OR_PARTITION" || type === "LEADER_NOT_AVAILABLE";
      if (!unknown || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 300));
    }
  }
}

/** Subscribes `consumer` to `topics`, waiting for a topic created a moment ago ({@link whileTopicUnknown}). */
export function subscribeWhenKnown(
  consumer: Consumer,
  topics: string[],
  options: { fromBeginning: boolean; timeoutMs?: number },
): Promise<void> {
  return whileTopicUnknown(
    () => consumer.subscribe({ topics, fromBeginning: options.fromBeginning }),
    options.timeoutMs,
  );
}

/** What {@link ensureTopics} did for each topic. */
export interface TopicResult {
  name: string;
  action: "created" | "exists";
}

/**
 * Creates every topic of `topics` that does not exist yet, with its
 * partitions, replication and configs, and returns once every broker knows a
 * leader for every partition of every topic of `topics` (see
 * jobs/lib/leaders.ts for why: a topic just created, here or by another
 * process, is not yet known to every broker). Throws after
 * `options.timeoutMs` (default 30 s) naming what is still missing where.
 * Topics created meanwhile by another process are fine; a partition count
 * other than the spec's is an error naming both.
 */
export async function ensureTopics(
  admin: Admin,
  topics: readonly TopicSpec[],
  options: WaitForLeadersOptions = {},
): Promise<TopicResult[]> {
  const existing = new Set(await admin.listTopics());
  const absentSpecs = topics.filter((t) => !existing.has(t.name));
  const limits = absentSpecs.length > 0 ? await replicationLimits(admin) : undefined;
  const missing: ITopicConfig[] = absentSpecs.map((spec) => {
    const t = fitToCluster(spec, limits);
    return {
      topic: t.name,
      numPartitions: t.partitions,
      replicationFactor: t.replicationFactor,
      configEntries: Object.entries(t.config).map(([name, value]) => ({ name, value })),
    };
  });
  const names = missing.map((t) => t.topic).join(", ");
  let creationError: Error | undefined;
  if (missing.length > 0) {
    try {
      // Not kafkajs's waitForLeaders: it asks one broker (waitForLeaders below asks each).
      await admin.createTopics({ topics: missing, waitForLeaders: false, timeout: 30_000 });
    } catch (err) {
      // kafkajs itself accepts TOPIC_ALREADY_EXISTS alone (another process
      // was first). A topic Kafka refused (bad config, too few brokers) fails
      // now; a request lost or timed out may still have created them, which
      // the wait below finds out.
      const refused = refusals(err);
      if (refused.length > 0) {
        throw new Error(`could not create topics ${names}: Kafka refused ${refused.join("; ")}`);
      }
      creationError = err as Error;
    }
  }
  let counts: Map<string, number>;
  try {
    counts = await waitForLeaders(admin, topics.map((t) => t.name), options);
  } catch (err) {
    if (!creationError) throw err;
    throw new Error(
      `could not create topics ${names}: ${creationError.message}; ${(err as Error).message}`,
    );
  }
  for (const t of topics) {
    const count = counts.get(t.name) ?? 0;
    if (count !== t.partitions) {
      throw new Error(
        `topic ${t.name} exists with ${count} partitions; the spec expects ${t.partitions}. ` +
          "Delete it or reset the cluster (`deno task cluster reset`).",
      );
    }
  }
  return topics.map((t) => ({
    name: t.name,
    action: existing.has(t.name) ? "exists" as const : "created" as const,
  }));
}

/**
 * The topics Kafka refused in a kafkajs createTopics failure, as "topic:
 * reason": answers that retrying cannot change, other than
 * TOPIC_ALREADY_EXISTS. Empty for a failure without such an answer (a lost
 * connection, a timeout).
 */
export function refusals(err: unknown): string[] {
  type KafkaError = { type?: string; retriable?: boolean; topic?: string; message?: string };
  // kafkajs wraps the broker's answer (one error, or one per topic) in its own error.
  const cause = ((err as { cause?: unknown })?.cause ?? err) as KafkaError & { errors?: unknown };
  const errors = (Array.isArray(cause.errors) ? cause.errors : [cause]) as KafkaError[];
  return errors
    .filter((e) => e.type && e.type !== "TOPIC_ALREADY_EXISTS" && e.retriable === false)
    .map((e) => (e.topic ? `${e.topic}: ` : "") + `${e.message} (${e.type})`);
}

/** A cluster's replication defaults, as its brokers are configured. */
export interface ReplicationLimits {
  /** `default.replication.factor` */
  replicationFactor: number;
  /** `min.insync.replicas` */
  minInsyncReplicas: number;
}

/**
 * The topic spec as it can be created on a cluster with `limits`. A cluster
 * built smaller than the spec (single mode: one broker, default replication
 * 1) gets its own replication and min.insync.replicas instead of impossible
 * ones; a full cluster, even with a broker down, keeps the spec.
 */
export function fitToCluster(t: TopicSpec, limits: ReplicationLimits | undefined): TopicSpec {
  if (!limits || limits.replicationFactor >= t.replicationFactor) return t;
  const config = { ...t.config };
  if (Number(config["min.insync.replicas"]) > limits.minInsyncReplicas) {
    config["min.insync.replicas"] = String(limits.minInsyncReplicas);
  }
  return { ...t, replicationFactor: limits.replicationFactor, config };
}

/**
 * The cluster's own replication defaults (`default.replication.factor`,
 * `min.insync.replicas` of a broker), or undefined when they cannot be read.
 */
async function replicationLimits(admin: Admin): Promise<ReplicationLimits | undefined> {
  try {
    const { brokers } = await admin.describeCluster();
    const broker = brokers[0];
    if (!broker) return undefined;
    const { resources } = await admin.describeConfigs({
      includeSynonyms: false,
      resources: [{
        type: ConfigResourceTypes.BROKER,
        name: String(broker.nodeId),
        configNames: ["default.replication.factor", "min.insync.replicas"],
      }],
    });
    const value = (name: string) =>
      Number(resources[0]?.configEntries.find((e) => e.configName === name)?.configValue);
    const replicationFactor = value("default.replication.factor");
    const minInsyncReplicas = value("min.insync.replicas");
    if (!(replicationFactor >= 1) || !(minInsyncReplicas >= 1)) return undefined;
    return { replicationFactor, minInsyncReplicas };
  } catch {
    return undefined; // then the spec's replication stands, and Kafka says if it cannot
  }
}

/** Partitions of `topics` that lack a leader or a full ISR, as "topic/partition" strings. */
export async function unhealthyPartitions(
  admin: Admin,
  topics: readonly TopicSpec[],
): Promise<string[]> {
  const meta = await admin.fetchTopicMetadata({ topics: topics.map((t) => t.name) });
  const bad: string[] = [];
  for (const t of topics) {
    const found = meta.topics.find((m) => m.name === t.name);
    if (!found) {
      bad.push(`${t.name} (missing)`);
      continue;
    }
    for (const p of found.partitions) {
      const healthy = p.leader >= 0 && p.isr.length >= t.replicationFactor;
      if (!healthy) bad.push(`${t.name}/${p.partitionId}`);
    }
  }
  return bad;
}

/**
 * The partition metadata of a topic of `count` partitions as kafkajs's
 * default partitioner reads it (it looks at the partition ids only).
 */
export function partitionMetadata(count: number): PartitionMetadata[] {
  return Array.from({ length: count }, (_, i) => ({
    partitionErrorCode: 0,
    partitionId: i,
    leader: 0,
    replicas: [],
    isr: [],
  }));
}

/**
 * Which partition a record goes to, decided before it is sent: its explicit
 * partition, else Kafka's default partitioner (murmur2 of the key, like the
 * Java client) over the topic's partition count, else round robin.
 */
export class PartitionRouter {
  readonly #admin: Admin;
  readonly #counts = new Map<string, Promise<number>>();
  readonly #partitioner = PARTITIONER();

  constructor(admin: Admin) {
    this.#admin = admin;
  }

  /** The topic's partition count (read once). */
  partitionCount(topic: string): Promise<number> {
    let count = this.#counts.get(topic);
    if (!count) {
      count = this.#admin.fetchTopicMetadata({ topics: [topic] }).then((m) => {
        const n = m.topics[0]?.partitions.length ?? 0;
        if (n === 0) throw new Error(`topic ${topic} has no partitions (does it exist?)`);
        return n;
      });
      count.catch(() => this.#counts.delete(topic)); // asked again next time
      this.#counts.set(topic, count);
    }
    return count;
  }

  /** `messages` of `topic` by partition, each list in the original order. */
  async route(topic: string, messages: readonly Message[]): Promise<Map<number, Message[]>> {
    const n = await this.partitionCount(topic);
    const metadata = partitionMetadata(n);
    const out = new Map<number, Message[]>();
    for (const message of messages) {
      const p = this.#partitioner({ topic, partitionMetadata: metadata, message });
      let list = out.get(p);
      if (!list) out.set(p, list = []);
      list.push(message);
    }
    return out;
  }
}

/**
 * Estimated bytes per produce request: well under the brokers' 1 MB
 * `message.max.bytes`, however many records one partition gets.
 */
const MAX_REQUEST_BYTES = 512 * 1024;

/** One request's worth of records, as kafkajs's sendBatch takes them. */
export type TopicMessages = Array<{ topic: string; messages: Message[] }>;

/**
 * Sends records with one kafkajs send per partition: the partitions
 * concurrently, each one's records in order, in requests of about
 * {@link MAX_REQUEST_BYTES}.
 *
 * Why: when one send spans several brokers and a request to one of them
 * fails, kafkajs retries by sending again to every broker that has not
 * answered yet, including one whose request is still in flight, under new
 * sequence numbers, which idempotence cannot catch: the records are written
 * twice (seen here as doubled window counts when retries came 30 ms apart).
 * A send to one partition talks to one broker, so a retry only ever repeats
 * a request that failed.
 */
export async function sendByPartition(
  send: (topicMessages: TopicMessages) => Promise<unknown>,
  router: PartitionRouter,
  byTopic: ReadonlyMap<string, readonly Message[]>,
): Promise<void> {
  const sends: Array<Promise<void>> = [];
  for (const [topic, messages] of byTopic) {
    for (const [partition, list] of await router.route(topic, messages)) {
      sends.push((async () => {
        for (const chunk of requestChunks(list, MAX_REQUEST_BYTES)) {
          const request = chunk.map((m) => ({ ...m, partition }));
          // Encoded once here (record_batch.ts: kafkajs's bytes without its per-record
          // allocations), reused if kafkajs retries the request.
          if (request.every((m) => m.timestamp === undefined || m.timestamp === null)) {
            prepare(request, encodeRecords(request));
          }
          await send([{ topic, messages: request }]);
        }
      })());
    }
  }
  const results = await Promise.allSettled(sends);
  const failed = results.find((r) => r.status === "rejected");
  if (failed) throw (failed as PromiseRejectedResult).reason;
}

/** A generous estimate of a record's size on the wire. */
function messageBytes(m: Message): number {
  const size = (v: unknown) =>
    v === null || v === undefined ? 0 : typeof v === "string" ? v.length * 3 : (v as Buffer).length;
  let n = 64 + size(m.key) + size(m.value);
  for (const [k, v] of Object.entries(m.headers ?? {})) n += k.length + size(v);
  return n;
}

/**
 * Consecutive runs of `messages` of at most about `maxBytes` each (at least
 * one record): the requests of one partition's records.
 */
export function requestChunks(
  messages: readonly Message[],
  maxBytes: number = MAX_REQUEST_BYTES,
): Message[][] {
  const out: Message[][] = [];
  let current: Message[] = [];
  let bytes = 0;
  for (const m of messages) {
    const n = messageBytes(m);
    if (current.length > 0 && bytes + n > maxBytes) {
      out.push(current);
      current = [];
      bytes = 0;
    }
    current.push(m);
    bytes += n;
  }
  if (current.length > 0) out.push(current);
  return out;
}

/**
 * Waits for `promise`, but no longer than `ms`; resolves either way, also
 * when it rejects (for bounded waits on kafkajs calls such as disconnect,
 * which can hang on a client still joining its group).
 */
export function withTimeout(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise.then(() => {}, () => {}),
    new Promise<void>((resolve) => timer = setTimeout(resolve, ms)),
  ]).finally(() => clearTimeout(timer));
}
