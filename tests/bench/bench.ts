/**
 * `deno task bench`: txpipe against what users would pick instead, on the
 * same local 3+3 cluster, the same backlog, in the same run.
 *
 * - produce: txpipe's producer against Kafka's own ProducerPerformance (the
 *   same record bytes, acks=all, idempotent; Kafka's defaults and batching
 *   like ours);
 * - catch-up: one backlog, then each contender from a fresh start until it
 *   has processed all of it: ConsumerPerformance (a plain consumer), txpipe
 *   aggregate and detect, Kafka Streams doing txpipe's aggregation
 *   (tests/bench/streams/), and Spark Structured Streaming with `--spark`.
 *   The aggregations' windows are cross-checked against txpipe's, exactly;
 * - latency: each stream job under a paced producer at rising rates, read
 *   by an independent read_committed reader (tests/bench/latency.ts);
 * - security: the producer and detect over SASL, TLS and PLAINTEXT;
 * - reference: today's aggregate and detect against the same jobs at an
 *   earlier commit (`--rev`), on one backlog, their windows cross-checked.
 *
 * Contenders run interleaved (run 1 of each, then run 2 of each, ...) and
 * every figure is the median of `--runs` with its min and max: two shared
 * cores swing single runs by ±50 %. Each run writes results-<time>.json and
 * its chart (SVG, tests/bench/chart.ts) under `--out`. A benchmark, not a
 * test: it asserts nothing.
 *
 * On a secured cluster every client connects as the admin: kafkajs through
 * `createKafka`, Kafka's tools and the Java peers through a temporary 0600
 * properties file of its credentials (tests/bench/client_config.ts).
 *
 * @module
 */
import { join } from "node:path";
import {
  benchPlaintextPort,
  clusterDown,
  clusterUp,
  homeDir,
  kafkaClasspath,
  ROOT,
} from "../../stacks/local/cluster.ts";
import {
  brokerNodes,
  KAFKA_VERSION,
  tlsBootstrapServers,
  topicAs,
  TOPICS,
} from "../../stacks/topology.ts";
import { caPemFile } from "../../stacks/local/tls.ts";
import { describeHolder, lockPath, readHolder } from "../../stacks/local/lock.ts";
import { aclEntries } from "../../jobs/lib/acl.ts";
import { type AclRule, jobAcls, scratchAcls } from "../../stacks/security.ts";
import { createKafka, ensureTopics } from "../../jobs/lib/kafka.ts";
import { defineCommand, parseCommandLine } from "../../jobs/lib/cli.ts";
import { formatCount } from "../../jobs/lib/progress.ts";
import { encodeTransaction, TransactionGenerator } from "../../jobs/lib/generator.ts";
import {
  BROKERS,
  deleteTopicsWhere,
  grantScratch,
  isTestTopic,
  TOPO,
  withAdmin,
} from "../helpers/cluster.ts";
import { runTopics, startInstance, stopInstance, waitCaughtUp } from "../helpers/jobs.ts";
import { kafkaCpuSeconds, ProcessWatch } from "./proc.ts";
import { CpuBudget, cpuQuotaSupport } from "./cpu_quota.ts";
import { startReader } from "./reader.ts";
import { withClientConfig } from "../helpers/client_config.ts";
import { type AggregateSettings, type CatchUpRun, perSecond, type WindowTotals } from "./types.ts";
import {
  type BenchResult,
  type CatchUpResult,
  type ClusterState,
  type ContenderSummary,
  type CrossCheck,
  crossCheck,
  type LatencyResult,
  type LatencyRow,
  type Machine,
  type ProducerResult,
  ratio,
  type ReferenceResult,
  type SecurityResult,
  summariseRuns,
  windowTotals,
} from "./results.ts";
import { renderChart } from "./chart.ts";
import { COMPARISONS } from "./report.ts";
import { buildKafkaStreams, runKafkaStreams } from "./kafka_streams.ts";
import { ensureSpark, runSpark } from "./spark.ts";
import { type LatencyPoint, maxSustainable, measureRate, sweep, warnIfCrowded } from "./latency.ts";

const COMMAND = defineCommand({
  name: "deno task bench",
  summary: "benchmark txpipe against Kafka Streams, Spark and Kafka's own tools on the local " +
    "cluster",
  usage: "deno task bench [all|producer|catchup|latency|security|reference] [flags]",
  flags: {
    records: {
      kind: "int",
      min: 1000,
      default: 1_000_000,
      help: "records in the catch-up backlog and in each producer run",
      placeholder: "N",
    },
    runs: {
      kind: "int",
      min: 1,
      max: 10,
      default: 3,
      help: "interleaved runs of each contender; figures are medians with min and max",
    },
    spark: {
      kind: "boolean",
      default: false,
      help: "add Spark Structured Streaming to the catch-up (installs pyspark into .cache " +
        "on first use, about 450 MB)",
    },
    rates: {
      kind: "list",
      default: ["1000", "5000", "20000", "40000", "80000"],
      help: "paced input rates of the latency sweep, records/s, rising; it stops at the " +
        "first rate a job cannot sustain",
      placeholder: "R,R",
    },
    "latency-seconds": {
      kind: "int",
      min: 5,
      default: 60,
      help: "seconds measured at each paced rate (after a warm-up); the maximum sustainable " +
        "rate needs bounded lag over 60",
      placeholder: "S",
    },
    quick: {
      kind: "boolean",
      default: false,
      help: "a quicker variant: 200 000 records, 1 run, rates 1000,5000,20000 for 20 s",
    },
    out: {
      kind: "string",
      help: "folder for results-<time>.json and chart-<time>.svg (default: TXPIPE_HOME/bench)",
      placeholder: "DIR",
    },
    only: {
      kind: "list",
      default: [],
      help: "run only these catch-up contenders: a contender's name picks it, other words " +
        'every contender whose name contains them (e.g. "txpipe aggregate" or "2 instances"; ' +
        "ConsumerPerformance always runs as the reference)",
      placeholder: "NAME,NAME",
    },
    "with-latency": {
      kind: "boolean",
      default: false,
      help: "reference mode: also the latency sweep at --rates, today's jobs and the " +
        "earlier commit's interleaved",
    },
    rev: {
      kind: "string",
      help: "reference mode: the earlier commit whose aggregate and detect run against " +
        "today's on the same backlog",
      placeholder: "COMMIT",
    },
    "cpus-per-instance": {
      kind: "number",
      min: 0.05,
      max: 64,
      help: "catch-up: run every txpipe stream job instance in a cgroup of its own limited " +
        "to this many cores, as a container's CPU limit would (Linux, root); one instance " +
        "and two then compare as on machines not shared with the brokers",
      placeholder: "CPUS",
    },
    "job-flags": {
      kind: "string",
      default: "",
      help: "extra flags for every txpipe stream job instance, to compare settings " +
        '(e.g. "--max-batch-bytes 1MiB")',
      placeholder: "FLAGS",
    },
  },
  examples: [
    "deno task bench",
    "deno task bench --quick",
    "deno task bench catchup --spark --records 500000",
    "deno task bench latency --rates 1000,5000,20000 --latency-seconds 60",
    'deno task bench catchup --only "txpipe aggregate" --job-flags "--max-batch-bytes 1MiB"',
    "deno task bench catchup --only txpipe --cpus-per-instance 0.25",
    "deno task bench security --runs 5",
    "deno task bench reference --rev a93141b",
    "deno task bench reference --rev a93141b --with-latency --rates 5000,10000,20000",
  ],
});

