/**
 * The one typed topology spec of txpipe: Kafka nodes and their ports, topics
 * and their settings, and the services that expose metrics.
 *
 * Everything else derives from here: the local cluster runner
 * (stacks/local/cluster.ts), the CDKTF Docker stack (stacks/), topic creation,
 * the jobs' default topic names and the rendered Prometheus scrape config.
 * No port, topic name, partition count or node id is written anywhere else.
 *
 * @module
 */

/** Apache Kafka version run locally (Maven Central jars) and in Docker (`apache/kafka`). */
export const KAFKA_VERSION = "4.4.0";

/** Prometheus JMX exporter java agent version attached to every Kafka node. */
export const JMX_EXPORTER_VERSION = "1.0.1";

/**
 * KRaft cluster id (a base64url UUID, as `kafka-storage random-uuid` prints).
 * Fixed so that storage formatted locally and in Docker agree.
 */
export const CLUSTER_ID = "dHhwaXBlLWNsdXN0ZXItMQ";

/** The role a KRaft node plays. `combined` is the light single-node dev mode. */
export type NodeRole = "controller" | "broker" | "combined";

/** One Kafka JVM process (local) or container (Docker). */
export interface KafkaNode {
  /** `node.id`, unique across controllers and brokers. */
  readonly id: number;
  /** A stable name: the Docker container/host name and the local data folder. */
  readonly name: string;
  readonly role: NodeRole;
  /** Client listener port (brokers and combined nodes); published to 127.0.0.1 in Docker. */
  readonly clientPort?: number;
  /**
   * TLS client listener port (brokers and combined nodes, local runner
   * only): SASL_SSL, its certificate signed by the local CA
   * (stacks/local/tls.ts).
   */
  readonly tlsPort?: number;
  /** Controller listener port (controllers and combined nodes). */
  readonly controllerPort?: number;
  /** Port of the JMX exporter agent's /metrics endpoint. */
  readonly metricsPort: number;
  /** JVM heap for this node, e.g. "512m". */
  readonly heap: string;
}

/** A topic and every setting it is created with. */
export interface TopicSpec {
  readonly name: string;
  readonly partitions: number;
  readonly replicationFactor: number;
  /** Topic-level configs, exactly as Kafka names them. */
  readonly config: Readonly<Record<string, string>>;
  /** What the topic is for, used in docs and the synthesized stack. */
  readonly purpose: string;
}

/** A process that exposes Prometheus metrics (a job or a Kafka node). */
export interface ScrapeTarget {
  readonly job: string;
  readonly instance: string;
  readonly host: string;
  readonly port: number;
}

/** `cluster`: 3 KRaft controllers + 3 brokers. `single`: one combined node for quick development. */
export type ClusterMode = "cluster" | "single";

/** The whole topology for one mode. */
export interface Topology {
  readonly mode: ClusterMode;
  readonly kafkaVersion: string;
  readonly clusterId: string;
  readonly nodes: readonly KafkaNode[];
  readonly topics: readonly TopicSpec[];
  /** The job processes and their metrics ports. */
  readonly jobs: readonly JobSpec[];
  /** Prometheus's own port. */
  readonly prometheusPort: number;
}

/** A Deno job, its default replicas (Docker) and metrics port (local, first instance). */
export interface JobSpec {
  readonly name: "produce" | "aggregate" | "detect" | "evaluate";
  readonly script: string;
  readonly metricsPort: number;
  readonly replicas: number;
  /**
   * V8 flags the job runs with wherever it is started (`deno task`, `deno task
   * start`, the Docker stack, the tests and the bench): see {@link STREAM_V8_FLAGS}.
   */
  readonly v8Flags: readonly string[];
}

/**
 * The stream jobs' V8 flags, which bound their memory (docs/benchmarks.md#memory):
 * - `--heap-growing-percent=50`: after a full GC the heap may grow by half
 *   before the next, instead of up to about four times what is live. Most of
 *   a job's heap is garbage of records already processed;
 * - `--max-semi-space-size=4`: a young generation of 4 MiB per semi-space
 *   (16 by default), which the batch's short-lived records fill and leave.
 * Together about a third less peak memory for 15–30 % more CPU (measured in
 * docs/benchmarks.md#memory); 20 % growth saves a little more for 35–60 %.
 */
export const STREAM_V8_FLAGS = ["--heap-growing-percent=50", "--max-semi-space-size=4"] as const;

/** The `--v8-flags=...` argument of `deno run` for a job (none when it has no V8 flags). */
export function v8FlagArgs(job: Pick<JobSpec, "v8Flags">): string[] {
  return job.v8Flags.length ? [`--v8-flags=${job.v8Flags.join(",")}`] : [];
}

