/**
 * The anomaly detection job: per-user fraud rules, exactly once.
 *
 *   financial_transactions (key userId)
 *     → parse + validate (invalid → dead letters)
 *     → per-user state (changelogged) → rules: velocity, amount_spike,
 *       impossible_travel, card_testing (jobs/lib/rules.ts)
 *     → transaction_anomalies (key userId)
 *
 * The input is already keyed by user, so per-user state needs no
 * repartition. Anomaly ids hash the rule, the user and the evidence, and
 * `detectedAt` is the triggering transaction's event time: reprocessing
 * yields the same records. The detector never reads the generator's label
 * headers.
 *
 * @module
 */
import { internalTopicNames, TOPICS } from "../stacks/topology.ts";
import { defineCommand, parseCommandLine, UsageError } from "./lib/cli.ts";
import { runStreamJob, streamFlags } from "./lib/job.ts";
import type { StreamProcessor } from "./lib/stream.ts";
import { parseTransaction, type Transaction } from "./lib/transaction.ts";
import {
  DEFAULT_DETECT_CONFIG,
  detect,
  type DetectConfig,
  parseDetectConfig,
} from "./lib/rules.ts";
import { decodeUserState, encodeUserState, type StoredUserState } from "./lib/user_state.ts";
import { anomaliesDetected } from "./lib/metrics.ts";

/** The detection job's flags. */
export const DETECT_COMMAND = defineCommand({
  name: "deno task detect",
  summary: "detect anomalies (velocity, amount spike, impossible travel, card testing)",
  flags: {
    ...streamFlags("detect"),
    output: { kind: "string", default: TOPICS.anomalies, help: "topic of anomalies" },
    config: {
      kind: "string",
      help:
        "JSON file with thresholds overriding jobs/config/detect_defaults.json (partial is fine)",
      placeholder: "FILE",
    },
  },
  examples: ["deno task detect", "deno task detect --config my_thresholds.json"],
});

/**
 * The detection processor: one store, `users`, one entry per user, kept
 * compact (one string per user, jobs/lib/user_state.ts) and expanded only
 * while its transaction runs through the rules. The store is unprefixed: its
 * changelog keys are the user ids, as before named stores. A changelog
 * written before the compact form restores too: its plain objects are taken
 * as they are.
 */
export function detectProcessor(o: {
  appId: string;
  input: string;
  output: string;
  config: DetectConfig;
}): StreamProcessor<{ tx: Transaction; amountMinor: number }, { users: StoredUserState }> {
  return {
    name: "detect",
    groupId: o.appId,
    source: o.input,
    changelog: internalTopicNames(o.appId).changelog,
    stores: { users: { unprefixed: true } },
    parse: (r) => {
      const v = parseTransaction(r.value);
      return v.ok ? { ok: true, value: { tx: v.tx, amountMinor: v.amountMinor } } : v;
    },
    process: ({ tx, amountMinor }, _record, ctx) => {
      const users = ctx.store("users");
      const stored = users.get(tx.userId);
      const state = stored === undefined ? undefined : decodeUserState(stored);
      const result = detect(state, tx, amountMinor, o.config);
      users.put(tx.userId, encodeUserState(result.state));
      for (const anomaly of result.anomalies) {
        ctx.emit({
          topic: o.output,
          key: anomaly.userId,
          value: JSON.stringify(anomaly),
          eventTime: tx.transactionTime,
        });
        anomaliesDetected.inc({ rule: anomaly.rule, severity: anomaly.severity });
      }
    },
  };
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

async function main(): Promise<number> {
  const { values: v } = parseCommandLine(DETECT_COMMAND);
  let config: DetectConfig;
  try {
    config = await loadConfig(v.config);
  } catch (err) {
    console.error(`deno task detect: ${(err as Error).message}`);
    return 2;
  }
  return await runStreamJob("detect", DETECT_COMMAND, v, [
    detectProcessor({ appId: v.appId, input: v.input, output: v.output, config }),
  ]);
}

if (import.meta.main) Deno.exit(await main());
