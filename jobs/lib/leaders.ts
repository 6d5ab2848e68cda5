/**
 * Waiting until every broker knows a leader for every partition of some
 * topics: what {@link ensureTopics} (jobs/lib/kafka.ts) does before a job
 * uses its topics.
 *
 * Why: with KRaft, a new topic reaches each broker's metadata on that
 * broker's own schedule, a moment after CreateTopics has returned. kafkajs's
 * `createTopics({ waitForLeaders: true })` asks a single broker, and waits
 * only while it answers LEADER_NOT_AVAILABLE: an answer "This server does not
 * host this topic-partition" (UNKNOWN_TOPIC_OR_PARTITION, the broker has not
 * heard of the topic yet) fails the call at once. And any later kafkajs call
 * (listTopics, fetchTopicMetadata, subscribe) goes to a broker kafkajs
 * chooses, which may be one that has not heard of it yet. Seen here: the
 * first start of `deno task aggregate` on fresh topic names exited 1 with
 * "could not create topics …: This server does not host this
 * topic-partition" in 4 of 12 runs, and tests/observability_test.ts failed
 * the same way when it created four topics at once. Measured on the local
 * 3+3 cluster while other tests ran: of 48 topics created four at a time,
 * kafkajs's createTopics failed so for 8 (for 3 of them listTopics, asked
 * next, did not list the topic yet either, and the former ensureTopics
 * failed), and 6 times a broker did not know a topic yet when it returned. So each broker is asked itself, again every
 * {@link POLL_MS}, until all of them know every partition's leader: the
 * same 48 then waited in 17 cases (one or two rounds), none failed, and no
 * broker lacked a topic afterwards.
 *
 * @module
 */
// kafkajs's own connection and Metadata request: every public kafkajs call
// picks the broker it asks, and here each broker has to be asked in turn.
import Connection from "kafkajs/src/network/connection.js";
import socketFactory from "kafkajs/src/network/socketFactory.js";
import Metadata from "kafkajs/src/protocol/requests/metadata/index.js";
import ApiVersions from "kafkajs/src/protocol/requests/apiVersions/index.js";
import { type KafkajsSecurity, securityOf } from "./credentials.ts";
import { createErrorFromCode } from "kafkajs/src/protocol/error.js";
import type { Admin, Logger as KafkaLogger } from "kafkajs";

/** How long {@link waitForLeaders} waits by default before giving up. */
export const LEADER_WAIT_MS = 30_000;
/** Time between two rounds of questions to the brokers. */
export const POLL_MS = 200;

/** A partition as one broker's Metadata answer lists it. */
export interface PartitionView {
  partitionId: number;
  partitionErrorCode: number;
  /** The leader's node id; -1 when there is none. */
  leader: number;
}

/** A topic as one broker's Metadata answer lists it. */
export interface TopicView {
  topic: string;
  topicErrorCode: number;
  partitionMetadata: PartitionView[];
}

/** One broker's answer about some topics, or why there was none. */
export interface BrokerView {
  nodeId: number;
  /** host:port */
  address: string;
  topics: TopicView[];
  /** Set when the broker did not answer (then `topics` is empty). */
  error?: string;
}

/**
 * What keeps `topics` from being usable everywhere: one line per broker that
 * did not answer, does not know a topic, or knows no leader for one of its
 * partitions, naming them. Empty when every broker knows a leader for every
 * partition of every topic.
 */
export function missingLeaders(topics: readonly string[], views: readonly BrokerView[]): string[] {
  if (views.length === 0) return ["no broker is listed in the cluster's metadata"];
  const lines: string[] = [];
  for (const view of views) {
    const where = `broker ${view.nodeId} (${view.address})`;
    if (view.error !== undefined) {
      lines.push(`${where}: no answer (${view.error})`);
      continue;
    }
    const missing: string[] = [];
    for (const name of topics) {
      const t = view.topics.find((m) => m.topic === name);
      if (!t || t.topicErrorCode !== 0 || t.partitionMetadata.length === 0) {
        missing.push(
          `${name} (${t && t.topicErrorCode !== 0 ? errorType(t.topicErrorCode) : "unknown"})`,
        );
        continue;
      }
      for (const p of t.partitionMetadata) {
        if (p.partitionErrorCode !== 0 || p.leader < 0) {
          const why = p.partitionErrorCode !== 0 ? errorType(p.partitionErrorCode) : "no leader";
          missing.push(`${name}/${p.partitionId} (${why})`);
        }
      }
    }
    if (missing.length > 0) lines.push(`${where}: ${missing.join(", ")}`);
  }
  return lines;
}

