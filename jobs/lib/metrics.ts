/**
 * Every Prometheus metric txpipe's jobs expose, defined once (docs/design.md:
 * "Metrics are a contract"). Dashboards and alert rules use only these names
 * (or the brokers' JMX exporter names). Each job serves them on /metrics.
 *
 * No metric carries a `job` label: Prometheus adds `job` and `instance` from
 * the scrape config.
 *
 * @module
 */
import client, { type MetricObjectWithValues, type MetricValue } from "prom-client";

/** The registry every txpipe metric lives in. */
export const registry = new client.Registry();

/** A registry's metrics as JSON (`getMetricsAsJSON`), as a stream thread hands them over. */
export type MetricsJson = MetricObjectWithValues<MetricValue<string>>[];

let processMetrics = false;

/**
 * Adds the process's own metrics (CPU, memory, event loop) to the registry,
 * once: by the thread that serves /metrics ({@link serveMetrics}), so a
 * stream thread (a worker, threads.ts) has only the jobs' metrics.
 */
function collectProcessMetrics(): void {
  if (processMetrics) return;
  processMetrics = true;
  client.collectDefaultMetrics({ register: registry, prefix: "txpipe_" });
}

/** More metrics to serve beside the registry's: the stream threads' (jobs/lib/threads.ts). */
const sources = new Set<() => Promise<MetricsJson[]>>();

/**
 * Serves the metrics `source` gives on every scrape, summed with the
 * registry's as prom-client's AggregatorRegistry sums them (each metric by
 * its `aggregator`, "sum" unless it says otherwise). Returns its removal.
 */
export function addMetricsSource(source: () => Promise<MetricsJson[]>): () => void {
  sources.add(source);
  return () => sources.delete(source);
}

/** The text of /metrics: the registry's, with those of every added source summed in. */
export async function metricsText(): Promise<string> {
  if (sources.size === 0) return await registry.metrics();
  const all: MetricsJson[] = [await registry.getMetricsAsJSON()];
  for (const source of sources) all.push(...await source());
  return await client.AggregatorRegistry.aggregate(all).metrics();
}

/** Producer: records acknowledged by Kafka (acks=all). */
export const producedRecords = new client.Counter({
  name: "txpipe_produced_records_total",
  help: "Records the producer wrote and Kafka acknowledged with acks=all",
  labelNames: ["topic"] as const,
  registers: [registry],
});

/** Producer: value bytes acknowledged by Kafka. */
export const producedBytes = new client.Counter({
  name: "txpipe_produced_bytes_total",
  help: "Value bytes of acknowledged records",
  labelNames: ["topic"] as const,
  registers: [registry],
});

/**
 * Producer: records given up unacknowledged: at the delivery timeout, on an
 * error no retry can fix, or pending when a stop's grace period ran out.
 * Retries during an outage are not errors (see txpipe_producer_connected).
 */
export const produceErrors = new client.Counter({
  name: "txpipe_produce_errors_total",
  help: "Records given up unacknowledged (delivery timeout, an error no retry fixes, or " +
    "pending at a stop); a retried send is not an error",
  labelNames: ["topic"] as const,
  registers: [registry],
});

/** Producer: injected fraud-pattern records, by pattern (ground truth). */
export const injectedFraud = new client.Counter({
  name: "txpipe_injected_fraud_records_total",
  help: "Records carrying an injected fraud pattern label, by pattern",
  labelNames: ["pattern"] as const,
  registers: [registry],
});

/** Producer: time from handing a batch to kafkajs until it is acknowledged. */
export const produceBatchSeconds = new client.Histogram({
  name: "txpipe_produce_batch_seconds",
  help: "Seconds from sending a batch until all its records are acknowledged",
  buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
  registers: [registry],
});

/** Producer: 1 while Kafka acknowledges its sends, 0 during an outage (jobs/lib/delivery.ts). */
export const producerConnected = new client.Gauge({
  name: "txpipe_producer_connected",
  help: "1 while Kafka acknowledges the producer's sends; 0 from a failed send, or a batch " +
    "unacknowledged for 5 s, until a batch is acknowledged again",
  registers: [registry],
});

