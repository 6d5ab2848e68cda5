/**
 * Rules that change without a restart, on the real 3+3 cluster: a running
 * detect instance picks up rules published with `deno task rules` (as
 * txpipe-rules) on a fresh control topic; the anomalies after the change
 * carry its version and obey its threshold; `deno task rules show` prints
 * it; and the publisher's principal may not read the transactions.
 * The in-memory tests of the same mechanism are in
 * tests/detect_rules_unit_test.ts.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import type { Message } from "kafkajs";
import { TOPICS } from "../stacks/topology.ts";
import { createKafka } from "../jobs/lib/kafka.ts";
import { PartitionReader } from "../jobs/lib/partition_reader.ts";
import { encodeTransaction } from "../jobs/lib/generator.ts";
import type { DetectedAnomaly } from "../jobs/detect.ts";
import { DEFAULT_DETECT_CONFIG } from "../jobs/lib/rules.ts";
import { BROKERS, freshTopic, groupIds, readTopic, runScript } from "./helpers/cluster.ts";
import {
  diagnosis,
  generate,
  inputTopic,
  produceMessages,
  runTopics,
  startInstance,
  stopCleanly,
  toMessage,
  waitCaughtUp,
} from "./helpers/jobs.ts";

const kafkaTest = { sanitizeOps: false, sanitizeResources: false };

/**
 * What the test publishes: velocity fires from 4 transactions at any one merchant (by
 * default: 5 at 3 merchants or more, or 11 at any).
 */
const NEW_RULES = { velocity: { minCount: 4, minMerchants: 1 } };
const BURST = 5;