/**
 * `all` runs the first three; `security` and `reference` restart the
 * cluster twice, so they run alone.
 */
const MODES = ["all", "producer", "catchup", "latency", "security", "reference"] as const;
/** Topics this benchmark creates (its own, and the contenders' outputs and internal topics). */
const BENCH_PREFIXES = ["bench_", "bench-", "test_bench_", "test-bench_"];
/** A catch-up round's outputs and internal topics (the backlog, bench_backlog_*, stays). */
const ROUND_PREFIXES = ["test_bench_", "test-bench_", "bench-", "bench_streams_", "bench_spark_"];
const decoder = new TextDecoder();
const AGGREGATE: AggregateSettings = { windowMs: 60_000, allowedLatenessMs: 5_000 };
/**
 * Kafka Streams' grace: the issue's "grace equal to the allowed lateness",
 * and one wide enough for a catch-up. Its stream time is per repartition
 * partition, fed by every input partition at uneven speed while it catches
 * up, so with 5 s it drops most of a backlog as late (docs/benchmarks.md).
 */
const STREAMS_GRACE = [
  { name: "Kafka Streams aggregate, grace 5 s", graceMs: 5_000, what: "grace 5 s" },
  { name: "Kafka Streams aggregate, grace 10 min", graceMs: 600_000, what: "grace 10 min" },
];

function say(line: string): void {
  console.error(`    ${line}`);
}

async function createTopic(name: string, like: string): Promise<string> {
  const admin = createKafka({ principal: "admin", clientId: "txpipe-bench", brokers: BROKERS })
    .admin();
  await admin.connect();
  try {
    await ensureTopics(admin, [topicAs(TOPO, like, name)]);
  } finally {
    await admin.disconnect();
  }
  return name;
}

function freshBenchTopic(label: string): Promise<string> {
  return createTopic(`bench_${label}_${Date.now()}`, TOPICS.transactions);
}

function deleteTopics(...prefixes: string[]): Promise<number> {
  return deleteTopicsWhere((t) => prefixes.some((p) => t.startsWith(p)));
}

/** Partition replicas per broker past which the bench warns that its figures are low. */
const MANY_REPLICAS = 1_000;

/**
 * Deletes the topics tests left on the cluster (`test_…`, `test-…`, which
 * `deno task test` deletes at its end anyway; not while a test run holds the
 * cluster) and says how many partition replicas each broker holds: a
 * broker's fetches go through every partition it holds, idle or not, so on a
 * machine the brokers share with the contenders, thousands of idle
 * partitions cost the contenders CPU (docs/benchmarks.md, "Idle partitions
 * cost the brokers CPU").
 */
async function leanCluster(): Promise<ClusterState> {
  const holder = await readHolder(lockPath("start", homeDir()));
  let deleted = 0;
  if (holder?.command === "deno task test") {
    say(`the test topics stay: ${describeHolder(holder)} uses them`);
  } else {
    deleted = await deleteTopicsWhere(isTestTopic);
    if (deleted > 0) say(`deleted ${deleted} topics the tests left (test_…, test-…)`);
  }
  const replicas: Record<string, number> = {};
  const { topics } = await withAdmin((admin) => admin.fetchTopicMetadata());
  for (const t of topics) {
    for (const p of t.partitions) {
      for (const id of p.replicas) replicas[id] = (replicas[id] ?? 0) + 1;
    }
  }
  const counts = Object.values(replicas);
  const [least, most] = [Math.min(...counts), Math.max(...counts)];
  say(
    `the brokers hold ${least === most ? least : `${least}–${most}`} partition replicas each ` +
      `(${topics.length} topics)`,
  );
  if (most > MANY_REPLICAS) {
    say(
      `warning: over ${formatCount(MANY_REPLICAS)} partition replicas per broker; every fetch ` +
        "goes through all of them, which costs the contenders CPU on a machine they share " +
        "with the brokers: figures lower than on a lean cluster " +
        "(`deno task cluster reset` deletes every topic)",
    );
  }
  return { topicsDeletedFirst: deleted, partitionReplicasPerBroker: replicas };
}

/** A finished child process, with what it used. */
interface Watched {
  code: number;
  stdout: string;
  stderr: string;
  startedAt: number;
  endedAt: number;
  peakRssBytes: number;
  cpuSeconds: number;
}

/** Runs a command to its end, sampling its memory and CPU. */
async function runWatched(
  cmd: string,
  args: string[],
  env?: Record<string, string>,
): Promise<Watched> {
  const startedAt = Date.now();
  const child = new Deno.Command(cmd, { args, cwd: ROOT, env, stdout: "piped", stderr: "piped" })
    .spawn();
  const watch = new ProcessWatch(child.pid);
  const [out, err] = [new Response(child.stdout).text(), new Response(child.stderr).text()];
  const status = await child.status;
  const usage = watch.stop();
  return {
    code: status.code,
    stdout: await out,
    stderr: await err,
    startedAt,
    endedAt: Date.now(),
    ...usage,
  };
}

// ---------------------------------------------------------------- produce

/**
 * Runs our producer for `records` records into `topic`; its own summary
 * gives the rate. `via`: over another listener than the default.
 */
async function runOurProducer(
  topic: string,
  records: number,
  seed: string,
  via?: Transport,
): Promise<CatchUpRun> {
  const w = await runWatched(Deno.execPath(), [
    "run",
    "-A",
    join(ROOT, "jobs/produce.ts"),
    ...(via ? ["--brokers", via.brokers.join(",")] : []),
    "--topic",
    topic,
    "--count",
    String(records),
    "--seed",
    seed,
    "--metrics-port",
    "0",
  ], via?.env);
  const lines = w.stdout.split("\n").filter((l) => l.includes('"summary"'));
  if (w.code !== 0 || lines.length === 0) {
    throw new Error(`our producer failed:\n${w.stderr.slice(-2000)}`);
  }
  const summary = JSON.parse(lines[lines.length - 1]);
  return {
    contender: via ? `txpipe produce over ${via.name}` : "txpipe produce",
    records: summary.acknowledged,
    startedAt: w.startedAt,
    doneAt: w.endedAt,
    recordsPerSecond: perSecond(summary.acknowledged, w.startedAt, w.endedAt),
    // Its own figure: from connected to the last acknowledgement.
    recordsPerSecondFromFirstOutput: summary.acknowledged / summary.seconds,
    peakRssBytes: w.peakRssBytes,
    cpuSeconds: w.cpuSeconds,
    outputs: summary.acknowledged,
  };
}