/** Producer: outages (a send failed or a batch waited over 5 s), each counted once. */
export const produceOutages = new client.Counter({
  name: "txpipe_produce_outages_total",
  help: "Times Kafka stopped acknowledging the producer's sends (see txpipe_producer_connected)",
  registers: [registry],
});

/** Producer: seconds spent in outages, counted while they last. */
export const produceOutageSeconds = new client.Counter({
  name: "txpipe_produce_outage_seconds_total",
  help: "Seconds during which Kafka did not acknowledge the producer's sends (retried meanwhile)",
  registers: [registry],
});

/** Producer: records sent again by a new producer id after an attempt that may have been written. */
export const produceResentRecords = new client.Counter({
  name: "txpipe_produce_resent_records_total",
  help: "Records sent again under a new producer id after an unanswered attempt that may have " +
    "reached a broker: the only records the producer can write twice",
  labelNames: ["topic"] as const,
  registers: [registry],
});

/** Options for {@link serveMetrics}. */
export interface ServeOptions {
  port: number;
  hostname?: string;
  onListen?: (addr: { hostname: string; port: number }) => void;
}

/**
 * Serves the registry on `GET /metrics` (and a `GET /healthz`). Port 0 picks
 * a free port; the chosen address is passed to `onListen`.
 */
export function serveMetrics(options: ServeOptions): Deno.HttpServer<Deno.NetAddr> {
  collectProcessMetrics();
  return Deno.serve({
    port: options.port,
    hostname: options.hostname ?? "127.0.0.1",
    onListen: options.onListen ?? (() => {}),
  }, async (req) => {
    const url = new URL(req.url);
    if (url.pathname === "/metrics") {
      return new Response(await metricsText(), {
        headers: { "content-type": registry.contentType },
      });
    }
    if (url.pathname === "/healthz") return new Response("ok\n");
    return new Response("not found; try /metrics\n", { status: 404 });
  });
}

/** Stream jobs: source records consumed and committed, by processor and topic. */
export const consumedRecords = new client.Counter({
  name: "txpipe_consumed_records_total",
  help: "Source records processed and committed (exactly once), by processor and topic",
  labelNames: ["processor", "topic"] as const,
  registers: [registry],
});

/** Stream jobs: records written in committed transactions, by output topic. */
export const outputRecords = new client.Counter({
  name: "txpipe_output_records_total",
  help: "Records written in committed transactions, by processor and output topic",
  labelNames: ["processor", "topic"] as const,
  registers: [registry],
});

/** Stream jobs: records sent to the dead-letter topic, by reason. */
export const deadLetters = new client.Counter({
  name: "txpipe_dead_letters_total",
  help: "Records sent to the dead-letter topic, by processor and reason",
  labelNames: ["processor", "reason"] as const,
  registers: [registry],
});

/** Stream jobs: records later than the watermark (never merged; dead-lettered as late_record). */
export const lateRecords = new client.Counter({
  name: "txpipe_late_records_total",
  help: "Records whose event time was behind the watermark; not merged into any window",
  labelNames: ["processor"] as const,
  registers: [registry],
});

/** Refreshes of {@link consumerLag} that every scrape waits for (see jobs/lib/lag.ts). */
const lagRefreshes = new Set<() => Promise<void>>();

/**
 * Stream jobs: consumer lag per source partition, Kafka's LAG (what
 * `kafka-consumer-groups --describe` prints): the partition's log end offset
 * (high watermark) minus the group's committed offset. Exported by the
 * instance the partition is assigned to, recomputed at every scrape and
 * every few seconds by jobs/lib/lag.ts.
 */
export const consumerLag = new client.Gauge({
  name: "txpipe_consumer_lag",
  help: "Records of the source partition after the group's committed offset: log end offset " +
    "(high watermark) - committed offset, as kafka-consumer-groups --describe reports LAG " +
    "(never committed: log end - log start); by the instance the partition is assigned to",
  labelNames: ["processor", "topic", "partition"] as const,
  registers: [registry],
  async collect() {
    await Promise.all([...lagRefreshes].map((refresh) => refresh()));
  },
});

/**
 * Makes every scrape of {@link consumerLag} wait for `refresh` (which must
 * bound its own time and never reject). Returns the function that undoes it.
 */
