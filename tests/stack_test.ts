/**
 * The Docker stack at synth level: `Testing.synth` of the one TerraformStack,
 * checked against the topology spec with cdktf's `Testing` matchers and by
 * reading the synthesized JSON. No Docker engine is needed.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { Testing } from "cdktf";
import { container, image, network, volume } from "@cdktf/provider-docker";
import { password } from "@cdktf/provider-random";
import { parse as parseYaml } from "yaml";
import { dockerPriorGap, TxpipeStack } from "../stacks/main.ts";
import { priorGap } from "../jobs/start.ts";
import { PROMETHEUS_DATASOURCE_UID } from "../stacks/render/grafana.ts";
import { renderAlertRules } from "../stacks/render/prometheus.ts";
import { kafkaEnvName, nodeProperties } from "../stacks/kafka_cluster.ts";
import {
  repoFile,
  repoFileHash,
  repoFilesIn,
  repoPathOf,
  repoRoot,
  repoRootAbsolute,
  STACK_NAME,
} from "../stacks/repo_files.ts";
import { ELASTIC_VERSION } from "../stacks/images.ts";
import { denoRunArgs, KAFKA_VERSION, SERVICE_PORTS, topology } from "../stacks/topology.ts";
import { terraformLiteral } from "../stacks/container_defaults.ts";
import { kafkaSecurityProperties } from "../stacks/kafka_security.ts";
import { securityProperties as localSecurityProperties } from "../stacks/local/cluster.ts";
import { renderNodeScript } from "../stacks/render/kafka_node.ts";
import { aclArgs } from "../stacks/render/topics.ts";
import {
  LOGSTASH_INDEX_PATTERNS,
  LOGSTASH_ROLE,
  LOGSTASH_USER,
  logstashRole,
  renderElasticSetupScript,
} from "../stacks/render/elastic_setup.ts";
import { jobAcls, KAFKA_USERS, type PrincipalName, PRINCIPALS } from "../stacks/security.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

const topo = topology("cluster");
const stack = new TxpipeStack(Testing.app(), STACK_NAME);
const synthesized = Testing.synth(stack);
const tf: Json = JSON.parse(synthesized);
const containers: Json[] = Object.values(tf.resource.docker_container);

function containerNamed(name: string): Json {
  const found = containers.find((c) => c.name === name);
  assert.ok(found, `expected a container named ${name}; have ${containers.map((c) => c.name)}`);
  return found;
}

function envOf(c: Json): Map<string, string> {
  return new Map((c.env ?? []).map((line: string) => {
    const i = line.indexOf("=");
    return [line.slice(0, i), line.slice(i + 1)] as [string, string];
  }));
}

/** Reverses `kafkaEnvName` exactly as the apache/kafka image's KafkaDockerWrapper does. */
function propertyOfKafkaEnv(name: string): string {
  return name.replace("KAFKA_", "").toLowerCase()
    .replaceAll("_", ".").replaceAll("...", "-").replaceAll("..", "_");
}

function kafkaProperties(c: Json): Map<string, string> {
  const props = new Map<string, string>();
  for (const [k, v] of envOf(c)) {
    if (k.startsWith("KAFKA_") && !["KAFKA_OPTS", "KAFKA_HEAP_OPTS"].includes(k)) {
      props.set(propertyOfKafkaEnv(k), v);
    }
  }
  return props;
}

const VOTERS = "1@kafka-controller-1:9193,2@kafka-controller-2:9194,3@kafka-controller-3:9195";

/** The admin's generated Kafka password, as the stack interpolates it. */
const ADMIN_PASSWORD = "${random_password.kafka_password_admin.result}";

Deno.test("stack: six Kafka containers from apache/kafka:4.4.0 — 3 controllers (ids 1-3) and 3 brokers (ids 4-6)", () => {
  assert.ok(
    Testing.toHaveResourceWithProperties(synthesized, image.Image.tfResourceType, {
      name: "apache/kafka:4.4.0",
    }),
  );
  assert.equal(KAFKA_VERSION, "4.4.0");
  const kafka = containers.filter((c) => envOf(c).has("KAFKA_NODE_ID"));
  assert.deepEqual(
    kafka.map((c) => [c.name, envOf(c).get("KAFKA_NODE_ID"), envOf(c).get("KAFKA_PROCESS_ROLES")])
      .sort(),
    [
      ["kafka-broker-1", "4", "broker"],
      ["kafka-broker-2", "5", "broker"],
      ["kafka-broker-3", "6", "broker"],
      ["kafka-controller-1", "1", "controller"],
      ["kafka-controller-2", "2", "controller"],
      ["kafka-controller-3", "3", "controller"],
    ],
  );
  for (const c of kafka) {
    assert.equal(c.hostname, c.name, `${c.name}: hostname equals the container name`);
    assert.equal(c.image, "${docker_image.kafka_kafka-image_2ADB6F68.image_id}");
    assert.equal(envOf(c).get("CLUSTER_ID"), "dHhwaXBlLWNsdXN0ZXItMQ");
    assert.equal(envOf(c).get("KAFKA_CONTROLLER_QUORUM_VOTERS"), VOTERS, c.name);
    assert.equal(envOf(c).get("KAFKA_CONTROLLER_LISTENER_NAMES"), "CONTROLLER");
    assert.equal(envOf(c).get("KAFKA_LOG_DIRS"), "/var/lib/kafka/data");
  }
});

Deno.test("stack: controllers listen on CONTROLLER://:<controllerPort> only and publish no host port", () => {
  for (
    const [name, port, heap] of [
      ["kafka-controller-1", 9193, "256m"],
      ["kafka-controller-2", 9194, "256m"],
      ["kafka-controller-3", 9195, "256m"],
    ] as const
  ) {
    const c = containerNamed(name);
    assert.equal(envOf(c).get("KAFKA_LISTENERS"), `CONTROLLER://:${port}`);
    assert.equal(envOf(c).has("KAFKA_ADVERTISED_LISTENERS"), false, "the image rejects it");
    assert.equal(envOf(c).get("KAFKA_HEAP_OPTS"), `-Xms${heap} -Xmx${heap}`);
    assert.deepEqual(c.ports, []);
  }
});

