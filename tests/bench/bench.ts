/**
 * `deno task bench`: txpipe's producer against Kafka's own
 * `org.apache.kafka.tools.ProducerPerformance` on the same cluster, the same
 * kind of topic, the same record bytes and `acks=all` with idempotence,
 * printed side by side with the ratio. A benchmark, not a test: it asserts
 * nothing and prints measurements.
 *
 * @module
 */
import { join } from "node:path";
import { clusterUp, homeDir, kafkaClasspath, ROOT } from "../../stacks/local/cluster.ts";
import { bootstrapServers, topicAs, TOPICS, topology } from "../../stacks/topology.ts";
import { createKafka, ensureTopics } from "../../jobs/lib/kafka.ts";
import { parseCommandLine } from "../../jobs/lib/cli.ts";
import { formatCount } from "../../jobs/lib/progress.ts";
import { encodeTransaction, TransactionGenerator } from "../../jobs/lib/generator.ts";
import { runTopics, startInstance, stopInstance, waitCaughtUp } from "../helpers/jobs.ts";

const COMMAND = {
  name: "deno task bench",
  summary: "benchmark txpipe against Kafka's own performance tools on the local cluster",
  usage: "deno task bench [producer|consumer|all] [flags]",
  flags: {
    records: {
      kind: "int",
      min: 1000,
      default: 500_000,
      help: "records per measured run (producer) or in the backlog (consumer)",
      placeholder: "N",
    },
    runs: { kind: "int", min: 1, max: 10, default: 2, help: "runs of each side (best is kept)" },
  },
} as const;

/** One measured run. */
interface Measurement {
  records: number;
  seconds: number;
  bytes: number;
}

const TOPO = topology("cluster");
/** Topics this benchmark creates (its own, and the jobs' outputs and internal topics). */
const BENCH_PREFIXES = ["bench_", "test_bench_", "test-bench_"];
const BROKERS = bootstrapServers(TOPO);
const decoder = new TextDecoder();

async function freshBenchTopic(label: string): Promise<string> {
  const name = `bench_${label}_${Date.now()}`;
  const admin = createKafka({ clientId: "txpipe-bench", brokers: BROKERS }).admin();
  await admin.connect();
  try {
    await ensureTopics(admin, [topicAs(TOPO, TOPICS.transactions, name)]);
  } finally {
    await admin.disconnect();
  }
  return name;
}

async function deleteTopics(...prefixes: string[]): Promise<void> {
  const admin = createKafka({ clientId: "txpipe-bench", brokers: BROKERS }).admin();
  await admin.connect();
  try {
    const old = (await admin.listTopics()).filter((t) => prefixes.some((p) => t.startsWith(p)));
    if (old.length) await admin.deleteTopics({ topics: old });
  } finally {
    await admin.disconnect();
  }
}

/** Runs our producer for `records` records into `topic`; its own summary is the measurement. */
async function runOurs(topic: string, records: number, seed: string): Promise<Measurement> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      join(ROOT, "jobs/produce.ts"),
      "--topic",
      topic,
      "--count",
      String(records),
      "--seed",
      seed,
      "--metrics-port",
      "0",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const lines = decoder.decode(out.stdout).split("\n").filter((l) => l.includes('"summary"'));
  if (!out.success || lines.length === 0) {
    throw new Error(`our producer failed:\n${decoder.decode(out.stderr).slice(-2000)}`);
  }
  const summary = JSON.parse(lines[lines.length - 1]);
  return { records: summary.acknowledged, seconds: summary.seconds, bytes: summary.bytes };
}

