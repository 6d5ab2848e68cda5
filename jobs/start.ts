/**
 * `deno task start`: the whole local pipeline with one command.
 *
 * Brings the 3+3 KRaft cluster up (unless it is running already) and Debian's
 * Prometheus (when installed) with the rendered config, then runs
 * the producer at a modest rate, the aggregation, the detection and the
 * evaluator, and shows a live one-screen summary read from their /metrics.
 * Ctrl-C stops the producer first (it flushes), then the stream jobs (each
 * commits its batch in progress), then the cluster if this command started
 * it. Job logs (ECS JSON) go to .cache/logs/.
 *
 * @module
 */
import { join } from "node:path";
import {
  clusterDown,
  ClusterError,
  clusterUp,
  homeDir,
  ROOT,
  runningPid,
} from "../stacks/local/cluster.ts";
import {
  bootstrapServers,
  type ClusterMode,
  type JobSpec,
  TOPICS,
  topology,
} from "../stacks/topology.ts";
import { formatCount, formatElapsed } from "./lib/progress.ts";
import { scrape, sum, sumBy } from "./lib/scrape.ts";
import { PrometheusStartError, startPrometheus, stopPrometheus } from "./lib/prometheus_local.ts";
import { parseCommandLine } from "./lib/cli.ts";

const COMMAND = {
  name: "deno task start",
  summary: "run the local txpipe pipeline: Kafka, producer, aggregation, detection, evaluation",
  flags: {
    mode: {
      kind: "string",
      choices: ["cluster", "single"],
      default: "cluster",
      help: "cluster: 3 controllers + 3 brokers; single: one combined node (lighter)",
    },
    rate: {
      kind: "number",
      min: 0,
      default: 200,
      help: "producer records per second (0 = unlimited)",
      placeholder: "N",
    },
    "fraud-rate": {
      kind: "number",
      min: 0,
      max: 0.5,
      default: 0.01,
      help: "share of records in injected fraud patterns",
      placeholder: "P",
    },
    window: {
      kind: "duration",
      min: 1000,
      default: 60_000,
      help: "aggregation window size",
    },
    "keep-cluster": {
      kind: "boolean",
      default: false,
      help: "leave the cluster running after Ctrl-C even if this command started it",
    },
  },
  examples: ["deno task start", "deno task start --mode single --rate 50"],
} as const;

/** A process started by `start`, its output written to .cache/logs/<name>.log. */
interface Running {
  name: string;
  child: Deno.ChildProcess;
}