async function writePayloadFile(): Promise<{ path: string; meanBytes: number }> {
  // ProducerPerformance cycles through these payloads: the same JSON records ours sends.
  const gen = new TransactionGenerator({ seed: "bench", fraudRate: 0.01 });
  const sample = 50_000;
  const lines: string[] = [];
  let bytes = 0;
  for (let i = 0; i < sample; i++) {
    const text = decoder.decode(encodeTransaction(gen.next().tx));
    lines.push(text);
    bytes += text.length;
  }
  const dir = join(homeDir(), "bench");
  await Deno.mkdir(dir, { recursive: true });
  const path = join(dir, "payloads.jsonl");
  await Deno.writeTextFile(path, lines.join("\n"));
  return { path, meanBytes: bytes / sample };
}

/** ProducerPerformance settings: Kafka's client defaults, and batching close to ours. */
const JAVA_PRODUCERS: Array<{ name: string; props: string[] }> = [
  { name: "ProducerPerformance, defaults", props: [] },
  {
    name: "ProducerPerformance, batching like ours",
    props: ["batch.size=262144", "linger.ms=10"],
  },
  // kafkajs's idempotent producer has one request in flight per connection;
  // the Java client pipelines up to five. This variant shows what that costs.
  {
    name: "ProducerPerformance, batching like ours, 1 in flight",
    props: ["batch.size=262144", "linger.ms=10", "max.in.flight.requests.per.connection=1"],
  },
];

async function runProducerPerformance(
  name: string,
  records: number,
  payloads: string,
  props: string[],
): Promise<CatchUpRun> {
  const topic = await freshBenchTopic("kafka");
  const w = await runKafkaTool("org.apache.kafka.tools.ProducerPerformance", [
    "--topic",
    topic,
    "--num-records",
    String(records),
    "--throughput",
    "-1",
    "--payload-file",
    payloads,
    "--command-property",
    "acks=all",
    "enable.idempotence=true",
    ...props,
  ]);
  // "500000 records sent, 123456.7 records/sec (29.43 MB/sec), ..."
  const m = /(\d+) records sent, ([\d.]+) records\/sec/.exec(
    w.stdout.trim().split("\n").pop() ?? "",
  );
  if (w.code !== 0 || !m) {
    throw new Error(
      `ProducerPerformance failed:\n${w.stdout.slice(-1500)}${w.stderr.slice(-1500)}`,
    );
  }
  const n = Number(m[1]);
  return {
    contender: name,
    records: n,
    startedAt: w.startedAt,
    doneAt: w.endedAt,
    recordsPerSecond: perSecond(n, w.startedAt, w.endedAt),
    recordsPerSecondFromFirstOutput: Number(m[2]), // its own figure, without JVM start
    peakRssBytes: w.peakRssBytes,
    cpuSeconds: w.cpuSeconds,
    outputs: n,
  };
}

async function producerBenchmark(records: number, runs: number): Promise<ProducerResult> {
  const payload = await writePayloadFile();
  console.log(
    `==> produce: ${formatCount(records)} records of ~${
      payload.meanBytes.toFixed(0)
    } bytes (txpipe transactions), acks=all, idempotent, 5 partitions x 3 replicas, ${runs} ` +
      `interleaved run(s) each`,
  );
  const byName = new Map<string, CatchUpRun[]>();
  const contenders = [
    {
      name: "txpipe produce",
      run: async () => runOurProducer(await freshBenchTopic("ours"), records, "bench"),
    },
    ...JAVA_PRODUCERS.map((j) => ({
      name: j.name,
      run: () => runProducerPerformance(j.name, records, payload.path, j.props),
    })),
  ];
  for (let i = 0; i < runs; i++) {
    for (const c of rotate(contenders, i)) {
      const [r, kafkaCpu] = await kafkaCpuDuring(c.run);
      if (kafkaCpu !== undefined) r.kafkaCpuSeconds = kafkaCpu;
      (byName.get(c.name) ?? byName.set(c.name, []).get(c.name)!).push(r);
      console.log(`    run ${i + 1}: ${line(r)}`);
    }
    await deleteTopics(...BENCH_PREFIXES);
  }
  const what: Record<string, string> = {
    "txpipe produce": "kafkajs, generator included",
    [JAVA_PRODUCERS[0].name]: "Java client, batch.size 16 KiB, linger.ms 5",
    [JAVA_PRODUCERS[1].name]: "Java client, batch.size=262144, linger.ms=10",
    [JAVA_PRODUCERS[2].name]: "the same, max.in.flight.requests.per.connection=1, as kafkajs",
  };
  return {
    records,
    meanRecordBytes: payload.meanBytes,
    contenders: [...byName].map(([name, rs]) => summariseRuns(name, what[name] ?? "", rs)),
  };
}

// ---------------------------------------------------------------- catch-up

/** One contender of the catch-up: it reads `backlog` and reports a run (and windows, if any). */
interface CatchUpContender {
  name: string;
  what: string;
  run(backlog: string, records: number): Promise<{ run: CatchUpRun; windows?: WindowTotals[] }>;
}

/**
 * Runs one of Kafka's own tools (`mainClass`) from the cache's jars against
 * the cluster, as the admin when the cluster has credentials (a 0600 client
 * config deleted after the run), watched like every contender.
 */
async function runKafkaTool(mainClass: string, args: string[]) {
  const classpath = await kafkaClasspath();
  return await withClientConfig((config) =>
    runWatched("java", [
      "-Xmx512m",
      "-cp",
      classpath,
      mainClass,
      "--bootstrap-server",
      BROKERS.join(","),
      ...config.args("--command-config"),
      ...args,
    ])
  );
}

async function runConsumerPerformance(topic: string, records: number): Promise<CatchUpRun> {
  const w = await runKafkaTool("org.apache.kafka.tools.ConsumerPerformance", [
    "--topic",
    topic,
    "--num-records",
    String(records),
    "--group",
    `bench-consumer-performance-${Date.now()}`,
    "--timeout",
    "120000",
  ]);
  // start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, ...
  const cells = (w.stdout.trim().split("\n").pop() ?? "").split(",").map((c) => c.trim());
  const n = Number(cells[4]);
  const own = Number(cells[5]);
  if (w.code !== 0 || !(n > 0) || !(own > 0)) {
    throw new Error(`ConsumerPerformance failed:\n${w.stdout.slice(-1500)}${w.stderr.slice(-800)}`);
  }
  return {
    contender: "ConsumerPerformance",
    records: n,
    startedAt: w.startedAt,
    doneAt: w.endedAt,
    recordsPerSecond: perSecond(n, w.startedAt, w.endedAt),
    recordsPerSecondFromFirstOutput: own, // its own figure: from subscribing to the last record
    peakRssBytes: w.peakRssBytes,
    cpuSeconds: w.cpuSeconds,
    outputs: 0,
  };
}

