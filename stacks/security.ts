/**
 * Who may do what on the Kafka cluster: the principals (SCRAM users) and
 * their ACLs, declared once here and applied by the local cluster runner
 * (stacks/local/cluster.ts) and by the Docker stack's topic-creation step.
 *
 * - `admin` is the only super user: the brokers' own connections, topic
 *   creation and these grants.
 * - Each job has its own principal with least privilege, derived from the
 *   names it uses ({@link jobAcls}): the producer writes its topic; a stream
 *   job reads its input and group, writes its outputs, dead letters and
 *   internal topics and holds its transactional ids, all named after its
 *   application id; the evaluator reads. A job may create the topics it
 *   writes (each by its exact name, as it does on first start), never
 *   delete or reconfigure one. An extra `--app-id` gets its own grants by
 *   the same rule.
 * - The rules publisher (`deno task rules`) writes and reads only the
 *   detection rules' control topic; detect reads it ({@link rulesAcls}).
 * - Nothing else is allowed (`allow.everyone.if.no.acl.found=false`).
 *
 * This module is data only: jobs/lib/acl.ts applies it with kafkajs, the
 * Docker stack renders it as `kafka-acls.sh` commands.
 *
 * @module
 */
import { APP_IDS, internalTopicNames, type JobSpec, TOPICS } from "./topology.ts";

/** The super user's name. */
export const ADMIN_USER = "admin";

/** The SASL mechanism of the client and inter-broker listeners. */
export const SCRAM_MECHANISM = "SCRAM-SHA-512";

/** The authorizer every node runs (KRaft's). */
export const AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer";

/**
 * A principal a txpipe process authenticates as: the admin, a job, the topic
 * reader, or the rules publisher.
 */
export type PrincipalName = "admin" | JobSpec["name"] | "consume" | "rules";

/** The Kafka user (SCRAM name) of each principal. */
export const KAFKA_USERS: Readonly<Record<PrincipalName, string>> = {
  admin: ADMIN_USER,
  produce: "txpipe-produce",
  aggregate: "txpipe-aggregate",
  detect: "txpipe-detect",
  evaluate: "txpipe-evaluate",
  consume: "txpipe-consume",
  rules: "txpipe-rules",
};

/** Every principal, the admin first. */
export const PRINCIPALS: readonly PrincipalName[] = [
  "admin",
  "produce",
  "aggregate",
  "detect",
  "evaluate",
  "consume",
  "rules",
];

/** What an ACL is about (Kafka's resource types). */
export type AclResource = "topic" | "group" | "transactional-id" | "cluster";

/** Operations txpipe grants (Kafka's names, lower case). */
export type AclOperation = "read" | "write" | "describe" | "create" | "delete" | "idempotent-write";

/** One allow rule: `principal` may do `operations` on the resource named (or prefixed) `name`. */
export interface AclRule {
  readonly principal: PrincipalName;
  readonly resource: AclResource;
  /** `literal`: exactly `name` (`*`: every resource of the type); `prefixed`: every name starting with it. */
  readonly pattern: "literal" | "prefixed";
  /** The resource name; `kafka-cluster` for the cluster. */
  readonly name: string;
  readonly operations: readonly AclOperation[];
}

/** The names a stream job uses, as its flags set them. */
export interface StreamNames {
  readonly appId: string;
  readonly input: string;
  /** Its output topics (aggregates or anomalies). */
  readonly outputs: readonly string[];
  readonly deadLetters: string;
  /** The control topic it follows (detect's rules, keyed by app id); none for aggregate. */
  readonly control?: string;
}

/** The names each principal's grants are derived from; the defaults are the spec's. */
export interface GrantNames {
  /** The producer's topic. */
  readonly produce?: { readonly topic: string };
  readonly aggregate?: StreamNames;
  readonly detect?: StreamNames;
  /** The topics the evaluator reads. */
  readonly evaluate?: { readonly transactions: string; readonly anomalies: string };
  /** The detection rules' control topic the publisher writes. */
  readonly rules?: { readonly topic: string };
}

const CLUSTER = "kafka-cluster";

function topicRule(
  principal: PrincipalName,
  name: string,
  operations: AclOperation[],
  pattern: AclRule["pattern"] = "literal",
): AclRule {
  return { principal, resource: "topic", pattern, name, operations };
}

/** The grants of the producer writing `topic`. */
export function producerAcls(topic: string): AclRule[] {
  return [
    topicRule("produce", topic, ["write", "describe", "create"]),
    // Implied by WRITE since Kafka 3.0 (KIP-679); granted explicitly as the
    // idempotent producer's cluster-level right.
    {
      principal: "produce",
      resource: "cluster",
      pattern: "literal",
      name: CLUSTER,
      operations: ["idempotent-write"],
    },
  ];
}

/**
 * The grants of a stream job (`aggregate` or `detect`) with these names: it
 * reads its input; writes its outputs and dead letters; reads and writes its
 * internal topics (`<app-id>-repartition`, `-changelog`, ...); joins and
 * commits in the groups named after its app id (its own and its stages');
 * and holds the transactional ids that start with it.
 */
