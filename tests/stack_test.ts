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
import { TxpipeStack } from "../stacks/main.ts";
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
      "CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT",
    );
  }
});

Deno.test("stack: Kafka env variables decode (as the image decodes them) to the spec's server properties", () => {
  for (const node of topo.nodes) {
    const c = containerNamed(node.name);
    assert.deepEqual(
      Object.fromEntries(kafkaProperties(c)),
      nodeProperties(topo, node),
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
  assert.equal(es.get("xpack.security.enabled"), "false");
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
