/**
 * Kafka client plumbing shared by every txpipe process: client creation from
 * the topology, connecting with a clear message and backoff when the cluster
 * is unreachable, and idempotent topic creation from the spec.
 *
 * @module
 */
import { ConfigResourceTypes, Kafka, logLevel } from "kafkajs";
import type { Admin, ITopicConfig } from "kafkajs";
import type { Logger } from "./log.ts";
import { kafkaLogCreator } from "./log.ts";
import type { TopicSpec } from "../../stacks/topology.ts";
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
  /** kafkajs log lines go here (ECS JSON); without it kafkajs is silent. */
  logger?: Logger;
  /** Per-connection timeout in ms. */
  connectionTimeout?: number;
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

/** A kafkajs client for `brokers`, its logs routed into the ECS logger. */
export function createKafka(options: KafkaOptions): Kafka {
  return new Kafka({
    clientId: options.clientId,
    brokers: options.brokers,
    connectionTimeout: options.connectionTimeout ?? 3000,
    requestTimeout: 30_000,
    retry: { initialRetryTime: 300, maxRetryTime: 3000, retries: 5 },
    logLevel: options.logger ? logLevel.WARN : logLevel.NOTHING,
    logCreator: options.logger ? kafkaLogCreator(options.logger) : undefined,
  });
}

/** Thrown when Kafka stays unreachable through every retry. */
export class KafkaUnreachableError extends Error {
  constructor(brokers: string[], attempts: number, cause: unknown) {
    const why = cause instanceof Error ? cause.message : String(cause);
    super(
      `cannot reach Kafka at ${brokers.join(",")} after ${attempts} attempts (${why}). ` +
        "Is the cluster up? Start it with `deno task cluster up`, or pass --brokers.",
    );
    this.name = "KafkaUnreachableError";
  }
}

/** Options for {@link withRetry}. */
export interface RetryOptions {
  attempts?: number;
  initialDelayMs?: number;
  maxDelayMs?: number;
  /** Called before each wait with the attempt number, the delay and the error. */
  onRetry?: (attempt: number, delayMs: number, err: unknown) => void;
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
      if (attempt >= attempts) throw new KafkaUnreachableError(brokers, attempt, err);
      options.onRetry?.(attempt, delay, err);
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, options.maxDelayMs ?? 8000);
    }
  }
}

/** What {@link ensureTopics} did for each topic. */
export interface TopicResult {
  name: string;
  action: "created" | "exists";
}

/**
 * Creates every topic of `topics` that does not exist yet, with its
 * partitions, replication and configs. Existing topics are checked: a
 * partition count other than the spec's is an error naming both.
 */
export async function ensureTopics(
  admin: Admin,
  topics: readonly TopicSpec[],
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
  if (missing.length > 0) {
    try {
      await admin.createTopics({ topics: missing, waitForLeaders: true, timeout: 30_000 });
    } catch (err) {
      // Another process may have created some of them meanwhile: fine if they exist now.
      const now = new Set(await admin.listTopics());
      const absent = missing.filter((t) => !now.has(t.topic)).map((t) => t.topic);
      if (absent.length > 0) {
        throw new Error(`could not create topics ${absent.join(", ")}: ${(err as Error).message}`);
      }
    }
  }
  const present = topics.filter((t) => existing.has(t.name));
  if (present.length > 0) {
    const meta = await admin.fetchTopicMetadata({ topics: present.map((t) => t.name) });
    for (const t of present) {
      const found = meta.topics.find((m) => m.name === t.name);
      const count = found?.partitions.length ?? 0;
      if (count !== t.partitions) {
        throw new Error(
          `topic ${t.name} exists with ${count} partitions; the spec expects ${t.partitions}. ` +
            "Delete it or reset the cluster (`deno task cluster reset`).",
        );
      }
    }
  }
  return topics.map((t) => ({
    name: t.name,
    action: existing.has(t.name) ? "exists" as const : "created" as const,
  }));
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