async function startJob(name: JobSpec["name"], args: string[]): Promise<Running> {
  const script = topology().jobs.find((j) => j.name === name)!.script;
  const logDir = join(homeDir(), "logs");
  await Deno.mkdir(logDir, { recursive: true });
  const out = await Deno.open(join(logDir, `${name}.log`), { create: true, append: true });
  const err = await Deno.open(join(logDir, `${name}.stderr.log`), { create: true, append: true });
  // setsid: the terminal's Ctrl-C reaches only `start`, which then stops the
  // jobs in order (producer first, so nothing is left half-sent).
  const child = new Deno.Command("setsid", {
    args: [Deno.execPath(), "run", "-A", join(ROOT, script), ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  child.stdout.pipeTo(out.writable).catch(() => {});
  child.stderr.pipeTo(err.writable).catch(() => {});
  return { name, child };
}

/** Counter values of the previous screen, for rates. */
type Previous = Map<string, number>;

function rate(prev: Previous, key: string, now: number, seconds: number): number {
  const before = prev.get(key);
  prev.set(key, now);
  return before === undefined || seconds <= 0 ? 0 : Math.max(0, (now - before) / seconds);
}

/** One screen of the live summary, from the jobs' own /metrics. */
async function summaryScreen(
  topo: ReturnType<typeof topology>,
  prev: Previous,
  seconds: number,
  header: string,
  prometheusUrl?: string,
): Promise<string> {
  const url = (job: string) =>
    `http://127.0.0.1:${topo.jobs.find((j) => j.name === job)!.metricsPort}/metrics`;
  const [p, a, d, e] = await Promise.all(
    ["produce", "aggregate", "detect", "evaluate"].map((j) => scrape(url(j))),
  );
  const produced = sum(p, "txpipe_produced_records_total");
  const aggIn = sum(a, "txpipe_consumed_records_total", { topic: TOPICS.transactions });
  const detIn = sum(d, "txpipe_consumed_records_total");
  const byRule = [...sumBy(d, "txpipe_anomalies_total", "rule")]
    .map(([rule, n]) => `${rule} ${formatCount(n)}`).join(", ") || "none yet";
  const recall = [...sumBy(e, "txpipe_detection_recall", "pattern")]
    .map(([pattern, r]) => `${pattern} ${(r * 100).toFixed(0)}%`).join(", ") || "n/a";
  const precision = e.find((s) => s.name === "txpipe_detection_precision");
  const dead = sum(a, "txpipe_dead_letters_total") + sum(d, "txpipe_dead_letters_total");
  const lines = [
    header,
    "",
    `produce    ${formatCount(rate(prev, "p", produced, seconds)).padStart(7)} rec/s   ` +
    `total ${formatCount(produced)}   errors ${sum(p, "txpipe_produce_errors_total")}`,
    `aggregate  ${formatCount(rate(prev, "a", aggIn, seconds)).padStart(7)} rec/s   ` +
    `lag ${formatCount(sum(a, "txpipe_consumer_lag"))}   windows emitted ${
      formatCount(sum(a, "txpipe_aggregates_emitted_total"))
    }   late ${sum(a, "txpipe_late_records_total")}`,
    `detect     ${formatCount(rate(prev, "d", detIn, seconds)).padStart(7)} rec/s   ` +
    `lag ${formatCount(sum(d, "txpipe_consumer_lag"))}   anomalies: ${byRule}`,
    `evaluate   precision ${
      precision ? `${(precision.value * 100).toFixed(1)}%` : "n/a"
    }   recall: ${recall}`,
    `dead letters ${formatCount(dead)}`,
    "",
    `metrics    ${topo.jobs.map((j) => `${j.name} :${j.metricsPort}`).join("  ")}${
      prometheusUrl ? `   prometheus ${prometheusUrl}` : ""
    }`,
    `logs       ${join(homeDir(), "logs")}/<job>.log (ECS JSON)`,
    `kafka      ${bootstrapServers(topo).join(",")}`,
  ];
  return lines.join("\n");
}

async function main(): Promise<number> {
  const { values: v } = parseCommandLine(COMMAND);
  const mode = v.mode as ClusterMode;
  const topo = topology(mode);
  const wasRunning = (await Promise.all(topo.nodes.map((n) => runningPid(mode, n))))
    .some((pid) => pid !== undefined);

  console.log(`==> Kafka (${mode})`);
  await clusterUp({ mode });
  console.log("==> Prometheus");
  const prom = await startPrometheus({ mode });
  if (prom.status === "started") {
    console.log(`    ${prom.prometheus.url} (alerts: ${prom.prometheus.url}/alerts)`);
  } else console.log(`    ${prom.message}`);

  const jobs: Running[] = [];
  let stopping = false;
  let wake: () => void = () => {};
  const stop = () => {
    if (stopping) return;
    stopping = true;
    wake();
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);

  const brokers = bootstrapServers(topo).join(",");
  const common = ["--brokers", brokers];
  jobs.push(
    await startJob("produce", [
      ...common,
      "--rate",
      String(v.rate),
      "--fraud-rate",
      String(v.fraudRate),
    ]),
    await startJob("aggregate", [...common, "--window", `${v.window}ms`]),
    await startJob("detect", common),
    await startJob("evaluate", [...common, "--follow", "--interval", "5s"]),
  );

  const live = Deno.stdout.isTerminal();
  const started = performance.now();
  const prev: Previous = new Map();
  let last = performance.now();
  while (!stopping) {
    const exited = await Promise.race([
      ...jobs.map((j) => j.child.status.then(() => j)),
      new Promise<undefined>((r) => {
        wake = () => r(undefined);
        setTimeout(() => r(undefined), live ? 2000 : 10_000);
      }),
    ]);
    if (exited) {
      console.error(
        `\n${exited.name} stopped unexpectedly; see ${homeDir()}/logs/${exited.name}*.log`,
      );
      break;
    }
    if (stopping) break;
    const now = performance.now();
    const header = `txpipe: local pipeline (${mode}, Kafka ${topo.kafkaVersion})   up ${
      formatElapsed((now - started) / 1000)
    }   Ctrl-C stops everything`;
    const screen = await summaryScreen(
      topo,
      prev,
      (now - last) / 1000,
      header,
      prom.status === "started" ? prom.prometheus.url : undefined,
    );
    last = now;
    if (live) console.log(`\x1b[2J\x1b[H${screen}`);
    else console.log(screen.split("\n").slice(2, 7).join(" | "));
  }

  console.log("\n==> stopping: producer first, then the stream jobs (each commits its last batch)");
  const failed = await stopAll(jobs);
  if (prom.status === "started") {
    await stopPrometheus(prom.prometheus);
    console.log("    prometheus stopped");
  }
  if (!wasRunning && !v.keepCluster) {
    console.log("==> stopping the cluster this command started (data is kept)");
    await clusterDown({ mode });
  } else {
    console.log("==> the cluster keeps running (`deno task cluster down` stops it)");
  }
  return failed ? 1 : 0;
}

/** Stops the producer, then the rest; true when any job had failed on its own. */
async function stopAll(jobs: Running[]): Promise<boolean> {
  let failed = false;
  const stopOne = async (j: Running) => {
    try {
      j.child.kill("SIGTERM");
    } catch { /* already gone */ }
    const status = await j.child.status;
    if (!status.success && status.signal === null) {
      failed = true;
      console.error(`${j.name} exited with code ${status.code}; see its logs in .cache/logs`);
    } else console.log(`    ${j.name} stopped`);
  };
  const [producer, ...rest] = jobs;
  await stopOne(producer);
  await Promise.all(rest.map(stopOne));
  return failed;
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (err) {
    if (err instanceof ClusterError || err instanceof PrometheusStartError) {
      console.error(`deno task start: ${err.message}`);
      Deno.exit(1);
    }
    throw err;
  }
}