/** Waits until the reader has received nothing new for `quietMs` (at most `maxMs`). */
async function settle(count: () => number, quietMs = 2000, maxMs = 15_000): Promise<void> {
  const deadline = Date.now() + maxMs;
  let last = -1;
  while (Date.now() < deadline && count() !== last) {
    last = count();
    await new Promise((r) => setTimeout(r, quietMs));
  }
}

/**
 * Fresh instances of a txpipe job (one, or two sharing the work as one
 * consumer group; each with `threads` stream threads) over the whole backlog,
 * from spawn to committed. With two, peak RSS is the sum of each one's peak
 * and CPU the sum of both.
 */
async function runTxpipe(
  job: "aggregate" | "detect",
  backlog: string,
  records: number,
  instances: 1 | 2 = 1,
  jobFlags: readonly string[] = [],
  via?: Transport,
  reference?: Reference,
  cpusPerInstance?: number,
  threads = 1,
): Promise<{ run: CatchUpRun; windows?: WindowTotals[] }> {
  const t = runTopics(backlog, `bench_${job}`);
  await createTopic(t.output, job === "aggregate" ? TOPICS.aggregates : TOPICS.anomalies);
  const reader = await startReader(t.output);
  const startedAt = Date.now();
  const flags = job === "aggregate"
    ? [
      "--window",
      `${AGGREGATE.windowMs}ms`,
      "--allowed-lateness",
      `${AGGREGATE.allowedLatenessMs}ms`,
    ]
    : [];
  flags.push(...jobFlags);
  if (threads > 1) flags.push("--threads", String(threads));
  const started = Array.from(
    { length: instances },
    () =>
      startInstance(job, t, flags, {
        ...(via ? { brokers: via.brokers, env: via.env } : {}),
        root: reference?.dir,
      }),
  );
  // Each instance into its own CPU budget at once, before it has read its first record.
  const budgets: CpuBudget[] = [];
  try {
    if (cpusPerInstance !== undefined) {
      for (const i of started) {
        const budget = new CpuBudget(cpusPerInstance);
        budgets.push(budget);
        budget.add(i.child.pid);
      }
    }
  } catch (err) {
    await Promise.all(started.map((i) => stopInstance(i)));
    await reader.stop();
    for (const b of budgets) b.remove();
    throw err;
  }
  const watches = started.map((i) => new ProcessWatch(i.child.pid));
  let doneAt: number;
  // An instance that ends early (a bad --job-flags value, a crash) fails the run at once.
  let stopped = false;
  const exited = Promise.race(started.map(async (i) => {
    const status = await i.child.status;
    if (stopped) return;
    throw new Error(
      `txpipe ${job} exited with code ${status.code} before catching up:\n` +
        (await i.stderr).slice(-1500),
    );
  }));
  exited.catch(() => {});
  try {
    await Promise.race([waitCaughtUp(job, t, 1_800_000), exited]);
    doneAt = Date.now();
    await settle(() => reader.records.length);
  } finally {
    stopped = true;
    for (const w of watches) w.sample();
    await Promise.all(started.map((i) => stopInstance(i)));
    await reader.stop();
    for (const b of budgets) {
      const t = b.throttled();
      say(
        `an instance's ${cpusPerInstance}-core budget held it back ${t.seconds.toFixed(1)} s ` +
          `(${t.periods} periods of 100 ms)`,
      );
      b.remove();
    }
  }
  const usages = watches.map((w) => w.stop());
  const run: CatchUpRun = {
    contender: `txpipe ${job}` + (instances === 1 ? "" : `, ${instances} instances`) +
      (threads === 1 ? "" : `, ${threads} threads`) +
      (reference ? ` at ${reference.rev}` : via ? ` over ${via.name}` : ""),
    records,
    startedAt,
    firstOutputAt: reader.firstAt,
    doneAt,
    recordsPerSecond: perSecond(records, startedAt, doneAt),
    ...(reader.firstAt && reader.firstAt < doneAt
      ? { recordsPerSecondFromFirstOutput: perSecond(records, reader.firstAt, doneAt) }
      : {}),
    peakRssBytes: usages.reduce((n, u) => n + u.peakRssBytes, 0),
    cpuSeconds: usages.reduce((n, u) => n + u.cpuSeconds, 0),
    outputs: reader.records.length,
  };
  if (job === "detect") return { run };
  return { run, windows: windowTotals(reader.records.map((r) => r.value)) };
}

/** The machine's reference in every catch-up: Kafka's own consumer, reading the backlog. */
const CONSUMER_PERFORMANCE: CatchUpContender = {
  name: "ConsumerPerformance",
  what: "Kafka's plain consumer: no processing, no writes",
  run: async (topic, records) => ({ run: await runConsumerPerformance(topic, records) }),
};

/**
 * The catch-up's contenders: with `only`, ConsumerPerformance and those whose
 * names contain one of its words; `jobFlags` go to every txpipe instance.
 */
function catchUpContenders(
  spark: boolean,
  only: readonly string[] = [],
  jobFlags: readonly string[] = [],
  cpusPerInstance?: number,
): CatchUpContender[] {
  const txpipe =
    (job: "aggregate" | "detect", instances: 1 | 2, threads = 1) => (topic: string, n: number) =>
      runTxpipe(job, topic, n, instances, jobFlags, undefined, undefined, cpusPerInstance, threads);
  const contenders: CatchUpContender[] = [
    CONSUMER_PERFORMANCE,
    {
      name: "txpipe aggregate",
      what: "validate, repartition, windows, changelog, exactly once",
      run: txpipe("aggregate", 1),
    },
    ...STREAMS_GRACE.map((g): CatchUpContender => ({
      name: g.name,
      what: `the same aggregation, exactly_once_v2, 1 stream thread, ${g.what}`,
      run: async (topic, records) => {
        const output = `bench_streams_out_${Date.now()}`; // the runner creates it
        const r = await runKafkaStreams({
          input: topic,
          output,
          records,
          settings: { ...AGGREGATE, allowedLatenessMs: g.graceMs },
        });
        return {
          run: { ...r.run, contender: g.name, dropped: r.skipped.late + r.skipped.invalid },
          windows: r.windows,
        };
      },
    })),
    {
      name: "txpipe detect",
      what: "validate, five rules per user, changelog, exactly once",
      run: txpipe("detect", 1),
    },
    {
      name: "txpipe aggregate, 2 instances",
      what: "the same, two instances sharing the partitions (one consumer group per stage)",
      run: txpipe("aggregate", 2),
    },
    {
      name: "txpipe detect, 2 instances",
      what: "the same, two instances sharing the partitions",
      run: txpipe("detect", 2),
    },
    {
      name: "txpipe aggregate, 2 threads",
      what: "the same, one instance with two stream threads (--threads 2)",
      run: txpipe("aggregate", 1, 2),
    },
    {
      name: "txpipe detect, 2 threads",
      what: "the same, one instance with two stream threads (--threads 2)",
      run: txpipe("detect", 1, 2),
    },
  ];
  if (spark) {
    contenders.push({
      name: "Spark aggregate",
      what: "the same aggregation, Structured Streaming local[2], at least once",
      run: async (topic, records) => {
        const output = `bench_spark_out_${Date.now()}`; // the runner creates it
        const r = await runSpark({ input: topic, output, records, settings: AGGREGATE });
        // Spark reads a backlog in one micro-batch and emits every window in the last
        // one: "from the first output" would time only that last batch.
        const { recordsPerSecondFromFirstOutput: _, ...run } = r.run;
        return { run: { ...run, contender: "Spark aggregate" }, windows: r.windows };
      },
    });
  }
  if (only.length === 0) return contenders;
  // A word that names a contender exactly picks that one; any other, every name containing it.
  const picks = (word: string, name: string) =>
    contenders.some((c) => c.name === word) ? name === word : name.includes(word);
  return contenders.filter((c) =>
    c.name === "ConsumerPerformance" || only.some((word) => picks(word, c.name))
  );
}

