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
import { aclArgs, renderTopicsScript, type TopicsSecurity } from "../stacks/render/topics.ts";
import { renderNodeScript } from "../stacks/render/kafka_node.ts";
import { logstashRole, renderElasticSetupScript } from "../stacks/render/elastic_setup.ts";
import { type AclRule, jobAcls } from "../stacks/security.ts";
import { scramUsers } from "../stacks/topics.ts";
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
  secured?: { security: TopicsSecurity; env: Record<string, string> },
): Promise<{ code: number; out: string; calls: string[]; configs: string[] }> {
  const bin = await Deno.makeTempDir({ prefix: "txpipe-kafka-bin-" });
  try {
    const log = `${bin}/calls.log`;
    const configLog = `${bin}/configs.log`;
    // Each stand-in also records the client config it was given (file content and mode).
    const stub = (tool: string) =>
      `#!/usr/bin/env bash\necho "${tool} $*" >> ${log}\n` +
      `args=("$@"); for ((i = 0; i < \${#args[@]}; i++)); do\n` +
      `  if [[ "\${args[i]}" == --command-config ]]; then f="\${args[i+1]}";\n` +
      `    { stat -c %a "$f"; cat "$f"; } >> ${configLog}; fi\n` +
      `done\n` +
      `if [[ " $* " == *" --describe "* ]]; then\n` +
      `  for i in $(seq 1 ${existing}); do echo "  Topic: t  Partition: $((i-1))  Leader: 4"; done\n` +
      `fi\n`;
    for (const tool of ["kafka-topics.sh", "kafka-configs.sh", "kafka-acls.sh"]) {
      await Deno.writeTextFile(`${bin}/${tool}`, stub(tool), { mode: 0o755 });
    }
    const script = renderTopicsScript(topics, {
      bootstrap: "b1:19092,b2:19092",
      bin,
      security: secured?.security,
    });
    const { code, out } = await run("bash", ["-c", script], { env: secured?.env });
    const calls = (await Deno.readTextFile(log).catch(() => "")).trim().split("\n");
    const configs = (await Deno.readTextFile(configLog).catch(() => "")).trim().split("\n");
    return { code, out, calls, configs };
  } finally {
    await Deno.remove(bin, { recursive: true });
  }
}

/** The passwords the secured script's stand-in environment holds. */
const SCRAM_ENV: Record<string, string> = {
  TXPIPE_KAFKA_ADMIN_PASSWORD: "adminpw",
  TXPIPE_KAFKA_PASSWORD_PRODUCE: "producepw",
  TXPIPE_KAFKA_PASSWORD_AGGREGATE: "aggregatepw",
  TXPIPE_KAFKA_PASSWORD_DETECT: "detectpw",
  TXPIPE_KAFKA_PASSWORD_EVALUATE: "evaluatepw",
  TXPIPE_KAFKA_PASSWORD_CONSUME: "consumepw",
  TXPIPE_KAFKA_PASSWORD_RULES: "rulespw",
};

/** One rule of each kind kafka-acls.sh takes differently. */
const SAMPLE_ACLS: AclRule[] = [
  {
    principal: "produce",
    resource: "topic",
    pattern: "literal",
    name: "financial_transactions",
    operations: ["write", "describe", "create"],
  },
  {
    principal: "produce",
    resource: "cluster",
    pattern: "literal",
    name: "kafka-cluster",
    operations: ["idempotent-write"],
  },
  {
    principal: "aggregate",
    resource: "group",
    pattern: "prefixed",
    name: "txpipe-aggregate",
    operations: ["read", "describe"],
  },
  {
    principal: "aggregate",
    resource: "transactional-id",
    pattern: "prefixed",
    name: "txpipe-aggregate",
    operations: ["write", "describe"],
  },
  {
    principal: "consume",
    resource: "topic",
    pattern: "literal",
    name: "*",
    operations: ["read", "describe"],
  },
  {
    principal: "evaluate",
    resource: "topic",
    pattern: "prefixed",
    name: "bench",
    operations: ["read"],
  },
];

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