export function refreshLagOnScrape(refresh: () => Promise<void>): () => void {
  lagRefreshes.add(refresh);
  return () => lagRefreshes.delete(refresh);
}

/**
 * Stream jobs: wall-clock time from an output's event time to its commit.
 * Outputs whose event time is ahead of the clock are not observed here (a
 * negative latency would have to be clamped, hiding them) but counted in
 * {@link eventTimeAhead}; {@link observeEventTimes} sorts them.
 */
export const eventToOutputLatency = new client.Histogram({
  name: "txpipe_event_to_output_latency_seconds",
  help: "Seconds from the event time an output derives from until its transaction committed " +
    "(outputs with an event time ahead of the clock are in txpipe_event_time_ahead_records_total)",
  labelNames: ["processor"] as const,
  buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
  registers: [registry],
});

/**
 * Stream jobs: outputs whose event time was later than the wall clock when
 * their transaction committed. Nothing can be output before it happened, so
 * any is a sign that the producer's event time runs ahead of the clock (or
 * of clock skew between hosts); every latency and window is then suspect.
 */
export const eventTimeAhead = new client.Counter({
  name: "txpipe_event_time_ahead_records_total",
  help: "Outputs whose event time was ahead of the wall clock at commit (not observed in " +
    "txpipe_event_to_output_latency_seconds): the input's event time runs ahead of the clock",
  labelNames: ["processor"] as const,
  registers: [registry],
});

/** Stream jobs: how far the event time of the latest outputs was ahead of the clock. */
export const eventTimeLead = new client.Gauge({
  name: "txpipe_event_time_lead_seconds",
  help: "Largest lead of an output's event time over the wall clock at commit, in the latest " +
    "committed batch with event-time outputs; 0 when none was ahead",
  labelNames: ["processor"] as const,
  registers: [registry],
  aggregator: "max", // over stream threads: the largest lead of any
});

/**
 * Records the event times of one committed batch's outputs against the wall
 * clock `now` (epoch ms): each one not after `now` in the latency histogram,
 * each one ahead of it in {@link eventTimeAhead}, and the largest lead (0
 * when none was ahead) in {@link eventTimeLead}. No event times, no change.
 */
export function observeEventTimes(
  processor: string,
  eventTimes: readonly number[],
  now: number,
): void {
  if (eventTimes.length === 0) return;
  let leadMs = 0;
  let ahead = 0;
  for (const t of eventTimes) {
    if (t <= now) {
      eventToOutputLatency.observe({ processor }, (now - t) / 1000);
    } else {
      ahead++;
      leadMs = Math.max(leadMs, t - now);
    }
  }
  if (ahead > 0) eventTimeAhead.inc({ processor }, ahead);
  eventTimeLead.set({ processor }, leadMs / 1000);
}

/** Stream jobs: Kafka transactions by outcome. */
export const transactions = new client.Counter({
  name: "txpipe_transactions_total",
  help: "Kafka transactions of the stream jobs by result (committed, aborted)",
  labelNames: ["processor", "result"] as const,
  registers: [registry],
});

/** Stream jobs: state entries held per source partition. */
export const stateEntries = new client.Gauge({
  name: "txpipe_state_entries",
  help: "Keys in a processor's state for one source partition",
  labelNames: ["processor", "partition"] as const,
  registers: [registry],
});

/** Stream jobs: batches abandoned after running over --batch-timeout. */
export const stuckBatches = new client.Counter({
  name: "txpipe_stuck_batches_total",
  help:
    "Batches abandoned after running over the batch timeout (the partition was taken over again)",
  labelNames: ["processor"] as const,
  registers: [registry],
});

/** Stream jobs: source partitions paused for running ahead in event time (alignment.ts). */
export const alignmentPauses = new client.Counter({
  name: "txpipe_alignment_pauses_total",
  help:
    "Times a source partition was paused for running more than the maximum watermark drift ahead of the slowest",
  labelNames: ["processor"] as const,
  registers: [registry],
});

/** Stream jobs: changelog records read back while restoring state. */
export const restoredStateRecords = new client.Counter({
  name: "txpipe_restored_state_records_total",
  help: "Changelog records read back to restore state after an assignment",
  labelNames: ["processor"] as const,
  registers: [registry],
});

