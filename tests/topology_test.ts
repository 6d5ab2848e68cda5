/** The topology spec: the single source of truth matches docs/design.md and the Maven pom. */
import assert from "node:assert/strict";
import {
  bootstrapServers,
  brokerDefaults,
  brokerNodes,
  controllerNodes,
  KAFKA_VERSION,
  quorumVoters,
  tlsBootstrapServers,
  topicAs,
  TOPICS,
  type Topology,
  topology,
} from "../stacks/topology.ts";
import {
  LEADER_IMBALANCE_CHECK_SECONDS,
  leadersSettled,
  misledPartitions,
  nodeProperties,
  wantedNodePorts,
} from "../stacks/local/cluster.ts";
import { fitToCluster } from "../jobs/lib/kafka.ts";

const SEVEN_DAYS_MS = String(7 * 24 * 3600 * 1000);

Deno.test("topology: 3 KRaft controllers and 3 brokers with unique node ids and ports", () => {
  const topo = topology("cluster");
  assert.deepEqual(controllerNodes(topo).map((n) => n.id), [1, 2, 3]);
  assert.deepEqual(brokerNodes(topo).map((n) => n.id), [4, 5, 6]);
  const ports = topo.nodes.flatMap((n) =>
    [n.clientPort, n.tlsPort, n.controllerPort, n.metricsPort].filter((p) => p !== undefined)
  );
  ports.push(...topo.jobs.map((j) => j.metricsPort), topo.prometheusPort);
  assert.equal(new Set(ports).size, ports.length, `no port used twice: ${ports.join(",")}`);
  assert.deepEqual(bootstrapServers(topo), ["127.0.0.1:9092", "127.0.0.1:9093", "127.0.0.1:9094"]);
  assert.deepEqual(tlsBootstrapServers(topo), [
    "127.0.0.1:9095",
    "127.0.0.1:9096",
    "127.0.0.1:9097",
  ]);
  assert.deepEqual(tlsBootstrapServers(topology("single")), ["127.0.0.1:9095"]);
  assert.equal(
    quorumVoters(topo, () => "127.0.0.1"),
    "1@127.0.0.1:9193,2@127.0.0.1:9194,3@127.0.0.1:9195",
  );
});

Deno.test("topology: topics have docs/design.md's partitions, replication 3, 7-day retention and min.insync.replicas=2", () => {
  const topo = topology("cluster");
  const expected: Record<string, number> = {
    [TOPICS.transactions]: 5,
    [TOPICS.aggregates]: 3,
    [TOPICS.anomalies]: 3,
    [TOPICS.deadLetters]: 3,
    [TOPICS.detectRules]: 1,
  };
  for (const [name, partitions] of Object.entries(expected)) {
    const t = topo.topics.find((t) => t.name === name);
    assert.ok(t, `topic ${name} is in the spec`);
    assert.equal(t.partitions, partitions, name);
    assert.equal(t.replicationFactor, 3, name);
    assert.equal(t.config["retention.ms"], SEVEN_DAYS_MS, name);
    assert.equal(t.config["min.insync.replicas"], "2", name);
  }
  // The control topic keeps the latest rules of each detect app id.
  const rules = topo.topics.find((t) => t.name === TOPICS.detectRules)!;
  assert.equal(rules.config["cleanup.policy"], "compact");
});

Deno.test("topology: single mode is one combined node with replication 1 and the same partitions", () => {
  const single = topology("single");
  assert.equal(single.nodes.length, 1);
  assert.equal(single.nodes[0].role, "combined");
  const cluster = topology("cluster");
  for (const t of single.topics) {
    assert.equal(t.replicationFactor, 1);
    assert.equal(t.config["min.insync.replicas"], "1");
    assert.equal(t.partitions, cluster.topics.find((c) => c.name === t.name)!.partitions);
  }
});