async function catchUpBenchmark(
  records: number,
  runs: number,
  spark: boolean,
  only: readonly string[] = [],
  jobFlags: readonly string[] = [],
  cpusPerInstance?: number,
): Promise<CatchUpResult> {
  const contenders = catchUpContenders(spark, only, jobFlags, cpusPerInstance);
  console.log(`==> catch-up: building the peers`);
  if (contenders.some((c) => c.name.startsWith("Kafka Streams"))) await buildKafkaStreams(say);
  if (contenders.some((c) => c.name.startsWith("Spark"))) await ensureSpark(say);
  const backlog = await freshBenchTopic("backlog");
  console.log(`==> catch-up: a backlog of ${formatCount(records)} transactions in ${backlog}`);
  const produced = await runOurProducer(backlog, records, "bench-backlog");
  say(`backlog written: ${line(produced)}`);
  const { byName, checks } = await interleave(
    contenders.map((c) => ({ name: c.name, run: () => c.run(backlog, records) })),
    runs,
  );
  return {
    records,
    ...AGGREGATE,
    contenders: contenders.filter((c) => byName.has(c.name)).map((c) =>
      summariseRuns(c.name, c.what, byName.get(c.name)!)
    ),
    crossChecks: checks,
    ...(cpusPerInstance === undefined ? {} : { cpusPerInstance }),
  };
}

/**
 * Runs each contender `runs` times, interleaved (each round starting one
 * further along), removing a round's outputs and internal topics after it,
 * and the topics a contender added to `roundTopics` (the backlog stays,
 * until the end); the runs by contender, and every
 * aggregation's windows cross-checked against txpipe aggregate's first run.
 * `warmUp` rounds come first and are not counted.
 */
async function interleave(
  contenders: readonly {
    name: string;
    run: () => Promise<{ run: CatchUpRun; windows?: WindowTotals[] }>;
  }[],
  runs: number,
  roundTopics: string[] = [],
  warmUp = 0,
): Promise<{ byName: Map<string, CatchUpRun[]>; checks: CrossCheck[] }> {
  const byName = new Map<string, CatchUpRun[]>();
  const windows = new Map<string, WindowTotals[][]>();
  for (let i = 0; i < warmUp; i++) {
    for (const c of rotate(contenders, i)) {
      console.log(`    warm-up ${i + 1} (not counted): ${line((await c.run()).run)}`);
    }
    await deleteTopics(...ROUND_PREFIXES, ...roundTopics.splice(0));
  }
  for (let i = 0; i < runs; i++) {
    for (const c of rotate(contenders, i)) {
      const [r, kafkaCpu] = await kafkaCpuDuring(c.run);
      if (kafkaCpu !== undefined) r.run.kafkaCpuSeconds = kafkaCpu;
      (byName.get(c.name) ?? byName.set(c.name, []).get(c.name)!).push(r.run);
      if (r.windows) (windows.get(c.name) ?? windows.set(c.name, []).get(c.name)!).push(r.windows);
      console.log(`    run ${i + 1}: ${line(r.run)}`);
    }
    await deleteTopics(...ROUND_PREFIXES, ...roundTopics.splice(0));
  }
  await deleteTopics(...BENCH_PREFIXES);
  const checks = crossCheckAll(windows);
  for (const c of checks) console.log(`    cross-check: ${describeCheck(c)}`);
  return { byName, checks };
}

/**
 * `run`'s result and the CPU seconds the local cluster's Kafka JVMs used
 * while it ran (undefined when the cluster's pid files name no process).
 */
async function kafkaCpuDuring<T>(run: () => Promise<T>): Promise<[T, number | undefined]> {
  const clusterDir = join(homeDir(), "kafka", "cluster");
  const before = kafkaCpuSeconds(clusterDir);
  const result = await run();
  const after = kafkaCpuSeconds(clusterDir);
  return [result, before === undefined || after === undefined ? undefined : after - before];
}

/** Every aggregation run against txpipe's first run: the reference. */
function crossCheckAll(windows: Map<string, WindowTotals[][]>): CrossCheck[] {
  const reference = windows.get("txpipe aggregate")?.[0];
  if (!reference) return [];
  const checks: CrossCheck[] = [];
  for (const [name, runs] of windows) {
    runs.forEach((w, i) => {
      if (name === "txpipe aggregate" && i === 0) return;
      checks.push(
        crossCheck(
          { reference: "txpipe aggregate run 1", contender: `${name} run ${i + 1}` },
          reference,
          w,
        ),
      );
    });
  }
  return checks;
}

function describeCheck(c: CrossCheck): string {
  const verdict = c.mismatched === 0 && c.duplicates === 0 ? "EQUAL" : "DIFFERENT";
  return `${c.contender} vs ${c.reference}: ${verdict} on ${formatCount(c.compared)} windows ` +
    `both closed (${c.mismatched} differ, ${c.duplicates} emitted twice; only in the reference ` +
    `${c.onlyReference}, only in the contender ${c.onlyContender})`;
}

// ---------------------------------------------------------------- latency

async function latencyBenchmark(rates: number[], seconds: number): Promise<LatencyResult> {
  console.log(
    `==> latency: paced rates ${rates.join(", ")} records/s, ${seconds} s measured at each`,
  );
  await warnIfCrowded(say);
  const result: LatencyResult = { seconds, rows: [], maxSustainableRate: {} };
  for (const job of ["detect", "aggregate"] as const) {
    const s = await sweep({ job, rates, seconds, say });
    result.maxSustainableRate[job] = s.maxSustainableRate;
    for (const p of s.points) result.rows.push(latencyRow(job, p));
  }
  return result;
}