Deno.test("stack: brokers have INTERNAL <name>:19092 and EXTERNAL 127.0.0.1:<clientPort>, published on 127.0.0.1", () => {
  for (
    const [name, port] of [
      ["kafka-broker-1", 9092],
      ["kafka-broker-2", 9093],
      ["kafka-broker-3", 9094],
    ] as const
  ) {
    assert.ok(
      Testing.toHaveResourceWithProperties(synthesized, container.Container.tfResourceType, {
        name,
        hostname: name,
        ports: [{ internal: port, external: port, ip: "127.0.0.1", protocol: "tcp" }],
        wait: true,
        restart: "unless-stopped",
      }),
      `${name} publishes ${port} on 127.0.0.1 and is waited for until healthy`,
    );
    const env = envOf(containerNamed(name));
    assert.equal(env.get("KAFKA_LISTENERS"), `INTERNAL://:19092,EXTERNAL://:${port}`);
    assert.equal(
      env.get("KAFKA_ADVERTISED_LISTENERS"),
      `INTERNAL://${name}:19092,EXTERNAL://127.0.0.1:${port}`,
    );
    assert.equal(env.get("KAFKA_INTER_BROKER_LISTENER_NAME"), "INTERNAL");
    assert.equal(
      env.get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"),
      "CONTROLLER:SASL_PLAINTEXT,INTERNAL:SASL_PLAINTEXT,EXTERNAL:SASL_PLAINTEXT",
    );
  }
});

Deno.test("stack: Kafka env variables decode (as the image decodes them) to the spec's server properties", () => {
  for (const node of topo.nodes) {
    const c = containerNamed(node.name);
    assert.deepEqual(
      Object.fromEntries(kafkaProperties(c)),
      nodeProperties(topo, node, ADMIN_PASSWORD),
      `${node.name}: env round-trips`,
    );
  }
  const broker = kafkaProperties(containerNamed("kafka-broker-2"));
  assert.equal(broker.get("offsets.topic.replication.factor"), "3");
  assert.equal(broker.get("transaction.state.log.min.isr"), "2");
  assert.equal(broker.get("auto.create.topics.enable"), "false");
  assert.equal(propertyOfKafkaEnv(kafkaEnvName("a_b-c.d")), "a_b-c.d");
});

Deno.test("stack: every Kafka node has a persistent volume, a healthcheck and the JMX agent on its metrics port", () => {
  const fetch = containerNamed("txpipe-jmx-agent-fetch");
  assert.equal(fetch.attach, true);
  assert.equal(fetch.must_run, false);
  assert.ok(fetch.command.includes("-Dartifact=io.prometheus.jmx:jmx_prometheus_javaagent:1.0.1"));
  assert.ok(fetch.command.includes("--strict-checksums"));
  assert.deepEqual(fetch.lifecycle.postcondition[0].condition, "${self.exit_code == 0}");
  const agentVolume = fetch.volumes[0].volume_name;

  for (const node of topo.nodes) {
    const c = containerNamed(node.name);
    assert.equal(
      envOf(c).get("KAFKA_OPTS"),
      `-javaagent:/opt/jmx-exporter/jmx_prometheus_javaagent-1.0.1.jar=${node.metricsPort}` +
        ":/etc/kafka/txpipe/kafka_jmx_exporter.yml",
    );
    assert.deepEqual(c.volumes[0].container_path, "/var/lib/kafka/data");
    assert.match(c.volumes[0].volume_name, /^\$\{docker_volume\.kafka_kafka-.*-data_.*\.name\}$/);
    assert.deepEqual(c.volumes[1], {
      container_path: "/opt/jmx-exporter",
      read_only: true,
      volume_name: agentVolume,
    });
    assert.ok(c.depends_on.includes("docker_container.kafka_jmx-agent-fetch_D53ED1A6"));
    assert.equal(c.healthcheck.test[0], "CMD-SHELL");
    assert.match(c.healthcheck.test[1], /^KAFKA_OPTS= /, "tools must not start a second agent");
    assert.equal(c.wait, true);
  }
  assert.ok(
    Testing.toHaveResourceWithProperties(synthesized, volume.Volume.tfResourceType, {
      name: "txpipe-kafka-broker-1-data",
    }),
  );
  const brokers = ["kafka-broker-1", "kafka-broker-2", "kafka-broker-3"];
  for (const b of brokers) {
    const deps = containerNamed(b).depends_on as string[];
    assert.equal(deps.filter((d) => d.includes("kafka-controller-")).length, 3, b);
  }
});

Deno.test("stack: every topic of the spec is created with its partitions, replication, retention and min.insync.replicas once brokers are healthy", () => {
  const c = containerNamed("txpipe-create-topics");
  assert.equal(c.image, "${docker_image.kafka_kafka-image_2ADB6F68.image_id}");
  assert.deepEqual(c.entrypoint, ["/bin/bash", "-c"]);
  assert.equal(c.attach, true);
  assert.equal(c.must_run, false);
  assert.equal(c.lifecycle.postcondition[0].condition, "${self.exit_code == 0}");
  assert.deepEqual(c.depends_on.slice().sort(), [
    "docker_container.kafka_kafka-broker-1_D59BA897",
    "docker_container.kafka_kafka-broker-2_66429077",
    "docker_container.kafka_kafka-broker-3_BED09B77",
  ]);
  const script: string = c.command[0];
  assert.match(
    script,
    /^BOOTSTRAP=kafka-broker-1:19092,kafka-broker-2:19092,kafka-broker-3:19092$/m,
  );
  const week = "604800000";
  for (
    const [name, partitions] of [
      ["financial_transactions", 5],
      ["transaction_aggregates", 3],
      ["transaction_anomalies", 3],
      ["transaction_dead_letters", 3],
    ] as const
  ) {
    assert.ok(
      script.includes(
        `topics --create --if-not-exists --topic ${name} --partitions ${partitions} ` +
          `--replication-factor 3 --config retention.ms=${week} --config min.insync.replicas=2\n`,
      ),
      `creates ${name}`,
    );
    assert.ok(
      script.includes(
        `configs --alter --entity-type topics --entity-name ${name} ` +
          `--add-config retention.ms=${week},min.insync.replicas=2\n`,
      ),
      `sets the configs of an existing ${name}`,
    );
  }
  // ... and every other topic of the spec (internal changelog/repartition topics), as declared
  for (const t of topo.topics) {
    const configs = Object.entries(t.config).map(([k, v]) => `${k}=${v}`);
    assert.ok(
      script.includes(
        `topics --create --if-not-exists --topic ${t.name} --partitions ${t.partitions} ` +
          `--replication-factor ${t.replicationFactor} ` +
          configs.map((c) => `--config ${c}`).join(" ") + "\n",
      ),
      `creates ${t.name} with ${configs.join(", ")}`,
    );
    assert.equal(t.config["retention.ms"], week, `${t.name} keeps 7 days`);
    assert.equal(t.config["min.insync.replicas"], "2", `${t.name} needs 2 in-sync replicas`);
    assert.ok(script.includes(`--add-config ${configs.join(",")}\n`), `${t.name} configs set`);
  }
  const created = script.match(/^topics --create /gm) ?? [];
  assert.equal(created.length, topo.topics.length, "one create per topic of the spec, no more");
});

