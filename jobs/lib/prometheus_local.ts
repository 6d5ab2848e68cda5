/**
 * Local mode's Prometheus: Debian's `prometheus` binary (when installed) run
 * with the scrape config and alert rules rendered from the topology spec by
 * stacks/render (the same renderer the Docker stack uses; nothing is copied).
 *
 *   .cache/prometheus/prometheus.yml     rendered scrape config (127.0.0.1 targets)
 *   .cache/prometheus/txpipe_alerts.yml  rendered alert rules
 *   .cache/prometheus/data/              TSDB
 *   .cache/prometheus/prometheus.log     Prometheus's own log
 *
 * `startPrometheus` renders the files, starts the process on
 * 127.0.0.1:<prometheusPort> and waits for `/-/ready`; `stopPrometheus`
 * sends SIGTERM and waits for a clean exit. When no binary is found the
 * result says so and nothing is started: Prometheus is optional locally.
 *
 * @module
 */
import { copyToFile } from "./log_file.ts";
import { join } from "node:path";
import { homeDir } from "../../stacks/local/cluster.ts";
import { writePrometheusFiles } from "../../stacks/render/main.ts";
import { localTargets, type ScrapeTargets } from "../../stacks/render/prometheus.ts";
import { type ClusterMode, topology } from "../../stacks/topology.ts";
import { portClashes, PortInUseError } from "./ports.ts";

/** The binary looked up on PATH (Debian's `prometheus` package installs /usr/bin/prometheus). */
export const PROMETHEUS_BINARY = "prometheus";

/** Options of {@link startPrometheus}; every field has a default. */
export interface LocalPrometheusOptions {
  /** Folder of config, data and log. Default `.cache/prometheus` (under TXPIPE_HOME when set). */
  readonly dir?: string;
  /** Port on 127.0.0.1. Default: the topology's `prometheusPort` (9090). */
  readonly port?: number;
  /** Where a job's /metrics listens, by job name, when not at its spec port. */
  readonly jobPorts?: Readonly<Record<string, number>>;
  /** Topology whose nodes and jobs are scraped. Default "cluster". */
  readonly mode?: ClusterMode;
  /** Scrape and rule evaluation interval. Default "15s" (the renderer's). */
  readonly scrapeInterval?: string;
  /** Path or name of the binary. Default: `prometheus` found on PATH. */
  readonly binary?: string;
  /** How long to wait for `/-/ready`. Default 30 s. */
  readonly readyTimeoutMs?: number;
}

/** A running local Prometheus. */
export interface LocalPrometheus {
  /** Base URL, e.g. `http://127.0.0.1:9090`. */
  readonly url: string;
  readonly pid: number;
  readonly configFile: string;
  readonly rulesFile: string;
  readonly dataDir: string;
  readonly logFile: string;
  /** The process, for callers that want to watch its exit. */
  readonly child: Deno.ChildProcess;
  /** Resolves once the log file is fully written after the process ended. */
  readonly logClosed: Promise<void>;
}

/** What {@link startPrometheus} did: started it, or found no binary to start. */
export type StartPrometheusResult =
  | { readonly status: "started"; readonly prometheus: LocalPrometheus }
  | { readonly status: "not-installed"; readonly message: string };

/** Prometheus started but did not become ready (it exited, or `/-/ready` never answered). */
export class PrometheusStartError extends Error {
  override name = "PrometheusStartError";
}

/**
 * The full path of the Prometheus binary, or undefined when it is not
 * installed. A name without a slash is looked up on PATH.
 */
export function findPrometheus(binary: string = PROMETHEUS_BINARY): string | undefined {
  const candidates = binary.includes("/")
    ? [binary]
    : (Deno.env.get("PATH") ?? "").split(":").filter((d) => d !== "").map((d) => join(d, binary));
  for (const path of candidates) {
    try {
      const info = Deno.statSync(path);
      if (info.isFile && ((info.mode ?? 0o111) & 0o111) !== 0) return path;
    } catch { /* not here */ }
  }
  return undefined;
}

/**
 * Renders the local scrape config and alert rules into `dir`, starts
 * Prometheus on 127.0.0.1 and waits until `/-/ready` answers. Returns
 * `{ status: "not-installed" }` without starting anything when the binary is
 * missing; throws {@link PortInUseError} naming the holder, before starting
 * anything, when the port is taken, and {@link PrometheusStartError} (with
 * the log's tail) when it starts but exits or does not become ready.
 */