/** The `deno run` arguments that start a job, the script last. */
export function denoRunArgs(
  job: Pick<JobSpec, "v8Flags" | "script">,
  script = job.script,
): string[] {
  return ["run", "-A", ...v8FlagArgs(job), script];
}

/** Topic names used by the jobs. */
export const TOPICS = {
  transactions: "financial_transactions",
  aggregates: "transaction_aggregates",
  anomalies: "transaction_anomalies",
  deadLetters: "transaction_dead_letters",
  /**
   * Detection rules published while detect runs (jobs/rules.ts, compacted,
   * key: the detect app id the rules are for; docs/operations.md).
   */
  detectRules: "txpipe-detect-rules",
} as const;

const SEVEN_DAYS_MS = String(7 * 24 * 60 * 60 * 1000);

/**
 * Application ids of the stream jobs: their consumer groups, transactional
 * id prefixes and internal topic names derive from them.
 */
export const APP_IDS = { aggregate: "txpipe-aggregate", detect: "txpipe-detect" } as const;

/** Names of a stream job's internal topics, derived from its application id. */
export function internalTopicNames(appId: string) {
  return {
    /** Aggregation: transactions re-keyed by merchant and currency, plus watermark markers. */
    repartition: `${appId}-repartition`,
    /** Aggregation stage 1: its per-input-partition watermark. */
    rekeyChangelog: `${appId}-rekey-changelog`,
    /** Aggregation stage 2 (open windows) or detection (per-user state). */
    changelog: `${appId}-changelog`,
  };
}

/**
 * The internal topics of the stream jobs (docs/design.md: declared in the same
 * spec). Changelogs are compacted and have as many partitions as the topic
 * whose partitions they mirror.
 */
export function internalTopics(aggregateAppId: string, detectAppId: string): TopicSpec[] {
  const agg = internalTopicNames(aggregateAppId);
  const det = internalTopicNames(detectAppId);
  const compacted = { "cleanup.policy": "compact" };
  return [
    topic(
      agg.repartition,
      3,
      "aggregation: per-batch partial window totals keyed by merchant|currency + watermarks",
    ),
    topic(agg.rekeyChangelog, 5, "aggregation: per input partition watermark", compacted),
    topic(agg.changelog, 3, "aggregation: open windows per repartition partition", compacted),
    topic(det.changelog, 5, "detection: per-user state per input partition", compacted),
  ];
}

function topic(
  name: string,
  partitions: number,
  purpose: string,
  extra: Record<string, string> = {},
): TopicSpec {
  return {
    name,
    partitions,
    replicationFactor: 3,
    config: {
      "retention.ms": SEVEN_DAYS_MS,
      "min.insync.replicas": "2",
      ...extra,
    },
    purpose,
  };
}

/** The topics of the full cluster, as docs/design.md lists them. */
export const CLUSTER_TOPICS: readonly TopicSpec[] = [
  topic(TOPICS.transactions, 5, "raw transactions from the producer, key userId"),
  topic(TOPICS.aggregates, 3, "per merchant and currency window totals, key merchantId"),
  topic(TOPICS.anomalies, 3, "detected anomalies, key userId"),
  topic(TOPICS.deadLetters, 3, "invalid records with reason headers, original key"),
  topic(
    TOPICS.detectRules,
    1,
    "control: detection rules per detect app id (key), read by running detect instances",
    { "cleanup.policy": "compact" },
  ),
  ...internalTopics(APP_IDS.aggregate, APP_IDS.detect),
];

const CONTROLLERS: readonly KafkaNode[] = [1, 2, 3].map((id) => ({
  id,
  name: `kafka-controller-${id}`,
  role: "controller" as const,
  controllerPort: 9192 + id,
  metricsPort: 7070 + id,
  heap: "256m",
}));

const BROKERS: readonly KafkaNode[] = [4, 5, 6].map((id, i) => ({
  id,
  name: `kafka-broker-${i + 1}`,
  role: "broker" as const,
  clientPort: 9092 + i,
  tlsPort: 9095 + i,
  metricsPort: 7070 + id,
  heap: "768m",
}));

const SINGLE_NODE: KafkaNode = {
  id: 1,
  name: "kafka-single",
  role: "combined",
  clientPort: 9092,
  tlsPort: 9095,
  controllerPort: 9193,
  metricsPort: 7071,
  heap: "768m",
};

const JOBS: readonly JobSpec[] = [
  { name: "produce", script: "jobs/produce.ts", metricsPort: 9464, replicas: 1, v8Flags: [] },
  {
    name: "aggregate",
    script: "jobs/aggregate.ts",
    metricsPort: 9465,
    replicas: 2,
    v8Flags: STREAM_V8_FLAGS,
  },
  {
    name: "detect",
    script: "jobs/detect.ts",
    metricsPort: 9466,
    replicas: 2,
    v8Flags: STREAM_V8_FLAGS,
  },
  { name: "evaluate", script: "jobs/evaluate.ts", metricsPort: 9467, replicas: 1, v8Flags: [] },
];