export function streamAcls(job: "aggregate" | "detect", n: StreamNames): AclRule[] {
  const internal = internalTopicNames(n.appId);
  const own = job === "aggregate"
    ? [internal.repartition, internal.rekeyChangelog, internal.changelog]
    : [internal.changelog];
  return [
    topicRule(job, n.input, ["read", "describe"]),
    ...(n.control === undefined ? [] : [topicRule(job, n.control, ["read", "describe"])]),
    ...[...n.outputs, n.deadLetters].map((t) => topicRule(job, t, ["write", "describe", "create"])),
    ...own.map((t) => topicRule(job, t, ["read", "write", "describe", "create"])),
    {
      principal: job,
      resource: "group",
      pattern: "prefixed",
      name: n.appId,
      operations: ["read", "describe"],
    },
    {
      principal: job,
      resource: "transactional-id",
      pattern: "prefixed",
      name: n.appId,
      operations: ["write", "describe"],
    },
    {
      principal: job,
      resource: "cluster",
      pattern: "literal",
      name: CLUSTER,
      operations: ["idempotent-write"],
    },
  ];
}

/** The evaluator's grants: it reads both topics, with no consumer group (jobs/evaluate.ts). */
export function evaluatorAcls(transactions: string, anomalies: string): AclRule[] {
  return [
    topicRule("evaluate", transactions, ["read", "describe"]),
    topicRule("evaluate", anomalies, ["read", "describe"]),
  ];
}

/**
 * The topic reader's grants (`deno task consume`): it reads any topic, with
 * no consumer group (jobs/consume.ts), and writes nothing.
 */
export function consumeAcls(): AclRule[] {
  return [topicRule("consume", "*", ["read", "describe"])];
}

/** The rules publisher's transactional ids start with this. */
export const RULES_PREFIX = "txpipe-rules-";

/**
 * The rules publisher's grants (`deno task rules`): it writes the control
 * topic (never creates it: the spec does) and reads it back to learn the
 * version in force, with no consumer group (jobs/lib/control.ts); it
 * publishes in a transaction whose id (`txpipe-rules-<app id>`) fences a
 * concurrent publisher of the same rules. Nothing else: no group, not the
 * transactions, not the anomalies.
 */
export function rulesAcls(topic: string): AclRule[] {
  return [
    topicRule("rules", topic, ["read", "write", "describe"]),
    {
      principal: "rules",
      resource: "transactional-id",
      pattern: "prefixed",
      name: RULES_PREFIX,
      operations: ["write", "describe"],
    },
    {
      principal: "rules",
      resource: "cluster",
      pattern: "literal",
      name: CLUSTER,
      operations: ["idempotent-write"],
    },
  ];
}

/** The names the jobs use by default: the spec's topics and app ids. */
export function defaultNames(): Required<GrantNames> {
  return {
    produce: { topic: TOPICS.transactions },
    aggregate: {
      appId: APP_IDS.aggregate,
      input: TOPICS.transactions,
      outputs: [TOPICS.aggregates],
      deadLetters: TOPICS.deadLetters,
    },
    detect: {
      appId: APP_IDS.detect,
      input: TOPICS.transactions,
      outputs: [TOPICS.anomalies],
      deadLetters: TOPICS.deadLetters,
      control: TOPICS.detectRules,
    },
    evaluate: { transactions: TOPICS.transactions, anomalies: TOPICS.anomalies },
    rules: { topic: TOPICS.detectRules },
  };
}

/** Every principal's grants for these names (the defaults: {@link defaultNames}). */
export function jobAcls(names: GrantNames = defaultNames()): AclRule[] {
  return [
    ...(names.produce ? producerAcls(names.produce.topic) : []),
    ...(names.aggregate ? streamAcls("aggregate", names.aggregate) : []),
    ...(names.detect ? streamAcls("detect", names.detect) : []),
    ...(names.evaluate ? evaluatorAcls(names.evaluate.transactions, names.evaluate.anomalies) : []),
    ...consumeAcls(),
    ...(names.rules ? rulesAcls(names.rules.topic) : []),
  ];
}

/**
 * Grants on every resource whose name starts with `prefix`, by each job's
 * role: the producer writes such topics; aggregate and detect read and write
 * them and use such groups and transactional ids; the evaluator reads them;
 * the rules publisher reads and writes them (its control topics).
 * For scratch names only: the test suite's (`test`) and the bench's (`bench`),
 * on a local cluster. The defaults never use it.
 */
export function scratchAcls(prefix: string): AclRule[] {
  const streams = (["aggregate", "detect"] as const).flatMap((job): AclRule[] => [
    topicRule(job, prefix, ["read", "write", "describe", "create"], "prefixed"),
    {
      principal: job,
      resource: "group",
      pattern: "prefixed",
      name: prefix,
      operations: ["read", "describe"],
    },
    {
      principal: job,
      resource: "transactional-id",
      pattern: "prefixed",
      name: prefix,
      operations: ["write", "describe"],
    },
  ]);
  return [
    topicRule("produce", prefix, ["write", "describe", "create"], "prefixed"),
    ...streams,
    topicRule("evaluate", prefix, ["read", "describe"], "prefixed"),
    topicRule("rules", prefix, ["read", "write", "describe"], "prefixed"),
  ];
}

/** One line per rule, as the docs and `deno task cluster acls` show them. */
export function describeAcl(r: AclRule): string {
  const name = r.resource === "cluster"
    ? "the cluster"
    : `${r.resource} ${r.pattern === "prefixed" ? `${r.name}*` : r.name}`;
  return `User:${KAFKA_USERS[r.principal]} may ${r.operations.join(", ")} on ${name}`;
}