Deno.test("topics script (secured): under bash, every tool connects as the admin with a 0600 SCRAM config, then users and ACLs are applied", async () => {
  const [transactions] = topo.topics;
  const { code, out, calls, configs } = await runTopicsScript([transactions], 5, {
    security: { users: scramUsers(), acls: SAMPLE_ACLS },
    env: SCRAM_ENV,
  });
  assert.equal(code, 0, out);
  const b = "--bootstrap-server b1:19092,b2:19092 --command-config";
  const config = calls[0].match(/--command-config (\S+)/)?.[1];
  assert.ok(config, calls[0]);
  const c = `${b} ${config}`;
  assert.deepEqual(calls, [
    `kafka-topics.sh ${c} --create --if-not-exists --topic financial_transactions --partitions 5 ` +
    "--replication-factor 3 --config retention.ms=604800000 --config min.insync.replicas=2",
    `kafka-configs.sh ${c} --alter --entity-type topics --entity-name financial_transactions ` +
    "--add-config retention.ms=604800000,min.insync.replicas=2",
    `kafka-topics.sh ${c} --describe --topic financial_transactions`,
    ...["produce", "aggregate", "detect", "evaluate", "consume", "rules"].map((p) =>
      `kafka-configs.sh ${c} --alter --entity-type users --entity-name txpipe-${p} ` +
      `--add-config SCRAM-SHA-512=[password=${p}pw]`
    ),
    `kafka-acls.sh ${c} --add --allow-principal User:txpipe-produce --operation Write ` +
    "--operation Describe --operation Create --topic financial_transactions",
    `kafka-acls.sh ${c} --add --allow-principal User:txpipe-produce --operation IdempotentWrite --cluster`,
    `kafka-acls.sh ${c} --add --allow-principal User:txpipe-aggregate --operation Read ` +
    "--operation Describe --group txpipe-aggregate --resource-pattern-type prefixed",
    `kafka-acls.sh ${c} --add --allow-principal User:txpipe-aggregate --operation Write ` +
    "--operation Describe --transactional-id txpipe-aggregate --resource-pattern-type prefixed",
    `kafka-acls.sh ${c} --add --allow-principal User:txpipe-consume --operation Read ` +
    "--operation Describe --topic *",
    `kafka-acls.sh ${c} --add --allow-principal User:txpipe-evaluate --operation Read ` +
    "--topic bench --resource-pattern-type prefixed",
    `kafka-acls.sh ${c} --list`,
    `kafka-topics.sh ${c} --describe --exclude-internal`,
  ]);
  // Every call got the same admin config, readable by its owner only.
  assert.deepEqual(configs.slice(0, 4), [
    "600",
    "security.protocol=SASL_PLAINTEXT",
    "sasl.mechanism=SCRAM-SHA-512",
    'sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="adminpw";',
  ]);
  assert.equal(configs.length, 4 * calls.length);
  assert.ok(!out.includes("pw"), `no password in the output:\n${out}`);
});

Deno.test("topics script (secured): every rule of jobAcls() becomes one idempotent kafka-acls --add with Kafka's operation names", async () => {
  const rules = jobAcls();
  const { code, out, calls } = await runTopicsScript([], 0, {
    security: { users: scramUsers(), acls: rules },
    env: SCRAM_ENV,
  });
  assert.equal(code, 0, out);
  const added = calls.filter((l) => l.startsWith("kafka-acls.sh ") && l.includes(" --add "));
  assert.equal(added.length, rules.length);
  rules.forEach((r, i) => assert.ok(added[i].endsWith(" " + aclArgs(r).join(" ")), added[i]));
  for (const line of added) {
    assert.match(line, / --allow-principal User:txpipe-[a-z]+ /);
    for (const op of line.matchAll(/--operation (\S+)/g)) {
      assert.ok(
        ["Read", "Write", "Describe", "Create", "Delete", "IdempotentWrite"].includes(op[1]),
        line,
      );
    }
    assert.doesNotMatch(line, /--deny-principal|--remove/);
  }
});

Deno.test("topics script (secured): a missing password fails before any tool runs, naming the variable", async () => {
  const env = { ...SCRAM_ENV, TXPIPE_KAFKA_PASSWORD_DETECT: "" };
  const { code, out, calls } = await runTopicsScript([topo.topics[0]], 5, {
    security: { users: scramUsers(), acls: [] },
    env,
  });
  assert.notEqual(code, 0);
  assert.match(out, /TXPIPE_KAFKA_PASSWORD_DETECT: the password of txpipe-detect is not set/);
  assert.deepEqual(calls, [""]);
});

