/**
 * Renders Prometheus's configuration from the topology spec: the scrape
 * config (every Kafka node's JMX exporter, every job's /metrics, Prometheus
 * itself) and txpipe's alert rules.
 *
 * Pure functions: the local runner and the Docker stack call the same ones and
 * differ only in where targets live (`localTargets()` or `dockerTargets()`).
 * Nothing rendered here is committed; `stacks/render/main.ts` writes the files
 * on demand and the Docker stack uploads the same text into its container.
 *
 * Job metric names used by the rules (defined in jobs/lib/metrics.ts):
 * `txpipe_consumer_lag` (gauge: processor, topic, partition),
 * `txpipe_dead_letters_total` (counter: processor, reason),
 * `txpipe_stuck_batches_total` (counter: processor),
 * `txpipe_event_to_output_latency_seconds` (histogram: processor) and
 * `txpipe_event_time_ahead_records_total` (counter: processor). Broker
 * names come from the JMX exporter rules in stacks/config/kafka_jmx_exporter.yml.
 * Scrape job names equal the job names, so every job series carries
 * `job="produce" | "aggregate" | "detect" | "evaluate"` and `up{job=...}` tells
 * whether it runs. The aggregate job runs two processors
 * (`<appId>-rekey`, `<appId>-windows`), so job rules group by `processor` too.
 *
 * @module
 */
import { stringify } from "yaml";
import type { JobSpec, KafkaNode, Topology } from "../topology.ts";

/** File name of the rendered scrape configuration. */
export const PROMETHEUS_CONFIG_FILE = "prometheus.yml";

/** File name of the rendered alert rules, referenced from the scrape configuration. */
export const ALERT_RULES_FILE = "txpipe_alerts.yml";

/** Scrape job name of every Kafka node (controllers and brokers; label `role` tells them apart). */
export const KAFKA_SCRAPE_JOB = "kafka";

/** How Prometheus finds the instances of one job. */
export type JobDiscovery =
  /** Fixed `host:port` targets (local mode: one process per job). */
  | { readonly kind: "static"; readonly targets: readonly string[] }
  /**
   * A DNS name with one A record per instance (Docker: the replicas share a
   * network alias), so scaling a job needs no new configuration.
   */
  | { readonly kind: "dns"; readonly name: string; readonly port: number };

/** Where the scrape targets live: local processes or Docker containers. */
export interface ScrapeTargets {
  /** `host:port` of a Kafka node's JMX exporter. */
  kafka(node: KafkaNode): string;
  /** How to find a job's instances. */
  job(job: JobSpec): JobDiscovery;
  /** `host:port` of Prometheus itself. */
  prometheus(port: number): string;
}

/** Local mode: every process listens on `host` (127.0.0.1) at its spec port. */
export function localTargets(host = "127.0.0.1"): ScrapeTargets {
  return {
    kafka: (node) => `${host}:${node.metricsPort}`,
    job: (job) => ({ kind: "static", targets: [`${host}:${job.metricsPort}`] }),
    prometheus: (port) => `${host}:${port}`,
  };
}

/**
 * The Docker network alias all replicas of a job share (`txpipe-<job>`);
 * Docker's DNS answers it with one A record per replica.
 */
export function dockerJobAlias(job: Pick<JobSpec, "name">): string {
  return `txpipe-${job.name}`;
}

/**
 * Docker: Kafka nodes by container name, each job's replicas by the network
 * alias they share (`jobAlias`), Prometheus by `localhost` inside its container.
 */
export function dockerTargets(
  jobAlias: (job: JobSpec) => string = dockerJobAlias,
): ScrapeTargets {
  return {
    kafka: (node) => `${node.name}:${node.metricsPort}`,
    job: (job) => ({ kind: "dns", name: jobAlias(job), port: job.metricsPort }),
    prometheus: (port) => `localhost:${port}`,
  };
}

