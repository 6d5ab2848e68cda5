/**
 * The scoring math of jobs/lib/evaluation.ts on hand-built labels and
 * anomalies: every figure checked exactly, with duplicates by anomalyId,
 * unknown patterns, kinds and rules, flagged hard negatives and the days the
 * event times span.
 */
import assert from "node:assert/strict";
import {
  evaluate,
  formatEvaluation,
  formatEvaluations,
  GroundTruth,
  HARD_NEGATIVE_HEADER,
  HARD_NEGATIVE_INSTANCE_HEADER,
  labelsFromHeaders,
  perTenThousandUserDays,
} from "../jobs/lib/evaluation.ts";
import { FRAUD_INSTANCE_HEADER, FRAUD_PATTERN_HEADER } from "../jobs/lib/generator.ts";
import type { Anomaly } from "../jobs/lib/rules.ts";

const T0 = 1_700_000_000_000;
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/**
 * Eight users over exactly two days of event time: u1, u2, u3 and u7 have
 * fraud (u7 of a pattern the report does not list), u4, u5, u6 and u8 none
 * (four legitimate users), with hard negatives multi_item, flight,
 * micro_payments and an unlisted kind.
 */
function truth(): GroundTruth {
  const t = new GroundTruth();
  const add = (
    id: string,
    user: string,
    at: number,
    labels: Parameters<GroundTruth["add"]>[1] = {},
  ) => t.add({ transactionId: id, userId: user, transactionTime: T0 + at }, labels);
  add("t1", "u1", 0, { fraud: { pattern: "velocity_burst", instanceId: "i1" } });
  add("t2", "u1", 1000, { fraud: { pattern: "velocity_burst", instanceId: "i1" } });
  add("t3", "u2", 2 * DAY, { fraud: { pattern: "velocity_burst", instanceId: "i2" } });
  add("t4", "u3", HOUR, { fraud: { pattern: "card_testing", instanceId: "i3" } });
  add("t3b", "u3", 2 * HOUR); // u3's ordinary purchase: u3 stays a fraud user
  add("t5", "u4", HOUR);
  add("t6", "u4", 2 * HOUR);
  add("t7", "u4", 3 * HOUR, { hardNegative: { kind: "multi_item", instanceId: "h1" } });
  add("t8", "u4", 3 * HOUR + 1, { hardNegative: { kind: "multi_item", instanceId: "h1" } });
  add("t9", "u5", 4 * HOUR, { hardNegative: { kind: "flight", instanceId: "h2" } });
  add("t10", "u5", 9 * HOUR, { hardNegative: { kind: "flight", instanceId: "h2" } });
  add("t11", "u6", 5 * HOUR, { hardNegative: { kind: "micro_payments", instanceId: "h3" } });
  add("t12", "u7", 6 * HOUR, { fraud: { pattern: "mule_account", instanceId: "i4" } });
  add("t13", "u8", 7 * HOUR, { hardNegative: { kind: "payroll", instanceId: "h4" } });
  return t;
}

function anomaly(id: string, rule: string, transactionIds: string[]): Anomaly {
  return {
    anomalyId: id,
    rule: rule as Anomaly["rule"],
    severity: "medium",
    userId: "u",
    transactionIds,
    observed: 1,
    threshold: 1,
    windowStart: 0,
    windowEnd: 0,
    detectedAt: 0,
  };
}

/** a twice (one anomaly), b, e: true positives; c, d, f, g: false positives. */
const ANOMALIES: Anomaly[] = [
  anomaly("a", "velocity", ["t0", "t2"]),
  anomaly("a", "velocity", ["t0", "t2"]),
  anomaly("b", "card_testing", ["t4"]),
  anomaly("c", "amount_spike", ["t99"]),
  anomaly("d", "velocity", ["t7", "t8"]),
  anomaly("e", "impossible_travel", ["t9", "t12"]),
  anomaly("f", "impossible_travel", ["t10"]),
  anomaly("g", "mule_rule", ["t13"]),
];