/** Options of {@link waitForLeaders}. */
export interface WaitForLeadersOptions {
  /** Give up after this long (default {@link LEADER_WAIT_MS}). */
  timeoutMs?: number;
  /** Called after each round that found something missing, with what (see {@link missingLeaders}). */
  onWait?: (missing: string[]) => void;
}

/**
 * Waits until every broker of the cluster knows a leader for every partition
 * of `topics`, asking each broker itself (the broker list comes from
 * `admin`), and returns each topic's partition count. Throws after
 * `timeoutMs`, naming the topics and partitions still missing and the
 * brokers they are missing on.
 */
export async function waitForLeaders(
  admin: Admin,
  topics: readonly string[],
  options: WaitForLeadersOptions = {},
): Promise<Map<string, number>> {
  if (topics.length === 0) return new Map();
  const timeoutMs = options.timeoutMs ?? LEADER_WAIT_MS;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    // Asked each round: a broker that stops is dropped from it once fenced.
    const { brokers } = await admin.describeCluster();
    const views = await Promise.all(brokers.map((b) => brokerView(b, topics, securityOf(admin))));
    const missing = missingLeaders(topics, views);
    if (missing.length === 0) {
      return new Map(views[0].topics.map((t) => [t.topic, t.partitionMetadata.length]));
    }
    const left = deadline - Date.now();
    if (left <= 0) {
      throw new Error(
        `topics ${topics.join(", ")} not ready after ${timeoutMs / 1000} s: every broker must ` +
          `know a leader for every partition; still missing on ${missing.join("; ")}`,
      );
    }
    options.onWait?.(missing);
    await new Promise((r) => setTimeout(r, Math.min(POLL_MS, left)));
  }
}

/** A kafkajs logger that drops everything: {@link waitForLeaders} reports failures itself. */
const SILENT: KafkaLogger = {
  info: () => {},
  error: () => {},
  warn: () => {},
  debug: () => {},
  namespace: () => SILENT,
  setLogLevel: () => {},
};

/**
 * Broker `b`'s own Metadata answer about `topics`, over a connection of its
 * own, with the admin client's TLS and credentials (as every txpipe client:
 * see createKafka). With `ssl`, kafkajs's default socket factory opens a TLS
 * socket (`tls.connect` with these options; the servername is the host
 * unless it is an IP address).
 */
async function brokerView(
  b: { nodeId: number; host: string; port: number },
  topics: readonly string[],
  security: KafkajsSecurity,
): Promise<BrokerView> {
  const address = `${b.host}:${b.port}`;
  const connection = new Connection({
    host: b.host,
    port: b.port,
    clientId: "txpipe-topics",
    logger: SILENT,
    socketFactory: socketFactory(),
    connectionTimeout: 3000,
    requestTimeout: 5000,
    ssl: security.ssl ?? null,
    sasl: security.sasl ?? null,
  });
  try {
    await connection.connect();
    if (security.sasl) await authenticate(connection);
    // Version 6, the newest kafkajs 2.2.4 speaks (and uses with these brokers).
    const { request, response } = Metadata.protocol({ version: 6 })({
      topics: [...topics],
      allowAutoTopicCreation: false,
    });
    const data = await connection.send({
      request,
      // kafkajs's decoder without its parse step, which throws on the first
      // error code: the answer shows every topic and partition not known yet.
      response: { decode: response.decode, parse: (decoded: unknown) => decoded },
      logResponseError: false,
    }) as { topicMetadata: TopicView[] };
    return { nodeId: b.nodeId, address, topics: data.topicMetadata };
  } catch (err) {
    return { nodeId: b.nodeId, address, topics: [], error: (err as Error)?.message ?? String(err) };
  } finally {
    await connection.disconnect().catch(() => {});
  }
}

/**
 * SASL on a bare kafkajs connection, as kafkajs's Broker does it: ask the
 * broker's API versions first (the handshake's version depends on them).
 */
async function authenticate(connection: Connection): Promise<void> {
  const { apiVersions } = await connection.send(ApiVersions.protocol({ version: 2 })()) as {
    apiVersions: Array<{ apiKey: number; minVersion: number; maxVersion: number }>;
  };
  connection.setVersions(
    Object.fromEntries(
      apiVersions.map((v) => [v.apiKey, { minVersion: v.minVersion, maxVersion: v.maxVersion }]),
    ),
  );
  connection.setSupportAuthenticationProtocol(true); // SaslAuthenticate: every Kafka since 1.0
  await connection.authenticate();
}

/** A Kafka error code's name, e.g. 3 → "UNKNOWN_TOPIC_OR_PARTITION". */
function errorType(code: number): string {
  return createErrorFromCode(code).type ?? `error ${code}`;
}