Deno.test("stack: every container joins the one txpipe network", () => {
  assert.ok(
    Testing.toHaveResourceWithProperties(synthesized, network.Network.tfResourceType, {
      name: "txpipe",
    }),
  );
  const ref = "${docker_network.network_C8AC2FB3.name}";
  const names = containers.map((c) => c.name).sort();
  assert.deepEqual(names, [
    "kafka-broker-1",
    "kafka-broker-2",
    "kafka-broker-3",
    "kafka-controller-1",
    "kafka-controller-2",
    "kafka-controller-3",
    "txpipe-aggregate-${count.index}",
    "txpipe-create-topics",
    "txpipe-detect-${count.index}",
    "txpipe-elasticsearch",
    "txpipe-elasticsearch-setup",
    "txpipe-evaluate-${count.index}",
    "txpipe-grafana",
    "txpipe-jmx-agent-fetch",
    "txpipe-kibana",
    "txpipe-logstash",
    "txpipe-produce-${count.index}",
    "txpipe-prometheus",
  ]);
  for (const c of containers) {
    assert.equal(c.networks_advanced.length, 1, c.name);
    assert.equal(c.networks_advanced[0].name, ref, `${c.name} is on the network`);
  }
});

Deno.test("stack: no host port is published twice, all on 127.0.0.1, none on a replicated container", () => {
  const published: string[] = [];
  for (const c of containers) {
    for (const p of c.ports ?? []) {
      assert.equal(p.ip, "127.0.0.1", `${c.name} publishes ${p.external} on loopback only`);
      published.push(`${p.external}/${p.protocol}`);
    }
    if (c.count !== undefined) assert.equal((c.ports ?? []).length, 0, c.name);
  }
  assert.deepEqual(published.slice().sort(), [
    "12201/udp",
    "3000/tcp",
    "5601/tcp",
    "9090/tcp",
    "9092/tcp",
    "9093/tcp",
    "9094/tcp",
    "9200/tcp",
  ]);
  const numbers = published.map((p) => p.split("/")[0]);
  assert.equal(new Set(numbers).size, numbers.length, `duplicates among ${numbers}`);
});

Deno.test("stack: every uploaded or mounted repository file exists, with a hash that tracks its content", () => {
  let sources = 0;
  for (const c of containers) {
    for (const u of c.upload ?? []) {
      if (u.source === undefined) continue;
      const path = repoPathOf(u.source);
      assert.ok(path, `${c.name}: ${u.source} is a repository path`);
      assert.ok(existsSync(`${repoRoot()}/${path}`), `${c.name} uploads ${path}, which exists`);
      assert.equal(u.source_hash, repoFileHash(path));
      sources++;
    }
    for (const m of c.mounts ?? []) {
      assert.equal(m.type, "bind");
      assert.equal(m.source, repoRootAbsolute(), `${c.name} mounts the repository root`);
      assert.equal(m.read_only, true);
      const script = c.command[c.command.length - 1];
      for (const needed of ["deno.json", "deno.lock", "stacks/topology.ts", script]) {
        assert.ok(existsSync(`${repoRoot()}/${needed}`), `${needed} is in the mounted repository`);
      }
    }
  }
  // 6 Kafka rules files, Logstash pipeline + pipelines.yml, and every dashboard
  assert.equal(sources, 6 + 2 + repoFilesIn("dashboards", ".json").length);
  assert.equal(repoFile("a/b.txt"), "${path.module}/../../../a/b.txt");
  assert.ok(existsSync(`${repoRoot()}/stacks/config/kafka_jmx_exporter.yml`));
});

Deno.test("stack: every image is pinned to an explicit version tag", () => {
  const names = (Object.values(tf.resource.docker_image) as Json[]).map((i) => i.name).sort();
  assert.deepEqual(names, [
    "apache/kafka:4.4.0",
    "denoland/deno:2.9.6",
    `docker.elastic.co/elasticsearch/elasticsearch:${ELASTIC_VERSION}`,
    `docker.elastic.co/kibana/kibana:${ELASTIC_VERSION}`,
    `docker.elastic.co/logstash/logstash:${ELASTIC_VERSION}`,
    "grafana/grafana:12.4.0",
    "maven:3.9.9-eclipse-temurin-21",
    "prom/prometheus:v3.5.0",
  ]);
  assert.match(ELASTIC_VERSION, /^8\.\d+\.\d+$/);
  for (const c of containers) assert.match(c.image, /^\$\{docker_image\.[^.]+\.image_id\}$/);
});

