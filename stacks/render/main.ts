/**
 * Writes the rendered Prometheus files (prometheus.yml and txpipe_alerts.yml)
 * into a folder, for a Prometheus started by hand or by the local runner.
 * Nothing rendered is committed: render again after changing the spec.
 *
 *   deno run -A stacks/render/main.ts [--targets local|docker] [--mode cluster|single] [DIR]
 *
 * DIR defaults to `.cache/rendered`. `--targets local` (the default) points
 * every scrape target at 127.0.0.1; `docker` uses container names, as the
 * Docker stack does.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { type ClusterMode, topology } from "../topology.ts";
import {
  ALERT_RULES_FILE,
  type AlertOptions,
  dockerTargets,
  localTargets,
  PROMETHEUS_CONFIG_FILE,
  renderAlertRules,
  renderPrometheusConfig,
  type ScrapeTargets,
} from "./prometheus.ts";

/** Default output folder (git-ignored). */
export const DEFAULT_RENDER_DIR = ".cache/rendered";

/** Options of `writePrometheusFiles`. */
export interface WritePrometheusOptions {
  /** Default: cluster. */
  readonly mode?: ClusterMode;
  /** Default: `localTargets()`. */
  readonly targets?: ScrapeTargets;
  readonly scrapeInterval?: string;
  readonly alerts?: AlertOptions;
}

/** Renders prometheus.yml and the alert rules into `dir`; returns the two file paths. */
export async function writePrometheusFiles(
  dir: string,
  options: WritePrometheusOptions = {},
): Promise<{ config: string; rules: string }> {
  const topo = topology(options.mode ?? "cluster");
  await Deno.mkdir(dir, { recursive: true });
  const config = `${dir}/${PROMETHEUS_CONFIG_FILE}`;
  const rules = `${dir}/${ALERT_RULES_FILE}`;
  await Deno.writeTextFile(
    config,
    renderPrometheusConfig(topo, {
      targets: options.targets ?? localTargets(),
      scrapeInterval: options.scrapeInterval,
    }),
  );
  await Deno.writeTextFile(rules, renderAlertRules(topo, options.alerts));
  return { config, rules };
}

const USAGE = "usage: deno run -A stacks/render/main.ts [--targets local|docker] " +
  "[--mode cluster|single] [DIR]";

async function main(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        targets: { type: "string", default: "local" },
        mode: { type: "string", default: "cluster" },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (values.targets !== "local" && values.targets !== "docker") {
    console.error(`--targets: expected "local" or "docker", got "${values.targets}"\n${USAGE}`);
    return 2;
  }
  if (values.mode !== "cluster" && values.mode !== "single") {
    console.error(`--mode: expected "cluster" or "single", got "${values.mode}"\n${USAGE}`);
    return 2;
  }
  if (positionals.length > 1) {
    console.error(`expected at most one folder, got ${positionals.length}\n${USAGE}`);
    return 2;
  }
  const dir = positionals[0] ?? DEFAULT_RENDER_DIR;
  const written = await writePrometheusFiles(dir, {
    mode: values.mode,
    targets: values.targets === "docker" ? dockerTargets() : localTargets(),
  });
  console.log(`wrote ${written.config}\nwrote ${written.rules}`);
  return 0;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
