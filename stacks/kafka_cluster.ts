/**
 * Apache Kafka in KRaft mode on Docker: the controllers and brokers of the
 * topology spec, one `apache/kafka` container each, with persistent volumes,
 * healthchecks and the Prometheus JMX exporter agent attached.
 *
 * The agent jar is not in the Kafka image. A one-shot `maven` container
 * (`mvn dependency:copy`, checksums enforced) copies
 * `io.prometheus.jmx:jmx_prometheus_javaagent:<JMX_EXPORTER_VERSION>` from
 * Maven Central into a shared volume before any Kafka node starts; the nodes
 * mount that volume read-only and load the agent with `-javaagent` from
 * `KAFKA_OPTS`. The exporter rules are the repository's
 * stacks/config/kafka_jmx_exporter.yml, uploaded into each container, the
 * same file the local runner uses.
 *
 * Listeners: controllers listen on `CONTROLLER://:<controllerPort>`, on the
 * stack's network only (never published). Brokers have an INTERNAL listener
 * (`<name>:19092`, for the jobs, topic creation and replication) and an
 * EXTERNAL one advertised as `127.0.0.1:<clientPort>` and published on
 * 127.0.0.1 only, so host tools reach every broker directly.
 *
 * Security (the local runner's settings, stacks/kafka_security.ts): INTERNAL
 * and EXTERNAL take SASL/SCRAM-SHA-512 only, CONTROLLER takes SASL/PLAIN from
 * the admin only; no listener is PLAINTEXT. Every node runs the
 * StandardAuthorizer with `allow.everyone.if.no.acl.found=false` and
 * `super.users=User:admin`. Each node gets the admin's password (a generated
 * `random_password`, see stacks/secrets.ts) and nothing else; its start script
 * (stacks/render/kafka_node.ts) formats the storage with the admin's SCRAM
 * credentials. The jobs' users and ACLs are created by the topic-creation step.
 *
 * @module
 */
import { Construct } from "constructs";
import { container, image, volume } from "@cdktf/provider-docker";
import {
  gelfLogging,
  loopbackPort,
  onNetwork,
  pinnedImage,
  terraformLiteral,
} from "./container_defaults.ts";
import { IMAGES } from "./images.ts";
import { kafkaSecurityProperties, securedProtocolMap } from "./kafka_security.ts";
import {
  ADMIN_PASSWORD_ENV,
  ADMIN_PLAIN_CONFIG,
  ADMIN_SCRAM_CONFIG,
  renderNodeScript,
} from "./render/kafka_node.ts";
import { repoFile, repoFileHash } from "./repo_files.ts";
import {
  brokerDefaults,
  brokerNodes,
  controllerNodes,
  INTERNAL_LISTENER_PORT,
  JMX_EXPORTER_VERSION,
  type KafkaNode,
  quorumVoters,
  type Topology,
} from "./topology.ts";

/** Repository path of the JMX exporter rules every node loads. */
export const JMX_RULES_FILE = "stacks/config/kafka_jmx_exporter.yml";

/** Where the shared volume with the JMX exporter agent jar is mounted. */
export const JMX_AGENT_DIR = "/opt/jmx-exporter";

/** File name of the agent jar that `mvn dependency:copy` writes. */
export const JMX_AGENT_JAR = `jmx_prometheus_javaagent-${JMX_EXPORTER_VERSION}.jar`;

/** Where the rules file is uploaded in each Kafka container. */
export const JMX_RULES_PATH = "/etc/kafka/txpipe/kafka_jmx_exporter.yml";

/** Kafka's data folder in the image; each node keeps it on its own named volume. */
export const KAFKA_DATA_DIR = "/var/lib/kafka/data";

/** The Maven plugin that copies the agent jar, pinned. */
export const MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1";

/** The listeners of the Docker nodes: the controllers', and the brokers' two client listeners. */
export const LISTENERS = {
  controller: "CONTROLLER",
  internal: "INTERNAL",
  external: "EXTERNAL",
} as const;

/** Listener name to security protocol, the same on every node: SASL everywhere, no PLAINTEXT. */
export const LISTENER_PROTOCOLS = securedProtocolMap([
  LISTENERS.controller,
  LISTENERS.internal,
  LISTENERS.external,
]);

/**
 * The environment variable the `apache/kafka` image turns into a server
 * property: `KAFKA_` + the name upper-cased, with `.` → `_`, `_` → `__` and
 * `-` → `___` (the image's KafkaDockerWrapper reverses exactly this).
 */