async function writePayloadFile(records: number): Promise<{ path: string; meanBytes: number }> {
  // ProducerPerformance cycles through these payloads: the same JSON records ours sends.
  const gen = new TransactionGenerator({ seed: "bench", fraudRate: 0.01 });
  const sample = Math.min(records, 50_000);
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
const JAVA_VARIANTS: Record<string, string[]> = {
  "defaults": [],
  "batching like ours": ["batch.size=262144", "linger.ms=10"],
};

async function runProducerPerformance(
  records: number,
  payloads: string,
  extraProps: string[],
): Promise<Measurement> {
  const topic = await freshBenchTopic("kafka");
  const out = await new Deno.Command("java", {
    args: [
      "-Xmx512m",
      "-cp",
      await kafkaClasspath(),
      "org.apache.kafka.tools.ProducerPerformance",
      "--topic",
      topic,
      "--num-records",
      String(records),
      "--throughput",
      "-1",
      "--payload-file",
      payloads,
      "--bootstrap-server",
      BROKERS.join(","),
      "--command-property",
      "acks=all",
      "enable.idempotence=true",
      ...extraProps,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = decoder.decode(out.stdout);
  // "500000 records sent, 123456.7 records/sec (29.43 MB/sec), ..."
  const m = /(\d+) records sent, ([\d.]+) records\/sec \(([\d.]+) MB\/sec\)/.exec(
    text.trim().split("\n").pop() ?? "",
  );
  if (!out.success || !m) {
    throw new Error(
      `ProducerPerformance failed:\n${text.slice(-1500)}${decoder.decode(out.stderr).slice(-1500)}`,
    );
  }
  const recs = Number(m[1]);
  const seconds = recs / Number(m[2]);
  // ProducerPerformance's MB is 2^20 bytes.
  return { records: recs, seconds, bytes: Number(m[3]) * 1024 * 1024 * seconds };
}

function best(runs: Measurement[]): Measurement {
  return runs.reduce((a, b) => (b.records / b.seconds > a.records / a.seconds ? b : a));
}

function row(name: string, m: Measurement): string {
  const rps = m.records / m.seconds;
  const mbps = m.bytes / m.seconds / 1e6;
  return `${name.padEnd(52)} ${formatCount(rps).padStart(10)} rec/s ${
    mbps.toFixed(1).padStart(7)
  } MB/s  (${formatCount(m.records)} records in ${m.seconds.toFixed(1)}s)`;
}

async function runConsumerPerformance(topic: string, records: number): Promise<Measurement> {
  const out = await new Deno.Command("java", {
    args: [
      "-Xmx512m",
      "-cp",
      await kafkaClasspath(),
      "org.apache.kafka.tools.ConsumerPerformance",
      "--bootstrap-server",
      BROKERS.join(","),
      "--topic",
      topic,
      "--num-records",
      String(records),
      "--group",
      `bench-consumer-performance-${Date.now()}`,
      "--timeout",
      "120000",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = decoder.decode(out.stdout);
  // start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, ...
  const line = text.trim().split("\n").pop() ?? "";
  const cells = line.split(",").map((c) => c.trim());
  const mb = Number(cells[2]);
  const n = Number(cells[4]);
  const perSecond = Number(cells[5]);
  if (!out.success || !(n > 0) || !(perSecond > 0)) {
    throw new Error(`ConsumerPerformance failed:\n${text.slice(-1500)}`);
  }
  return { records: n, seconds: n / perSecond, bytes: mb * 1024 * 1024 };
}

/** Wall time for one fresh instance of `job` to process the whole backlog of `topic`. */
async function runCatchUp(
  job: "aggregate" | "detect",
  topic: string,
  m: { records: number; bytes: number },
): Promise<Measurement> {
  const t = runTopics(topic, `bench_${job}`);
  const started = performance.now();
  const instance = startInstance(job, t, job === "aggregate" ? ["--window", "60s"] : []);
  try {
    await waitCaughtUp(job, t, 1_800_000);
  } finally {
    await stopInstance(instance);
  }
  return { ...m, seconds: (performance.now() - started) / 1000 };
}

async function consumerBenchmark(records: number): Promise<void> {
  const topic = await freshBenchTopic("backlog");
  console.log(`==> consumer benchmark: a backlog of ${formatCount(records)} transactions`);
  await runOurs(topic, records, "bench-backlog");
  const theirs = await runConsumerPerformance(topic, records);
  console.log(`    ${row("ConsumerPerformance (plain consumer)", theirs)}`);
  const rate = (m: Measurement) => m.records / m.seconds;
  for (const job of ["aggregate", "detect"] as const) {
    const ours = await runCatchUp(job, topic, theirs);
    console.log(`    ${row(`txpipe ${job} (exactly-once, 1 instance)`, ours)}`);
    console.log(
      `        ratio ${job} / ConsumerPerformance: ${(rate(ours) / rate(theirs)).toFixed(3)}`,
    );
  }
  await deleteTopics(...BENCH_PREFIXES);
}

async function main(): Promise<void> {
  const { values, positional } = parseCommandLine(COMMAND);
  const mode = positional[0] ?? "all";
  if (!["producer", "consumer", "all"].includes(mode)) {
    console.error(`deno task bench: expected a mode (producer, consumer, all), got "${mode}"`);
    Deno.exit(2);
  }
  const records = values.records as number;
  const runs = values.runs as number;
  console.log("==> cluster");
  await clusterUp({ mode: "cluster" });
  await deleteTopics(...BENCH_PREFIXES);
  if (mode !== "producer") await consumerBenchmark(records);
  if (mode === "consumer") return;
  const payload = await writePayloadFile(records);
  console.log(
    `==> producer benchmark: ${formatCount(records)} records of ~${
      payload.meanBytes.toFixed(0)
    } bytes (txpipe transactions), acks=all, idempotent, 5 partitions x 3 replicas, ${runs} run(s) each`,
  );
  const ours: Measurement[] = [];
  const theirs: Record<string, Measurement[]> = {};
  for (let i = 0; i < runs; i++) {
    ours.push(await runOurs(await freshBenchTopic("ours"), records, "bench"));
    console.log(`    ${row(`txpipe produce (run ${i + 1})`, ours[i])}`);
    for (const [variant, props] of Object.entries(JAVA_VARIANTS)) {
      const m = await runProducerPerformance(records, payload.path, props);
      (theirs[variant] ??= []).push(m);
      console.log(`    ${row(`ProducerPerformance, ${variant} (run ${i + 1})`, m)}`);
    }
  }
  await deleteTopics(...BENCH_PREFIXES);
  const a = best(ours);
  const rate = (m: Measurement) => m.records / m.seconds;
  console.log("\nbest of each:");
  console.log(`  ${row("txpipe produce (kafkajs)", a)}`);
  for (const [variant, ms] of Object.entries(theirs)) {
    const b = best(ms);
    console.log(`  ${row(`ProducerPerformance, ${variant}`, b)}`);
    console.log(
      `      ratio txpipe / ProducerPerformance (${variant}): ${(rate(a) / rate(b)).toFixed(2)}`,
    );
  }
}

if (import.meta.main) await main();