/** Options of `renderPrometheusConfig`. */
export interface PrometheusConfigOptions {
  readonly targets: ScrapeTargets;
  /** Default "15s". */
  readonly scrapeInterval?: string;
  /** Default "15s". */
  readonly evaluationInterval?: string;
}

/** The scrape configuration as a plain object (what `renderPrometheusConfig` serializes). */
export function prometheusConfig(
  topo: Topology,
  options: PrometheusConfigOptions,
): Record<string, unknown> {
  const { targets } = options;
  const interval = options.scrapeInterval ?? "15s";
  // Prometheus rejects a timeout longer than the interval (short intervals are for tests).
  const timeout = durationMs(interval) < 10_000 ? interval : "10s";
  const kafkaTargets = topo.nodes.map((node) => ({
    targets: [targets.kafka(node)],
    labels: { instance: node.name, role: node.role, node_id: String(node.id) },
  }));
  const jobScrapes = topo.jobs.map((job) => {
    const found = targets.job(job);
    const discovery = found.kind === "static"
      ? { static_configs: [{ targets: [...found.targets] }] }
      : {
        dns_sd_configs: [{
          names: [found.name],
          type: "A",
          port: found.port,
          refresh_interval: "15s",
        }],
      };
    return { job_name: job.name, metrics_path: "/metrics", ...discovery };
  });
  return {
    global: {
      scrape_interval: interval,
      scrape_timeout: timeout,
      evaluation_interval: options.evaluationInterval ?? "15s",
      external_labels: { txpipe_mode: topo.mode },
    },
    rule_files: [ALERT_RULES_FILE],
    scrape_configs: [
      {
        job_name: "prometheus",
        static_configs: [{ targets: [targets.prometheus(topo.prometheusPort)] }],
      },
      { job_name: KAFKA_SCRAPE_JOB, metrics_path: "/metrics", static_configs: kafkaTargets },
      ...jobScrapes,
    ],
  };
}

/** prometheus.yml for a topology, with targets local or in Docker. */
export function renderPrometheusConfig(topo: Topology, options: PrometheusConfigOptions): string {
  return header("scrape configuration") + toYaml(prometheusConfig(topo, options));
}

/** Thresholds of the alert rules; every field has a default. */
export interface AlertOptions {
  /** Alert when a job's summed lag over a topic exceeds this and keeps growing. Default 1000. */
  readonly lagThreshold?: number;
  /** How long lag must grow before the alert fires. Default "10m". */
  readonly lagGrowingFor?: string;
  /** How long an instance must be down. Default "1m". */
  readonly jobDownFor?: string;
  /** Dead letters per second (5m rate) that count as a spike. Default 0.1 (6 a minute). */
  readonly deadLetterRatePerSecond?: number;
  /**
   * p99 event-to-output latency budget per job, seconds. Defaults: aggregate
   * 120 (windows close after their end plus the allowed lateness), detect 10.
   * Only jobs with a budget get a rule: produce and evaluate emit nothing
   * derived from an event time, so they expose no such latency.
   */
  readonly latencyBudgetSeconds?: Readonly<Partial<Record<JobSpec["name"], number>>>;
  /**
   * Outputs per second (5m rate) with an event time ahead of the wall clock
   * above which event time counts as running ahead. Default 0: any, as long
   * as it lasts (`eventTimeAheadFor`); one stray output does not fire.
   */
  readonly eventTimeAheadRatePerSecond?: number;
  /** How long outputs ahead of the clock must keep coming before the alert fires. Default "5m". */
  readonly eventTimeAheadFor?: string;
}

/** Default latency budgets (seconds) of `AlertOptions.latencyBudgetSeconds`. */
export const DEFAULT_LATENCY_BUDGET_SECONDS: Readonly<Partial<Record<JobSpec["name"], number>>> = {
  aggregate: 120,
  detect: 10,
};

interface AlertRule {
  alert: string;
  expr: string;
  for: string;
  labels: Record<string, string>;
  annotations: { summary: string; description: string };
}

