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
import { evaluate, GroundTruth } from "../jobs/lib/evaluation.ts";
import type { Anomaly } from "../jobs/lib/rules.ts";
import { publish } from "../jobs/evaluate.ts";

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

Deno.test("metrics: the evaluator's figures reach their gauges, a rate only once it has a value", async () => {
  const truth = new GroundTruth();
  const day = 86_400_000;
  truth.add({ transactionId: "f", userId: "u1", transactionTime: 0 }, {
    fraud: { pattern: "velocity_burst", instanceId: "i" },
  });
  truth.add({ transactionId: "n", userId: "u2", transactionTime: day });
  truth.add({ transactionId: "h", userId: "u3", transactionTime: day }, {
    hardNegative: { kind: "flight", instanceId: "h1" },
  });
  const anomaly = (id: string, rule: Anomaly["rule"], tx: string): Anomaly => ({
    anomalyId: id,
    rule,
    severity: "medium",
    userId: "u",
    transactionIds: [tx],
    observed: 0,
    threshold: 0,
    windowStart: 0,
    windowEnd: 0,
    detectedAt: 0,
  });
  publish(evaluate(truth, [anomaly("a", "velocity", "f"), anomaly("b", "impossible_travel", "h")]));
  const text = await registry.metrics();
  assert.match(text, /^txpipe_detection_recall\{pattern="velocity_burst"\} 1$/m);
  assert.match(text, /^txpipe_detection_precision 0\.5$/m);
  assert.match(text, /^txpipe_detection_rule_precision\{rule="velocity"\} 1$/m);
  assert.match(text, /^txpipe_detection_rule_precision\{rule="impossible_travel"\} 0$/m);
  assert.doesNotMatch(text, /rule_precision\{rule="card_testing"\}/, "it raised nothing");
  // 1 false positive ÷ (2 legitimate users × 1 day) × 10 000
  assert.match(text, /^txpipe_detection_false_positives_per_10k_user_days 5000$/m);
  assert.match(text, /^txpipe_detection_hard_negative_false_positive_rate\{kind="flight"\} 1$/m);
  assert.doesNotMatch(text, /false_positive_rate\{kind="multi_item"\}/, "no instances");
  assert.doesNotMatch(text, /recall\{pattern="card_testing"\}/, "no instances");
  assert.match(text, /^txpipe_evaluated_anomalies 2$/m);
});