Deno.test("topology: a job's topic on a single-node cluster takes the node's replication, a full cluster keeps the spec's", () => {
  const cluster = topology("cluster");
  const spec = topicAs(cluster, TOPICS.aggregates, "my_aggregates");
  // What replicationLimits() reads from a running broker of that topology.
  const limitsOf = (topo: Topology) => {
    const d = brokerDefaults(topo);
    return {
      replicationFactor: Number(d["default.replication.factor"]),
      minInsyncReplicas: Number(d["min.insync.replicas"]),
    };
  };
  const fitted = fitToCluster(spec, limitsOf(topology("single")));
  assert.equal(fitted.replicationFactor, 1);
  assert.equal(fitted.config["min.insync.replicas"], "1");
  assert.equal(fitted.partitions, spec.partitions);
  assert.equal(fitted.config["retention.ms"], spec.config["retention.ms"]);
  assert.deepEqual(fitToCluster(spec, limitsOf(cluster)), spec);
  assert.deepEqual(fitToCluster(spec, undefined), spec, "unknown limits: the spec stands");
});

Deno.test("topology: the Maven pom resolves the same Kafka version as the spec", async () => {
  const pom = await Deno.readTextFile(new URL("../stacks/local/pom.xml", import.meta.url));
  const m = /<kafka\.version>([^<]+)<\/kafka\.version>/.exec(pom);
  assert.ok(m, "pom declares kafka.version");
  assert.equal(m[1], KAFKA_VERSION);
});

