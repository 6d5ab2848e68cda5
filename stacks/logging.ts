/**
 * Elasticsearch, Logstash and Kibana, one pinned Elastic Stack version.
 *
 * Shipping: Kafka and job containers use Docker's gelf log driver (see
 * `gelfLogging`), which sends every stdout/stderr line to Logstash's GELF
 * input, published on 127.0.0.1 (UDP) because the Docker daemon sends from the
 * host. The pipeline (logstash/pipeline/txpipe.conf, uploaded unchanged)
 * parses job lines as ECS JSON and broker lines with grok, and writes the data
 * streams `logs-txpipe.jobs-default` and `logs-kafka.broker-default`.
 *
 * Security: Elasticsearch runs single-node with `xpack.security` on (users
 * and roles; HTTP without TLS, every port published on 127.0.0.1 only). Its
 * `elastic` password is generated (`ELASTIC_PASSWORD`). A one-shot setup
 * container (stacks/render/elastic_setup.ts) then sets the generated password
 * of `kibana_system`, which Kibana connects as, and creates the Logstash user
 * with a least-privilege role (write into txpipe's data streams only), which
 * the pipeline reads from `TXPIPE_ELASTICSEARCH_USER` and
 * `TXPIPE_ELASTICSEARCH_PASSWORD`. Kibana and Logstash start after it.
 *
 * @module
 */
import { Construct } from "constructs";
import { container, volume } from "@cdktf/provider-docker";
import { loopbackPort, onNetwork, pinnedImage, terraformLiteral } from "./container_defaults.ts";
import { IMAGES } from "./images.ts";
import {
  ELASTIC_SETUP_ENV,
  LOGSTASH_USER,
  renderElasticSetupScript,
} from "./render/elastic_setup.ts";
import { repoFile, repoFileHash } from "./repo_files.ts";

/** Repository path of the Logstash pipeline the stack runs. */
export const LOGSTASH_PIPELINE_FILE = "logstash/pipeline/txpipe.conf";

/** Repository path of the pipelines.yml that makes txpipe.conf Logstash's only pipeline. */
export const LOGSTASH_PIPELINES_FILE = "logstash/config/pipelines.yml";

/** Where the pipeline is uploaded in the Logstash container (pipelines.yml points here). */
export const LOGSTASH_PIPELINE_PATH = "/usr/share/logstash/pipeline/txpipe.conf";

/** Container name of Elasticsearch (also its DNS name on the network). */
export const ELASTICSEARCH_CONTAINER = "txpipe-elasticsearch";

/** Container name of the one-shot user setup. */
export const ELASTICSEARCH_SETUP_CONTAINER = "txpipe-elasticsearch-setup";

/** Props of `Logging`. */
export interface LoggingProps {
  readonly networkName: string;
  /** Host ports on 127.0.0.1. */
  readonly ports: {
    readonly elasticsearch: number;
    readonly kibana: number;
    readonly logstashGelf: number;
  };
  /** Elasticsearch heap, e.g. "1g". Default "1g". */
  readonly elasticsearchHeap?: string;
  /** The generated passwords (Terraform expressions; sensitive). */
  readonly passwords: {
    /** The `elastic` super user's: Elasticsearch's bootstrap password and the setup's. */
    readonly elastic: string;
    /** The built-in `kibana_system` user's, which Kibana connects as. */
    readonly kibanaSystem: string;
    /** The Logstash user's. */
    readonly logstash: string;
  };
}

/** Elasticsearch (single node), Logstash (txpipe pipeline) and Kibana. */
export class Logging extends Construct {
  readonly elasticsearch: container.Container;
  readonly logstash: container.Container;
  readonly kibana: container.Container;
  /** The one-shot container that sets the Kibana and Logstash users. */
  readonly setup: container.Container;
  /** The script it runs. */
  readonly setupScript: string;

