/**
 * Consumer lag two ways, for tests that compare them: as Kafka's own
 * ConsumerGroupCommand (the tool behind `kafka-consumer-groups.sh
 * --describe`) prints it, and as a job's /metrics exports it
 * (`txpipe_consumer_lag`).
 *
 * @module
 */
import { join } from "node:path";
import { type ClientConfig, withClientConfig } from "./client_config.ts";
import { homeDir } from "../../stacks/local/cluster.ts";
import { BROKERS } from "./cluster.ts";

/** One partition row of `--describe --group`. */
export interface GroupRow {
  group: string;
  topic: string;
  partition: number;
  /** CURRENT-OFFSET: the group's committed offset; null when none ("-"). */
  committed: number | null;
  /** LOG-END-OFFSET. */
  end: number;
  /** LAG; null when nothing is committed ("-"). */
  lag: number | null;
}

/** What ConsumerGroupCommand's `--describe` printed: the partition rows, and any other line. */
export interface Described {
  rows: GroupRow[];
  /** Lines outside the table, e.g. "Warning: Consumer group 'g' is rebalancing." */
  notes: string[];
}

/**
 * The partition rows of ConsumerGroupCommand's `--describe` output (its
 * table's header names the columns; with several `--group`s, one table per
 * group, each with its header) and the lines outside the tables.
 */
export function parseDescribe(text: string): Described {
  const lines = text.split("\n").map((l) => l.trim()).filter((l) => l !== "");
  const isHeader = (l: string) => /^GROUP\s/.test(l) && /\sLAG\s/.test(` ${l} `);
  const headerAt = lines.findIndex(isHeader);
  if (headerAt === -1) return { rows: [], notes: lines };
  const header = lines[headerAt].split(/\s+/);
  const col = (name: string) => {
    const i = header.indexOf(name);
    if (i === -1) throw new Error(`ConsumerGroupCommand: expected a ${name} column in ${header}`);
    return i;
  };
  const [group, topic, partition, committed, end, lag] = [
    "GROUP",
    "TOPIC",
    "PARTITION",
    "CURRENT-OFFSET",
    "LOG-END-OFFSET",
    "LAG",
  ].map(col);
  const num = (s: string | undefined) => s === undefined || s === "-" ? null : Number(s);
  const rows: GroupRow[] = [];
  const notes = lines.slice(0, headerAt);
  for (const line of lines.slice(headerAt + 1)) {
    if (isHeader(line)) continue; // the next group's table (same columns)
    const f = line.split(/\s+/);
    if (f.length < header.length - 3 || !/^\d+$/.test(f[partition] ?? "")) {
      notes.push(line);
      continue;
    }
    rows.push({
      group: f[group],
      topic: f[topic],
      partition: Number(f[partition]),
      committed: num(f[committed]),
      end: num(f[end]) ?? 0,
      lag: num(f[lag]),
    });
  }
  return {
    rows: rows.sort((a, b) => a.group.localeCompare(b.group) || a.partition - b.partition),
    notes,
  };
}

/**
 * Runs Kafka's ConsumerGroupCommand `--describe --group G` for each of
 * `groups` in one run (one JVM: the tool's start-up is most of its time)
 * and returns what it printed.
 */
export async function describeGroups(groups: readonly string[]): Promise<Described> {
  const out = await withClientConfig((config) => describeWith(config, groups));
  const text = new TextDecoder().decode(out.stdout);
  if (out.code !== 0) {
    throw new Error(
      `ConsumerGroupCommand --describe --group ${groups.join(" --group ")} exited ${out.code}: ` +
        new TextDecoder().decode(out.stderr).slice(-1000),
    );
  }
  return parseDescribe(text);
}

/** Runs ConsumerGroupCommand --describe as the admin (its client config). */
function describeWith(
  config: ClientConfig,
  groups: readonly string[],
): Promise<Deno.CommandOutput> {
  return new Deno.Command("java", {
    args: [
      // A short-lived tool: a small heap and no optimizing compiler start it faster.
      "-Xmx256m",
      "-XX:TieredStopAtLevel=1",
      "-XX:+UseSerialGC",
      "-cp",
      `${join(homeDir(), "kafka", "lib")}/*`,
      "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
      "--bootstrap-server",
      BROKERS.join(","),
      "--describe",
      ...groups.flatMap((g) => ["--group", g]),
      ...config.args("--command-config"),
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
}

/**
 * `txpipe_consumer_lag` of `processor` in a /metrics text, by partition (a
 * partition appears at most once per instance).
 */
export function parseLag(metrics: string, processor: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const line of metrics.split("\n")) {
    const m = /^txpipe_consumer_lag\{([^}]*)\} (\S+)$/.exec(line);
    if (!m) continue;
    const labels = Object.fromEntries(
      [...m[1].matchAll(/(\w+)="([^"]*)"/g)].map(([, k, v]) => [k, v]),
    );
    if (labels.processor === processor) out.set(Number(labels.partition), Number(m[2]));
  }
  return out;
}

/** Scrapes the /metrics of the job on `port` and returns its lag of `processor`. */
export async function scrapeLag(port: number, processor: string): Promise<Map<number, number>> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  if (!res.ok) throw new Error(`GET :${port}/metrics: expected 200, got ${res.status}`);
  return parseLag(await res.text(), processor);
}
