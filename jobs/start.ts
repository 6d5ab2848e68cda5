/**
 * `deno task start`: the whole local pipeline with one command.
 *
 * Brings the 3+3 KRaft cluster up (unless it is running already) and Debian's
 * Prometheus (when installed) with the rendered config, then runs
 * the producer at a modest rate, the aggregation, the detection and the
 * evaluator, and shows a live one-screen summary read from their /metrics.
 * Ctrl-C stops the producer first (it flushes), then the stream jobs (each
 * commits its batch in progress), then the cluster if this command started
 * it, also when something fails on the way. Job logs (ECS JSON) go to
 * .cache/logs/.
 *
 * One start at a time per TXPIPE_HOME: it holds start.lock for its whole run
 * (stacks/local/lock.ts), so a second one exits 1 naming the first. Before it
 * starts anything it checks every port it will bind (the jobs' /metrics,
 * Prometheus, the Kafka nodes not running yet) and names each taken one, its
 * holder and how to move it.
 *
 * @module
 */
import { join } from "node:path";
import {
  clusterDown,
  ClusterError,
  clusterUp,
  homeDir,
  nodePortClashes,
  ROOT,
  runningPid,
  wantedNodePorts,
} from "../stacks/local/cluster.ts";
import {
  bootstrapServers,
  type ClusterMode,
  denoRunArgs,
  type JobSpec,
  jobSpec,
  TOPICS,
  topology,
} from "../stacks/topology.ts";
import { meanUserGapMs } from "./lib/generator.ts";
import { formatElapsed } from "./lib/progress.ts";
import { scrape } from "./lib/scrape.ts";
import {
  findPrometheus,
  type LocalPrometheus,
  PrometheusStartError,
  startPrometheus,
  stopPrometheus,
} from "./lib/prometheus_local.ts";
import { defineCommand, flagSource, parseCommandLine, type Parsed } from "./lib/cli.ts";
import { copyToFile } from "./lib/log_file.ts";
import { acquireLock, describeHolder, type HeldLock, LockedError } from "../stacks/local/lock.ts";
import {
  clashReport,
  type PortClash,
  portClashes,
  PortInUseError,
  type WantedPort,
} from "./lib/ports.ts";
import { type Scraped, summaryScreen, type Totals } from "./lib/summary.ts";

/** The spec's first job /metrics port: --metrics-base moves all four by the same offset. */
const JOB_PORT_BASE = Math.min(...topology().jobs.map((j) => j.metricsPort));

const COMMAND = defineCommand({
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
    settle: {
      kind: "duration",
      min: 0,
      default: 300_000,
      help: "the evaluator's --settle: recall counts a fraud instance this long after its last " +
        "record (event time), so a pattern still unfolding is not a miss",
    },
    "metrics-base": {
      kind: "int",
      min: 1,
      max: 65532,
      default: JOB_PORT_BASE,
      help: "first of the jobs' four /metrics ports (produce, aggregate, detect, evaluate " +
        "listen on PORT..PORT+3)",
      placeholder: "PORT",
    },
    "prometheus-port": {
      kind: "int",
      min: 1,
      max: 65535,
      default: topology().prometheusPort,
      help: "port of the local Prometheus (when installed)",
      placeholder: "PORT",
    },
    "keep-cluster": {
      kind: "boolean",
      default: false,
      help: "leave the cluster running after Ctrl-C even if this command started it",
    },
  },
  examples: [
    "deno task start",
    "deno task start --mode single --rate 50",
    "deno task start --metrics-base 19464 --prometheus-port 19090",
  ],
});

/** A process started by `start`, its output written to .cache/logs/<name>.log. */
interface Running {
  name: string;
  child: Deno.ChildProcess;
}