Deno.test("stack: Prometheus runs the rendered scrape config (container names, job aliases) and alert rules", () => {
  const c = containerNamed("txpipe-prometheus");
  const files = new Map((c.upload as Json[]).map((u) => [u.file, u.content]));
  const config = parseYaml(files.get("/etc/prometheus/prometheus.yml"));
  assert.deepEqual(config.rule_files, ["txpipe_alerts.yml"]);
  const kafka = config.scrape_configs.find((s: Json) => s.job_name === "kafka");
  assert.deepEqual(
    kafka.static_configs.map((s: Json) => s.targets[0]),
    [
      "kafka-controller-1:7071",
      "kafka-controller-2:7072",
      "kafka-controller-3:7073",
      "kafka-broker-1:7074",
      "kafka-broker-2:7075",
      "kafka-broker-3:7076",
    ],
  );
  const jobPorts = [["produce", 9464], ["aggregate", 9465], ["detect", 9466], ["evaluate", 9467]];
  for (const [job, port] of jobPorts) {
    const scrape = config.scrape_configs.find((s: Json) => s.job_name === job);
    assert.deepEqual(scrape.dns_sd_configs, [{
      names: [`txpipe-${job}`],
      type: "A",
      port,
      refresh_interval: "15s",
    }]);
  }
  assert.equal(files.get("/etc/prometheus/txpipe_alerts.yml"), renderAlertRules(topo));
  assert.ok(c.command.includes("--config.file=/etc/prometheus/prometheus.yml"));
  assert.deepEqual(c.ports, [{ internal: 9090, external: 9090, ip: "127.0.0.1", protocol: "tcp" }]);
});

Deno.test("stack: Grafana provisions the Prometheus datasource and exactly the dashboards in dashboards/, each using its uid", () => {
  const c = containerNamed("txpipe-grafana");
  const uploads = c.upload as Json[];
  const content = (file: string) => uploads.find((u) => u.file === file)?.content;

  const datasources = parseYaml(content("/etc/grafana/provisioning/datasources/txpipe.yml"));
  assert.deepEqual(datasources.datasources.map((d: Json) => [d.uid, d.type, d.url]), [
    [PROMETHEUS_DATASOURCE_UID, "prometheus", "http://txpipe-prometheus:9090"],
  ]);
  assert.equal(PROMETHEUS_DATASOURCE_UID, "txpipe-prometheus");

  const provider = parseYaml(content("/etc/grafana/provisioning/dashboards/txpipe.yml"));
  const folder = provider.providers[0].options.path;
  assert.equal(folder, "/etc/grafana/dashboards/txpipe");

  const inRepo = repoFilesIn("dashboards", ".json");
  assert.ok(inRepo.length >= 1, "at least one dashboard is committed");
  assert.ok(inRepo.includes("dashboards/kafka.json"));
  const uploaded = uploads.filter((u) => u.file.startsWith(`${folder}/`));
  assert.deepEqual(uploaded.map((u) => repoPathOf(u.source)).sort(), inRepo);

  for (const path of inRepo) {
    const dashboard = JSON.parse(readFileSync(`${repoRoot()}/${path}`, "utf8"));
    assert.equal(typeof dashboard.uid, "string", `${path} has a uid`);
    assert.ok(
      dashboard.schemaVersion >= 39,
      `${path}: current schema, got ${dashboard.schemaVersion}`,
    );
    const refs = datasourceRefs(dashboard);
    assert.ok(refs.length > 0, `${path} refers to a datasource`);
    for (const ref of refs) {
      assert.deepEqual(ref, { type: "prometheus", uid: PROMETHEUS_DATASOURCE_UID }, path);
    }
    for (const panel of panelsOf(dashboard)) {
      if (panel.type === "row" || panel.type === "text") continue;
      assert.ok(panel.targets?.length > 0, `${path}: panel "${panel.title}" has queries`);
      for (const t of panel.targets) assert.ok(t.expr, `${path}: "${panel.title}" has PromQL`);
    }
  }
});

Deno.test("stack: the Kafka dashboard charts the broker metrics issue 5 names", () => {
  const dashboard = JSON.parse(readFileSync(`${repoRoot()}/dashboards/kafka.json`, "utf8"));
  const exprs: string[] = panelsOf(dashboard).flatMap((p: Json) =>
    (p.targets ?? []).map((t: Json) => t.expr)
  );
  // [metric, a matcher the query must use]; tests/observability_test.ts proves each returns data
  for (
    const [metric, matcher] of [
      ["kafka_server_brokertopicmetrics_messagesin_total{", 'topic=""'], // messages in per broker
      ["kafka_server_brokertopicmetrics_bytesin_total{", 'topic=""'], // bytes in per broker
      ["kafka_server_replicamanager_underreplicatedpartitions", ""],
      ["kafka_controller_kafkacontroller_activecontrollercount", ""],
      ["kafka_network_requestmetrics_totaltimems{", 'quantile="0.99"'], // request latency p99
      ["jvm_memory_used_bytes{", 'area="heap"'], // JVM heap per node
    ]
  ) {
    assert.ok(
      exprs.some((e) => e.includes(metric) && e.includes(matcher)),
      `a panel queries ${metric}${matcher}`,
    );
  }
});

Deno.test("stack: Grafana's admin password is the variable or a generated random one, never a literal", () => {
  const variable = tf.variable.grafana_admin_password;
  assert.equal(variable.sensitive, true);
  assert.equal(variable.default, "", "empty means: generate one");
  assert.ok(
    Testing.toHaveResourceWithProperties(synthesized, password.Password.tfResourceType, {
      length: 24,
      special: false,
    }),
  );
  const expression =
    "${coalesce(var.grafana_admin_password, random_password.grafana_admin_password_generated.result)}";
  const c = containerNamed("txpipe-grafana");
  const secret = (c.upload as Json[]).find((u) => u.file === "/run/secrets/grafana_admin_password");
  assert.equal(secret.content, expression);
  assert.ok(
    envOf(c).get("GF_SECURITY_ADMIN_PASSWORD__FILE") === "/run/secrets/grafana_admin_password",
  );
  assert.equal(envOf(c).has("GF_SECURITY_ADMIN_PASSWORD"), false);
  assert.deepEqual(tf.output.grafana_admin_password, {
    description:
      "Grafana's admin password (user admin): terraform output -raw grafana_admin_password",
    sensitive: true,
    value: expression,
  });
});