/** A measured point as a row of the result, printed as it comes. */
function latencyRow(name: string, p: LatencyPoint): LatencyRow {
  console.log(
    `    ${name} at ${formatCount(p.rate)}/s: p50 ${p.p50Ms.toFixed(0)} ms, p99 ${
      p.p99Ms.toFixed(0)
    } ms, max ${p.maxMs.toFixed(0)} ms (the job's own histogram: p50 ${
      p.jobHistogram.p50Ms.toFixed(0)
    }, p99 ${p.jobHistogram.p99Ms.toFixed(0)} ms); peak RSS ${mib(p.peakRssBytes)}; ${
      p.sustained ? "sustained" : `NOT sustained (${p.why})`
    }`,
  );
  return {
    job: name,
    rate: p.rate,
    achievedRate: p.achievedRate,
    p50Ms: p.p50Ms,
    p99Ms: p.p99Ms,
    maxMs: p.maxMs,
    sustained: p.sustained,
    ...(p.why ? { why: p.why } : {}),
    jobP50Ms: p.jobHistogram.p50Ms,
    jobP99Ms: p.jobHistogram.p99Ms,
    peakRssBytes: p.peakRssBytes,
  };
}

// ---------------------------------------------------------------- security

/** How a contender of the security bench reaches the brokers. */
interface Transport {
  /** The security protocol, as Kafka names it. */
  name: "SASL_PLAINTEXT" | "SASL_SSL" | "PLAINTEXT";
  what: string;
  brokers: string[];
  /** The TXPIPE_* settings that choose it (jobs/lib/credentials.ts's kafkaConnection). */
  env: Record<string, string>;
}

function transports(): Transport[] {
  return [
    {
      name: "SASL_PLAINTEXT",
      what: "SCRAM-SHA-512, the default (CLIENT listener)",
      brokers: BROKERS,
      env: {},
    },
    {
      name: "SASL_SSL",
      what: "SCRAM-SHA-512 over TLS 1.3 (CLIENT_TLS listener, the local CA)",
      brokers: tlsBootstrapServers(TOPO),
      env: { TXPIPE_KAFKA_SECURITY_PROTOCOL: "SASL_SSL", TXPIPE_KAFKA_CA_FILE: caPemFile() },
    },
    {
      name: "PLAINTEXT",
      what: "no authentication (the bench's own listener, User:ANONYMOUS)",
      brokers: brokerNodes(TOPO).map((n) => `127.0.0.1:${benchPlaintextPort(n)}`),
      env: { TXPIPE_KAFKA_SECURITY_PROTOCOL: "PLAINTEXT" },
    },
  ];
}

/**
 * User:ANONYMOUS's grants while the bench measures PLAINTEXT: the jobs'
 * scratch grants on the suite's and the bench's names (`test…`, `bench…`),
 * and detect's read of the rules' control topic (it follows it), nothing
 * else.
 */
function anonymousAcls(extra: readonly AclRule[] = []) {
  const controlRead = jobAcls().filter((r) =>
    r.principal === "detect" && r.resource === "topic" && r.name === TOPICS.detectRules
  );
  const entries = aclEntries([
    ...scratchAcls("test"),
    ...scratchAcls("bench"),
    ...controlRead,
    ...extra,
  ])
    .map((e) => ({ ...e, principal: "User:ANONYMOUS" }));
  const seen = new Set<string>();
  return entries.filter((e) => {
    const key = JSON.stringify(e);
    return !seen.has(key) && seen.add(key);
  });
}

/**
 * The cost of authentication and TLS: the producer writing `records`
 * records, and detect catching up on a backlog of as many, over each
 * {@link Transport}, interleaved. The cluster is restarted with the bench's
 * PLAINTEXT listener first and without it after (also on failure), and
 * User:ANONYMOUS's grants are revoked before that.
 */
async function securityBenchmark(records: number, runs: number): Promise<SecurityResult> {
  return await withPlaintextListener("security", () => measureTransports(records, runs));
}

/**
 * Runs `measure` on the cluster restarted with the bench's PLAINTEXT
 * listener and User:ANONYMOUS's scratch grants ({@link anonymousAcls}); the
 * grants are revoked and the cluster restarted without the listener after,
 * also on failure.
 */
async function withPlaintextListener<T>(
  mode: string,
  measure: () => Promise<T>,
  extra: readonly AclRule[] = [],
): Promise<T> {
  console.log(`==> ${mode}: restarting the cluster with the bench's PLAINTEXT listener`);
  await clusterDown({ mode: "cluster", say });
  try {
    await clusterUp({ mode: "cluster", say, benchPlaintext: true });
    await grantScratch();
    const anonymous = anonymousAcls(extra);
    await withAdmin((admin) => admin.createAcls({ acl: anonymous }));
    try {
      return await measure();
    } finally {
      await withAdmin((admin) => admin.deleteAcls({ filters: anonymous }));
      say("revoked User:ANONYMOUS's grants");
    }
  } finally {
    console.log(`==> ${mode}: restarting the cluster without the PLAINTEXT listener`);
    await clusterDown({ mode: "cluster", say });
    await clusterUp({ mode: "cluster", say });
  }
}

async function measureTransports(records: number, runs: number): Promise<SecurityResult> {
  const via = transports();
  for (const t of via) say(`${t.name.padEnd(15)} ${t.brokers.join(",")}: ${t.what}`);
  const backlog = await freshBenchTopic("security_backlog");
  const produced = await runOurProducer(backlog, records, "bench-backlog");
  say(`backlog of ${formatCount(records)} in ${backlog}: ${line(produced)}`);
  // The producer's topics of a round, removed after it (the backlog stays).
  const written: string[] = [];
  const contenders = via.flatMap((t) => [
    {
      name: `txpipe produce over ${t.name}`,
      run: async () => {
        const topic = await freshBenchTopic(`security_${t.name.toLowerCase()}`);
        written.push(topic);
        return { run: await runOurProducer(topic, records, "bench", t) };
      },
    },
    {
      name: `txpipe detect over ${t.name}`,
      run: () => runTxpipe("detect", backlog, records, 1, [], t),
    },
  ]);
  const { byName } = await interleave(contenders, runs, written);
  const what = new Map(via.flatMap((t) => [
    [`txpipe produce over ${t.name}`, t.what],
    [`txpipe detect over ${t.name}`, t.what],
  ]));
  return {
    records,
    contenders: contenders.map((c) =>
      summariseRuns(c.name, what.get(c.name)!, byName.get(c.name)!)
    ),
  };
}

// ---------------------------------------------------------------- reference

/** An earlier commit of txpipe, extracted to run its jobs as they were. */
interface Reference {
  /** The commit, abbreviated. */
  rev: string;
  /** Where its files are (`git archive` of the commit). */
  dir: string;
}

/**
 * Resolves `rev` in this repository and extracts its files under
 * TXPIPE_HOME/bench/ref-<rev> (once; later runs reuse them). Undefined when
 * `rev` names no commit here.
 */
