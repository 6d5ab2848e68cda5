/**
 * The whole txpipe system on Docker as ONE Terraform stack, composed from one
 * construct per component, all derived from the topology spec
 * (stacks/topology.ts):
 *
 *   network → Kafka (3 KRaft controllers + 3 brokers, JMX exporter) → topics
 *   → jobs (produce, aggregate, detect, evaluate); Prometheus + Grafana; Elasticsearch,
 *   Logstash and Kibana receiving the Kafka and job logs.
 *
 * `deno task synth` (cdktf synth) runs this file and writes
 * cdktf.out/stacks/txpipe/cdk.tf.json, which `deno task deploy` applies, or
 * plain `terraform`/`tofu` in that folder. Running it directly
 * (`deno run -A stacks/main.ts`) synthesizes the same JSON without the CLI.
 *
 * Inputs (Terraform variables): `<job>_replicas`, `produce_rate` and
 * `grafana_admin_password` (generated when not given).
 *
 * Security by default (stacks/secrets.ts): every Kafka principal and every
 * Elasticsearch user the stack uses gets a generated `random_password`;
 * Kafka takes SASL only (SCRAM for clients, PLAIN from the admin for the
 * controllers) with least-privilege ACLs per job (stacks/security.ts), and
 * Elasticsearch runs with `xpack.security`. The outputs
 * `kafka_consume_password`, `kafka_admin_password` and `elasticsearch_password`
 * (sensitive) give the host's user the credentials of the topic reader, the
 * Kafka admin and Elasticsearch's `elastic` (for Kibana).
 *
 * @module
 */
import { Construct } from "constructs";
import { App, Fn, LocalBackend, TerraformOutput, TerraformStack, TerraformVariable } from "cdktf";
import { provider as dockerProvider } from "@cdktf/provider-docker";
import { GENERATOR_DEFAULTS, NORMAL_TRAFFIC } from "../jobs/lib/generator.ts";
import { DEFAULT_DETECT_CONFIG } from "../jobs/lib/rules.ts";
import { password, provider as randomProvider } from "@cdktf/provider-random";
import { jobAlias, Jobs } from "./jobs.ts";
import { KafkaCluster } from "./kafka_cluster.ts";
import { Logging } from "./logging.ts";
import { Monitoring } from "./monitoring.ts";
import { TxpipeNetwork } from "./network.ts";
import { repoFilesIn, STACK_NAME } from "./repo_files.ts";
import { generateSecrets } from "./secrets.ts";
import { ADMIN_USER, jobAcls, KAFKA_USERS } from "./security.ts";
import { Topics } from "./topics.ts";
import {
  bootstrapServers,
  type JobSpec,
  SERVICE_PORTS,
  type Topology,
  topology,
} from "./topology.ts";

/** Name of the Docker network every container joins. */
export const NETWORK_NAME = "txpipe";

/** Default records per second of the producer in Docker (0 would mean as fast as possible). */
export const DEFAULT_PRODUCE_RATE = 100;

/** Props of `TxpipeStack`; everything has a default. */
export interface TxpipeStackProps {
  /** Default: `topology("cluster")`. */
  readonly topology?: Topology;
  /** Repository paths of the Grafana dashboards. Default: every dashboards/*.json. */
  readonly dashboards?: readonly string[];
}

/** The one stack: providers, variables, the components and their outputs. */
export class TxpipeStack extends TerraformStack {
  readonly kafka: KafkaCluster;
  readonly topics: Topics;
  readonly monitoring: Monitoring;
  readonly logging: Logging;
  readonly jobs: Jobs;

