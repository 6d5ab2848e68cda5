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
 * On a secured cluster (`security`), every tool connects as the admin
 * (SASL/SCRAM, `--command-config`), and after the topics the script creates or
 * updates each principal's SCRAM credentials (`kafka-configs --alter
 * --entity-type users --add-config SCRAM-SHA-512=[password=...]`) and adds
 * each ACL rule of stacks/security.ts (`kafka-acls --add`). Both are
 * idempotent. The passwords are read from environment variables; none is
 * ever in the script.
 *
 * @module
 */
import {
  type AclOperation,
  type AclRule,
  ADMIN_USER,
  KAFKA_USERS,
  SCRAM_MECHANISM,
} from "../security.ts";
import { adminClientProperties } from "../kafka_security.ts";
import type { TopicSpec } from "../topology.ts";

/** Folder of the Kafka command-line tools in the `apache/kafka` image. */
export const KAFKA_BIN = "/opt/kafka/bin";

/** The environment variable holding the admin's password in Kafka containers and the setup job. */
export const ADMIN_PASSWORD_ENV = "TXPIPE_KAFKA_ADMIN_PASSWORD";

/** The SCRAM credentials of one user the script creates or updates. */
export interface ScramUser {
  /** The Kafka user name. */
  readonly user: string;
  /** The environment variable holding its password. */
  readonly passwordEnv: string;
}

/** What the script does on a secured cluster. */
export interface TopicsSecurity {
  /** The environment variable holding the admin's password. Default {@link ADMIN_PASSWORD_ENV}. */
  readonly adminPasswordEnv?: string;
  /** The users whose SCRAM credentials it sets (the jobs' principals; not the admin). */
  readonly users: readonly ScramUser[];
  /** The ACL rules it adds. */
  readonly acls: readonly AclRule[];
}

/** Options of `renderTopicsScript`. */
export interface TopicsScriptOptions {
  /** `host:port,...` the tools connect to. */
  readonly bootstrap: string;
  /** Folder of kafka-topics.sh, kafka-configs.sh and kafka-acls.sh. Default `/opt/kafka/bin`. */
  readonly bin?: string;
  /** Connect as the admin and apply users and ACLs; absent: a cluster without authentication. */
  readonly security?: TopicsSecurity;
}

/** Kafka's names of the operations (as kafka-acls.sh's `--operation` takes them). */
export const ACL_OPERATION_NAMES: Readonly<Record<AclOperation, string>> = {
  read: "Read",
  write: "Write",
  describe: "Describe",
  create: "Create",
  delete: "Delete",
  "idempotent-write": "IdempotentWrite",
};

/** The kafka-acls.sh arguments (after the connection flags) that add one rule, allowed from any host. */
export function aclArgs(rule: AclRule): string[] {
  const args = ["--add", "--allow-principal", `User:${KAFKA_USERS[rule.principal]}`];
  for (const op of rule.operations) args.push("--operation", ACL_OPERATION_NAMES[op]);
  switch (rule.resource) {
    case "topic":
      args.push("--topic", rule.name);
      break;
    case "group":
      args.push("--group", rule.name);
      break;
    case "transactional-id":
      args.push("--transactional-id", rule.name);
      break;
    case "cluster":
      args.push("--cluster");
      break;
  }
  if (rule.pattern === "prefixed") args.push("--resource-pattern-type", "prefixed");
  return args;
}

/**
 * Bash lines that write the admin's client config `towards` the brokers or
 * controllers to `path` (a word for inside double quotes), the password read
 * from `$passwordEnv` (never written into the script). Run under `umask 077`.
 */
export function writeAdminConfigLines(
  path: string,
  towards: "brokers" | "controllers",
  passwordEnv: string = ADMIN_PASSWORD_ENV,
): string[] {
  const marker = "\u0000";
  const words = Object.entries(adminClientProperties(marker, towards)).map(([k, v]) =>
    `"${`${k}=${v}`.replace(/[\\"$`]/g, (c) => `\\${c}`).replace(marker, `\${${passwordEnv}}`)}"`
  );
  return [`printf '%s\\n' ${words.join(" ")} > "${path}"`];
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
  const security = options.security;
  const adminEnv = security?.adminPasswordEnv ?? ADMIN_PASSWORD_ENV;
  const connect = security
    ? `--bootstrap-server "$BOOTSTRAP" --command-config "$ADMIN_CONFIG"`
    : `--bootstrap-server "$BOOTSTRAP"`;
  const lines = ["set -euo pipefail", `BOOTSTRAP=${quote(options.bootstrap)}`];
  if (security) {
    lines.push(
      `: "\${${adminEnv}:?the password of ${ADMIN_USER} is not set}"`,
      ...security.users.map((u) =>
        `: "\${${u.passwordEnv}:?the password of ${u.user} is not set}"`
      ),
      "umask 077",
      `ADMIN_CONFIG="$(mktemp -d)/${ADMIN_USER}.properties"`,
      `# The ${ADMIN_USER}'s client config (${SCRAM_MECHANISM}); the password comes from the environment.`,
      ...writeAdminConfigLines("$ADMIN_CONFIG", "brokers", adminEnv),
    );
  }
  lines.push(
    `topics() { ${bin}/kafka-topics.sh ${connect} "$@"; }`,
    `configs() { ${bin}/kafka-configs.sh ${connect} "$@"; }`,
  );
  if (security) {
    lines.push(
      `acls() { ${bin}/kafka-acls.sh ${connect} "$@"; }`,
      `scram_user() { configs --alter --entity-type users --entity-name "$1" ` +
        `--add-config "${SCRAM_MECHANISM}=[password=$2]"; }`,
    );
  }
  lines.push(
    `partitions() { topics --describe --topic "$1" | grep -c 'Partition: '; }`,
    `echo "provisioning ${topics.length} topics on $BOOTSTRAP"`,
  );
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
  if (security) {
    lines.push(
      "",
      `# Each principal's ${SCRAM_MECHANISM} credentials (created, or updated to the current password).`,
      `echo "setting the ${SCRAM_MECHANISM} credentials of ${security.users.length} users"`,
      ...security.users.map((u) => `scram_user ${quote(u.user)} "$${u.passwordEnv}"`),
      "",
      "# Least-privilege grants (stacks/security.ts); adding an existing ACL changes nothing.",
      `echo "adding ${security.acls.length} ACL rules"`,
      ...security.acls.map((r) => `acls ${aclArgs(r).map(quote).join(" ")}`),
      "acls --list",
    );
  }
  lines.push("", "topics --describe --exclude-internal");
  return lines.join("\n") + "\n";
}

function quote(word: string): string {
  return /^[A-Za-z0-9_.,:=\/@-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}