/**
 * Runs the Kafka node start script under bash with a stand-in kafka-storage.sh
 * (records its arguments and the --config file, writes meta.properties) and a
 * stand-in for the image's start script.
 */
async function runNodeScript(
  dir: string,
  env: Record<string, string>,
): Promise<{ code: number; out: string; calls: string[] }> {
  const bin = `${dir}/bin`;
  const data = `${dir}/data`;
  await Deno.mkdir(bin, { recursive: true });
  await Deno.mkdir(data, { recursive: true });
  const log = `${dir}/calls.log`;
  await Deno.writeTextFile(
    `${bin}/kafka-storage.sh`,
    `#!/usr/bin/env bash\necho "kafka-storage.sh KAFKA_OPTS=[$KAFKA_OPTS] $*" >> ${log}\n` +
      `args=("$@"); for ((i = 0; i < \${#args[@]}; i++)); do\n` +
      `  [[ "\${args[i]}" == --config ]] && sort "\${args[i+1]}" >> ${log}; done\n` +
      `echo "node.id=1" > ${data}/meta.properties\n`,
    { mode: 0o755 },
  );
  await Deno.writeTextFile(`${bin}/run`, `#!/usr/bin/env bash\necho "run" >> ${log}\n`, {
    mode: 0o755,
  });
  const script = renderNodeScript({
    dataDir: data,
    bin,
    run: `${bin}/run`,
    clientConfigDir: `${dir}/client`,
  });
  const out = await new Deno.Command("bash", {
    args: ["-c", script],
    env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", ...env },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  const calls = (await Deno.readTextFile(log).catch(() => "")).trim().split("\n");
  await Deno.remove(log).catch(() => {});
  return { code: out.code, out: text.decode(out.stdout) + text.decode(out.stderr), calls };
}

Deno.test("kafka node script: under bash, formats once with the admin's SCRAM credentials and the properties decoded as the image decodes them", async () => {
  const dir = await Deno.makeTempDir({ prefix: "txpipe-kafka-node-" });
  try {
    const env = {
      CLUSTER_ID: "cid",
      TXPIPE_KAFKA_ADMIN_PASSWORD: "adminpw",
      KAFKA_NODE_ID: "4",
      KAFKA_PROCESS_ROLES: "broker",
      KAFKA_LISTENER_NAME_EXTERNAL_SCRAM___SHA___512_SASL_JAAS_CONFIG:
        "org.apache.kafka.common.security.scram.ScramLoginModule required;",
      KAFKA_TRANSACTION_STATE_LOG_MIN_ISR: "2",
      KAFKA_SUPER_USERS: "User:admin",
      KAFKA_A__B: "underscore",
      KAFKA_OPTS: "-javaagent:/x.jar",
      KAFKA_HEAP_OPTS: "-Xmx1g",
    };
    const first = await runNodeScript(dir, env);
    assert.equal(first.code, 0, first.out);
    assert.deepEqual(first.calls, [
      `kafka-storage.sh KAFKA_OPTS=[] format --cluster-id cid --config ${dir}/client/format.properties ` +
      "--add-scram SCRAM-SHA-512=[name=admin,password=adminpw]",
      "a_b=underscore",
      "listener.name.external.scram-sha-512.sasl.jaas.config=" +
      "org.apache.kafka.common.security.scram.ScramLoginModule required;",
      "node.id=4",
      "process.roles=broker",
      "super.users=User:admin",
      "transaction.state.log.min.isr=2",
      "run",
    ]);
    assert.equal(await Deno.readTextFile(`${dir}/data/.txpipe-secured`), "SCRAM-SHA-512\n");
    assert.equal((await Deno.stat(`${dir}/client/admin-scram.properties`)).mode! & 0o777, 0o600);
    assert.equal(
      await Deno.readTextFile(`${dir}/client/admin-plain.properties`),
      "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n" +
        "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required " +
        'username="admin" password="adminpw";\n',
    );
    assert.match(
      await Deno.readTextFile(`${dir}/client/admin-scram.properties`),
      /^sasl\.jaas\.config=org\.apache\.kafka\.common\.security\.scram\.ScramLoginModule required username="admin" password="adminpw";$/m,
    );
    await assert.rejects(Deno.stat(`${dir}/client/format.properties`), "removed after formatting");
    assert.ok(!first.out.includes("adminpw"), first.out);

    // A restart: formatted already, so straight to the image's start script.
    const second = await runNodeScript(dir, env);
    assert.equal(second.code, 0, second.out);
    assert.deepEqual(second.calls, ["run"]);

    // Storage formatted before the stack was secured: refused, with what to do.
    await Deno.remove(`${dir}/data/.txpipe-secured`);
    const old = await runNodeScript(dir, env);
    assert.equal(old.code, 1);
    assert.match(
      old.out,
      /formatted before the stack required authentication.*delete this node's data volume/,
    );
    assert.deepEqual(old.calls, [""]);

    const none = await runNodeScript(dir, { ...env, TXPIPE_KAFKA_ADMIN_PASSWORD: "" });
    assert.notEqual(none.code, 0);
    assert.match(none.out, /TXPIPE_KAFKA_ADMIN_PASSWORD: the password of admin is not set/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Runs the Elasticsearch setup script with a stand-in curl that records each request. */
async function runElasticSetup(
  failOn?: string,
): Promise<{ code: number; out: string; requests: string[] }> {
  const dir = await Deno.makeTempDir({ prefix: "txpipe-es-setup-" });
  try {
    const log = `${dir}/requests.log`;
    await Deno.writeTextFile(
      `${dir}/curl`,
      `#!/usr/bin/env bash\nargs=("$@"); method=; url=; config=\n` +
        `for ((i = 0; i < \${#args[@]}; i++)); do case "\${args[i]}" in\n` +
        `  -X) method="\${args[i+1]}";; --config) config="\${args[i+1]}";; http*) url="\${args[i]}";;\n` +
        `esac; done\n` +
        `body="$(cat)"\n` +
        `echo "$method $url $(stat -c %a "$config") $(cat "$config") body=$body args=$*" >> ${log}\n` +
        (failOn ? `[[ "$url" == *"${failOn}"* ]] && { echo '{"error":"x"}'; exit 22; }\n` : "") +
        `echo '{"acknowledged":true}'\n`,
      { mode: 0o755 },
    );
    const script = renderElasticSetupScript({ url: "http://es:9200", curl: `${dir}/curl` });
    const out = await new Deno.Command("bash", {
      args: ["-c", script],
      env: {
        PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
        ELASTIC_PASSWORD: "elasticpw",
        KIBANA_SYSTEM_PASSWORD: "kibanapw",
        LOGSTASH_PASSWORD: "logstashpw",
      },
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder();
    const requests = (await Deno.readTextFile(log).catch(() => "")).trim().split("\n");
    return { code: out.code, out: text.decode(out.stdout) + text.decode(out.stderr), requests };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("elastic setup script: under bash, sets kibana_system's password, then the Logstash role and user, as elastic", async () => {
  const { code, out, requests } = await runElasticSetup();
  assert.equal(code, 0, out);
  const auth = '600 user = "elastic:elasticpw"';
  const role = JSON.stringify(logstashRole());
  assert.deepEqual(requests.map((r) => r.replace(/ args=.*$/, "")), [
    `GET http://es:9200/_cluster/health?wait_for_status=yellow&timeout=5s ${auth} body=`,
    `POST http://es:9200/_security/user/kibana_system/_password ${auth} body={"password":"kibanapw"}`,
    `PUT http://es:9200/_security/role/txpipe_logstash_writer ${auth} body=${role}`,
    `PUT http://es:9200/_security/user/txpipe_logstash ${auth} ` +
    'body={"password":"logstashpw","roles":["txpipe_logstash_writer"],"full_name":"txpipe Logstash"}',
  ]);
  for (const r of requests) {
    assert.doesNotMatch(r.replace(/^.* args=/, ""), /pw/, "no password on curl's command line");
    assert.match(r, / args=.*--fail-with-body/);
  }
  assert.ok(!out.includes('pw"'), out);
});

Deno.test("elastic setup script: a failed request fails the setup", async () => {
  const { code, requests } = await runElasticSetup("/_security/role/");
  assert.notEqual(code, 0);
  assert.equal(requests.length, 3, "stops at the failed request");
});