Deno.test("stack: Logstash runs logstash/pipeline/txpipe.conf as its only pipeline, fed by the containers' gelf driver", () => {
  const c = containerNamed("txpipe-logstash");
  const uploads = new Map((c.upload as Json[]).map((u) => [u.file, repoPathOf(u.source)]));
  assert.equal(
    uploads.get("/usr/share/logstash/pipeline/txpipe.conf"),
    "logstash/pipeline/txpipe.conf",
  );
  assert.equal(
    uploads.get("/usr/share/logstash/config/pipelines.yml"),
    "logstash/config/pipelines.yml",
  );
  const pipelines = parseYaml(readFileSync(`${repoRoot()}/logstash/config/pipelines.yml`, "utf8"));
  assert.deepEqual(pipelines, [{
    "pipeline.id": "txpipe",
    "path.config": "/usr/share/logstash/pipeline/txpipe.conf",
  }]);

  const env = envOf(c);
  assert.equal(env.get("TXPIPE_GELF_PORT"), String(SERVICE_PORTS.logstashGelf));
  assert.equal(env.get("TXPIPE_ELASTICSEARCH_URL"), "http://txpipe-elasticsearch:9200");
  assert.deepEqual(c.ports, [
    { internal: 12201, external: 12201, ip: "127.0.0.1", protocol: "udp" },
  ]);

  const conf = readFileSync(`${repoRoot()}/logstash/pipeline/txpipe.conf`, "utf8");
  assert.ok(conf.includes('port => "${TXPIPE_GELF_PORT}"'));
  assert.ok(conf.includes('hosts => ["${TXPIPE_ELASTICSEARCH_URL}"]'));
  for (
    const [name, tag] of [["kafka-broker-1", "kafka"], [
      "txpipe-detect-${count.index}",
      "txpipe-job",
    ]]
  ) {
    const shipped = containerNamed(name);
    assert.equal(shipped.log_driver, "gelf");
    assert.deepEqual(shipped.log_opts, { "gelf-address": "udp://127.0.0.1:12201", tag });
    assert.ok(
      conf.includes(`if [@metadata][source] == "${tag}"`) ||
        conf.includes(`else if [@metadata][source] == "${tag}"`),
      `the pipeline handles tag ${tag}`,
    );
  }
});

Deno.test("stack: Elasticsearch is single-node on 127.0.0.1:9200 and Kibana on 127.0.0.1:5601, same Elastic version", () => {
  const es = envOf(containerNamed("txpipe-elasticsearch"));
  assert.equal(es.get("discovery.type"), "single-node");
  assert.equal(es.get("xpack.security.enabled"), "true");
  assert.deepEqual(containerNamed("txpipe-kibana").ports, [
    { internal: 5601, external: 5601, ip: "127.0.0.1", protocol: "tcp" },
  ]);
  assert.equal(
    envOf(containerNamed("txpipe-kibana")).get("ELASTICSEARCH_HOSTS"),
    "http://txpipe-elasticsearch:9200",
  );
});

/** The stream jobs' V8 flags (memory bounds), written out as a user reads them. */
const STREAM_V8 = "--v8-flags=--heap-growing-percent=50,--max-semi-space-size=4";

Deno.test("stack: each job's deno task runs its script with the V8 flags it runs with in Docker", async () => {
  const tasks = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url))).tasks;
  for (const job of topology().jobs) {
    assert.equal(tasks[job.name], ["deno", ...denoRunArgs(job)].join(" "), job.name);
  }
  assert.equal(tasks.aggregate, `deno run -A ${STREAM_V8} jobs/aggregate.ts`);
  assert.equal(tasks.detect, `deno run -A ${STREAM_V8} jobs/detect.ts`);
});

Deno.test("stack: the four jobs run the spec's scripts in the Deno image, replicas from variables defaulting to the spec", () => {
  const bootstrap = "kafka-broker-1:19092,kafka-broker-2:19092,kafka-broker-3:19092";
  for (
    const [job, script, port, replicas, v8] of [
      ["produce", "jobs/produce.ts", 9464, 1, []],
      ["aggregate", "jobs/aggregate.ts", 9465, 2, [STREAM_V8]],
      ["detect", "jobs/detect.ts", 9466, 2, [STREAM_V8]],
      ["evaluate", "jobs/evaluate.ts", 9467, 1, []],
    ] as const
  ) {
    assert.equal(tf.variable[`${job}_replicas`].default, replicas);
    assert.equal(tf.variable[`${job}_replicas`].type, "number");
    const c = containerNamed(`txpipe-${job}-\${count.index}`);
    assert.equal(c.count, `\${var.${job}_replicas}`);
    assert.equal(c.image, "${docker_image.jobs_deno-image_CA1C892C.image_id}");
    assert.deepEqual(c.command, [
      "run",
      "--allow-all",
      "--frozen",
      "--node-modules-dir=none",
      ...v8,
      script,
    ]);
    assert.equal(c.working_dir, "/app");
    const env = envOf(c);
    assert.equal(env.get("TXPIPE_BROKERS"), bootstrap);
    assert.equal(env.get("TXPIPE_METRICS_PORT"), String(port));
    assert.equal(env.get("TXPIPE_METRICS_HOST"), "0.0.0.0");
    assert.equal(env.get("TXPIPE_LOG_FORMAT"), "ecs");
    assert.equal(env.get("TXPIPE_INSTANCE_ID"), `${job}-\${count.index}`);
    assert.deepEqual(c.networks_advanced[0].aliases, [`txpipe-${job}`]);
    assert.deepEqual(c.depends_on.slice().sort(), [
      "docker_container.logging_logstash_23030C58",
      "docker_container.topics_create-topics_FC9C33DF",
    ]);
  }
  assert.equal(
    envOf(containerNamed("txpipe-produce-${count.index}")).get("TXPIPE_RATE"),
    "${var.produce_rate}",
  );
  // detect assumes the producer's pace: the Terraform expression, worked out here as
  // Terraform would, gives what `deno task start` gives detect for the same rate
  const prior = envOf(containerNamed("txpipe-detect-${count.index}")).get("TXPIPE_PRIOR_GAP");
  assert.equal(prior, dockerPriorGap());
  const evaluated = (rate: number, replicas: number) => {
    const js = prior!.slice(2, prior!.lastIndexOf("}"))
      .replaceAll("var.produce_rate", String(rate))
      .replaceAll("var.produce_replicas", String(replicas))
      .replaceAll("max(", "Math.max(")
      .replaceAll("floor(", "Math.floor(");
    return `${new Function(`return ${js}`)()}ms`;
  };
  for (const rate of [50, 200, 5_000]) assert.equal(evaluated(rate, 1), priorGap(rate)[1]);
  assert.equal(evaluated(200, 2), "50000ms", "two producers: each user pays twice as often");
  assert.equal(evaluated(0, 1), "43200000ms", "unthrottled: the default");
  // the evaluator is one-shot unless it follows; Prometheus scrapes it, so it must keep running
  assert.equal(
    envOf(containerNamed("txpipe-evaluate-${count.index}")).get("TXPIPE_FOLLOW"),
    "true",
  );
});

