/**
 * The rules publisher: changes the detection thresholds of running detect
 * instances, without a restart (docs/operations.md, "Changing rules without
 * a restart").
 *
 *   publish --config FILE   the file checked first (as `deno task detect
 *                           --config` takes it), then written as the next
 *                           version of the app id's rules
 *   show                    the version in force and its thresholds
 *   reset                   back to each detect's own --config or defaults,
 *                           as the next version
 *
 * The rules live on the compacted control topic `txpipe-detect-rules`, one
 * record per version, key: the detect app id (jobs/lib/detect_rules.ts).
 * Running detect instances follow it and switch each input partition at its
 * next batch (jobs/detect.ts).
 *
 * One version number per change, never twice. The publisher writes in a
 * Kafka transaction whose id is the app id's (`txpipe-rules-<app id>`):
 * connecting fences any other publisher of the same rules and waits until
 * its transaction is over; only then does it read the version in force
 * (read_committed, to the topic's end) and write that + 1. Two publishes at
 * once therefore never write the same version: the one fenced fails and
 * says so. Reset writes a record with no config rather than a tombstone,
 * so the versions keep rising after it (a tombstone, which compaction later
 * removes, would let them start again at 1).
 *
 * It connects as its own principal, `txpipe-rules`, which may read and write
 * the control topic and nothing else (stacks/security.ts). Kafka unreachable:
 * one sentence, exit 1; a bad flag or config file: exit 2, nothing written.
 *
 * @module
 */
import type { Admin, Kafka } from "kafkajs";
import { hostname } from "node:os";
import { APP_IDS, TOPICS } from "../stacks/topology.ts";
import { RULES_PREFIX } from "../stacks/security.ts";
import { defineCommand, flagSource, parseCommandLine } from "./lib/cli.ts";
import { connectionFlags, exportSecurityFlags } from "./lib/job.ts";
import {
  connectWithRetry,
  createKafka,
  KafkaConnectError,
  missingCredentialsHint,
  probeKafka,
} from "./lib/kafka.ts";
import { CredentialsError } from "./lib/credentials.ts";
import { ControlReader } from "./lib/control.ts";
import {
  checkRulesConfig,
  encodeRulesRecord,
  nextRules,
  OWN_RULES,
  type PublishedRules,
  rulesConfig,
  RulesRecordError,
} from "./lib/detect_rules.ts";
import { DEFAULT_DETECT_CONFIG } from "./lib/rules.ts";

/** The subcommands. */
export const RULES_SUBCOMMANDS = ["publish", "show", "reset"] as const;

/** The publisher's flags. */
export const RULES_COMMAND = defineCommand({
  name: "deno task rules",
  summary: "publish, show or reset the detection rules running detect instances follow",
  usage: "deno task rules <publish --config FILE|show|reset> [flags]",
  flags: {
    ...connectionFlags(),
    config: {
      kind: "string",
      help: "publish: JSON file of thresholds, as `deno task detect --config` takes it " +
        "(partial is fine: the rest are the defaults of jobs/config/detect_defaults.json)",
      placeholder: "FILE",
    },
    "app-id": {
      kind: "string",
      default: APP_IDS.detect,
      help: "the detect app id whose rules these are (the record's key)",
    },
    "rules-topic": {
      kind: "string",
      default: TOPICS.detectRules,
      help: "the control topic, as detect's --rules-topic",
    },
    "published-by": {
      kind: "string",
      help: "who publishes, recorded with the rules (default: $USER@host)",
      placeholder: "NAME",
    },
  },
  examples: [
    "deno task rules publish --config my_thresholds.json",
    "deno task rules show",
    "deno task rules reset",
    "deno task rules publish --config strict.json --app-id my-detect",
  ],
});

const NAME = RULES_COMMAND.name;

/** A problem worth one sentence and an exit code: 2 for usage, 1 for the rest. */
class Refused extends Error {
  constructor(message: string, readonly code: 1 | 2) {
    super(message);
  }
}