export function kafkaEnvName(property: string): string {
  const encoded = property.replaceAll("_", "__").replaceAll("-", "___").replaceAll(".", "_");
  return `KAFKA_${encoded.toUpperCase()}`;
}

/**
 * The server properties of one node in Docker (before encoding as environment
 * variables), secured. `adminPassword` is the admin's password, in the stack a
 * Terraform expression (the generated `random_password`).
 */
export function nodeProperties(
  topo: Topology,
  node: KafkaNode,
  adminPassword: string,
): Record<string, string> {
  const props: Record<string, string> = {
    "node.id": String(node.id),
    "process.roles": node.role === "combined" ? "broker,controller" : node.role,
    "controller.quorum.voters": quorumVoters(topo, (n) => n.name),
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "INTERNAL",
    "listener.security.protocol.map": LISTENER_PROTOCOLS,
    "log.dirs": KAFKA_DATA_DIR,
  };
  const listeners: string[] = [];
  if (node.role !== "broker") listeners.push(`CONTROLLER://:${node.controllerPort}`);
  if (node.role !== "controller") {
    listeners.push(`INTERNAL://:${INTERNAL_LISTENER_PORT}`, `EXTERNAL://:${node.clientPort}`);
    props["advertised.listeners"] = `INTERNAL://${node.name}:${INTERNAL_LISTENER_PORT},` +
      `EXTERNAL://127.0.0.1:${node.clientPort}`;
    Object.assign(props, brokerDefaults(topo));
  }
  props["listeners"] = listeners.join(",");
  Object.assign(
    props,
    kafkaSecurityProperties(node, adminPassword, {
      clientListeners: [LISTENERS.internal, LISTENERS.external],
      interBrokerListener: LISTENERS.internal,
    }),
  );
  return props;
}

/** The `host:port` list in-network clients bootstrap from (the brokers' INTERNAL listeners). */
export function internalBootstrap(topo: Topology): string {
  return brokerNodes(topo).map((n) => `${n.name}:${INTERNAL_LISTENER_PORT}`).join(",");
}

/** Props of `KafkaCluster`. */
export interface KafkaClusterProps {
  readonly topology: Topology;
  readonly networkName: string;
  /** The admin's password (a Terraform expression; sensitive): every node gets it, and no other. */
  readonly adminPassword: string;
  /** Seconds Terraform waits for each node to turn healthy. Default 300. */
  readonly healthyWithinSeconds?: number;
}

/** The KRaft controllers and brokers of the spec, plus the one-shot agent download. */
export class KafkaCluster extends Construct {
  /** The pinned `apache/kafka` image, reused by the topic-creation job. */
  readonly image: image.Image;
  /** Every node's container by node name. */
  readonly nodes: ReadonlyMap<string, container.Container>;
  /** The broker containers; clients depend on these being healthy. */
  readonly brokers: readonly container.Container[];
  /** The one-shot container that puts the agent jar into the shared volume. */
  readonly agentFetch: container.Container;
  /** Bootstrap list for in-network clients. */
  readonly bootstrap: string;

  constructor(scope: Construct, id: string, props: KafkaClusterProps) {
    super(scope, id);
    const topo = props.topology;
    const net = props.networkName;
    const waitTimeout = props.healthyWithinSeconds ?? 300;
    this.bootstrap = internalBootstrap(topo);
    this.image = pinnedImage(this, "kafka-image", IMAGES.kafka);

    const agentVolume = new volume.Volume(this, "jmx-agent-volume", { name: "txpipe-jmx-agent" });
    const maven = pinnedImage(this, "maven-image", IMAGES.maven);
    this.agentFetch = new container.Container(this, "jmx-agent-fetch", {
      name: "txpipe-jmx-agent-fetch",
      image: maven.imageId,
      command: [
        "mvn",
        "--batch-mode",
        "--quiet",
        "--strict-checksums",
        `${MAVEN_DEPENDENCY_PLUGIN}:copy`,
        `-Dartifact=io.prometheus.jmx:jmx_prometheus_javaagent:${JMX_EXPORTER_VERSION}`,
        `-DoutputDirectory=${JMX_AGENT_DIR}`,
      ],
      volumes: [{ volumeName: agentVolume.name, containerPath: JMX_AGENT_DIR }],
      networksAdvanced: onNetwork(net),
      attach: true, // Terraform waits until the download has finished
      mustRun: false,
      logs: true,
      lifecycle: {
        postcondition: [{
          condition: "${self.exit_code == 0}",
          errorMessage: `fetching ${JMX_AGENT_JAR} from Maven Central failed; ` +
            "see container_logs of this resource or `docker logs txpipe-jmx-agent-fetch`",
        }],
      },
    });

    const nodes = new Map<string, container.Container>();
    const controllers = controllerNodes(topo).map((node) => {
      const c = this.addNode(node, topo, net, agentVolume, waitTimeout, props.adminPassword, [
        this.agentFetch,
      ]);
      nodes.set(node.name, c);
      return c;
    });
    const brokers = topo.nodes.filter((n) => n.role === "broker").map((node) => {
      const c = this.addNode(node, topo, net, agentVolume, waitTimeout, props.adminPassword, [
        this.agentFetch,
        ...controllers, // brokers start once the quorum has a leader
      ]);
      nodes.set(node.name, c);
      return c;
    });
    this.brokers = brokers.length > 0 ? brokers : controllers; // `single`: the combined node
    this.nodes = nodes;
  }