Deno.test("evaluation: recall per pattern counts instances, listed patterns first, unknown ones after", () => {
  const e = evaluate(truth(), ANOMALIES);
  assert.deepEqual(e.patterns, [
    { pattern: "velocity_burst", instances: 2, detected: 1, recall: 0.5 },
    { pattern: "amount_spike", instances: 0, detected: 0, recall: null },
    { pattern: "impossible_travel", instances: 0, detected: 0, recall: null },
    { pattern: "card_testing", instances: 1, detected: 1, recall: 1 },
    { pattern: "account_takeover", instances: 0, detected: 0, recall: null },
    { pattern: "mule_account", instances: 1, detected: 1, recall: 1 },
  ]);
  assert.equal(e.instances, 4);
  assert.equal(e.detected, 3);
  assert.equal(e.recall, 3 / 4);
});

Deno.test("evaluation: precision per rule and overall count a repeated anomalyId once", () => {
  const e = evaluate(truth(), ANOMALIES);
  assert.equal(e.anomalies, 7);
  assert.equal(e.truePositives, 3);
  assert.equal(e.falsePositives, 4);
  assert.equal(e.precision, 3 / 7);
  assert.deepEqual(e.rules, [
    {
      rule: "velocity",
      anomalies: 2,
      truePositives: 1,
      precision: 0.5,
      pattern: "velocity_burst",
      detected: 1,
      recall: 0.5,
    },
    {
      rule: "amount_spike",
      anomalies: 1,
      truePositives: 0,
      precision: 0,
      pattern: "amount_spike",
      detected: 0,
      recall: null,
    },
    {
      rule: "impossible_travel",
      anomalies: 2,
      truePositives: 1,
      precision: 0.5,
      pattern: "impossible_travel",
      detected: 0,
      recall: null,
    },
    {
      rule: "card_testing",
      anomalies: 1,
      truePositives: 1,
      precision: 1,
      pattern: "card_testing",
      detected: 1,
      recall: 1,
    },
    {
      rule: "mule_rule",
      anomalies: 1,
      truePositives: 0,
      precision: 0,
      pattern: null,
      detected: 0,
      recall: null,
    },
  ]);
});

Deno.test("evaluation: false positives per 10 000 legitimate users per day over the days the event times span", () => {
  const t = truth();
  assert.equal(t.transactions, 14);
  assert.equal(t.spanMs, 2 * DAY);
  const e = evaluate(t, ANOMALIES);
  assert.equal(e.legitimateUsers, 4, "u4, u5, u6, u8: no fraud label on any of their transactions");
  assert.equal(e.days, 2);
  assert.equal(e.falsePositivesPer10kUserDays, 5000, "4 / (4 users × 2 days) × 10 000");
  assert.equal(perTenThousandUserDays(3, 20_000, 0.5), 3);
  assert.equal(perTenThousandUserDays(3, 0, 1), null);
  assert.equal(perTenThousandUserDays(3, 10, 0), null);

  const one = new GroundTruth();
  one.add({ transactionId: "x", userId: "u", transactionTime: T0 });
  const single = evaluate(one, [anomaly("z", "velocity", ["x"])]);
  assert.equal(single.days, 0);
  assert.equal(single.falsePositivesPer10kUserDays, null, "no time spanned: no rate");

  const order = new GroundTruth();
  order.add({ transactionId: "n", userId: "u", transactionTime: T0 });
  order.add({ transactionId: "f", userId: "u", transactionTime: T0 + DAY }, {
    fraud: { pattern: "velocity_burst", instanceId: "i" },
  });
  order.add({ transactionId: "m", userId: "v", transactionTime: T0 + DAY / 2 });
  assert.equal(order.legitimateUsers, 1, "a fraud label after normal traffic still counts");
});

Deno.test("evaluation: a hard-negative instance is flagged only by an anomaly without fraud-labelled evidence", () => {
  const e = evaluate(truth(), ANOMALIES);
  assert.deepEqual(e.hardNegatives, [
    {
      kind: "multi_item",
      instances: 1,
      flagged: 1,
      falsePositiveRate: 1,
      anomalies: 1,
      falsePositives: 1,
      precision: 0,
    },
    {
      kind: "micro_payments",
      instances: 1,
      flagged: 0,
      falsePositiveRate: 0,
      anomalies: 0,
      falsePositives: 0,
      precision: null,
    },
    {
      // e (with t12, fraud) touches it and is a true positive; f alone flags it.
      kind: "flight",
      instances: 1,
      flagged: 1,
      falsePositiveRate: 1,
      anomalies: 2,
      falsePositives: 1,
      precision: 0.5,
    },
    ...["land_travel", "relocation"].map((kind) => ({
      kind,
      instances: 0,
      flagged: 0,
      falsePositiveRate: null,
      anomalies: 0,
      falsePositives: 0,
      precision: null,
    })),
    {
      kind: "payroll",
      instances: 1,
      flagged: 1,
      falsePositiveRate: 1,
      anomalies: 1,
      falsePositives: 1,
      precision: 0,
    },
  ]);
  // Without f, the flight is touched only by a true positive: not flagged.
  const e2 = evaluate(truth(), ANOMALIES.filter((a) => a.anomalyId !== "f"));
  const flight = e2.hardNegatives.find((h) => h.kind === "flight");
  assert.equal(flight?.flagged, 0);
  assert.equal(flight?.precision, 1);
});