/**
 * The thresholds in `path`, checked as a control record's config: the JSON
 * object as given, to publish. Throws a usage error (exit 2) naming the
 * file and what is wrong.
 */
export async function readRulesFile(
  path: string,
): Promise<{ config: Record<string, unknown> }> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    throw new Refused(`--config: expected a readable JSON file, got "${path}" (${err})`, 2);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Refused(`--config: expected JSON in ${path} (${(err as Error).message})`, 2);
  }
  try {
    checkRulesConfig(json);
  } catch (err) {
    throw new Refused(`--config: ${(err as Error).message} (in ${path}); nothing published`, 2);
  }
  return { config: json as Record<string, unknown> };
}

/** What `deno task rules show` prints: the rules in force for one app id. */
export function describeRules(appId: string, topic: string, r: PublishedRules): string {
  return JSON.stringify(
    {
      appId,
      topic,
      version: r.version,
      offset: r.offset >= 0 ? r.offset : null,
      publishedAt: r.publishedAt === undefined ? null : new Date(r.publishedAt).toISOString(),
      publishedBy: r.publishedBy ?? null,
      config: r.config,
      thresholds: r.config === null
        ? "the job's own --config or defaults"
        : rulesConfig(r, DEFAULT_DETECT_CONFIG),
    },
    null,
    2,
  );
}

/** Reads the rules in force for `appId` (read_committed, to the topic's end). */
async function rulesInForce(
  kafka: Kafka,
  admin: Admin,
  topic: string,
  appId: string,
): Promise<PublishedRules> {
  const reader = await ControlReader.start<PublishedRules>({
    kafka,
    admin,
    spec: {
      topic,
      key: appId,
      decode: (value, offset, previous) => nextRules(previous, value, offset),
    },
    follow: false,
  });
  for (const r of reader.refusals) {
    console.error(`${NAME}: note: ${topic}@${r.offset} is not in force: ${r.reason}`);
  }
  return reader.current ?? OWN_RULES;
}

/**
 * Writes the next version of `appId`'s rules (`config` null: the job's own)
 * in a transaction that fences any concurrent publisher of the same rules,
 * after reading the version in force. Returns what was written, and where.
 */
async function publishNext(
  kafka: Kafka,
  admin: Admin,
  o: { topic: string; appId: string; config: Record<string, unknown> | null; by: string },
): Promise<{ before: PublishedRules; after: PublishedRules } | undefined> {
  const producer = kafka.producer({
    transactionalId: `${RULES_PREFIX}${o.appId}`,
    idempotent: true,
    maxInFlightRequests: 1,
    allowAutoTopicCreation: false,
    retry: { retries: 5, initialRetryTime: 300, maxRetryTime: 3000 },
  });
  // InitProducerId: fences any other publisher of these rules and waits for its transaction.
  await producer.connect();
  try {
    const before = await rulesInForce(kafka, admin, o.topic, o.appId);
    if (o.config === null && before.config === null) return undefined; // nothing to reset
    const value = encodeRulesRecord({
      version: before.version + 1,
      config: o.config,
      publishedAt: Date.now(),
      publishedBy: o.by,
    });
    nextRules(before, value, -1); // the record detect will read: checked once more before writing
    const txn = await producer.transaction();
    let offset = -1;
    try {
      const [meta] = await txn.send({
        topic: o.topic,
        acks: -1,
        messages: [{ key: o.appId, value, partition: 0 }],
      });
      offset = Number(meta?.baseOffset ?? -1);
      await txn.commit();
    } catch (err) {
      await txn.abort().catch(() => {});
      const type = (err as { type?: string })?.type ?? "";
      if (/PRODUCER_FENCED|INVALID_PRODUCER_EPOCH/.test(type)) {
        throw new Refused(
          `another publish of the rules for ${o.appId} ran at the same time and fenced this ` +
            "one; nothing was written by this one: run `deno task rules show`, then again",
          1,
        );
      }
      throw err;
    }
    return { before, after: nextRules(before, value, offset) };
  } finally {
    await producer.disconnect().catch(() => {});
  }
}