  private addNode(
    node: KafkaNode,
    topo: Topology,
    net: string,
    agentVolume: volume.Volume,
    waitTimeout: number,
    adminPassword: string,
    dependsOn: container.Container[],
  ): container.Container {
    const data = new volume.Volume(this, `${node.name}-data`, { name: `txpipe-${node.name}-data` });
    const env = [
      `CLUSTER_ID=${topo.clusterId}`,
      `${ADMIN_PASSWORD_ENV}=${adminPassword}`,
      ...Object.entries(nodeProperties(topo, node, adminPassword)).map(([k, v]) =>
        `${kafkaEnvName(k)}=${v}`
      ),
      `KAFKA_HEAP_OPTS=-Xms${node.heap} -Xmx${node.heap}`,
      `KAFKA_OPTS=-javaagent:${JMX_AGENT_DIR}/${JMX_AGENT_JAR}=${node.metricsPort}:${JMX_RULES_PATH}`,
    ];
    return new container.Container(this, node.name, {
      name: node.name,
      hostname: node.name,
      image: this.image.imageId,
      // Formats the storage with the admin's SCRAM credentials, then runs the image's start script.
      entrypoint: ["/bin/bash", "-c"],
      command: [terraformLiteral(renderNodeScript({ dataDir: KAFKA_DATA_DIR }))],
      env,
      networksAdvanced: onNetwork(net),
      ports: node.clientPort === undefined ? [] : [loopbackPort(node.clientPort)],
      volumes: [
        { volumeName: data.name, containerPath: KAFKA_DATA_DIR },
        { volumeName: agentVolume.name, containerPath: JMX_AGENT_DIR, readOnly: true },
      ],
      upload: [{
        file: JMX_RULES_PATH,
        source: repoFile(JMX_RULES_FILE),
        sourceHash: repoFileHash(JMX_RULES_FILE),
      }],
      healthcheck: kafkaHealthcheck(node),
      wait: true,
      waitTimeout,
      restart: "unless-stopped",
      destroyGraceSeconds: 60,
      ...gelfLogging("kafka"),
      dependsOn,
    });
  }
}

/**
 * A node's healthcheck, as the admin (the client configs the start script
 * wrote). Brokers: the INTERNAL listener authenticates the admin with SCRAM
 * and answers an ApiVersions request. Controllers: the quorum they belong to
 * has a leader (asked over PLAIN). The tools run with an empty `KAFKA_OPTS`,
 * or they would start a second JMX agent on the node's metrics port and fail.
 */
export function kafkaHealthcheck(node: KafkaNode): container.ContainerHealthcheck {
  const tool = "KAFKA_OPTS= KAFKA_HEAP_OPTS=-Xmx128m /opt/kafka/bin";
  const test = node.role === "controller"
    ? `${tool}/kafka-metadata-quorum.sh --bootstrap-controller localhost:${node.controllerPort}` +
      ` --command-config ${ADMIN_PLAIN_CONFIG}` +
      ` describe --status | grep -q 'LeaderId:[[:space:]]*[0-9]'`
    : `${tool}/kafka-broker-api-versions.sh --bootstrap-server localhost:${INTERNAL_LISTENER_PORT}` +
      ` --command-config ${ADMIN_SCRAM_CONFIG} > /dev/null`;
  return {
    test: ["CMD-SHELL", test],
    interval: "15s",
    timeout: "20s",
    retries: 10,
    startPeriod: "30s",
  };
}
