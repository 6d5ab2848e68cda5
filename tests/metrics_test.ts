/**
 * What each job's /metrics serves: the evaluator's gauges only on the
 * evaluator's, and precision only once it has judged an anomaly (never a 0
 * nobody computed).
 */
import assert from "node:assert/strict";
import {
  detectionPrecision,
  detectionRecall,
  evaluatedAnomalies,
  registry,
  serveEvaluationMetric,
} from "../jobs/lib/metrics.ts";

/** A port free right now. */
function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/**
 * Starts `job` against brokers nobody listens on (it serves /metrics while
 * it retries Kafka), returns the text of its /metrics and kills it.
 */
async function metricsOf(job: string, extra: string[] = []): Promise<string> {
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `jobs/${job}.ts`,
      "--brokers",
      "127.0.0.1:1",
      "--connect-attempts",
      "20",
      "--metrics-port",
      String(port),
      ...extra,
    ],
    cwd: new URL("../", import.meta.url),
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  let exited = false;
  child.status.then(() => exited = true);
  try {
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline && !exited) {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/metrics`);
        return await res.text();
      } catch {
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    throw new Error(`${job} served no /metrics on ${port}; stderr:\n${await stderr}`);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
    await child.status;
    await stderr;
  }
}

Deno.test("metrics: produce, aggregate and detect do not serve the evaluator's gauges", async () => {
  const served = await Promise.all(["produce", "aggregate", "detect"].map((j) => metricsOf(j)));
  for (const [i, text] of served.entries()) {
    const job = ["produce", "aggregate", "detect"][i];
    assert.match(text, /^txpipe_process_cpu_seconds_total /m, `${job} serves its metrics`);
    assert.doesNotMatch(text, /txpipe_detection_precision/, `${job}: precision`);
    assert.doesNotMatch(text, /txpipe_detection_recall/, `${job}: recall`);
    assert.doesNotMatch(text, /txpipe_evaluated_anomalies/, `${job}: evaluated anomalies`);
    assert.doesNotMatch(text, /txpipe_detection_rule_precision/, `${job}: rule precision`);
    assert.doesNotMatch(text, /txpipe_detection_false_positives/, `${job}: false positives`);
    assert.doesNotMatch(text, /txpipe_detection_hard_negative/, `${job}: hard negatives`);
  }
});

Deno.test("metrics: the evaluator serves precision only once it has a value, never a default 0", async () => {
  const evaluator = await metricsOf("evaluate", ["--follow"]);
  assert.match(evaluator, /^txpipe_process_cpu_seconds_total /m);
  assert.doesNotMatch(evaluator, /txpipe_detection_precision/, "no anomaly judged yet");
  assert.doesNotMatch(evaluator, /txpipe_detection_rule_precision/, "no anomaly judged yet");
  assert.doesNotMatch(evaluator, /txpipe_detection_false_positives/, "no users or days yet");
  assert.doesNotMatch(evaluator, /txpipe_detection_hard_negative/, "no hard negative yet");

  // In process: registering is what the evaluator does on its first figures.
  assert.doesNotMatch(await registry.metrics(), /txpipe_detection_precision/);
  serveEvaluationMetric(evaluatedAnomalies);
  serveEvaluationMetric(detectionRecall);
  serveEvaluationMetric(evaluatedAnomalies);
  assert.doesNotMatch(await registry.metrics(), /txpipe_detection_precision/);
  serveEvaluationMetric(detectionPrecision);
  detectionPrecision.set(0.975);
  assert.match(await registry.metrics(), /^txpipe_detection_precision 0\.975$/m);
});
