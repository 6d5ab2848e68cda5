/**
 * The pure renderers (Prometheus scrape config, Grafana provisioning, the
 * topic-creation script) and the render CLI, checked for exact values and
 * with the real tools that run here: promtool, bash.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import {
  ALERT_RULES_FILE,
  alertRules,
  dockerTargets,
  localTargets,
  PROMETHEUS_CONFIG_FILE,
  prometheusConfig,
  renderAlertRules,
  renderPrometheusConfig,
} from "../stacks/render/prometheus.ts";
import {
  PROMETHEUS_DATASOURCE_UID,
  renderDashboardProvider,
  renderDatasources,
} from "../stacks/render/grafana.ts";
import { renderTopicsScript } from "../stacks/render/topics.ts";
import { writePrometheusFiles } from "../stacks/render/main.ts";
import { repoRoot } from "../stacks/repo_files.ts";
import { type TopicSpec, topology } from "../stacks/topology.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

const topo = topology("cluster");

async function run(
  cmd: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): Promise<{ code: number; out: string }> {
  const { code, stdout, stderr } = await new Deno.Command(cmd, {
    args,
    cwd: options.cwd,
    env: options.env,
    stdin: "null",
  }).output();
  const text = new TextDecoder();
  return { code, out: text.decode(stdout) + text.decode(stderr) };
}

function scrape(config: Json, job: string): Json {
  const found = config.scrape_configs.find((s: Json) => s.job_name === job);
  assert.ok(found, `scrape job ${job}`);
  return found;
}

Deno.test("prometheus: local scrape config targets every Kafka JMX port and every job port on 127.0.0.1", () => {
  const config: Json = parseYaml(renderPrometheusConfig(topo, { targets: localTargets() }));
  assert.deepEqual(config.rule_files, [ALERT_RULES_FILE]);
  assert.equal(config.global.scrape_interval, "15s");
  assert.deepEqual(
    scrape(config, "kafka").static_configs,
    [
      [7071, "kafka-controller-1", "controller", "1"],
      [7072, "kafka-controller-2", "controller", "2"],
      [7073, "kafka-controller-3", "controller", "3"],
      [7074, "kafka-broker-1", "broker", "4"],
      [7075, "kafka-broker-2", "broker", "5"],
      [7076, "kafka-broker-3", "broker", "6"],
    ].map(([port, instance, role, id]) => ({
      targets: [`127.0.0.1:${port}`],
      labels: { instance, role, node_id: id },
    })),
  );
  const jobPorts = [["produce", 9464], ["aggregate", 9465], ["detect", 9466], ["evaluate", 9467]];
  for (const [job, port] of jobPorts) {
    assert.deepEqual(scrape(config, job as string).static_configs, [{
      targets: [`127.0.0.1:${port}`],
    }]);
  }
  assert.deepEqual(scrape(config, "prometheus").static_configs, [{ targets: ["127.0.0.1:9090"] }]);
  assert.equal(config.scrape_configs.length, 1 + 1 + topo.jobs.length);
});

Deno.test("prometheus: docker scrape config uses container names and discovers job replicas by their alias", () => {
  const config: Json = prometheusConfig(topo, { targets: dockerTargets() });
  assert.deepEqual(
    scrape(config, "kafka").static_configs.map((s: Json) => s.targets[0]),
    topo.nodes.map((n) => `${n.name}:${n.metricsPort}`),
  );
  assert.deepEqual(scrape(config, "aggregate").dns_sd_configs, [{
    names: ["txpipe-aggregate"],
    type: "A",
    port: 9465,
    refresh_interval: "15s",
  }]);
  assert.deepEqual(scrape(config, "prometheus").static_configs, [{ targets: ["localhost:9090"] }]);
  // the single-node topology scrapes its one combined node
  const single: Json = prometheusConfig(topology("single"), { targets: localTargets() });
  assert.deepEqual(scrape(single, "kafka").static_configs, [{
    targets: ["127.0.0.1:7071"],
    labels: { instance: "kafka-single", role: "combined", node_id: "1" },
  }]);
});

Deno.test("prometheus: promtool check config accepts the rendered local and docker configs with their rules", async () => {
  for (const targets of [localTargets(), dockerTargets()]) {
    const dir = await Deno.makeTempDir({ prefix: "txpipe-prom-" });
    try {
      await Deno.writeTextFile(
        `${dir}/${PROMETHEUS_CONFIG_FILE}`,
        renderPrometheusConfig(topo, { targets }),
      );
      await Deno.writeTextFile(`${dir}/${ALERT_RULES_FILE}`, renderAlertRules(topo));
      const { code, out } = await run("promtool", ["check", "config", PROMETHEUS_CONFIG_FILE], {
        cwd: dir,
      });
      assert.equal(code, 0, out);
      assert.match(out, /SUCCESS: prometheus\.yml is valid prometheus config file syntax/);
      // 3 Kafka rules + lag, down, missing, dead letters, stuck batches, event time ahead
      // + latency for aggregate and detect
      assert.match(out, /SUCCESS: 11 rules found/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
});

Deno.test("prometheus: a scrape interval under 10s gets an equal timeout, which promtool accepts", async () => {
  const config: Json = prometheusConfig(topo, { targets: localTargets(), scrapeInterval: "2s" });
  assert.equal(config.global.scrape_interval, "2s");
  assert.equal(config.global.scrape_timeout, "2s");
  const standard: Json = prometheusConfig(topo, { targets: localTargets() });
  assert.deepEqual([standard.global.scrape_interval, standard.global.scrape_timeout], [
    "15s",
    "10s",
  ]);
  const dir = await Deno.makeTempDir({ prefix: "txpipe-prom-" });
  try {
    await writePrometheusFiles(dir, { scrapeInterval: "2s" });
    const { code, out } = await run("promtool", ["check", "config", PROMETHEUS_CONFIG_FILE], {
      cwd: dir,
    });
    assert.equal(code, 0, out);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  assert.throws(
    () => prometheusConfig(topo, { targets: localTargets(), scrapeInterval: "2 seconds" }),
    /scrapeInterval: expected a duration such as 15s or 500ms, got "2 seconds"/,
  );
});

Deno.test("prometheus: every txpipe_ metric an alert uses is defined in jobs/lib/metrics.ts", () => {
  const metricsModule = readFileSync(`${repoRoot()}/jobs/lib/metrics.ts`, "utf8");
  const rules: Json = alertRules(topo);
  const exprs: string[] = rules.groups.flatMap((g: Json) => g.rules.map((r: Json) => r.expr));
  const used = new Set(exprs.flatMap((e) => e.match(/txpipe_[a-z_]+/g) ?? []));
  assert.deepEqual([...used].sort(), [
    "txpipe_consumer_lag",
    "txpipe_dead_letters_total",
    "txpipe_event_time_ahead_records_total",
    "txpipe_event_to_output_latency_seconds_bucket",
    "txpipe_stuck_batches_total",
  ]);
  for (const name of used) {
    const defined = name.replace(/_bucket$/, "");
    assert.ok(metricsModule.includes(`name: "${defined}"`), `${defined} is defined`);
  }
});

Deno.test("render CLI: writes prometheus.yml and txpipe_alerts.yml into the folder; a bad flag exits 2 naming it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "txpipe-render-" });
  try {
    const ok = await run(Deno.execPath(), [
      "run",
      "-A",
      `${repoRoot()}/stacks/render/main.ts`,
      "--targets",
      "docker",
      dir,
    ]);
    assert.equal(ok.code, 0, ok.out);
    const config: Json = parseYaml(await Deno.readTextFile(`${dir}/prometheus.yml`));
    assert.equal(scrape(config, "kafka").static_configs[0].targets[0], "kafka-controller-1:7071");
    assert.equal(await Deno.readTextFile(`${dir}/txpipe_alerts.yml`), renderAlertRules(topo));

    const bad = await run(Deno.execPath(), [
      "run",
      "-A",
      `${repoRoot()}/stacks/render/main.ts`,
      "--targets",
      "kubernetes",
      dir,
    ]);
    assert.equal(bad.code, 2);
    assert.match(bad.out, /--targets: expected "local" or "docker", got "kubernetes"/);

    const written = await writePrometheusFiles(`${dir}/local`);
    assert.equal(written.config, `${dir}/local/prometheus.yml`);
    const local: Json = parseYaml(await Deno.readTextFile(written.config));
    assert.equal(scrape(local, "produce").static_configs[0].targets[0], "127.0.0.1:9464");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("grafana: datasource has the fixed uid and URL; the dashboard provider loads one folder read-only", () => {
  const ds: Json = parseYaml(renderDatasources({ prometheusUrl: "http://txpipe-prometheus:9090" }));
  assert.deepEqual(ds, {
    apiVersion: 1,
    datasources: [{
      name: "Prometheus",
      uid: "txpipe-prometheus",
      type: "prometheus",
      access: "proxy",
      url: "http://txpipe-prometheus:9090",
      isDefault: true,
      editable: false,
      jsonData: { timeInterval: "15s", httpMethod: "POST" },
    }],
  });
  assert.equal(PROMETHEUS_DATASOURCE_UID, "txpipe-prometheus");
  const provider: Json = parseYaml(renderDashboardProvider({ path: "/etc/grafana/dashboards/x" }));
  assert.deepEqual(provider.providers[0].options, {
    path: "/etc/grafana/dashboards/x",
    foldersFromFilesStructure: false,
  });
  assert.equal(provider.providers[0].allowUiUpdates, false);
});

/**
 * Runs the rendered topic script under bash with stand-ins for kafka-topics.sh
 * and kafka-configs.sh that log their arguments; `--describe` reports
 * `existing` partitions for every topic.
 */