/** The spec of one job. */
export function jobSpec(name: JobSpec["name"]): JobSpec {
  return JOBS.find((j) => j.name === name)!;
}

/**
 * The topology for a mode. `single` keeps the same topics and partition
 * counts but with replication 1 and `min.insync.replicas=1`, since one node
 * cannot hold three replicas.
 */
export function topology(mode: ClusterMode = "cluster"): Topology {
  const single = mode === "single";
  return {
    mode,
    kafkaVersion: KAFKA_VERSION,
    clusterId: CLUSTER_ID,
    nodes: single ? [SINGLE_NODE] : [...CONTROLLERS, ...BROKERS],
    topics: single
      ? CLUSTER_TOPICS.map((t) => ({
        ...t,
        replicationFactor: 1,
        config: { ...t.config, "min.insync.replicas": "1" },
      }))
      : CLUSTER_TOPICS,
    jobs: JOBS,
    prometheusPort: 9090,
  };
}

/** The nodes that serve clients (brokers, or the combined node). */
export function brokerNodes(topo: Topology): KafkaNode[] {
  return topo.nodes.filter((n) => n.role !== "controller");
}

/** The nodes that vote in the KRaft quorum (controllers, or the combined node). */
export function controllerNodes(topo: Topology): KafkaNode[] {
  return topo.nodes.filter((n) => n.role !== "broker");
}

/** `host:port` bootstrap list of a topology's brokers. */
export function bootstrapServers(topo: Topology, host = "127.0.0.1"): string[] {
  return brokerNodes(topo).map((n) => `${host}:${n.clientPort}`);
}

/** `host:port` bootstrap list of a topology's brokers' TLS listeners (local runner). */
export function tlsBootstrapServers(topo: Topology, host = "127.0.0.1"): string[] {
  return brokerNodes(topo).map((n) => `${host}:${n.tlsPort}`);
}

/** `controller.quorum.bootstrap.servers` style list: `host:port` of each controller. */
export function quorumBootstrap(topo: Topology, hostOf: (n: KafkaNode) => string): string {
  return controllerNodes(topo).map((n) => `${hostOf(n)}:${n.controllerPort}`).join(",");
}

/** `controller.quorum.voters` style list: `id@host:port` of each controller. */
export function quorumVoters(topo: Topology, hostOf: (n: KafkaNode) => string): string {
  return controllerNodes(topo).map((n) => `${n.id}@${hostOf(n)}:${n.controllerPort}`).join(",");
}

/**
 * The settings (partitions, replication, configs) of spec topic `like` under
 * another name: for topics named by flags, such as a test's or a second
 * application id's.
 */
export function topicAs(topo: Topology, like: string, name: string): TopicSpec {
  return { ...topicSpec(topo, like), name };
}

/** A topic spec by name; throws naming the known topics when absent. */
export function topicSpec(topo: Topology, name: string): TopicSpec {
  const found = topo.topics.find((t) => t.name === name);
  if (!found) {
    throw new Error(
      `unknown topic "${name}"; expected one of ${topo.topics.map((t) => t.name).join(", ")}`,
    );
  }
  return found;
}

/**
 * Cluster-wide server settings every broker (and combined node) runs with,
 * locally and in Docker: internal topics replicated like the data topics,
 * no auto-created topics (topics come from this spec only).
 */
export function brokerDefaults(topo: Topology): Record<string, string> {
  const rf = topo.mode === "single" ? "1" : "3";
  const minIsr = topo.mode === "single" ? "1" : "2";
  return {
    "auto.create.topics.enable": "false",
    "default.replication.factor": rf,
    "min.insync.replicas": minIsr,
    "offsets.topic.replication.factor": rf,
    "transaction.state.log.replication.factor": rf,
    "transaction.state.log.min.isr": minIsr,
    "share.coordinator.state.topic.replication.factor": rf,
    "share.coordinator.state.topic.min.isr": minIsr,
    "group.initial.rebalance.delay.ms": "0",
    "num.partitions": "3",
  };
}

/**
 * Host ports of the Docker stack's other services, each published on
 * 127.0.0.1 only. Kafka client ports and Prometheus's port are above.
 */
export const SERVICE_PORTS = {
  grafana: 3000,
  elasticsearch: 9200,
  kibana: 5601,
  /** Logstash's GELF input (UDP): Docker's gelf log driver sends container logs here. */
  logstashGelf: 12201,
} as const;

/**
 * Port of the Docker brokers' INTERNAL listener, which in-network clients
 * (jobs, topic creation, inter-broker replication) use as `<node name>:19092`.
 * The EXTERNAL listener keeps each broker's `clientPort`, published on 127.0.0.1.
 */
export const INTERNAL_LISTENER_PORT = 19092;
