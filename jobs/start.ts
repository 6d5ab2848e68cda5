/**
 * `deno task start`: the whole local pipeline with one command.
 *
 * Brings the 3+3 KRaft cluster up (unless it is running already), then runs
 * the producer at a modest rate until Ctrl-C. Ctrl-C stops the producer
 * cleanly (it flushes and prints its summary) and then stops the cluster if
 * this command started it. Job logs (ECS JSON) go to .cache/logs/.
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
import { type ClusterMode, topology } from "../stacks/topology.ts";
import { parseCommandLine } from "./lib/cli.ts";

const COMMAND = {
  name: "deno task start",
  summary: "run the local txpipe pipeline: Kafka cluster and producer, until Ctrl-C",
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
    "keep-cluster": {
      kind: "boolean",
      default: false,
      help: "leave the cluster running after Ctrl-C even if this command started it",
    },
  },
  examples: ["deno task start", "deno task start --mode single --rate 50"],
} as const;

/** A job started by `start`, its logs written to .cache/logs/<name>.log. */
interface Running {
  name: string;
  child: Deno.ChildProcess;
  logFile: string;
}

async function startJob(name: string, script: string, args: string[]): Promise<Running> {
  const logDir = join(homeDir(), "logs");
  await Deno.mkdir(logDir, { recursive: true });
  const logFile = join(logDir, `${name}.log`);
  const file = await Deno.open(logFile, { create: true, append: true });
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, script), ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit", // the live progress line and the summary
  }).spawn();
  child.stdout.pipeTo(file.writable).catch(() => {});
  return { name, child, logFile };
}

async function main(): Promise<number> {
  const { values: v } = parseCommandLine(COMMAND);
  const mode = v.mode as ClusterMode;
  const topo = topology(mode);
  const wasRunning = (await Promise.all(topo.nodes.map((n) => runningPid(mode, n))))
    .some((pid) => pid !== undefined);

  console.log(`==> Kafka (${mode})`);
  await clusterUp({ mode });

  const jobs: Running[] = [];
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    console.error("\n==> stopping (Ctrl-C again is not needed; waiting for a clean stop)");
    for (const j of jobs) {
      try {
        j.child.kill("SIGTERM");
      } catch { /* already gone */ }
    }
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);

  const brokers = topo.nodes.filter((n) => n.role !== "controller")
    .map((n) => `127.0.0.1:${n.clientPort}`).join(",");
  jobs.push(
    await startJob("produce", "jobs/produce.ts", [
      "--brokers",
      brokers,
      "--rate",
      String(v.rate),
      "--fraud-rate",
      String(v.fraudRate),
    ]),
  );
  const produceMetrics = topo.jobs.find((j) => j.name === "produce")!.metricsPort;
  console.log(`==> producer at ${v.rate} records/s; Ctrl-C stops everything`);
  console.log(`    metrics   http://127.0.0.1:${produceMetrics}/metrics`);
  console.log(`    logs      ${join(homeDir(), "logs")}/<job>.log (ECS JSON)`);
  console.log(`    bootstrap ${brokers}`);

  const results = await Promise.all(jobs.map(async (j) => ({
    name: j.name,
    status: await j.child.status,
  })));
  if (!stopping) stop();
  let failed = false;
  for (const r of results) {
    if (!r.status.success && r.status.signal === null) {
      failed = true;
      console.error(`${r.name} exited with code ${r.status.code}; see its log in .cache/logs`);
    }
  }
  if (!wasRunning && !v.keepCluster) {
    console.log("==> stopping the cluster this command started (data is kept)");
    await clusterDown({ mode });
  } else {
    console.log("==> the cluster keeps running (`deno task cluster down` stops it)");
  }
  return failed ? 1 : 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (err) {
    if (err instanceof ClusterError) {
      console.error(`deno task start: ${err.message}`);
      Deno.exit(1);
    }
    throw err;
  }
}
