/**
 * Every Prometheus metric txpipe's jobs expose, defined once (design.md:
 * "Metrics are a contract"). Dashboards and alert rules use only these names
 * (or the brokers' JMX exporter names). Each job serves them on /metrics.
 *
 * No metric carries a `job` label: Prometheus adds `job` and `instance` from
 * the scrape config.
 *
 * @module
 */
import client from "prom-client";

/** The registry every txpipe metric lives in. */
export const registry = new client.Registry();

client.collectDefaultMetrics({ register: registry, prefix: "txpipe_" });

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

/** Producer: records whose send failed after every retry. */
export const produceErrors = new client.Counter({
  name: "txpipe_produce_errors_total",
  help: "Records whose send failed after every retry (not acknowledged)",
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
  return Deno.serve({
    port: options.port,
    hostname: options.hostname ?? "127.0.0.1",
    onListen: options.onListen ?? (() => {}),
  }, async (req) => {
    const url = new URL(req.url);
    if (url.pathname === "/metrics") {
      return new Response(await registry.metrics(), {
        headers: { "content-type": registry.contentType },
      });
    }
    if (url.pathname === "/healthz") return new Response("ok\n");
    return new Response("not found; try /metrics\n", { status: 404 });
  });
}