/** Waits until `file` holds a line matching `pattern`, or throws after `timeoutMs`. */
async function waitForLine(file: string, pattern: RegExp, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const line = (await Deno.readTextFile(file).catch(() => "")).split("\n").find((l) =>
      pattern.test(l)
    );
    if (line !== undefined) return line;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no line matching ${pattern} in ${file} within ${timeoutMs} ms`);
}

/** The error of the rules publisher's principal reading `topic` (as it reads its control topic), or undefined. */
async function readRefused(topic: string): Promise<unknown> {
  const kafka = createKafka({ principal: "rules", clientId: "txpipe-test", brokers: BROKERS });
  let reader: PartitionReader | undefined;
  try {
    reader = await PartitionReader.open(kafka, topic, 0);
    await reader.next(100);
    return undefined;
  } catch (err) {
    return err;
  } finally {
    await reader?.close();
  }
}

Deno.test(
  "detect rules: a running detect picks up published rules at its next batch (anomalies carry the version and obey the new threshold), rules show prints them, and txpipe-rules may not read the transactions",
  kafkaTest,
  async () => {
    // Phase 1: ordinary traffic with some fraud, detected with the defaults (version 0).
    const before = generate(2_000, "detect-rules-live", 0.03);
    const input = await inputTopic("detect_rules_input", before.map((r) => toMessage(r)));
    const control = await freshTopic(TOPICS.detectRules, "detect_rules");
    const t = runTopics(input, "detrules");
    const instance = startInstance("detect", t, ["--rules-topic", control]);
    try {
      await waitCaughtUp("detect", t, 60_000);

      // Publish as txpipe-rules; the running instance's reader logs it as accepted.
      const file = await Deno.makeTempFile({ suffix: ".json" });
      await Deno.writeTextFile(file, JSON.stringify(NEW_RULES));
      const common = ["--app-id", t.appId, "--rules-topic", control, "--published-by", "test"];
      const published = await runScript("jobs/rules.ts", ["publish", "--config", file, ...common]);
      await Deno.remove(file);
      assert.equal(published.code, 0, published.stderr);
      assert.match(published.stderr, /published the rules of .*: version 0 → 1 \(.*@\d+\)/);
      await waitForLine(instance.logFile, /"event\.action":"control-updated"/, 10_000);

      // Phase 2: bursts of 5 purchases in 10 s at one merchant by users of phase 1, ten
      // minutes after it: velocity at 4 (the new rules), never with the defaults (which ask
      // for 3 merchants, or 11 purchases).
      const last = Math.max(...before.map((r) => r.tx.transactionTime));
      const unlabelled = before.filter((r) => !r.label);
      const users = [...new Map(unlabelled.map((r) => [r.tx.userId, r])).values()].slice(0, 12);
      const burst: Message[] = [];
      const burstIds = new Set<string>();
      users.forEach((r, u) => {
        for (let i = 0; i < BURST; i++) {
          const tx = {
            ...r.tx,
            transactionId: crypto.randomUUID(),
            transactionType: "purchase" as const,
            transactionTime: last + 600_000 + u * 60_000 + i * 2_000,
          };
          burstIds.add(tx.transactionId);
          burst.push({ key: r.key, value: Buffer.from(encodeTransaction(tx)) });
        }
      });
      await produceMessages(input, burst);
      await waitCaughtUp("detect", t, 60_000);

      const anomalies = (await readTopic(t.output, { expected: users.length, settleMs: 1000 }))
        .map((r) => JSON.parse(new TextDecoder().decode(r.value!)) as DetectedAnomaly);
      const after = anomalies.filter((a) => a.transactionIds.some((id) => burstIds.has(id)));
      const earlier = anomalies.filter((a) => !a.transactionIds.some((id) => burstIds.has(id)));
      assert.ok(earlier.length > 0, "phase 1 raised anomalies");
      for (const a of earlier) assert.equal(a.rulesVersion, undefined, "version 0: no field");
      const velocity = after.filter((a) => a.rule === "velocity");
      assert.equal(velocity.length, users.length, "one velocity incident per burst");
      for (const a of after) assert.equal(a.rulesVersion, 1, `${a.rule} ${a.anomalyId}`);
      for (const a of velocity) {
        assert.equal(a.threshold, 4);
        assert.equal(a.observed, 4, "fired when the count first reached the new threshold");
      }
      // The switch is in the log, once per partition that processed a batch after it.
      const log = await Deno.readTextFile(instance.logFile);
      const changes = log.split("\n").filter((l) => l.includes('"event.action":"rules-changed"'))
        .map((l) => JSON.parse(l));
      const partitions = new Set(changes.map((c) => c.partition));
      assert.equal(partitions.size, changes.length, "one line per partition");
      for (const c of changes) {
        assert.equal(c["txpipe.rules.old_version"], 0);
        assert.equal(c["txpipe.rules.new_version"], 1);
      }
      assert.ok(changes.length >= 1);

      // show prints the version in force and its thresholds.
      const shown = await runScript("jobs/rules.ts", ["show", ...common]);
      assert.equal(shown.code, 0, shown.stderr);
      const rules = JSON.parse(shown.stdout);
      assert.equal(rules.version, 1);
      assert.equal(rules.appId, t.appId);
      assert.equal(rules.publishedBy, "test");
      assert.deepEqual(rules.config, NEW_RULES);
      assert.equal(rules.thresholds.velocity.minCount, 4);
      assert.equal(rules.thresholds.velocity.minMerchants, 1);
      assert.deepEqual(
        rules.thresholds.cardTesting,
        DEFAULT_DETECT_CONFIG.cardTesting,
        "the rest are the defaults",
      );

      // The publisher's principal reads the control topic only: not the transactions.
      const refused = await readRefused(TOPICS.transactions);
      assert.match(String((refused as Error)?.message ?? refused), /not authorized|AUTHORIZATION/i);
      // detect and the publisher read the control topic with no consumer group.
      const groups = await groupIds();
      assert.deepEqual(
        groups.filter((g) => g.startsWith(t.appId)),
        [t.appId],
        "detect's own group only",
      );
      assert.deepEqual(
        groups.filter((g) => g.startsWith("txpipe-rules-")),
        [],
        "no publisher's group",
      );
    } catch (err) {
      (err as Error).message += `\n${await diagnosis(instance)}`;
      throw err;
    } finally {
      await stopCleanly(instance, "detect");
    }
  },
);
