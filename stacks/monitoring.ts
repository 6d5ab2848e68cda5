/**
 * Prometheus and Grafana. Prometheus runs the scrape config and alert rules
 * rendered from the topology spec (stacks/render/prometheus.ts, the same
 * renderer local mode uses), uploaded into the container as text. Grafana gets
 * the Prometheus datasource with the fixed uid and every dashboard of
 * dashboards/ provisioned read-only. Its admin password comes from the
 * caller (a Terraform variable or a generated random password), never a default,
 * and reaches Grafana as a file (`GF_SECURITY_ADMIN_PASSWORD__FILE`), not as
 * an environment variable.
 *
 * @module
 */
import { Construct } from "constructs";
import { container, volume } from "@cdktf/provider-docker";
import { loopbackPort, onNetwork, pinnedImage, terraformLiteral } from "./container_defaults.ts";
import { IMAGES } from "./images.ts";
import { renderDashboardProvider, renderDatasources } from "./render/grafana.ts";
import {
  ALERT_RULES_FILE,
  dockerTargets,
  PROMETHEUS_CONFIG_FILE,
  renderAlertRules,
  renderPrometheusConfig,
} from "./render/prometheus.ts";
import { repoFile, repoFileHash } from "./repo_files.ts";
import type { JobSpec, Topology } from "./topology.ts";

/** Prometheus's configuration folder in its container. */
export const PROMETHEUS_CONFIG_DIR = "/etc/prometheus";

/** Where the dashboard JSON files are uploaded in the Grafana container. */
export const GRAFANA_DASHBOARDS_DIR = "/etc/grafana/dashboards/txpipe";

/** Grafana's provisioning folder. */
export const GRAFANA_PROVISIONING_DIR = "/etc/grafana/provisioning";

/** File Grafana reads its admin password from. */
export const GRAFANA_PASSWORD_FILE = "/run/secrets/grafana_admin_password";

/** Container name of Prometheus (also its DNS name on the network). */
export const PROMETHEUS_CONTAINER = "txpipe-prometheus";

/** Props of `Monitoring`. */
export interface MonitoringProps {
  readonly topology: Topology;
  readonly networkName: string;
  /** The network alias that all replicas of a job share (Prometheus discovers them by DNS). */
  readonly jobAlias: (job: JobSpec) => string;
  /** Repository paths of the dashboards to provision, e.g. `dashboards/kafka.json`. */
  readonly dashboards: readonly string[];
  /** Grafana admin password (a Terraform expression; sensitive). */
  readonly grafanaAdminPassword: string;
  /** Host port of Grafana on 127.0.0.1. */
  readonly grafanaPort: number;
}

/** Prometheus with rendered config and rules, Grafana with datasource and dashboards. */
export class Monitoring extends Construct {
  readonly prometheus: container.Container;
  readonly grafana: container.Container;
  /** The rendered prometheus.yml uploaded into Prometheus. */
  readonly prometheusConfig: string;
  /** The rendered alert rules uploaded next to it. */
  readonly alertRules: string;

  constructor(scope: Construct, id: string, props: MonitoringProps) {
    super(scope, id);
    const topo = props.topology;
    const promPort = topo.prometheusPort;
    this.prometheusConfig = renderPrometheusConfig(topo, {
      targets: dockerTargets(props.jobAlias),
    });
    this.alertRules = renderAlertRules(topo);

    const promImage = pinnedImage(this, "prometheus-image", IMAGES.prometheus);
    const promData = new volume.Volume(this, "prometheus-data", { name: "txpipe-prometheus-data" });
    this.prometheus = new container.Container(this, "prometheus", {
      name: PROMETHEUS_CONTAINER,
      image: promImage.imageId,
      command: [
        `--config.file=${PROMETHEUS_CONFIG_DIR}/${PROMETHEUS_CONFIG_FILE}`,
        "--storage.tsdb.path=/prometheus",
        "--storage.tsdb.retention.time=7d",
        `--web.listen-address=:${promPort}`,
      ],
      upload: [
        {
          file: `${PROMETHEUS_CONFIG_DIR}/${PROMETHEUS_CONFIG_FILE}`,
          content: terraformLiteral(this.prometheusConfig),
        },
        {
          file: `${PROMETHEUS_CONFIG_DIR}/${ALERT_RULES_FILE}`,
          content: terraformLiteral(this.alertRules),
        },
      ],
      volumes: [{ volumeName: promData.name, containerPath: "/prometheus" }],
      networksAdvanced: onNetwork(props.networkName),
      ports: [loopbackPort(promPort)],
      healthcheck: {
        test: ["CMD-SHELL", `wget -q -O /dev/null http://localhost:${promPort}/-/ready`],
        interval: "10s",
        timeout: "5s",
        retries: 12,
        startPeriod: "10s",
      },
      wait: true,
      waitTimeout: 120,
      restart: "unless-stopped",
    });

    const grafanaImage = pinnedImage(this, "grafana-image", IMAGES.grafana);
    const grafanaData = new volume.Volume(this, "grafana-data", { name: "txpipe-grafana-data" });
    const dashboardUploads: container.ContainerUpload[] = props.dashboards.map((path) => ({
      file: `${GRAFANA_DASHBOARDS_DIR}/${path.split("/").pop()}`,
      source: repoFile(path),
      sourceHash: repoFileHash(path),
    }));
    const health = `http://localhost:${props.grafanaPort}/api/health`;
    this.grafana = new container.Container(this, "grafana", {
      name: "txpipe-grafana",
      image: grafanaImage.imageId,
      env: [
        `GF_SERVER_HTTP_PORT=${props.grafanaPort}`,
        `GF_SERVER_ROOT_URL=http://127.0.0.1:${props.grafanaPort}/`,
        "GF_SECURITY_ADMIN_USER=admin",
        `GF_SECURITY_ADMIN_PASSWORD__FILE=${GRAFANA_PASSWORD_FILE}`,
        "GF_USERS_ALLOW_SIGN_UP=false",
        "GF_AUTH_ANONYMOUS_ENABLED=false",
        "GF_ANALYTICS_REPORTING_ENABLED=false",
        "GF_ANALYTICS_CHECK_FOR_UPDATES=false",
        "GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES=false",
      ],
      upload: [
        {
          file: `${GRAFANA_PROVISIONING_DIR}/datasources/txpipe.yml`,
          content: terraformLiteral(renderDatasources({
            prometheusUrl: `http://${PROMETHEUS_CONTAINER}:${promPort}`,
          })),
        },
        {
          file: `${GRAFANA_PROVISIONING_DIR}/dashboards/txpipe.yml`,
          content: terraformLiteral(renderDashboardProvider({ path: GRAFANA_DASHBOARDS_DIR })),
        },
        { file: GRAFANA_PASSWORD_FILE, content: props.grafanaAdminPassword, permissions: "0444" },
        ...dashboardUploads,
      ],
      volumes: [{ volumeName: grafanaData.name, containerPath: "/var/lib/grafana" }],
      networksAdvanced: onNetwork(props.networkName),
      ports: [loopbackPort(props.grafanaPort)],
      healthcheck: {
        test: [
          "CMD-SHELL",
          `wget -q -O /dev/null ${health} || curl -fsS -o /dev/null ${health}`,
        ],
        interval: "10s",
        timeout: "5s",
        retries: 12,
        startPeriod: "20s",
      },
      wait: true,
      waitTimeout: 180,
      restart: "unless-stopped",
      dependsOn: [this.prometheus],
    });
  }
}
