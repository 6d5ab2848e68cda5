/**
 * The anomaly detection job: per-user fraud rules, exactly once.
 *
 *   financial_transactions (key userId)
 *     → parse + validate (invalid → dead letters)
 *     → per-user state (changelogged) → rules: velocity, amount_spike,
 *       impossible_travel, card_testing, account_takeover, each against
 *       the user's own baseline (jobs/lib/rules.ts)
 *     → transaction_anomalies (key userId)
 *
 * The input is already keyed by user, so per-user state needs no
 * repartition. Anomaly ids hash the rule, the user and the evidence, and
 * `detectedAt` is the triggering transaction's event time: reprocessing
 * yields the same records. The detector never reads the generator's label
 * headers.
 *
 * Rules that change without a restart: detect follows its app id's key of
 * the control topic `txpipe-detect-rules` (jobs/lib/detect_rules.ts,
 * published by `deno task rules`). A newer version takes effect on each
 * input partition at the first offset of the next batch it processes; the
 * partition's state records which version it applies and from which offset,
 * in that batch's transaction, so a restore resumes with the same rules for
 * the same offsets. Every anomaly names the version that raised it
 * (`rulesVersion`, absent for version 0: the job's own --config or
 * defaults). Without a control record detect behaves exactly as before.
 *
 * @module
 */
import { internalTopicNames, TOPICS } from "../stacks/topology.ts";
import { defineCommand, parseCommandLine, UsageError } from "./lib/cli.ts";
import { defineStreamJob, runStreamJob, streamFlags } from "./lib/job.ts";
import type { ProcessContext, StreamProcessor } from "./lib/stream.ts";
import { parseTransaction, type Transaction } from "./lib/transaction.ts";
import {
  type Anomaly,
  DEFAULT_DETECT_CONFIG,
  detect,
  type DetectConfig,
  parseDetectConfig,
} from "./lib/rules.ts";
import { decodeUserState, encodeUserState, type StoredUserState } from "./lib/user_state.ts";
import { anomaliesDetected, rulesChanges, rulesVersion } from "./lib/metrics.ts";
import { nextRules, type PublishedRules, rulesConfig } from "./lib/detect_rules.ts";

/** The detection job's flags. */
export const DETECT_COMMAND = defineCommand({
  name: "deno task detect",
  summary:
    "detect anomalies (velocity, amount spike, impossible travel, card testing, account takeover)",
  flags: {
    ...streamFlags("detect"),
    output: { kind: "string", default: TOPICS.anomalies, help: "topic of anomalies" },
    config: {
      kind: "string",
      help:
        "JSON file with thresholds overriding jobs/config/detect_defaults.json (partial is fine); " +
        "rules published with `deno task rules` for this --app-id take precedence",
      placeholder: "FILE",
    },
    "prior-gap": {
      kind: "duration",
      min: 1000,
      help: "a new user's assumed gap between transactions until their own gaps tell " +
        "(priorGapMs; default from the config: 12h, about two payments a day); over --config " +
        "and published rules. Traffic compressed in event time has a shorter one: " +
        "`deno task start` gives simulated users ÷ --rate",
    },
    "rules-topic": {
      kind: "string",
      default: TOPICS.detectRules,
      help: "compacted control topic of published rules (key: the app id), followed while " +
        "running",
    },
  },
  examples: [
    "deno task detect",
    "deno task detect --config my_thresholds.json",
    "deno task detect --prior-gap 100s",
  ],
});

/** An anomaly as detect writes it: the rules' with the version of the rules that raised it. */
export type DetectedAnomaly = Anomaly & {
  /** The rules version in force (docs/design.md); absent for version 0, the job's own config. */
  rulesVersion?: number;
};

/**
 * What a partition's `rules` store holds under {@link RULES_KEY}: the rules
 * it applies, and from where. Absent: version 0, the job's own config.
 */
export interface RulesInForce {
  /** The rules version (0 after a tombstone: the job's own config). */
  version: number;
  /** The control record's offset in the control topic. */
  controlOffset: number;
  /** The thresholds as published, or null: the job's own --config or defaults. */
  config: Record<string, unknown> | null;
  /** The input partition and the first offset of it processed with these rules. */
  partition: number;
  fromOffset: string;
}

/** The key of the one entry of the `rules` store. */
export const RULES_KEY = "in-force";

/** The state stores of the detection processor. */
export interface DetectStores {
  users: StoredUserState;
  rules: RulesInForce;
}

/** The rules a batch applies: their version and thresholds. */
interface BatchRules {
  version: number;
  config: DetectConfig;
}

/**
 * The detection processor: two stores. `users` holds one entry per user,
 * kept compact (one string per user, jobs/lib/user_state.ts) and expanded
 * only while its transaction runs through the rules; it is unprefixed: its
 * changelog keys are the user ids, as before named stores, and a changelog
 * written before the compact form restores too (its plain objects are taken
 * as they are). `rules` holds the partition's {@link RulesInForce} (absent:
 * version 0, `config`).
 *
 * With `rulesTopic`, it follows its app id's key there: at the start of a
 * batch, a control value other than the one its state records becomes the
 * partition's rules from the batch's first offset on (logged as
 * `rules-changed` and counted once the batch has committed).
 */