function panelsOf(dashboard: Json): Json[] {
  return (dashboard.panels ?? []).flatMap((p: Json) => [p, ...(p.panels ?? [])]);
}

/** Every `datasource` object anywhere in a dashboard (panels, targets, variables, annotations). */
function datasourceRefs(node: Json): Json[] {
  if (Array.isArray(node)) return node.flatMap(datasourceRefs);
  if (node === null || typeof node !== "object") return [];
  const found: Json[] = [];
  for (const [key, value] of Object.entries(node)) {
    if (key === "datasource") found.push(value);
    else found.push(...datasourceRefs(value));
  }
  return found;
}

// ---------------------------------------------------------------------------
// Security by default: SASL everywhere, least-privilege ACLs, generated secrets.

/** A generated password as the stack interpolates it. */
function generatedPassword(id: string): string {
  return `\${random_password.${id}.result}`;
}

const kafkaPassword = (p: PrincipalName) => generatedPassword(`kafka_password_${p}`);

Deno.test("stack: every Kafka listener is SASL (SCRAM-SHA-512 for INTERNAL and EXTERNAL, PLAIN for CONTROLLER), none PLAINTEXT", () => {
  for (const node of topo.nodes) {
    const props = kafkaProperties(containerNamed(node.name));
    const map = props.get("listener.security.protocol.map")!;
    for (const entry of map.split(",")) {
      assert.match(entry, /^[A-Z]+:SASL_PLAINTEXT$/, `${node.name}: ${entry}`);
    }
    assert.equal(props.get("sasl.mechanism.controller.protocol"), "PLAIN", node.name);
    assert.equal(props.get("listener.name.controller.sasl.enabled.mechanisms"), "PLAIN");
    assert.equal(
      props.get("listener.name.controller.plain.sasl.jaas.config"),
      "org.apache.kafka.common.security.plain.PlainLoginModule required " +
        `username="admin" password="${ADMIN_PASSWORD}" user_admin="${ADMIN_PASSWORD}";`,
      `${node.name}: the admin is the controllers' only PLAIN user`,
    );
    if (node.role === "controller") {
      assert.equal(props.get("listeners"), `CONTROLLER://:${node.controllerPort}`);
      assert.equal(props.has("sasl.mechanism.inter.broker.protocol"), false);
      assert.deepEqual(
        containerNamed(node.name).ports,
        [],
        "the CONTROLLER listener is not published",
      );
      continue;
    }
    assert.equal(props.get("listener.name.internal.sasl.enabled.mechanisms"), "SCRAM-SHA-512");
    assert.equal(props.get("listener.name.external.sasl.enabled.mechanisms"), "SCRAM-SHA-512");
    assert.equal(props.get("sasl.mechanism.inter.broker.protocol"), "SCRAM-SHA-512");
    assert.equal(props.get("inter.broker.listener.name"), "INTERNAL");
    assert.equal(
      props.get("listener.name.internal.scram-sha-512.sasl.jaas.config"),
      "org.apache.kafka.common.security.scram.ScramLoginModule required " +
        `username="admin" password="${ADMIN_PASSWORD}";`,
      "brokers replicate as the admin",
    );
    assert.equal(
      props.get("listener.name.external.scram-sha-512.sasl.jaas.config"),
      "org.apache.kafka.common.security.scram.ScramLoginModule required;",
      "the EXTERNAL listener's server side needs no credentials of its own",
    );
  }
});

Deno.test("stack: every Kafka node runs the StandardAuthorizer, denies what no ACL allows, and has the admin as its only super user", () => {
  for (const node of topo.nodes) {
    const props = kafkaProperties(containerNamed(node.name));
    assert.equal(
      props.get("authorizer.class.name"),
      "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
      node.name,
    );
    assert.equal(props.get("allow.everyone.if.no.acl.found"), "false", node.name);
    assert.equal(props.get("super.users"), "User:admin", node.name);
  }
});

Deno.test("stack: the Docker nodes' security settings are the local runner's, listener for listener", () => {
  for (const mode of ["cluster", "single"] as const) {
    for (const node of topology(mode).nodes) {
      assert.deepEqual(
        kafkaSecurityProperties(node, "pw", {
          clientListeners: ["CLIENT"],
          interBrokerListener: "CLIENT",
        }),
        localSecurityProperties(node, "pw"),
        `${mode}/${node.name}`,
      );
    }
  }
});