Deno.test("cluster runner: node properties carry role, id, quorum voters and SASL listeners on 127.0.0.1; no listener without authentication", () => {
  const topo = topology("cluster");
  const parse = (text: string) =>
    Object.fromEntries(text.trim().split("\n").map((l) => l.split(/=(.*)/s).slice(0, 2)));
  const keystore = (name: string) => ({ path: `/home/tls/${name}.p12`, password: "ks-pw" });
  const controller = parse(
    nodeProperties(topo, topo.nodes[0], "/data/c1", "s3cret", keystore(topo.nodes[0].name)),
  );
  assert.equal(controller["process.roles"], "controller");
  assert.equal(controller["node.id"], "1");
  assert.equal(controller["listeners"], "CONTROLLER://127.0.0.1:9193");
  assert.equal(
    controller["controller.quorum.voters"],
    "1@127.0.0.1:9193,2@127.0.0.1:9194,3@127.0.0.1:9195",
  );
  assert.equal(controller["advertised.listeners"], undefined);
  assert.equal(
    controller["leader.imbalance.check.interval.seconds"],
    String(LEADER_IMBALANCE_CHECK_SECONDS),
    "leaders settle soon",
  );

  assert.equal(controller["ssl.keystore.location"], undefined, "a controller has no TLS listener");
  const broker = parse(
    nodeProperties(topo, topo.nodes[3], "/data/b1", "s3cret", keystore("kafka-broker-1")),
  );
  assert.equal(broker["process.roles"], "broker");
  assert.equal(broker["node.id"], "4");
  assert.equal(broker["listeners"], "CLIENT://127.0.0.1:9092,CLIENT_TLS://127.0.0.1:9095");
  assert.equal(
    broker["advertised.listeners"],
    "CLIENT://127.0.0.1:9092,CLIENT_TLS://127.0.0.1:9095",
  );
  assert.equal(broker["inter.broker.listener.name"], "CLIENT");
  assert.equal(broker["listener.name.client.sasl.enabled.mechanisms"], "SCRAM-SHA-512");
  assert.equal(broker["listener.name.client_tls.sasl.enabled.mechanisms"], "SCRAM-SHA-512");
  assert.equal(broker["sasl.mechanism.inter.broker.protocol"], "SCRAM-SHA-512");
  assert.match(
    broker["listener.name.client.scram-sha-512.sasl.jaas.config"],
    /username="admin" password="s3cret"/,
  );
  assert.equal(
    broker["listener.name.client_tls.scram-sha-512.sasl.jaas.config"],
    "org.apache.kafka.common.security.scram.ScramLoginModule required;",
    "the TLS listener checks clients' credentials; it replicates nothing",
  );
  assert.equal(broker["ssl.keystore.type"], "PKCS12");
  assert.equal(broker["ssl.keystore.location"], "/home/tls/kafka-broker-1.p12");
  assert.equal(broker["ssl.keystore.password"], "ks-pw");
  assert.equal(broker["ssl.key.password"], "ks-pw");
  const broker3 = parse(
    nodeProperties(topo, topo.nodes[5], "/data/b3", "s3cret", keystore("kafka-broker-3")),
  );
  assert.equal(broker3["listeners"], "CLIENT://127.0.0.1:9094,CLIENT_TLS://127.0.0.1:9097");
  const withoutTls = parse(nodeProperties(topo, topo.nodes[3], "/data/b1", "s3cret"));
  assert.equal(withoutTls["listeners"], "CLIENT://127.0.0.1:9092", "no keystore, no TLS listener");
  assert.equal(withoutTls["ssl.keystore.location"], undefined);
  assert.equal(broker["min.insync.replicas"], "2");
  assert.equal(broker["auto.create.topics.enable"], "false");
  assert.equal(broker["transaction.state.log.replication.factor"], "3");

  const single = topology("single");
  const combined = parse(
    nodeProperties(single, single.nodes[0], "/data/s", "s3cret", keystore("kafka-single")),
  );
  assert.equal(combined["process.roles"], "broker,controller");
  assert.equal(
    combined["listeners"],
    "CLIENT://127.0.0.1:9092,CLIENT_TLS://127.0.0.1:9095,CONTROLLER://127.0.0.1:9193",
  );
  assert.equal(combined["ssl.keystore.location"], "/home/tls/kafka-single.p12");
  assert.equal(combined["offsets.topic.replication.factor"], "1");

  for (const props of [controller, broker, combined]) {
    assert.equal(
      props["listener.security.protocol.map"],
      "CONTROLLER:SASL_PLAINTEXT,CLIENT:SASL_PLAINTEXT,CLIENT_TLS:SASL_SSL",
    );
    assert.doesNotMatch(props["listeners"], /PLAINTEXT:|0\.0\.0\.0/);
    assert.equal(
      props["authorizer.class.name"],
      "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    );
    assert.equal(props["allow.everyone.if.no.acl.found"], "false");
    assert.equal(props["super.users"], "User:admin");
    assert.equal(props["sasl.mechanism.controller.protocol"], "PLAIN");
    assert.equal(props["listener.name.controller.sasl.enabled.mechanisms"], "PLAIN");
    assert.match(props["listener.name.controller.plain.sasl.jaas.config"], /user_admin="s3cret"/);
  }
  assert.equal(controller["listener.name.client.sasl.enabled.mechanisms"], undefined);
});

Deno.test("cluster runner: only `deno task bench security` adds a PLAINTEXT listener, on 127.0.0.1, and only to brokers", () => {
  const topo = topology("cluster");
  const parse = (text: string) =>
    Object.fromEntries(text.trim().split("\n").map((l) => l.split(/=(.*)/s).slice(0, 2)));
  const keystore = { path: "/home/tls/kafka-broker-2.p12", password: "ks-pw" };
  const open = { benchPlaintext: true };
  const broker = parse(nodeProperties(topo, topo.nodes[4], "/data/b2", "s3cret", keystore, open));
  const listeners = "CLIENT://127.0.0.1:9093,CLIENT_TLS://127.0.0.1:9096," +
    "BENCH_PLAIN://127.0.0.1:9099";
  assert.equal(broker["listeners"], listeners);
  assert.equal(broker["advertised.listeners"], listeners);
  assert.equal(
    broker["listener.security.protocol.map"],
    "CONTROLLER:SASL_PLAINTEXT,CLIENT:SASL_PLAINTEXT,CLIENT_TLS:SASL_SSL,BENCH_PLAIN:PLAINTEXT",
  );
  assert.equal(broker["inter.broker.listener.name"], "CLIENT", "brokers replicate over SCRAM");
  assert.equal(broker["allow.everyone.if.no.acl.found"], "false");
  const controller = parse(
    nodeProperties(topo, topo.nodes[0], "/data/c1", "s3cret", undefined, open),
  );
  assert.equal(controller["listeners"], "CONTROLLER://127.0.0.1:9193");
  const normal = parse(nodeProperties(topo, topo.nodes[4], "/data/b2", "s3cret", keystore));
  assert.doesNotMatch(
    normal["listeners"] + normal["listener.security.protocol.map"],
    /BENCH_PLAIN/,
  );
});

Deno.test("cluster runner: the port-clash check covers every node's client, TLS client, controller and metrics ports", () => {
  for (const mode of ["cluster", "single"] as const) {
    const topo = topology(mode);
    const wanted = wantedNodePorts(mode, topo.nodes).map((w) => w.port).sort((a, b) => a - b);
    const expected = topo.nodes.flatMap((n) =>
      [n.clientPort, n.tlsPort, n.controllerPort, n.metricsPort].filter((p) => p !== undefined)
    ).sort((a, b) => a - b);
    assert.deepEqual(wanted, expected, mode);
  }
  const tls = wantedNodePorts("cluster", topology("cluster").nodes).filter((w) =>
    w.what.startsWith("TLS client port")
  );
  assert.deepEqual(tls.map((w) => [w.port, w.what]), [
    [9095, "TLS client port of kafka-broker-1"],
    [9096, "TLS client port of kafka-broker-2"],
    [9097, "TLS client port of kafka-broker-3"],
  ]);
});

/**
 * A stand-in for the admin client's two metadata calls, over `leaders`
 * (topic → each partition's [leader, replicas]); asking for a topic it does
 * not hold fails, as Kafka's metadata does before an internal topic exists.
 */
function metadataOf(leaders: Record<string, Array<[number, number[]]>>) {
  const asked: string[][] = [];
  return {
    asked,
    listTopics: () => Promise.resolve(Object.keys(leaders)),
    fetchTopicMetadata: ({ topics }: { topics?: string[] } = {}) => {
      asked.push(topics ?? []);
      const missing = (topics ?? []).filter((t) => !(t in leaders));
      if (missing.length > 0) {
        return Promise.reject(new Error("This server does not host this topic-partition"));
      }
      return Promise.resolve({
        topics: (topics ?? []).map((name) => ({
          name,
          partitions: leaders[name].map(([leader, replicas], partitionId) => ({
            partitionErrorCode: 0,
            partitionId,
            leader,
            replicas,
            isr: replicas,
            offlineReplicas: [],
          })),
        })),
      });
    },
  };
}

Deno.test("cluster runner: leaders are settled on a new cluster whose coordinator topics do not exist yet; a misled partition of any topic is named", async () => {
  const topo = topology("cluster");
  const spec = Object.fromEntries(
    topo.topics.map((t) => [t.name, [[4, [4, 5, 6]]] as Array<[number, number[]]>]),
  );
  // Before any client asked for a coordinator: only the spec's topics.
  const fresh = metadataOf(spec);
  assert.deepEqual(await leadersSettled(fresh, topo, { timeoutMs: 0 }), []);
  assert.deepEqual(fresh.asked, [topo.topics.map((t) => t.name)]);

  const later = metadataOf({
    ...spec,
    __consumer_offsets: [[4, [4, 5, 6]], [6, [5, 6, 4]]],
    __transaction_state: [[6, [6, 4, 5]]],
  });
  assert.deepEqual(await misledPartitions(later, topo), ["__consumer_offsets/1"]);
  assert.deepEqual(later.asked[0].slice(-2), ["__transaction_state", "__consumer_offsets"]);
});
