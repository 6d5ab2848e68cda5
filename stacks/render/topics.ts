/**
 * Renders the shell script that provisions every topic of the spec with the
 * tools of the `apache/kafka` image: create when absent (`--if-not-exists`),
 * then set every topic config (`kafka-configs --alter --add-config`, which is
 * idempotent), then describe the result for the container's log.
 *
 * Partition counts can only grow in Kafka; an existing topic with fewer
 * partitions than the spec is reported and the script fails rather than
 * silently diverging from the spec.
 *
 * @module
 */
import type { TopicSpec } from "../topology.ts";

/** Folder of the Kafka command-line tools in the `apache/kafka` image. */
export const KAFKA_BIN = "/opt/kafka/bin";

/** Options of `renderTopicsScript`. */
export interface TopicsScriptOptions {
  /** `host:port,...` the tools connect to. */
  readonly bootstrap: string;
  /** Folder of kafka-topics.sh and kafka-configs.sh. Default `/opt/kafka/bin`. */
  readonly bin?: string;
}

/** The kafka-topics.sh arguments (after `--bootstrap-server`) that create one topic as declared. */
export function createTopicArgs(topic: TopicSpec): string[] {
  const args = [
    "--create",
    "--if-not-exists",
    "--topic",
    topic.name,
    "--partitions",
    String(topic.partitions),
    "--replication-factor",
    String(topic.replicationFactor),
  ];
  for (const [key, value] of Object.entries(topic.config)) {
    args.push("--config", `${key}=${value}`);
  }
  return args;
}

/** A bash script (`set -euo pipefail`) that provisions every topic. */
export function renderTopicsScript(
  topics: readonly TopicSpec[],
  options: TopicsScriptOptions,
): string {
  const bin = options.bin ?? KAFKA_BIN;
  const lines = [
    "set -euo pipefail",
    `BOOTSTRAP=${quote(options.bootstrap)}`,
    `topics() { ${bin}/kafka-topics.sh --bootstrap-server "$BOOTSTRAP" "$@"; }`,
    `configs() { ${bin}/kafka-configs.sh --bootstrap-server "$BOOTSTRAP" "$@"; }`,
    `partitions() { topics --describe --topic "$1" | grep -c 'Partition: '; }`,
    `echo "provisioning ${topics.length} topics on $BOOTSTRAP"`,
  ];
  for (const topic of topics) {
    const configs = Object.entries(topic.config).map(([k, v]) => {
      if (v.includes(",")) {
        throw new Error(
          `topic ${topic.name}: config ${k} must not contain a comma for --add-config; got "${v}"`,
        );
      }
      return `${k}=${v}`;
    });
    lines.push(
      "",
      `# ${topic.name}: ${topic.purpose.replaceAll("\n", " ")}`,
      `topics ${createTopicArgs(topic).map(quote).join(" ")}`,
      `configs --alter --entity-type topics --entity-name ${quote(topic.name)} ` +
        `--add-config ${quote(configs.join(","))}`,
      `[ "$(partitions ${quote(topic.name)})" -ge ${topic.partitions} ] || ` +
        `{ echo "topic ${topic.name} has fewer partitions than the ${topic.partitions} ` +
        `the spec declares" >&2; exit 1; }`,
    );
  }
  lines.push("", "topics --describe --exclude-internal");
  return lines.join("\n") + "\n";
}

function quote(word: string): string {
  return /^[A-Za-z0-9_.,:=\/@-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}