Deno.test("stack: each Kafka node formats its storage with the admin's SCRAM credentials, then runs the image's start script", () => {
  const script = terraformLiteral(renderNodeScript({ dataDir: "/var/lib/kafka/data" }));
  for (const node of topo.nodes) {
    const c = containerNamed(node.name);
    assert.deepEqual(c.entrypoint, ["/bin/bash", "-c"], node.name);
    assert.deepEqual(c.command, [script], node.name);
    assert.equal(envOf(c).get("TXPIPE_KAFKA_ADMIN_PASSWORD"), ADMIN_PASSWORD, node.name);
    // the admin's password and no other principal's
    const json = JSON.stringify(c);
    for (const p of PRINCIPALS.filter((p) => p !== "admin")) {
      assert.ok(!json.includes(kafkaPassword(p)), `${node.name} must not hold ${p}'s password`);
    }
    const check: string = c.healthcheck.test[1];
    assert.match(
      check,
      node.role === "controller"
        ? / --command-config \/tmp\/txpipe\/admin-plain\.properties /
        : / --command-config \/tmp\/txpipe\/admin-scram\.properties /,
      `${node.name}: the healthcheck authenticates as the admin`,
    );
  }
  assert.ok(
    script.includes(
      '--add-scram "SCRAM-SHA-512=[name=admin,password=$${TXPIPE_KAFKA_ADMIN_PASSWORD}]"',
    ),
    "Terraform passes the variable reference to bash literally",
  );
  assert.ok(script.trimEnd().endsWith("exec /etc/kafka/docker/run"));
  assert.equal(terraformLiteral("a ${b} %{c} $d"), "a $${b} %%{c} $d");
});

Deno.test("stack: one generated random_password per Kafka principal and per Elasticsearch user, no literal password anywhere", () => {
  const passwords = tf.resource.random_password as Record<string, Json>;
  const expected = [
    ...PRINCIPALS.map((p) => `kafka_password_${p}`),
    "elasticsearch_password_elastic",
    "elasticsearch_password_kibana_system",
    "elasticsearch_password_logstash",
  ];
  for (const id of expected) {
    assert.ok(passwords[id], `random_password.${id}`);
    assert.equal(passwords[id].length, 32, id);
    assert.equal(passwords[id].special, false, `${id}: letters and digits only`);
  }
  assert.deepEqual(
    Object.keys(passwords).sort(),
    [...expected, "grafana_admin_password_generated"].sort(),
  );
  // Every password-like setting of every container is a generated password.
  for (const c of containers) {
    for (const [name, value] of envOf(c)) {
      if (/PASSWORD$/.test(name)) {
        assert.match(value, /^\$\{random_password\.[a-z_]+\.result\}$/, `${c.name}: ${name}`);
      }
    }
    for (const m of JSON.stringify(c).matchAll(/password=\\"([^"\\]*)\\"/g)) {
      assert.match(m[1], /^\$\{random_password\.[a-z_]+\.result\}$/, `${c.name}: ${m[0]}`);
    }
  }
  for (
    const name of [
      "kafka_consume_password",
      "kafka_rules_password",
      "kafka_admin_password",
      "elasticsearch_password",
    ]
  ) {
    assert.equal(tf.output[name].sensitive, true, name);
  }
  assert.equal(tf.output.kafka_consume_password.value, kafkaPassword("consume"));
  assert.equal(tf.output.kafka_rules_password.value, kafkaPassword("rules"));
  assert.equal(tf.output.kafka_admin_password.value, ADMIN_PASSWORD);
  assert.equal(
    tf.output.elasticsearch_password.value,
    generatedPassword("elasticsearch_password_elastic"),
  );
});

Deno.test("stack: each job container has TXPIPE_KAFKA_USER and TXPIPE_KAFKA_PASSWORD of its own principal only", () => {
  for (const job of topo.jobs) {
    const c = containerNamed(`txpipe-${job.name}-\${count.index}`);
    const env = envOf(c);
    assert.equal(env.get("TXPIPE_KAFKA_USER"), KAFKA_USERS[job.name], job.name);
    assert.equal(env.get("TXPIPE_KAFKA_USER"), `txpipe-${job.name}`);
    assert.equal(env.get("TXPIPE_KAFKA_PASSWORD"), kafkaPassword(job.name), job.name);
    const json = JSON.stringify(c);
    for (const p of PRINCIPALS.filter((p) => p !== job.name)) {
      assert.ok(!json.includes(kafkaPassword(p)), `${job.name} must not hold ${p}'s password`);
    }
    assert.ok(!json.includes("random_password.elasticsearch_"), job.name);
  }
});

Deno.test("stack: the topic step connects as the admin, sets every principal's SCRAM credentials and adds every ACL of jobAcls()", () => {
  const c = containerNamed("txpipe-create-topics");
  const env = envOf(c);
  assert.equal(env.get("TXPIPE_KAFKA_ADMIN_PASSWORD"), ADMIN_PASSWORD);
  const script: string = c.command[0];
  assert.ok(!script.includes("random_password"), "no password in the script itself");
  assert.match(script, /^topics\(\) \{ .*--command-config "\$ADMIN_CONFIG" "\$@"; \}$/m);
  assert.match(
    script,
    /^acls\(\) \{ \/opt\/kafka\/bin\/kafka-acls\.sh --bootstrap-server "\$BOOTSTRAP" --command-config "\$ADMIN_CONFIG" "\$@"; \}$/m,
  );
  for (const p of PRINCIPALS.filter((p) => p !== "admin")) {
    const variable = `TXPIPE_KAFKA_PASSWORD_${p.toUpperCase()}`;
    assert.equal(env.get(variable), kafkaPassword(p), variable);
    assert.ok(script.includes(`\nscram_user ${KAFKA_USERS[p]} "$${variable}"\n`), p);
  }
  assert.ok(!script.includes("scram_user admin"), "the admin's credentials come from formatting");
  const rules = jobAcls();
  assert.ok(rules.length > 0);
  const added = script.split("\n").filter((l) => l.startsWith("acls --add "));
  assert.equal(added.length, rules.length, "one kafka-acls --add per rule");
  for (const r of rules) {
    const line = "acls " + aclArgs(r).map((a) => (a === "*" ? "'*'" : a)).join(" ");
    assert.ok(added.includes(line), `missing: ${line}`);
  }
  // Users and grants after the topics, before the final describe.
  assert.ok(script.indexOf("scram_user txpipe-") > script.lastIndexOf("topics --create"));
  assert.ok(
    script.lastIndexOf("acls --add") < script.indexOf("topics --describe --exclude-internal"),
  );
});