Deno.test("evaluation: settledBy leaves out instances still unfolding, not anomalies", () => {
  // i2 (t3, at 2 days) and h2 (its last record at 9 h) are not settled by 8 h.
  const e = evaluate(truth(), ANOMALIES, { settledBy: T0 + 8 * HOUR });
  assert.deepEqual(e.patterns[0], {
    pattern: "velocity_burst",
    instances: 1,
    detected: 1,
    recall: 1,
  });
  const flight = e.hardNegatives.find((h) => h.kind === "flight");
  assert.equal(flight?.instances, 0);
  assert.equal(flight?.falsePositiveRate, null);
  assert.equal(flight?.anomalies, 2, "the anomalies themselves are all judged");
  assert.equal(e.precision, 3 / 7);
});

Deno.test("evaluation: labels are read by header name; an incomplete label is none", () => {
  assert.deepEqual(
    labelsFromHeaders({ [FRAUD_PATTERN_HEADER]: "card_testing", [FRAUD_INSTANCE_HEADER]: "i" }),
    { fraud: { pattern: "card_testing", instanceId: "i" } },
  );
  assert.deepEqual(
    labelsFromHeaders({ [HARD_NEGATIVE_HEADER]: "flight", [HARD_NEGATIVE_INSTANCE_HEADER]: "h" }),
    { hardNegative: { kind: "flight", instanceId: "h" } },
  );
  assert.equal(HARD_NEGATIVE_HEADER, "txpipe-hard-negative");
  assert.equal(HARD_NEGATIVE_INSTANCE_HEADER, "txpipe-hard-negative-instance");
  assert.deepEqual(labelsFromHeaders({ [FRAUD_PATTERN_HEADER]: "card_testing" }), {});
  assert.deepEqual(labelsFromHeaders({ [HARD_NEGATIVE_INSTANCE_HEADER]: "h" }), {});
  assert.deepEqual(labelsFromHeaders({}), {});
});

Deno.test("evaluation: the table shows every figure with its parts, side by side for several runs", () => {
  const e = evaluate(truth(), ANOMALIES);
  const text = formatEvaluation(e);
  assert.match(text, /^ {2}velocity_burst +50\.00% \(1\/2\)$/m);
  assert.match(text, /^ {2}amount_spike +n\/a \(0\/0\)$/m);
  assert.match(text, /^ {2}mule_account +100\.00% \(1\/1\)$/m);
  assert.match(text, /^ {2}all rules +42\.86% \(3\/7\)$/m);
  assert.match(text, /^ {2}velocity \(velocity_burst\) +50\.00% \(1\/2\)$/m);
  assert.match(text, /^ {2}per 10 000 users per day +5000\.00$/m);
  assert.match(text, /^ {2}days \(event time\) +2\.00$/m);
  assert.match(text, /^ {2}flight +100\.00% \(1\/1\)$/m);
  assert.match(text, /^ {2}flight +50\.00% \(1\/2\)$/m);
  const both = formatEvaluations([
    { title: "tune: seed 1", evaluation: e },
    { title: "held-out: seeds 2, 3", evaluation: evaluate(truth(), []) },
  ]);
  assert.match(both.split("\n")[0], /^ +tune: seed 1 {3}held-out: seeds 2, 3$/);
  assert.match(both, /^ {2}velocity_burst +50\.00% \(1\/2\) +0\.00% \(0\/2\)$/m);
  assert.match(both, /^ {2}all rules +42\.86% \(3\/7\) +n\/a \(0\/0\)$/m);
});
