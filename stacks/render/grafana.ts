/**
 * Renders Grafana's provisioning files: the Prometheus datasource (with a
 * fixed uid that every dashboard in dashboards/ refers to) and the dashboard
 * provider that loads those dashboards from a folder in the container.
 *
 * @module
 */
import { stringify } from "yaml";

/** The uid of the provisioned Prometheus datasource; every dashboard panel uses it. */
export const PROMETHEUS_DATASOURCE_UID = "txpipe-prometheus";

/** The datasource reference a dashboard panel or target carries. */
export const PROMETHEUS_DATASOURCE_REF = {
  type: "prometheus",
  uid: PROMETHEUS_DATASOURCE_UID,
} as const;

/** Options of `renderDatasources`. */
export interface DatasourceOptions {
  /** URL Grafana's backend reaches Prometheus at, e.g. `http://txpipe-prometheus:9090`. */
  readonly prometheusUrl: string;
  /** Prometheus's scrape interval, so `$__rate_interval` fits it. Default "15s". */
  readonly scrapeInterval?: string;
}

/** `provisioning/datasources/txpipe.yml`: the Prometheus datasource with the fixed uid. */
export function renderDatasources(options: DatasourceOptions): string {
  return stringify({
    apiVersion: 1,
    datasources: [{
      name: "Prometheus",
      uid: PROMETHEUS_DATASOURCE_UID,
      type: "prometheus",
      access: "proxy",
      url: options.prometheusUrl,
      isDefault: true,
      editable: false,
      jsonData: { timeInterval: options.scrapeInterval ?? "15s", httpMethod: "POST" },
    }],
  });
}

/** Options of `renderDashboardProvider`. */
export interface DashboardProviderOptions {
  /** Folder in the Grafana container that holds the dashboard JSON files. */
  readonly path: string;
  /** Grafana folder the dashboards appear in. Default "txpipe". */
  readonly folder?: string;
}

/** `provisioning/dashboards/txpipe.yml`: loads every JSON file of `path`, read-only. */
export function renderDashboardProvider(options: DashboardProviderOptions): string {
  return stringify({
    apiVersion: 1,
    providers: [{
      name: "txpipe",
      type: "file",
      folder: options.folder ?? "txpipe",
      disableDeletion: true,
      allowUiUpdates: false,
      updateIntervalSeconds: 30,
      options: { path: options.path, foldersFromFilesStructure: false },
    }],
  });
}