async function extractReference(rev: string): Promise<Reference | undefined> {
  const parsed = await new Deno.Command("git", {
    args: ["-C", ROOT, "rev-parse", "--verify", "--quiet", "--short", `${rev}^{commit}`],
    stdout: "piped",
    stderr: "null",
  }).output();
  const short = decoder.decode(parsed.stdout).trim();
  if (!parsed.success || !short) return undefined;
  const dir = join(homeDir(), "bench", `ref-${short}`);
  const done = join(dir, ".extracted");
  if (await Deno.stat(done).then(() => true, () => false)) return { rev: short, dir };
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  await Deno.mkdir(dir, { recursive: true });
  const archive = new Deno.Command("sh", {
    args: ["-c", 'git -C "$1" archive "$2" | tar -x -C "$3"', "sh", ROOT, short, dir],
    stderr: "piped",
  });
  const out = await archive.output();
  if (!out.success) {
    throw new Error(`could not extract ${short}: ${decoder.decode(out.stderr).trim()}`);
  }
  await Deno.writeTextFile(done, `${short}\n`);
  say(`extracted ${short} to ${dir}`);
  return { rev: short, dir };
}

/**
 * Today's aggregate and detect against the same jobs at an earlier commit,
 * interleaved on one backlog, with ConsumerPerformance as the machine's
 * reference, and today's detect with two stream threads (`--threads 2`). Every txpipe job connects over the bench's PLAINTEXT listener,
 * today's as well, since an earlier commit may not speak SASL; the
 * aggregations' windows are cross-checked against today's first run.
 */
async function referenceBenchmark(
  reference: Reference,
  records: number,
  runs: number,
  latency?: { rates: readonly number[]; seconds: number },
): Promise<ReferenceResult> {
  return await withPlaintextListener("reference", async () => {
    const plaintext = transports().find((t) => t.name === "PLAINTEXT")!;
    const backlog = await freshBenchTopic("reference_backlog");
    const produced = await runOurProducer(backlog, records, "bench-backlog");
    say(`backlog of ${formatCount(records)} in ${backlog}: ${line(produced)}`);
    type Run = { run: CatchUpRun; windows?: WindowTotals[] };
    const contenders: { name: string; what: string; run: () => Promise<Run> }[] = [
      { ...CONSUMER_PERFORMANCE, run: () => CONSUMER_PERFORMANCE.run(backlog, records) },
      ...(["aggregate", "detect"] as const).flatMap((job) => [
        {
          name: `txpipe ${job}`,
          what: "today's job, over PLAINTEXT",
          run: async (): Promise<Run> => {
            const r = await runTxpipe(job, backlog, records, 1, [], plaintext);
            return { ...r, run: { ...r.run, contender: `txpipe ${job}` } };
          },
        },
        {
          name: `txpipe ${job} at ${reference.rev}`,
          what: `the job as it was at ${reference.rev}, over PLAINTEXT`,
          run: () => runTxpipe(job, backlog, records, 1, [], plaintext, reference),
        },
      ]),
      {
        name: "txpipe detect, 2 threads",
        what: "today's job with --threads 2, over PLAINTEXT",
        run: () => runTxpipe("detect", backlog, records, 1, [], plaintext, undefined, undefined, 2),
      },
    ];
    // A round first that is not counted: the cluster was just restarted, and
    // fresh brokers cost several times the CPU for their first minutes
    // (docs/benchmarks.md, "Stream threads").
    const { byName, checks } = await interleave(contenders, runs, [], 1);
    return {
      rev: reference.rev,
      records,
      contenders: contenders.map((c) => summariseRuns(c.name, c.what, byName.get(c.name)!)),
      crossChecks: checks,
      ...(latency
        ? { latency: await referenceLatency(reference, plaintext, latency.rates, latency.seconds) }
        : {}),
    };
  }, REFERENCE_ACLS);
}

/**
 * The latency sweep of today's jobs and the earlier commit's, interleaved
 * rate by rate (each rate starting with the other one), each over
 * `plaintext`; a contender stops at its first rate not sustained.
 */
async function referenceLatency(
  reference: Reference,
  plaintext: Transport,
  rates: readonly number[],
  seconds: number,
): Promise<LatencyResult> {
  console.log(
    `==> reference latency: paced rates ${
      rates.join(", ")
    } records/s, ${seconds} s measured at each`,
  );
  await warnIfCrowded(say);
  const result: LatencyResult = { seconds, rows: [], maxSustainableRate: {} };
  const via = { brokers: plaintext.brokers, env: plaintext.env };
  for (const job of ["detect", "aggregate"] as const) {
    const contenders = [
      { name: job, instance: via },
      { name: `${job} at ${reference.rev}`, instance: { ...via, root: reference.dir } },
    ];
    const points = new Map(contenders.map((c) => [c.name, [] as LatencyPoint[]]));
    for (const [i, rate] of rates.entries()) {
      for (const c of rotate(contenders, i)) {
        const mine = points.get(c.name)!;
        if (mine.some((p) => !p.sustained)) continue;
        const p = await measureRate({ job, rate, seconds, say, ...c });
        mine.push(p);
        result.rows.push(latencyRow(c.name, p));
      }
    }
    for (const [name, mine] of points) result.maxSustainableRate[name] = maxSustainable(mine);
  }
  return result;
}

/**
 * What earlier commits need beyond the scratch grants: before 4572ca6 a
 * restore read the changelog in a consumer group of its own,
 * txpipe-restore-<uuid>.
 */
const REFERENCE_ACLS: AclRule[] = (["aggregate", "detect"] as const).map((job) => ({
  principal: job,
  resource: "group",
  pattern: "prefixed",
  name: "txpipe-restore-",
  operations: ["read", "describe"],
}));

// ---------------------------------------------------------------- report

function rotate<T>(items: readonly T[], by: number): T[] {
  const k = by % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(0)} MiB`;
}

function line(r: CatchUpRun): string {
  const first = r.recordsPerSecondFromFirstOutput
    ? `, ${formatCount(r.recordsPerSecondFromFirstOutput)} rec/s without start-up`
    : "";
  return `${r.contender.padEnd(50)} ${
    formatCount(r.recordsPerSecond).padStart(8)
  } rec/s${first}; ` +
    `peak RSS ${mib(r.peakRssBytes)}, CPU ${r.cpuSeconds.toFixed(1)} s` +
    (r.kafkaCpuSeconds === undefined ? "" : `, Kafka's CPU ${r.kafkaCpuSeconds.toFixed(1)} s`);
}

async function machine(): Promise<Machine> {
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  const java = await new Deno.Command("java", { args: ["-version"], stderr: "piped" }).output()
    .then((o) => decoder.decode(o.stderr).split("\n")[0]).catch(() => "unknown");
  return {
    cpus: navigator.hardwareConcurrency,
    cpuModel: /model name\s*:\s*(.*)/.exec(cpuinfo)?.[1]?.trim() ?? "unknown",
    memoryGiB: Math.round(Deno.systemMemoryInfo().total / 2 ** 30),
    kernel: Deno.osRelease(),
    deno: Deno.version.deno,
    java,
    kafka: KAFKA_VERSION,
  };
}