/** Aggregation: final window aggregates emitted. */
export const aggregatesEmitted = new client.Counter({
  name: "txpipe_aggregates_emitted_total",
  help: "Final per merchant, currency and window aggregates emitted",
  registers: [registry],
});

/** Aggregation: the event-time watermark, as epoch seconds. */
export const watermarkSeconds = new client.Gauge({
  name: "txpipe_watermark_seconds",
  help: "Event-time watermark (epoch seconds) by processor and partition",
  labelNames: ["processor", "partition"] as const,
  registers: [registry],
});

/** Detection: anomalies emitted, by rule and severity. */
export const anomaliesDetected = new client.Counter({
  name: "txpipe_anomalies_total",
  help: "Anomalies emitted, by rule and severity",
  labelNames: ["rule", "severity"] as const,
  registers: [registry],
});

/** Detection: rule changes taken from the control topic, one per input partition that switched. */
export const rulesChanges = new client.Counter({
  name: "txpipe_detect_rules_changes_total",
  help: "Switches to rules published on the control topic, once per input partition that " +
    "switched (committed with the batch they took effect in)",
  labelNames: ["processor"] as const,
  registers: [registry],
});

/** Detection: the rules version each input partition applies (0: the job's own config). */
export const rulesVersion = new client.Gauge({
  name: "txpipe_detect_rules_version",
  help: "Version of the detection rules an input partition applies (0: the job's own --config " +
    "or defaults), as of its last committed batch",
  labelNames: ["processor", "partition"] as const,
  registers: [registry],
});

// The evaluator's gauges are in no registry until the evaluator adds them
// with serveEvaluationMetric: the other jobs do not compute them, and a gauge
// without labels would read 0 on their /metrics (precision 0 is a claim).

/** Evaluation: recall per injected pattern (needs the generator's label headers). */
export const detectionRecall = new client.Gauge({
  name: "txpipe_detection_recall",
  help: "Share of injected fraud instances of a pattern that some anomaly's evidence covers",
  labelNames: ["pattern"] as const,
  registers: [],
});

/** Evaluation: precision over all anomalies seen; served once there is an anomaly. */
export const detectionPrecision = new client.Gauge({
  name: "txpipe_detection_precision",
  help: "Share of anomalies whose evidence contains an injected (labelled) transaction",
  registers: [],
});

/** Evaluation: anomalies and labelled instances seen so far. */
export const evaluatedAnomalies = new client.Gauge({
  name: "txpipe_evaluated_anomalies",
  help: "Anomalies the evaluator has read (deduplicated by anomalyId)",
  registers: [],
});

/** Evaluation: precision of each rule; served per rule once it has raised an anomaly. */
export const rulePrecision = new client.Gauge({
  name: "txpipe_detection_rule_precision",
  help: "Share of a rule's anomalies whose evidence contains a fraud-labelled transaction",
  labelNames: ["rule"] as const,
  registers: [],
});

/** Evaluation: false positives per 10 000 legitimate users per day (docs/evaluation.md). */
export const falsePositivesPer10kUserDays = new client.Gauge({
  name: "txpipe_detection_false_positives_per_10k_user_days",
  help: "False-positive anomalies / (users without any fraud label x event-time days spanned) " +
    "x 10 000",
  registers: [],
});

/** Evaluation: share of each hard-negative kind's instances a false-positive anomaly flags. */
export const hardNegativeFalsePositiveRate = new client.Gauge({
  name: "txpipe_detection_hard_negative_false_positive_rate",
  help: "Share of a hard-negative kind's instances (legitimate look-alikes) with a transaction " +
    "in a false-positive anomaly's evidence",
  labelNames: ["kind"] as const,
  registers: [],
});

/** One of the evaluator's gauges. */
export type EvaluationMetric =
  | typeof detectionRecall
  | typeof detectionPrecision
  | typeof evaluatedAnomalies
  | typeof rulePrecision
  | typeof falsePositivesPer10kUserDays
  | typeof hardNegativeFalsePositiveRate;

/**
 * Adds one of the evaluator's gauges to the served registry (again is a
 * no-op). Only the evaluator calls it, so only its /metrics has them.
 */
export function serveEvaluationMetric(metric: EvaluationMetric): void {
  registry.registerMetric(metric);
}