async function runTopicsScript(
  topics: readonly TopicSpec[],
  existing: number,
): Promise<{ code: number; out: string; calls: string[] }> {
  const bin = await Deno.makeTempDir({ prefix: "txpipe-kafka-bin-" });
  try {
    const log = `${bin}/calls.log`;
    const stub = (tool: string) =>
      `#!/usr/bin/env bash\necho "${tool} $*" >> ${log}\n` +
      `if [[ " $* " == *" --describe "* ]]; then\n` +
      `  for i in $(seq 1 ${existing}); do echo "  Topic: t  Partition: $((i-1))  Leader: 4"; done\n` +
      `fi\n`;
    for (const tool of ["kafka-topics.sh", "kafka-configs.sh"]) {
      await Deno.writeTextFile(`${bin}/${tool}`, stub(tool), { mode: 0o755 });
    }
    const script = renderTopicsScript(topics, { bootstrap: "b1:19092,b2:19092", bin });
    const { code, out } = await run("bash", ["-c", script]);
    const calls = (await Deno.readTextFile(log).catch(() => "")).trim().split("\n");
    return { code, out, calls };
  } finally {
    await Deno.remove(bin, { recursive: true });
  }
}

Deno.test("topics script: under bash, creates each topic with partitions, replication and configs, then sets its configs", async () => {
  const [transactions, aggregates] = topo.topics;
  const { code, out, calls } = await runTopicsScript([transactions, aggregates], 5);
  assert.equal(code, 0, out);
  const b = "--bootstrap-server b1:19092,b2:19092";
  assert.deepEqual(calls, [
    `kafka-topics.sh ${b} --create --if-not-exists --topic financial_transactions --partitions 5 ` +
    "--replication-factor 3 --config retention.ms=604800000 --config min.insync.replicas=2",
    `kafka-configs.sh ${b} --alter --entity-type topics --entity-name financial_transactions ` +
    "--add-config retention.ms=604800000,min.insync.replicas=2",
    `kafka-topics.sh ${b} --describe --topic financial_transactions`,
    `kafka-topics.sh ${b} --create --if-not-exists --topic transaction_aggregates --partitions 3 ` +
    "--replication-factor 3 --config retention.ms=604800000 --config min.insync.replicas=2",
    `kafka-configs.sh ${b} --alter --entity-type topics --entity-name transaction_aggregates ` +
    "--add-config retention.ms=604800000,min.insync.replicas=2",
    `kafka-topics.sh ${b} --describe --topic transaction_aggregates`,
    `kafka-topics.sh ${b} --describe --exclude-internal`,
  ]);
});

Deno.test("topics script: fails naming the topic when an existing topic has fewer partitions than the spec", async () => {
  const transactions = topo.topics[0];
  const { code, out } = await runTopicsScript([transactions], 3);
  assert.equal(code, 1);
  assert.match(
    out,
    /topic financial_transactions has fewer partitions than the 5 the spec declares/,
  );
});

Deno.test("topics script: a config value with a comma is rejected, since --add-config could not carry it", () => {
  const bad: TopicSpec = {
    name: "t",
    partitions: 1,
    replicationFactor: 1,
    config: { "cleanup.policy": "compact,delete" },
    purpose: "test",
  };
  assert.throws(
    () => renderTopicsScript([bad], { bootstrap: "b:1" }),
    /topic t: config cleanup\.policy must not contain a comma for --add-config; got "compact,delete"/,
  );
});