  constructor(scope: Construct, id: string, props: LoggingProps) {
    super(scope, id);
    const net = props.networkName;
    const heap = props.elasticsearchHeap ?? "1g";
    const esUrl = `http://${ELASTICSEARCH_CONTAINER}:9200`;

    const esImage = pinnedImage(this, "elasticsearch-image", IMAGES.elasticsearch);
    const esData = new volume.Volume(this, "elasticsearch-data", {
      name: "txpipe-elasticsearch-data",
    });
    this.elasticsearch = new container.Container(this, "elasticsearch", {
      name: ELASTICSEARCH_CONTAINER,
      image: esImage.imageId,
      env: [
        "discovery.type=single-node",
        "cluster.name=txpipe",
        "xpack.security.enabled=true",
        "xpack.security.enrollment.enabled=false",
        "xpack.security.http.ssl.enabled=false",
        "xpack.security.transport.ssl.enabled=false", // single-node: no transport peers
        "xpack.license.self_generated.type=basic",
        `ELASTIC_PASSWORD=${props.passwords.elastic}`,
        `ES_JAVA_OPTS=-Xms${heap} -Xmx${heap}`,
      ],
      ulimit: [{ name: "nofile", soft: 65535, hard: 65535 }],
      volumes: [{ volumeName: esData.name, containerPath: "/usr/share/elasticsearch/data" }],
      networksAdvanced: onNetwork(net),
      ports: [loopbackPort(9200, { hostPort: props.ports.elasticsearch })],
      healthcheck: {
        test: [
          "CMD-SHELL",
          'curl -fsS -u "elastic:$ELASTIC_PASSWORD"' +
          " 'http://localhost:9200/_cluster/health?wait_for_status=yellow&timeout=5s' > /dev/null",
        ],
        interval: "10s",
        timeout: "10s",
        retries: 30,
        startPeriod: "30s",
      },
      wait: true,
      waitTimeout: 300,
      restart: "unless-stopped",
    });

    this.setupScript = renderElasticSetupScript({ url: esUrl });
    this.setup = new container.Container(this, "elasticsearch-setup", {
      name: ELASTICSEARCH_SETUP_CONTAINER,
      image: esImage.imageId,
      entrypoint: ["/bin/bash", "-c"],
      command: [terraformLiteral(this.setupScript)],
      env: [
        `${ELASTIC_SETUP_ENV.elastic}=${props.passwords.elastic}`,
        `${ELASTIC_SETUP_ENV.kibanaSystem}=${props.passwords.kibanaSystem}`,
        `${ELASTIC_SETUP_ENV.logstash}=${props.passwords.logstash}`,
      ],
      networksAdvanced: onNetwork(net),
      attach: true, // Terraform waits until the users exist
      mustRun: false,
      logs: true,
      dependsOn: [this.elasticsearch],
      lifecycle: {
        postcondition: [{
          condition: "${self.exit_code == 0}",
          errorMessage: "setting up the Kibana and Logstash users failed; see container_logs " +
            `of this resource or \`docker logs ${ELASTICSEARCH_SETUP_CONTAINER}\``,
        }],
      },
    });

    const lsImage = pinnedImage(this, "logstash-image", IMAGES.logstash);
    this.logstash = new container.Container(this, "logstash", {
      name: "txpipe-logstash",
      image: lsImage.imageId,
      env: [
        `TXPIPE_ELASTICSEARCH_URL=${esUrl}`,
        `TXPIPE_ELASTICSEARCH_USER=${LOGSTASH_USER}`,
        `TXPIPE_ELASTICSEARCH_PASSWORD=${props.passwords.logstash}`,
        `TXPIPE_GELF_PORT=${props.ports.logstashGelf}`,
        "TXPIPE_KAFKA_LOG_TIMEZONE=UTC",
        "XPACK_MONITORING_ENABLED=false",
        "LS_JAVA_OPTS=-Xms512m -Xmx512m",
      ],
      upload: [
        {
          file: LOGSTASH_PIPELINE_PATH,
          source: repoFile(LOGSTASH_PIPELINE_FILE),
          sourceHash: repoFileHash(LOGSTASH_PIPELINE_FILE),
        },
        {
          file: "/usr/share/logstash/config/pipelines.yml",
          source: repoFile(LOGSTASH_PIPELINES_FILE),
          sourceHash: repoFileHash(LOGSTASH_PIPELINES_FILE),
        },
      ],
      networksAdvanced: onNetwork(net),
      ports: [loopbackPort(props.ports.logstashGelf, { protocol: "udp" })],
      healthcheck: {
        test: [
          "CMD-SHELL",
          "curl -fsS http://localhost:9600/_node/pipelines/txpipe | grep -q '\"txpipe\"'",
        ],
        interval: "10s",
        timeout: "5s",
        retries: 30,
        startPeriod: "30s",
      },
      wait: true,
      waitTimeout: 300,
      restart: "unless-stopped",
      dependsOn: [this.elasticsearch, this.setup],
    });

    const kibanaImage = pinnedImage(this, "kibana-image", IMAGES.kibana);
    this.kibana = new container.Container(this, "kibana", {
      name: "txpipe-kibana",
      image: kibanaImage.imageId,
      env: [
        `ELASTICSEARCH_HOSTS=${esUrl}`,
        "ELASTICSEARCH_USERNAME=kibana_system",
        `ELASTICSEARCH_PASSWORD=${props.passwords.kibanaSystem}`,
        `SERVER_PUBLICBASEURL=http://127.0.0.1:${props.ports.kibana}`,
        "TELEMETRY_OPTIN=false",
      ],
      networksAdvanced: onNetwork(net),
      ports: [loopbackPort(5601, { hostPort: props.ports.kibana })],
      healthcheck: {
        // With security on, the status API wants a login; an unauthenticated request to the
        // root is redirected to the login page once Kibana serves (Elastic's compose example).
        test: ["CMD-SHELL", "curl -s -I http://localhost:5601 | grep -q 'HTTP/1.1 302 Found'"],
        interval: "10s",
        timeout: "5s",
        retries: 30,
        startPeriod: "30s",
      },
      restart: "unless-stopped",
      dependsOn: [this.elasticsearch, this.setup],
    });
  }
}