Deno.test("stack: Elasticsearch runs with xpack.security and a generated elastic password, still on 127.0.0.1 only", () => {
  const c = containerNamed("txpipe-elasticsearch");
  const env = envOf(c);
  assert.equal(env.get("xpack.security.enabled"), "true");
  assert.equal(env.get("ELASTIC_PASSWORD"), generatedPassword("elasticsearch_password_elastic"));
  assert.match(c.healthcheck.test[1], /curl -fsS -u "elastic:\$ELASTIC_PASSWORD" /);
  assert.deepEqual(c.ports, [{ internal: 9200, external: 9200, ip: "127.0.0.1", protocol: "tcp" }]);
});

Deno.test("stack: a one-shot setup container sets kibana_system's password and creates the least-privilege Logstash user", () => {
  const c = containerNamed("txpipe-elasticsearch-setup");
  assert.equal(
    c.image,
    containerNamed("txpipe-elasticsearch").image,
    "the Elasticsearch image's curl",
  );
  assert.deepEqual(c.entrypoint, ["/bin/bash", "-c"]);
  assert.equal(c.attach, true);
  assert.equal(c.must_run, false);
  assert.equal(c.lifecycle.postcondition[0].condition, "${self.exit_code == 0}");
  assert.deepEqual(c.depends_on, ["docker_container.logging_elasticsearch_6635A459"]);
  assert.deepEqual(c.ports ?? [], []);
  const script = renderElasticSetupScript({ url: "http://txpipe-elasticsearch:9200" });
  assert.deepEqual(c.command, [terraformLiteral(script)]);
  assert.ok(script.includes("es POST /_security/user/kibana_system/_password"));
  assert.ok(script.includes(`es PUT /_security/role/${LOGSTASH_ROLE}`));
  assert.ok(script.includes(`es PUT /_security/user/${LOGSTASH_USER}`));
  const env = envOf(c);
  assert.equal(env.get("ELASTIC_PASSWORD"), generatedPassword("elasticsearch_password_elastic"));
  assert.equal(
    env.get("KIBANA_SYSTEM_PASSWORD"),
    generatedPassword("elasticsearch_password_kibana_system"),
  );
  assert.equal(env.get("LOGSTASH_PASSWORD"), generatedPassword("elasticsearch_password_logstash"));
  // Least privilege: write documents into txpipe's data streams, nothing else.
  assert.deepEqual(logstashRole(), {
    cluster: ["monitor"],
    indices: [{
      names: ["logs-txpipe.*-*", "logs-kafka.*-*"],
      privileges: ["create_doc", "auto_configure"],
    }],
  });
  assert.deepEqual([...LOGSTASH_INDEX_PATTERNS], ["logs-txpipe.*-*", "logs-kafka.*-*"]);
});

Deno.test("stack: Kibana connects as kibana_system and Logstash as its own user, both after the setup", () => {
  const setup = "docker_container.logging_elasticsearch-setup_2D4C2EF9";
  const kibana = containerNamed("txpipe-kibana");
  assert.equal(envOf(kibana).get("ELASTICSEARCH_USERNAME"), "kibana_system");
  assert.equal(
    envOf(kibana).get("ELASTICSEARCH_PASSWORD"),
    generatedPassword("elasticsearch_password_kibana_system"),
  );
  assert.ok(kibana.depends_on.includes(setup), kibana.depends_on);
  const logstash = containerNamed("txpipe-logstash");
  assert.equal(envOf(logstash).get("TXPIPE_ELASTICSEARCH_USER"), LOGSTASH_USER);
  assert.equal(
    envOf(logstash).get("TXPIPE_ELASTICSEARCH_PASSWORD"),
    generatedPassword("elasticsearch_password_logstash"),
  );
  assert.ok(logstash.depends_on.includes(setup), logstash.depends_on);
  // Neither gets the elastic super user's password.
  for (const c of [kibana, logstash]) {
    assert.ok(!JSON.stringify(c).includes("elasticsearch_password_elastic"), c.name);
  }
  const conf = readFileSync(`${repoRoot()}/logstash/pipeline/txpipe.conf`, "utf8");
  const output = conf.slice(conf.indexOf("output {"));
  assert.ok(output.includes('user => "${TXPIPE_ELASTICSEARCH_USER}"'));
  assert.ok(output.includes('password => "${TXPIPE_ELASTICSEARCH_PASSWORD}"'));
});

Deno.test("stack: every ${ in the synthesized JSON is a Terraform reference; the scripts' shell variables reach the containers escaped", () => {
  const strings: string[] = [];
  const walk = (node: Json): void => {
    if (typeof node === "string") strings.push(node);
    else if (Array.isArray(node)) node.forEach(walk);
    else if (node && typeof node === "object") Object.values(node).forEach(walk);
  };
  walk(tf.resource);
  walk(tf.output);
  const reference =
    /^\$\{(random_password\.[a-z_]+\.result|docker_[a-z_]+\.[A-Za-z0-9_-]+\.[a-z_]+|var\.[a-z_]+|count\.index|self\.exit_code == 0|coalesce\(var\.[a-z_]+, random_password\.[a-z_]+\.result\)|path\.module)\}|^\$\{(abspath|filesha256|file)\("/;
  // and detect's prior gap, the one expression (dockerPriorGap, evaluated in the jobs test above)
  const priorGap = dockerPriorGap().replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  let escaped = 0;
  for (const s of strings) {
    for (const m of s.matchAll(/\$+\{/g)) {
      const dollars = m[0].length - 1;
      if (dollars % 2 === 0) {
        escaped++; // $${ : a literal ${ for bash
        continue;
      }
      const rest = s.slice(m.index! + dollars - 1);
      if (new RegExp(`^${priorGap}`).test(rest)) continue;
      assert.match(rest, reference, `unescaped template in: ${s.slice(0, 200)}`);
    }
    assert.doesNotMatch(s.replaceAll("%%{", ""), /%\{/, "no Terraform directive");
  }
  assert.ok(escaped > 0, "the node, topic and setup scripts use shell ${...}, escaped");
});
