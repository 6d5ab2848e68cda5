/**
 * txpipe's alert rules, rendered from the spec, under `promtool test rules`
 * with the committed unit tests in stacks/config/txpipe_alerts_test.yml.
 */
import assert from "node:assert/strict";
import { copyFileSync } from "node:fs";
import { ALERT_RULES_FILE, alertRules, renderAlertRules } from "../stacks/render/prometheus.ts";
import { repoRoot } from "../stacks/repo_files.ts";
import { topology } from "../stacks/topology.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

const UNIT_TESTS = "stacks/config/txpipe_alerts_test.yml";

Deno.test("alert rules: promtool test rules passes every unit test of stacks/config/txpipe_alerts_test.yml", async () => {
  const dir = await Deno.makeTempDir({ prefix: "txpipe-rules-" });
  try {
    await Deno.writeTextFile(`${dir}/${ALERT_RULES_FILE}`, renderAlertRules(topology("cluster")));
    copyFileSync(`${repoRoot()}/${UNIT_TESTS}`, `${dir}/txpipe_alerts_test.yml`);
    const { code, stdout, stderr } = await new Deno.Command("promtool", {
      args: ["test", "rules", "txpipe_alerts_test.yml"],
      cwd: dir,
      stdin: "null",
    }).output();
    const out = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
    assert.equal(code, 0, out);
    assert.match(out, /SUCCESS/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("alert rules: issue 5's six alerts exist with a severity, a summary and a description", () => {
  const rules: Json[] = (alertRules(topology("cluster")) as Json).groups.flatMap((g: Json) =>
    g.rules
  );
  const names = [...new Set(rules.map((r) => r.alert))].sort();
  assert.deepEqual(names, [
    "KafkaNoActiveController", // no active controller
    "KafkaOfflinePartitions", // partitions without a leader (beyond issue 5's list)
    "KafkaUnderReplicatedPartitions", // under-replicated partitions
    "TxpipeBatchStuck", // a batch abandoned after --batch-timeout (beyond issue 5's list)
    "TxpipeConsumerLagGrowing", // consumer lag growing for several minutes
    "TxpipeDeadLetterSpike", // a dead-letter spike
    "TxpipeEventTimeAhead", // outputs with an event time ahead of the clock (beyond issue 5's list)
    "TxpipeJobDown", // a job down (an instance stops answering) ...
    "TxpipeJobMissing", // ... or has no instance at all
    "TxpipeLatencyP99OverBudget", // latency p99 over budget (one rule per job)
  ]);
  for (const r of rules) {
    assert.match(r.labels.severity, /^(warning|critical)$/, r.alert);
    assert.ok(r.annotations.summary && r.annotations.description, r.alert);
  }
  // Only the jobs that emit event-derived outputs have a latency budget.
  assert.deepEqual(
    rules.filter((r) => r.alert === "TxpipeLatencyP99OverBudget").map((r) => r.labels.job),
    ["aggregate", "detect"],
  );
});

Deno.test("alert rules: thresholds and latency budgets follow the options", () => {
  const rules: Json[] = (alertRules(topology("cluster"), {
    lagThreshold: 50,
    lagGrowingFor: "3m",
    deadLetterRatePerSecond: 2,
    latencyBudgetSeconds: { detect: 1.5 },
    eventTimeAheadRatePerSecond: 0.2,
    eventTimeAheadFor: "15m",
  }) as Json).groups.flatMap((g: Json) => g.rules);
  const lag = rules.find((r) => r.alert === "TxpipeConsumerLagGrowing");
  assert.equal(
    lag.expr,
    "sum by (job, processor, topic) (txpipe_consumer_lag) > 50 and " +
      "sum by (job, processor, topic) (deriv(txpipe_consumer_lag[5m])) > 0",
  );
  assert.equal(lag.for, "3m");
  assert.match(rules.find((r) => r.alert === "TxpipeDeadLetterSpike").expr, / > 2$/);
  const ahead = rules.find((r) => r.alert === "TxpipeEventTimeAhead");
  assert.equal(
    ahead.expr,
    "sum by (job, processor) (rate(txpipe_event_time_ahead_records_total[5m])) > 0.2",
  );
  assert.equal(ahead.for, "15m");
  const defaults: Json[] = (alertRules(topology("cluster")) as Json).groups.flatMap((g: Json) =>
    g.rules
  );
  const aheadByDefault = defaults.find((r) => r.alert === "TxpipeEventTimeAhead");
  assert.match(aheadByDefault.expr, / > 0$/);
  assert.equal(aheadByDefault.for, "5m");
  const detect = rules.find((r) =>
    r.alert === "TxpipeLatencyP99OverBudget" && r.labels.job === "detect"
  );
  assert.equal(
    detect.expr,
    "histogram_quantile(0.99, sum by (job, processor, le) " +
      '(rate(txpipe_event_to_output_latency_seconds_bucket{job="detect"}[5m]))) > 1.5',
  );
  const aggregate = rules.find((r) =>
    r.alert === "TxpipeLatencyP99OverBudget" && r.labels.job === "aggregate"
  );
  assert.match(aggregate.expr, / > 120$/, "unchanged budgets keep their default");
});
