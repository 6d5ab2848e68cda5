/**
 * Stream threads (jobs/lib/threads.ts) without Kafka: a thread's failure
 * reaches the process with its message, and /metrics sums the threads'
 * metrics into the process's own. On the real cluster, detect with
 * `--threads 2` is in tests/detect_test.ts.
 */
import assert from "node:assert/strict";
import client from "prom-client";
import { runThreads, ThreadError } from "../jobs/lib/threads.ts";
import { createLogger } from "../jobs/lib/log.ts";
import {
  addMetricsSource,
  consumedRecords,
  eventTimeLead,
  type MetricsJson,
  metricsText,
  serveMetrics,
} from "../jobs/lib/metrics.ts";
import { Writable } from "node:stream";

const quiet = createLogger("detect", {
  destination: new Writable({ write: (_c, _e, done) => done() }),
});

Deno.test("threads: a thread that fails stops the job with its message, naming the thread", async () => {
  const started = Date.now();
  await assert.rejects(
    runThreads({
      module: new URL("./fixtures/failing_stream_job.ts", import.meta.url).href,
      count: 2,
      log: quiet,
      stopSignal: new Promise(() => {}), // never: the failure alone ends it
    }),
    (err: unknown) => {
      assert.ok(err instanceof ThreadError, String(err));
      assert.match(err.message, /^thread [12]: no processors here \(on purpose\)$/);
      return true;
    },
  );
  assert.ok(Date.now() - started < 30_000);
});

Deno.test("threads: a module without STREAM_JOB is a failure, not a hang", async () => {
  await assert.rejects(
    runThreads({
      module: new URL("../jobs/lib/currency.ts", import.meta.url).href,
      count: 1,
      log: quiet,
      stopSignal: new Promise(() => {}),
    }),
    /thread 1: .*currency\.ts exports no STREAM_JOB/,
  );
});

Deno.test("threads: a thread that must end the process ends it, with its exit code (Deno.exit in a worker would end only the worker)", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("./fixtures/exiting_stream_job.ts", import.meta.url).pathname],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
  const { code, stdout } = await child.output();
  clearTimeout(timer);
  assert.equal(code, 3, new TextDecoder().decode(stdout));
  assert.match(new TextDecoder().decode(stdout), /thread 1 ends the process \(3\)/);
});

/** The value of `name`'s series with exactly `labels` in a /metrics text. */
function valueOf(text: string, name: string, labels: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}} `));
  assert.ok(line, `${name}{${labels}} in\n${text.slice(0, 2000)}`);
  return Number(line.split(" ").pop());
}

Deno.test("threads: /metrics sums the threads' counters into the process's, and takes the largest event-time lead", async () => {
  const processor = `threads-metrics-${crypto.randomUUID()}`;
  const labels = `processor="${processor}",topic="t"`;
  consumedRecords.inc({ processor, topic: "t" }, 5);
  eventTimeLead.set({ processor }, 2);
  // Two threads' metrics as a thread hands them over: a registry's JSON.
  const thread = (consumed: number, lead: number): Promise<MetricsJson> => {
    const r = new client.Registry();
    new client.Counter({
      name: "txpipe_consumed_records_total",
      help: "h",
      labelNames: ["processor", "topic"],
      registers: [r],
    }).inc({ processor, topic: "t" }, consumed);
    new client.Gauge({
      name: "txpipe_event_time_lead_seconds",
      help: "h",
      labelNames: ["processor"],
      registers: [r],
      aggregator: "max",
    }).set({ processor }, lead);
    return r.getMetricsAsJSON();
  };
  const remove = addMetricsSource(async () => [await thread(7, 9), await thread(11, 1)]);
  const server = serveMetrics({ port: 0 });
  try {
    const text = await (await fetch(`http://127.0.0.1:${server.addr.port}/metrics`)).text();
    assert.equal(valueOf(text, "txpipe_consumed_records_total", labels), 5 + 7 + 11);
    assert.equal(valueOf(text, "txpipe_event_time_lead_seconds", `processor="${processor}"`), 9);
    // The process's own metrics (CPU, memory) are there once: the serving thread's.
    assert.equal(
      text.split("\n").filter((l) => l.startsWith("# TYPE txpipe_process_cpu_seconds_total "))
        .length,
      1,
    );
  } finally {
    remove();
    await server.shutdown();
  }
  // Without sources: the registry's own text.
  assert.equal(valueOf(await metricsText(), "txpipe_consumed_records_total", labels), 5);
});