async function startJob(name: JobSpec["name"], args: string[]): Promise<Running> {
  const spec = jobSpec(name);
  const logDir = join(homeDir(), "logs");
  await Deno.mkdir(logDir, { recursive: true });
  const out = await Deno.open(join(logDir, `${name}.log`), { create: true, append: true });
  const err = await Deno.open(join(logDir, `${name}.stderr.log`), { create: true, append: true });
  // setsid: the terminal's Ctrl-C reaches only `start`, which then stops the
  // jobs in order (producer first, so nothing is left half-sent).
  const child = new Deno.Command("setsid", {
    args: [Deno.execPath(), ...denoRunArgs(spec, join(ROOT, spec.script)), ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // Each line reaches its file as the job writes it (see copyToFile).
  copyToFile(child.stdout, out).catch(() => {});
  copyToFile(child.stderr, err).catch(() => {});
  return { name, child };
}

/** Where each job's /metrics listens: the spec ports, moved by --metrics-base. */
function jobMetricsPorts(topo: ReturnType<typeof topology>, base: number): Map<string, number> {
  return new Map(topo.jobs.map((j) => [j.name, j.metricsPort - JOB_PORT_BASE + base]));
}

/**
 * What is wrong with the ports start will bind: each one another process
 * holds (the jobs' /metrics, Prometheus when installed, the ports of the
 * Kafka nodes not running yet) and each one wanted twice, as messages; and
 * whether a port the user chose is among them (then it is a usage error).
 */
async function takenPorts(
  mode: ClusterMode,
  jobPorts: Map<string, number>,
  prometheusPort: number | undefined,
): Promise<{ messages: string[]; given: boolean }> {
  const moveJobs = "move the jobs' four /metrics ports with --metrics-base PORT or " +
    `TXPIPE_METRICS_BASE (they take PORT..PORT+3; default ${JOB_PORT_BASE})`;
  const moveProm = "move it with --prometheus-port PORT or TXPIPE_PROMETHEUS_PORT";
  const wanted: Array<WantedPort & { move: string }> = [...jobPorts].map(([job, port]) => ({
    port,
    what: `${job}'s /metrics`,
    move: moveJobs,
    advice: `${moveJobs}, or stop that process`,
    given: flagSource("metrics-base") !== "default",
  }));
  if (prometheusPort !== undefined) {
    wanted.push({
      port: prometheusPort,
      what: "Prometheus",
      move: moveProm,
      advice: `${moveProm}, or stop that process`,
      given: flagSource("prometheus-port") !== "default",
    });
  }
  const messages: string[] = [];
  let given = false;
  // A chosen port may also be one a Kafka node will bind once started.
  const first = new Map<number, WantedPort>(
    wantedNodePorts(mode, topology(mode).nodes).map((w) => [w.port, w]),
  );
  for (const w of wanted) {
    const other = first.get(w.port);
    if (other) {
      messages.push(`port ${w.port} is wanted twice, for ${other.what} and ${w.what}; ${w.move}`);
      given = true;
    } else first.set(w.port, w);
  }
  const clashes: PortClash[] = [
    ...await portClashes(
      wanted.filter((w) => first.get(w.port) === w).map(({ move: _, ...w }) => w),
    ),
    ...await nodePortClashes(mode),
  ];
  messages.push(...clashReport(clashes));
  return { messages, given: given || clashes.some((c) => c.given) };
}

/** Ctrl-C and SIGTERM: the first stops everything in order; a second while starting quits. */
interface StopRequest {
  stopping: boolean;
  /** Still bringing things up (a second Ctrl-C then quits at once). */
  starting: boolean;
  /** Wakes the summary loop. */
  wake: () => void;
}

function listenForStop(): StopRequest {
  const request: StopRequest = { stopping: false, starting: true, wake: () => {} };
  const onSignal = () => {
    if (request.stopping) {
      if (!request.starting) return;
      console.error(
        "\nquitting at once: what was started keeps running " +
          "(`deno task cluster status` shows it, `deno task cluster down` stops it)",
      );
      Deno.exit(130);
    }
    request.stopping = true;
    if (request.starting) {
      console.log(
        "\n==> stopping once the step in progress has finished (Ctrl-C again quits at once)",
      );
    }
    request.wake();
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  return request;
}

async function main(): Promise<number> {
  const { values } = parseCommandLine(COMMAND);
  // One start per TXPIPE_HOME: a second one stops here, having touched nothing.
  const runLock = await acquireLock("start", { home: homeDir(), command: COMMAND.name });
  try {
    return await run(values);
  } finally {
    await runLock.release();
  }
}

/** Checks the ports, then brings everything up, shows the summary and stops it all in order. */
async function run(v: Parsed<typeof COMMAND.flags>["values"]): Promise<number> {
  const mode: ClusterMode = v.mode;
  const topo = topology(mode);
  const home = homeDir();
  const command = COMMAND.name;
  const jobPorts = jobMetricsPorts(topo, v.metricsBase);
  const prometheusPort = findPrometheus() ? v.prometheusPort : undefined;
  const taken = await takenPorts(mode, jobPorts, prometheusPort);
  if (taken.messages.length > 0) {
    console.error(
      `${command}: ports it needs are taken; nothing was started.\n` +
        taken.messages.map((m) => `  ${m}`).join("\n"),
    );
    return taken.given ? 2 : 1;
  }
  let clusterLock: HeldLock | undefined = await acquireLock("cluster", { home, command });
  const wasRunning = (await Promise.all(topo.nodes.map((n) => runningPid(mode, n))))
    .some((pid) => pid !== undefined);

  const request = listenForStop();
  const jobs: Running[] = [];
  let prometheus: LocalPrometheus | undefined;
  let failed = false;
  try {
    console.log(`==> Kafka (${mode})`);
    await clusterUp({ mode });
    await clusterLock.release();
    clusterLock = undefined;
    if (!request.stopping) {
      console.log("==> Prometheus");
      const prom = await startPrometheus({
        mode,
        port: prometheusPort,
        jobPorts: Object.fromEntries(jobPorts),
      });
      if (prom.status === "started") {
        prometheus = prom.prometheus;
        console.log(`    ${prometheus.url} (alerts: ${prometheus.url}/alerts)`);
      } else console.log(`    ${prom.message}`);
    }
    const brokers = bootstrapServers(topo).join(",");
    const common = (job: string) => [
      "--brokers",
      brokers,
      "--metrics-port",
      String(jobPorts.get(job)),
      // Its log file is for jq and Logstash: ECS JSON, whatever the shell sets.
      "--log-format",
      "ecs",
    ];
    const jobArgs: Array<[JobSpec["name"], string[]]> = [
      ["produce", [...common("produce"), "--rate", `${v.rate}`, "--fraud-rate", `${v.fraudRate}`]],
      ["aggregate", [...common("aggregate"), "--window", `${v.window}ms`]],
      ["detect", [...common("detect"), ...priorGap(v.rate)]],
      ["evaluate", [
        ...common("evaluate"),
        "--follow",
        "--interval",
        "5s",
        "--settle",
        `${v.settle}ms`,
      ]],
    ];
    // One by one, so that whatever was started is stopped if a later one fails.
    for (const [name, args] of jobArgs) {
      if (request.stopping) break;
      jobs.push(await startJob(name, args));
    }
    request.starting = false;
    if (!request.stopping) {
      await showSummary(jobs, request, {
        mode,
        topo,
        jobPorts,
        settleMs: v.settle,
        prometheusUrl: prometheus?.url,
      });
    }
  } finally {
    if (jobs.length > 0) {
      console.log(
        "\n==> stopping: producer first, then the stream jobs (each commits its last batch)",
      );
      failed = await stopAll(jobs);
    }
    if (prometheus) {
      await stopPrometheus(prometheus);
      console.log("    prometheus stopped");
    }
    if (!wasRunning && !v.keepCluster) {
      clusterLock ??= await acquireLock("cluster", {
        home,
        command,
        waitMs: 300_000,
        onWait: (holder) => console.log(`    waiting for ${describeHolder(holder)} to finish`),
      });
      console.log("==> stopping the cluster this command started (data is kept)");
      await clusterDown({ mode });
    } else {
      console.log("==> the cluster keeps running (`deno task cluster down` stops it)");
    }
    await clusterLock?.release();
  }
  return failed ? 1 : 0;
}

/** What the summary loop shows besides the samples. */
interface SummaryOptions {
  mode: ClusterMode;
  topo: ReturnType<typeof topology>;
  jobPorts: Map<string, number>;
  settleMs: number;
  prometheusUrl?: string;
}

/** Redraws the summary (or logs its status lines) until a stop request or a job's exit. */
async function showSummary(
  jobs: Running[],
  request: StopRequest,
  o: SummaryOptions,
): Promise<void> {
  const live = Deno.stdout.isTerminal();
  const started = performance.now();
  let previous: { totals: Totals; at: number } | undefined;
  while (!request.stopping) {
    const exited = await Promise.race([
      ...jobs.map((j) => j.child.status.then(() => j)),
      new Promise<undefined>((r) => {
        request.wake = () => r(undefined);
        setTimeout(() => r(undefined), live ? 2000 : 10_000);
      }),
    ]);
    if (exited) {
      console.error(
        `\n${exited.name} stopped unexpectedly; see ${homeDir()}/logs/${exited.name}*.log`,
      );
      return;
    }
    if (request.stopping) return;
    const url = (job: string) => `http://127.0.0.1:${o.jobPorts.get(job)}/metrics`;
    const [produce, aggregate, detect, evaluate] = await Promise.all(
      ["produce", "aggregate", "detect", "evaluate"].map((j) => scrape(url(j))),
    );
    const scraped: Scraped = { produce, aggregate, detect, evaluate };
    const now = performance.now();
    const screen = summaryScreen(scraped, {
      header: `txpipe: local pipeline (${o.mode}, Kafka ${o.topo.kafkaVersion})   up ${
        formatElapsed((now - started) / 1000)
      }   Ctrl-C stops everything`,
      settleMs: o.settleMs,
      previous: previous && { totals: previous.totals, seconds: (now - previous.at) / 1000 },
      metricsPorts: [...o.jobPorts].map(([job, port]) => ({ job, port })),
      prometheusUrl: o.prometheusUrl,
      logDir: join(homeDir(), "logs"),
      brokers: bootstrapServers(o.topo),
      transactionsTopic: TOPICS.transactions,
    });
    previous = { totals: screen.totals, at: now };
    if (live) console.log(`\x1b[2J\x1b[H${screen.lines.join("\n")}`);
    else console.log(screen.status.join(" | "));
  }
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
  if (producer) await stopOne(producer);
  await Promise.all(rest.map(stopOne));
  return failed;
}

/**
 * Detect's `--prior-gap` for the producer at `rate`: its simulated users pay
 * every users ÷ rate seconds (compressed event time), not twice a day as the
 * default assumes; none for an unthrottled producer (rate 0).
 */
export function priorGap(rate: number): string[] {
  if (!(rate > 0)) return [];
  return ["--prior-gap", `${Math.round(meanUserGapMs(rate))}ms`];
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (err) {
    if (
      err instanceof ClusterError || err instanceof PrometheusStartError ||
      err instanceof LockedError || err instanceof PortInUseError
    ) {
      console.error(`deno task start: ${err.message}`);
      Deno.exit(1);
    }
    throw err;
  }
}