/** The alert rule groups as a plain object (what `renderAlertRules` serializes). */
export function alertRules(topo: Topology, options: AlertOptions = {}): Record<string, unknown> {
  const lagThreshold = options.lagThreshold ?? 1000;
  const deadLetterRate = options.deadLetterRatePerSecond ?? 0.1;
  const aheadRate = options.eventTimeAheadRatePerSecond ?? 0;
  const budgets = { ...DEFAULT_LATENCY_BUDGET_SECONDS, ...options.latencyBudgetSeconds };
  const jobNames = topo.jobs.map((j) => j.name);

  const kafka: AlertRule[] = [
    {
      alert: "KafkaUnderReplicatedPartitions",
      expr: "kafka_server_replicamanager_underreplicatedpartitions > 0",
      for: "5m",
      labels: { severity: "warning", component: "kafka" },
      annotations: {
        summary: "Broker {{ $labels.instance }} has under-replicated partitions",
        description:
          "{{ $value | humanize }} partitions led by {{ $labels.instance }} have fewer " +
          "in-sync replicas than replicas for 5 minutes.",
      },
    },
    {
      alert: "KafkaOfflinePartitions",
      expr: "sum(kafka_controller_kafkacontroller_offlinepartitionscount) > 0",
      for: "1m",
      labels: { severity: "critical", component: "kafka" },
      annotations: {
        summary: "{{ $value | humanize }} partitions have no leader",
        description: "The active controller reports partitions without a live leader: " +
          "nothing can be written to or read from them.",
      },
    },
    {
      alert: "KafkaNoActiveController",
      expr: "sum(kafka_controller_kafkacontroller_activecontrollercount) != 1" +
        " or absent(kafka_controller_kafkacontroller_activecontrollercount)",
      for: "1m",
      labels: { severity: "critical", component: "kafka" },
      annotations: {
        summary: "The KRaft quorum does not have exactly one active controller",
        description: "ActiveControllerCount summed over the controllers is not 1, " +
          "or no controller reports it at all.",
      },
    },
  ];

  const jobs: AlertRule[] = [
    {
      alert: "TxpipeConsumerLagGrowing",
      expr: `sum by (job, processor, topic) (txpipe_consumer_lag) > ${lagThreshold}` +
        " and sum by (job, processor, topic) (deriv(txpipe_consumer_lag[5m])) > 0",
      for: options.lagGrowingFor ?? "10m",
      labels: { severity: "warning", component: "jobs" },
      annotations: {
        summary: "{{ $labels.processor }} is falling behind on {{ $labels.topic }}",
        description: `Consumer lag of {{ $labels.processor }} ({{ $labels.job }}) on ` +
          `{{ $labels.topic }} is ` +
          `{{ $value | humanize }} records, above ${lagThreshold}, and still growing.`,
      },
    },
    {
      alert: "TxpipeJobDown",
      expr: `up{job=~"${jobNames.join("|")}"} == 0`,
      for: options.jobDownFor ?? "1m",
      labels: { severity: "critical", component: "jobs" },
      annotations: {
        summary: "{{ $labels.job }} instance {{ $labels.instance }} is down",
        description: "Prometheus cannot scrape {{ $labels.instance }} of job {{ $labels.job }}.",
      },
    },
    {
      alert: "TxpipeJobMissing",
      expr: jobNames.map((name) => `absent(up{job="${name}"})`).join(" or "),
      for: options.jobDownFor ?? "1m",
      labels: { severity: "critical", component: "jobs" },
      annotations: {
        summary: "No instance of {{ $labels.job }} is known to Prometheus",
        description: "Job {{ $labels.job }} has no scrape target at all (not started, " +
          "scaled to zero, or its service discovery finds nothing).",
      },
    },
    {
      alert: "TxpipeDeadLetterSpike",
      expr: "sum by (job, processor, reason) (rate(txpipe_dead_letters_total[5m]))" +
        ` > ${deadLetterRate}`,
      for: "2m",
      labels: { severity: "warning", component: "jobs" },
      annotations: {
        summary: "{{ $labels.processor }} dead-letters records: {{ $labels.reason }}",
        description: "{{ $labels.processor }} ({{ $labels.job }}) sends {{ $value | humanize }} " +
          "records per second to the " +
          `dead-letter topic for reason {{ $labels.reason }} (threshold ${deadLetterRate}/s).`,
      },
    },
    {
      alert: "TxpipeBatchStuck",
      expr: "sum by (job, processor) (increase(txpipe_stuck_batches_total[15m])) > 0",
      for: "0m",
      labels: { severity: "warning", component: "jobs" },
      annotations: {
        summary: "{{ $labels.processor }} abandoned a stuck batch",
        description: "{{ $labels.processor }} ({{ $labels.job }}) abandoned " +
          "{{ $value | humanize }} batch(es) in 15 minutes after they ran over --batch-timeout; " +
          "their partitions were taken over again. The job log (event.action batch-abandoned) " +
          "names the step each one stuck in.",
      },
    },
    {
      alert: "TxpipeEventTimeAhead",
      expr: "sum by (job, processor) (rate(txpipe_event_time_ahead_records_total[5m]))" +
        ` > ${aheadRate}`,
      for: options.eventTimeAheadFor ?? "5m",
      labels: { severity: "warning", component: "jobs" },
      annotations: {
        summary: "{{ $labels.processor }} outputs events from the future",
        description: "{{ $labels.processor }} ({{ $labels.job }}) commits " +
          "{{ $value | humanize }} outputs per second whose event time is ahead of the wall " +
          "clock (txpipe_event_time_lead_seconds says by how much): the input's event time runs " +
          "ahead of the clock, or the producer's and this host's clocks disagree. Latencies " +
          "leave these outputs out, and windows close before the clock reaches their end.",
      },
    },
    // Only the stream jobs expose txpipe_event_to_output_latency_seconds.
    ...topo.jobs.filter((job) => budgets[job.name] !== undefined).map((job): AlertRule => ({
      alert: "TxpipeLatencyP99OverBudget",
      expr: "histogram_quantile(0.99, sum by (job, processor, le) " +
        `(rate(txpipe_event_to_output_latency_seconds_bucket{job="${job.name}"}[5m])))` +
        ` > ${budgets[job.name]}`,
      for: "10m",
      // `job` repeats the series label, so each job's rule is distinct (no duplicate rules).
      labels: { severity: "warning", component: "jobs", job: job.name },
      annotations: {
        summary: "{{ $labels.processor }} p99 event-to-output latency is over budget",
        description: "p99 latency of {{ $labels.processor }} ({{ $labels.job }}) is " +
          "{{ $value | humanize }}s, " +
          `budget ${budgets[job.name]}s.`,
      },
    })),
  ];

  return {
    groups: [
      { name: "txpipe-kafka", rules: kafka },
      { name: "txpipe-jobs", rules: jobs },
    ],
  };
}

/** The alert rules file (`txpipe_alerts.yml`) for a topology. */
export function renderAlertRules(topo: Topology, options: AlertOptions = {}): string {
  return header("alert rules") + toYaml(alertRules(topo, options));
}

/** Milliseconds of a Prometheus duration such as "15s", "500ms", "1m30s". */
function durationMs(text: string): number {
  const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  const parts = [...text.matchAll(/(\d+)(ms|s|m|h)/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join("") !== text) {
    throw new Error(`scrapeInterval: expected a duration such as 15s or 500ms, got "${text}"`);
  }
  return parts.reduce((sum, p) => sum + Number(p[1]) * units[p[2]], 0);
}

function header(what: string): string {
  return `# txpipe Prometheus ${what}: generated from stacks/topology.ts by\n` +
    "# stacks/render/prometheus.ts. Do not edit; re-render instead.\n";
}

function toYaml(value: unknown): string {
  return stringify(value, { lineWidth: 0 });
}