export function detectProcessor(o: {
  appId: string;
  input: string;
  output: string;
  /** The job's own thresholds (--config or defaults): version 0. */
  config: DetectConfig;
  /** The control topic of published rules; none: `config` only. */
  rulesTopic?: string;
  /** --prior-gap: the prior pace over `config` and published rules (their own when absent). */
  priorGapMs?: number;
}): StreamProcessor<{ tx: Transaction; amountMinor: number }, DetectStores, PublishedRules> {
  const processor = o.appId;
  rulesChanges.inc({ processor }, 0); // the series exists (at 0) from the start
  // The rules of each batch, worked out once at its start (a context is one batch's).
  const batchRules = new WeakMap<object, BatchRules>();
  const rulesOf = (ctx: ProcessContext<DetectStores, PublishedRules>): BatchRules => {
    let rules = batchRules.get(ctx);
    if (rules === undefined) {
      const inForce = ctx.store("rules").get(RULES_KEY);
      rules = inForce === undefined ? { version: 0, config: withPrior(o.config, o.priorGapMs) } : {
        version: inForce.version,
        config: withPrior(rulesConfig(inForce, o.config), o.priorGapMs),
      };
      batchRules.set(ctx, rules);
    }
    return rules;
  };
  return {
    name: "detect",
    groupId: o.appId,
    source: o.input,
    changelog: internalTopicNames(o.appId).changelog,
    stores: { users: { unprefixed: true }, rules: {} },
    ...(o.rulesTopic === undefined ? {} : {
      control: {
        topic: o.rulesTopic,
        key: o.appId,
        decode: (value, offset, previous) => nextRules(previous, value, offset),
      },
    }),
    parse: (r) => {
      const v = parseTransaction(r.value);
      return v.ok ? { ok: true, value: { tx: v.tx, amountMinor: v.amountMinor } } : v;
    },
    beginBatch: (ctx) => {
      switchRules(ctx, processor);
      const { version } = rulesOf(ctx);
      const partition = String(ctx.partition);
      ctx.afterCommit(() => rulesVersion.set({ processor, partition }, version));
    },
    // The new owner of the partition reports its version now.
    releasePartition: (partition) =>
      rulesVersion.remove({ processor, partition: String(partition) }),
    process: ({ tx, amountMinor }, _record, ctx) => {
      const rules = rulesOf(ctx);
      const users = ctx.store("users");
      const stored = users.get(tx.userId);
      const state = stored === undefined ? undefined : decodeUserState(stored);
      const result = detect(state, tx, amountMinor, rules.config);
      users.put(tx.userId, encodeUserState(result.state));
      for (const anomaly of result.anomalies) {
        const out: DetectedAnomaly = rules.version === 0
          ? anomaly
          : { ...anomaly, rulesVersion: rules.version };
        ctx.emit({
          topic: o.output,
          key: anomaly.userId,
          value: JSON.stringify(out),
          eventTime: tx.transactionTime,
        });
        anomaliesDetected.inc({ rule: anomaly.rule, severity: anomaly.severity });
      }
    },
  };
}

/**
 * At a batch's start: when the control value in force differs from the one
 * the partition's state records, it becomes the partition's rules from the
 * batch's first offset on, in the state (so in this batch's transaction);
 * the change is logged and counted once the batch has committed.
 */
function switchRules(ctx: ProcessContext<DetectStores, PublishedRules>, processor: string): void {
  const published = ctx.control;
  if (published === undefined) return; // no control record: the state's rules stay
  const store = ctx.store("rules");
  const before = store.get(RULES_KEY);
  if ((before?.controlOffset ?? -1) === published.offset) return;
  const after: RulesInForce = {
    version: published.version,
    controlOffset: published.offset,
    config: published.config,
    partition: ctx.partition,
    fromOffset: ctx.firstOffset,
  };
  store.put(RULES_KEY, after);
  ctx.afterCommit((log) => {
    rulesChanges.inc({ processor });
    log.info(
      {
        "event.action": "rules-changed",
        "txpipe.rules.old_version": before?.version ?? 0,
        "txpipe.rules.new_version": after.version,
        "txpipe.rules.control_offset": after.controlOffset,
        "txpipe.rules.published_by": published.publishedBy,
        "txpipe.rules.published_at": published.publishedAt,
        partition: after.partition,
        "txpipe.rules.from_offset": after.fromOffset,
      },
      `rules version ${before?.version ?? 0} → ${after.version} on partition ${after.partition} ` +
        `from offset ${after.fromOffset} (control record at offset ${after.controlOffset})`,
    );
  });
}

/** `config` with `priorGapMs` when one is given (--prior-gap). */
function withPrior(config: DetectConfig, priorGapMs: number | undefined): DetectConfig {
  return priorGapMs === undefined ? config : { ...config, priorGapMs };
}

/**
 * The thresholds of `--config FILE` over the defaults (the defaults without
 * one); a file that cannot be read or checked is a {@link UsageError}.
 */
export async function loadConfig(path: string | undefined): Promise<DetectConfig> {
  if (!path) return DEFAULT_DETECT_CONFIG;
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    throw new UsageError(`--config: expected a readable JSON file, got "${path}" (${err})`);
  }
  try {
    return parseDetectConfig(JSON.parse(text));
  } catch (err) {
    throw new UsageError(`--config: ${(err as Error).message} (in ${path})`);
  }
}

/** The detection job: its command and its one processor, made from the flags' values. */
export const STREAM_JOB = defineStreamJob({
  job: "detect",
  command: DETECT_COMMAND,
  module: import.meta.url,
  processors: async (v) => [
    detectProcessor({
      appId: v.appId,
      input: v.input,
      output: v.output,
      config: await loadConfig(v.config),
      rulesTopic: v.rulesTopic,
      priorGapMs: v.priorGap,
    }),
  ],
});

async function main(): Promise<number> {
  const { values: v } = parseCommandLine(DETECT_COMMAND);
  try {
    await loadConfig(v.config);
  } catch (err) {
    console.error(`deno task detect: ${(err as Error).message}`);
    return 2;
  }
  return await runStreamJob(STREAM_JOB, v);
}

if (import.meta.main) Deno.exit(await main());