/** The table of one section; `against` names, per txpipe contender, the peers it is divided by. */
function table(
  title: string,
  contenders: ContenderSummary[],
  against: Record<string, string[]>,
): string {
  const rows = [
    `${title}`,
    `  ${"contender".padEnd(50)} ${"rec/s median (min–max)".padEnd(30)} ${
      "w/o start-up".padEnd(12)
    } ${"peak RSS".padEnd(9)} CPU s  Kafka  ratios`,
  ];
  const median = (name: string) =>
    contenders.find((c) => c.contender === name)?.recordsPerSecond.median;
  for (const c of contenders) {
    const r = c.recordsPerSecond;
    const ratios = (against[c.contender] ?? []).map((a) => {
      const x = ratio(r.median, median(a));
      return x === undefined ? "" : `${x.toFixed(2)}× ${a}`;
    }).filter(Boolean).join("; ");
    rows.push(
      `  ${c.contender.padEnd(50)} ${
        `${formatCount(r.median)} (${formatCount(r.min)}–${formatCount(r.max)})`.padEnd(30)
      } ${
        // "—" when a run had no output before its end to time from (as in the Markdown).
        (c.recordsPerSecondFromFirstOutput
          ? formatCount(c.recordsPerSecondFromFirstOutput.median)
          : "—").padEnd(12)} ${mib(c.peakRssBytes?.median ?? 0).padEnd(9)} ${
        (c.cpuSeconds?.median ?? 0).toFixed(1).padStart(5)
      } ${(c.kafkaCpuSeconds ? c.kafkaCpuSeconds.median.toFixed(1) : "").padStart(6)}  ${ratios}${
        c.dropped ? `  (dropped as late: ${c.dropped.map(formatCount).join(", ")})` : ""
      }`,
    );
  }
  return rows.join("\n");
}

async function main(): Promise<void> {
  const { values, positional } = parseCommandLine(COMMAND);
  const mode = positional[0] ?? "all";
  if (!(MODES as readonly string[]).includes(mode)) {
    console.error(
      `deno task bench: expected a mode (${
        MODES.join(", ")
      }), got "${mode}"\nRun with --help for usage.`,
    );
    Deno.exit(2);
  }
  const quick = values.quick;
  const records = quick ? 200_000 : values.records;
  const runs = quick ? 1 : values.runs;
  const rates = (quick ? ["1000", "5000", "20000"] : values.rates).map(Number);
  if (rates.some((r) => !(r > 0))) {
    console.error(
      `deno task bench: --rates: expected positive numbers, got "${values.rates.join(",")}"`,
    );
    Deno.exit(2);
  }
  const seconds = quick ? 20 : values.latencySeconds;
  if (values.withLatency && mode !== "reference") {
    console.error(
      `deno task bench: --with-latency: only the reference mode takes it, got it with "${mode}"`,
    );
    Deno.exit(2);
  }
  if ((mode === "reference") !== (values.rev !== undefined)) {
    console.error(
      mode === "reference"
        ? "deno task bench: --rev: expected the commit to compare with, got nothing"
        : `deno task bench: --rev: only the reference mode takes it, got it with "${mode}"`,
    );
    Deno.exit(2);
  }
  if (values.cpusPerInstance !== undefined) {
    const support = cpuQuotaSupport();
    const problem = mode !== "catchup"
      ? `only the catchup mode takes it, got it with "${mode}"`
      : "problem" in support
      ? support.problem
      : undefined;
    if (problem) {
      console.error(`deno task bench: --cpus-per-instance: ${problem}`);
      Deno.exit(2);
    }
  }
  const reference = values.rev === undefined ? undefined : await extractReference(values.rev);
  if (values.rev !== undefined && !reference) {
    console.error(
      `deno task bench: --rev: expected a commit of this repository, got "${values.rev}"`,
    );
    Deno.exit(2);
  }
  const started = Date.now();
  const result: BenchResult = {
    date: new Date(started).toISOString(),
    command: ["deno task bench", ...Deno.args].join(" "),
    machine: await machine(),
    runs,
    seconds: 0,
  };
  console.log("==> cluster");
  await clusterUp({ mode: "cluster" });
  await grantScratch(); // the jobs run as their own principals on the bench's names
  await deleteTopics(...BENCH_PREFIXES);
  result.cluster = await leanCluster();
  if (mode === "all" || mode === "catchup") {
    const jobFlags = values.jobFlags.split(/\s+/).filter((f) => f !== "");
    result.catchUp = await catchUpBenchmark(
      records,
      runs,
      values.spark,
      values.only,
      jobFlags,
      values.cpusPerInstance,
    );
  }
  if (mode === "all" || mode === "producer") {
    result.producer = await producerBenchmark(records, runs);
  }
  if (mode === "all" || mode === "latency") result.latency = await latencyBenchmark(rates, seconds);
  if (mode === "security") result.security = await securityBenchmark(records, runs);
  if (reference) {
    result.reference = await referenceBenchmark(
      reference,
      records,
      runs,
      values.withLatency ? { rates, seconds } : undefined,
    );
  }
  result.seconds = (Date.now() - started) / 1000;

  console.log("");
  if (result.catchUp) {
    console.log(table(
      `catch-up over ${formatCount(records)} records` +
        (result.catchUp.cpusPerInstance
          ? `, each txpipe instance limited to ${result.catchUp.cpusPerInstance} cores`
          : ""),
      result.catchUp.contenders,
      COMPARISONS.catchUp(result.catchUp.contenders),
    ));
  }
  if (result.producer) {
    console.log(table(
      `produce ${formatCount(records)} records`,
      result.producer.contenders,
      COMPARISONS.producer(result.producer.contenders),
    ));
  }
  if (result.security) {
    const against = (job: string) =>
      Object.fromEntries(["SASL_SSL", "PLAINTEXT"].map((p) => [
        `txpipe ${job} over ${p}`,
        [`txpipe ${job} over SASL_PLAINTEXT`],
      ]));
    console.log(table(
      `authentication and TLS, ${formatCount(records)} records`,
      result.security.contenders,
      { ...against("produce"), ...against("detect") },
    ));
  }
  if (result.reference) {
    console.log(table(
      `today against ${result.reference.rev}, ${formatCount(records)} records`,
      result.reference.contenders,
      COMPARISONS.reference(result.reference.rev),
    ));
  }
  const sustainable = {
    ...result.latency?.maxSustainableRate,
    ...result.reference?.latency?.maxSustainableRate,
  };
  if (Object.keys(sustainable).length) {
    for (const [job, rate] of Object.entries(sustainable)) {
      console.log(
        `maximum sustainable rate, ${job}: ${
          rate === null ? "none of the rates" : `${formatCount(rate)} records/s`
        }`,
      );
    }
  }
  const dir = values.out ?? join(homeDir(), "bench");
  await Deno.mkdir(dir, { recursive: true });
  const stamp = result.date.replace(/[:.]/g, "-");
  const json = join(dir, `results-${stamp}.json`);
  const svg = join(dir, `chart-${stamp}.svg`);
  await Deno.writeTextFile(json, JSON.stringify(result, null, 2) + "\n");
  await Deno.writeTextFile(svg, renderChart(result));
  console.log(`\nresults: ${json}\nchart:   ${svg}\n(${(result.seconds / 60).toFixed(1)} min)`);
}

if (import.meta.main) await main();