export async function startPrometheus(
  options: LocalPrometheusOptions = {},
): Promise<StartPrometheusResult> {
  const binary = findPrometheus(options.binary);
  if (!binary) {
    return {
      status: "not-installed",
      message: `Prometheus not installed: no "${
        options.binary ?? PROMETHEUS_BINARY
      }" on PATH (Debian/Ubuntu: apt-get install prometheus); continuing without it`,
    };
  }
  const topo = topology(options.mode ?? "cluster");
  const port = options.port ?? topo.prometheusPort;
  const [clash] = await portClashes([{
    port,
    what: "Prometheus",
    advice: "stop that process, or choose another port (`deno task start --prometheus-port PORT`)",
  }]);
  if (clash) throw new PortInUseError(clash);
  const dir = options.dir ?? join(homeDir(), "prometheus");
  const dataDir = join(dir, "data");
  const logFile = join(dir, "prometheus.log");
  // Prometheus scrapes itself where it really listens, which may not be the spec port.
  const local = localTargets();
  const targets: ScrapeTargets = {
    ...local,
    job: (job) => {
      const moved = options.jobPorts?.[job.name];
      return moved === undefined
        ? local.job(job)
        : { kind: "static", targets: [`127.0.0.1:${moved}`] };
    },
    prometheus: () => `127.0.0.1:${port}`,
  };
  const written = await writePrometheusFiles(dir, {
    mode: topo.mode,
    targets,
    scrapeInterval: options.scrapeInterval,
  });
  await Deno.mkdir(dataDir, { recursive: true });

  const log = await Deno.open(logFile, { create: true, write: true, truncate: true });
  const child = new Deno.Command(binary, {
    args: [
      `--config.file=${written.config}`,
      `--storage.tsdb.path=${dataDir}`,
      `--web.listen-address=127.0.0.1:${port}`,
      "--storage.tsdb.retention.time=7d",
    ],
    stdin: "null",
    stdout: "null", // Prometheus logs to stderr only
    stderr: "piped",
  }).spawn();
  // Written as it comes (tail -f works); the file closes when Prometheus exits.
  const logClosed = copyToFile(child.stderr, log).catch(() => {});

  const prometheus: LocalPrometheus = {
    url: `http://127.0.0.1:${port}`,
    pid: child.pid,
    configFile: written.config,
    rulesFile: written.rules,
    dataDir,
    logFile,
    child,
    logClosed,
  };
  try {
    await waitReady(prometheus, options.readyTimeoutMs ?? 30_000);
  } catch (err) {
    await stopPrometheus(prometheus);
    const tail = await logTail(logFile);
    throw new PrometheusStartError(`${(err as Error).message}; last lines of ${logFile}:\n${tail}`);
  }
  return { status: "started", prometheus };
}

/**
 * Stops a Prometheus started by {@link startPrometheus}: SIGTERM, then waits
 * up to `timeoutMs` (default 15 s) for it to flush and exit, then SIGKILL.
 * Returns its exit code. Safe to call when it has already exited.
 */
export async function stopPrometheus(
  prometheus: LocalPrometheus,
  options: { timeoutMs?: number } = {},
): Promise<number> {
  const { child } = prometheus;
  try {
    child.kill("SIGTERM");
  } catch { /* already exited */ }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), options.timeoutMs ?? 15_000);
  });
  const first = await Promise.race([child.status, timedOut]);
  clearTimeout(timer);
  if (first === "timeout") {
    try {
      child.kill("SIGKILL");
    } catch { /* exited meanwhile */ }
  }
  const status = await child.status;
  await prometheus.logClosed;
  return status.code;
}

async function waitReady(prometheus: LocalPrometheus, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exited: Deno.CommandStatus | undefined;
  prometheus.child.status.then((s) => exited = s);
  let last = "no answer yet";
  while (Date.now() < deadline) {
    if (exited) {
      throw new Error(
        `expected Prometheus to become ready on ${prometheus.url}, but it exited with code ${exited.code}`,
      );
    }
    try {
      const res = await fetch(`${prometheus.url}/-/ready`, { signal: AbortSignal.timeout(2000) });
      const body = await res.text();
      if (res.ok) return;
      last = `HTTP ${res.status} ${body.trim()}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(
    `expected ${prometheus.url}/-/ready to answer 200 within ${timeoutMs}ms, last: ${last}`,
  );
}

async function logTail(path: string, lines = 20): Promise<string> {
  try {
    return (await Deno.readTextFile(path)).trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}