  constructor(scope: Construct, id: string, props: TxpipeStackProps = {}) {
    super(scope, id);
    const topo = props.topology ?? topology("cluster");

    // State next to the repository root (where cdktf keeps it by default), but as a path
    // relative to the stack folder so plain terraform/tofu there uses the same file.
    new LocalBackend(this, { path: `../../../terraform.${id}.tfstate` });
    new dockerProvider.DockerProvider(this, "docker", {});
    new randomProvider.RandomProvider(this, "random", {});

    const replicas = {} as Record<JobSpec["name"], number>;
    for (const job of topo.jobs) {
      replicas[job.name] = new TerraformVariable(this, `${job.name}_replicas`, {
        type: "number",
        default: job.replicas,
        description: `Containers running ${job.script} (one consumer-group member each)`,
        validation: [{
          condition: `\${var.${job.name}_replicas >= 0 && ` +
            `floor(var.${job.name}_replicas) == var.${job.name}_replicas}`,
          errorMessage: `${job.name}_replicas must be a whole number >= 0`,
        }],
      }).numberValue;
    }
    const produceRate = new TerraformVariable(this, "produce_rate", {
      type: "number",
      default: DEFAULT_PRODUCE_RATE,
      description: "Records per second each producer replica writes (0 = as fast as Kafka acks)",
    });
    const grafanaPasswordVar = new TerraformVariable(this, "grafana_admin_password", {
      type: "string",
      sensitive: true,
      default: "", // empty: not a password but "generate one"
      description: "Grafana admin password (at least 12 characters); when empty, a random " +
        "one is generated (read it with the grafana_admin_password output)",
      validation: [{
        condition:
          '${var.grafana_admin_password == "" || length(var.grafana_admin_password) >= 12}',
        errorMessage:
          "grafana_admin_password must be empty (generate one) or at least 12 characters",
      }],
    });
    const generated = new password.Password(this, "grafana_admin_password_generated", {
      length: 24,
      special: false,
    });
    const grafanaPassword = Fn.coalesce([grafanaPasswordVar.stringValue, generated.result]);

    const secrets = generateSecrets(this);

    const net = new TxpipeNetwork(this, "network", { name: NETWORK_NAME });
    this.kafka = new KafkaCluster(this, "kafka", {
      topology: topo,
      networkName: net.name,
      adminPassword: secrets.kafka.admin,
    });
    this.topics = new Topics(this, "topics", {
      topics: topo.topics,
      networkName: net.name,
      kafkaImage: this.kafka.image,
      bootstrap: this.kafka.bootstrap,
      after: this.kafka.brokers,
      passwords: secrets.kafka,
      acls: jobAcls(),
    });
    this.logging = new Logging(this, "logging", {
      networkName: net.name,
      ports: {
        elasticsearch: SERVICE_PORTS.elasticsearch,
        kibana: SERVICE_PORTS.kibana,
        logstashGelf: SERVICE_PORTS.logstashGelf,
      },
      passwords: {
        elastic: secrets.elastic.elastic,
        kibanaSystem: secrets.elastic.kibana_system,
        logstash: secrets.elastic.logstash,
      },
    });
    this.monitoring = new Monitoring(this, "monitoring", {
      topology: topo,
      networkName: net.name,
      jobAlias,
      dashboards: props.dashboards ?? repoFilesIn("dashboards", ".json"),
      grafanaAdminPassword: grafanaPassword,
      grafanaPort: SERVICE_PORTS.grafana,
    });
    this.jobs = new Jobs(this, "jobs", {
      jobs: topo.jobs,
      networkName: net.name,
      bootstrap: this.kafka.bootstrap,
      kafkaPasswords: {
        produce: secrets.kafka.produce,
        aggregate: secrets.kafka.aggregate,
        detect: secrets.kafka.detect,
        evaluate: secrets.kafka.evaluate,
      },
      replicas,
      extraEnv: {
        produce: [`TXPIPE_RATE=${produceRate.stringValue}`],
        // The producer's compressed pace, not the 12 h real card holders keep (docs/configuration.md).
        detect: [`TXPIPE_PRIOR_GAP=${dockerPriorGap()}`],
        // One-shot by default; --follow keeps it running and serving /metrics for Prometheus.
        evaluate: ["TXPIPE_FOLLOW=true"],
      },
      after: [this.topics.job, this.logging.logstash],
    });

    const outputs: Record<string, string> = {
      kafka_bootstrap: bootstrapServers(topo).join(","),
      prometheus_url: `http://127.0.0.1:${topo.prometheusPort}`,
      grafana_url: `http://127.0.0.1:${SERVICE_PORTS.grafana}`,
      kibana_url: `http://127.0.0.1:${SERVICE_PORTS.kibana}`,
      elasticsearch_url: `http://127.0.0.1:${SERVICE_PORTS.elasticsearch}`,
    };
    for (const [name, value] of Object.entries(outputs)) {
      new TerraformOutput(this, name, { value });
    }
    new TerraformOutput(this, "grafana_admin_password_output", {
      value: grafanaPassword,
      sensitive: true,
      description:
        "Grafana's admin password (user admin): terraform output -raw grafana_admin_password",
    }).overrideLogicalId("grafana_admin_password"); // same name as the variable, as Terraform allows
    const secretOutputs: Array<[string, string, string]> = [
      [
        "kafka_consume_password",
        secrets.kafka.consume,
        `Kafka password of ${KAFKA_USERS.consume} (reads every topic): ` +
        `TXPIPE_KAFKA_USER=${KAFKA_USERS.consume} ` +
        "TXPIPE_KAFKA_PASSWORD=$(terraform output -raw kafka_consume_password) deno task consume",
      ],
      [
        "kafka_rules_password",
        secrets.kafka.rules,
        `Kafka password of ${KAFKA_USERS.rules} (publishes detection rules): ` +
        `TXPIPE_KAFKA_USER=${KAFKA_USERS.rules} ` +
        "TXPIPE_KAFKA_PASSWORD=$(terraform output -raw kafka_rules_password) deno task rules show",
      ],
      [
        "kafka_admin_password",
        secrets.kafka.admin,
        `Kafka password of the super user ${ADMIN_USER} (SCRAM-SHA-512 on the brokers, ` +
        "PLAIN on the controllers)",
      ],
      [
        "elasticsearch_password",
        secrets.elastic.elastic,
        "Password of Elasticsearch's elastic user, to log into Kibana",
      ],
    ];
    for (const [name, value, description] of secretOutputs) {
      new TerraformOutput(this, name, { value, sensitive: true, description });
    }
  }
}

if (import.meta.main) {
  const app = new App({ stackTraces: false });
  new TxpipeStack(app, STACK_NAME);
  app.synth();
}

/**
 * Detect's `--prior-gap` in the Docker stack, as a Terraform expression:
 * what `deno task start` gives it (jobs/start.ts's priorGap), for
 * `var.produce_rate` per producer replica. Every replica simulates the same
 * population (usersForRate of its rate), so each user pays `replicas` times
 * as often. At rate 0 (unthrottled) the pace is unknown: the default.
 */
export function dockerPriorGap(): string {
  const users = `max(${GENERATOR_DEFAULTS.users}, ${NORMAL_TRAFFIC.usersPerRecordPerSecond} * ` +
    "var.produce_rate)";
  const gap = `floor(1000 * ${users} / (var.produce_rate * max(1, var.produce_replicas)))`;
  return `\${var.produce_rate > 0 ? ${gap} : ${DEFAULT_DETECT_CONFIG.priorGapMs}}ms`;
}