async function main(): Promise<number> {
  const { values: v, positional } = parseCommandLine(RULES_COMMAND);
  const usage = (message: string) => {
    console.error(`${NAME}: ${message}\nRun with --help for usage.`);
    return 2;
  };
  const sub = positional[0];
  if (positional.length !== 1 || !(RULES_SUBCOMMANDS as readonly string[]).includes(sub)) {
    return usage(
      `expected one command, ${RULES_SUBCOMMANDS.join(", ")}; got ${
        positional.length === 0 ? "none" : `"${positional.join(" ")}"`
      }`,
    );
  }
  if (sub === "publish" && v.config === undefined) {
    return usage("--config: expected a JSON file of thresholds to publish, got nothing");
  }
  if (sub !== "publish" && flagSource("config") === "flag") {
    return usage(`--config: only publish takes a file, got one for ${sub}`);
  }
  exportSecurityFlags(v);
  const by = v.publishedBy ?? `${Deno.env.get("USER") ?? "unknown"}@${hostname()}`;
  let kafka: Kafka | undefined;
  let admin: Admin | undefined;
  try {
    // Checked before Kafka is reached: a bad file is never written.
    const file = sub === "publish" ? await readRulesFile(v.config!) : undefined;
    kafka = createKafka({ principal: "rules", clientId: "txpipe-rules", brokers: v.brokers });
    const client = kafka;
    await connectWithRetry(v.brokers, () => probeKafka(v.brokers, "txpipe-rules", "rules"), {
      attempts: v.connectAttempts,
      hint: missingCredentialsHint("rules"),
      who: "txpipe-rules",
      onRetry: (attempt, delay) =>
        console.error(
          `${NAME}: waiting for Kafka at ${v.brokers.join(",")} ` +
            `(attempt ${attempt}/${v.connectAttempts} failed, next in ${delay / 1000} s)`,
        ),
    });
    admin = client.admin();
    await admin.connect();
    if (!(await admin.listTopics()).includes(v.rulesTopic)) {
      throw new Refused(
        `the control topic "${v.rulesTopic}" does not exist on ${v.brokers.join(",")} ` +
          "(`deno task cluster up` creates it, as the Docker stack's topic step does)",
        1,
      );
    }
    if (sub === "show") {
      console.log(
        describeRules(
          v.appId,
          v.rulesTopic,
          await rulesInForce(client, admin, v.rulesTopic, v.appId),
        ),
      );
      return 0;
    }
    const written = await publishNext(client, admin, {
      topic: v.rulesTopic,
      appId: v.appId,
      config: file?.config ?? null,
      by,
    });
    if (written === undefined) {
      console.error(`${NAME}: nothing to reset: ${v.appId} runs on its own --config or defaults`);
      return 0;
    }
    console.error(
      `${NAME}: ${sub === "reset" ? "reset" : "published"} the rules of ${v.appId}: version ` +
        `${written.before.version} → ${written.after.version} (${v.rulesTopic}@${written.after.offset}); ` +
        "running detect instances switch at their next batch",
    );
    return 0;
  } catch (err) {
    if (err instanceof Refused) {
      console.error(`${NAME}: ${err.message}`);
      return err.code;
    }
    if (
      err instanceof KafkaConnectError || err instanceof CredentialsError ||
      err instanceof RulesRecordError
    ) {
      console.error(`${NAME}: ${err.message}`);
      return 1;
    }
    const type = (err as { type?: string })?.type;
    if (type && /AUTHORIZATION_FAILED/.test(type)) {
      console.error(
        `${NAME}: Kafka refused txpipe-rules (${type}): it may use the control topic ` +
          `${v.rulesTopic} only (docs/security.md)`,
      );
      return 1;
    }
    console.error(`${NAME}: failed: ${(err as Error)?.message ?? err}`);
    return 1;
  } finally {
    await admin?.disconnect().catch(() => {});
  }
}

if (import.meta.main) Deno.exit(await main());
