/**
 * Scoring the detector against the generator's ground truth, the same way
 * for the live evaluator (jobs/evaluate.ts) and the offline harness
 * (jobs/tune.ts). Pure: labels and anomalies in, figures out.
 *
 * The ground truth comes from Kafka headers the detector never reads: a fraud
 * label (`txpipe-fraud-pattern`, `txpipe-fraud-instance`) or a hard-negative
 * label (`txpipe-hard-negative`, `txpipe-hard-negative-instance`: legitimate
 * traffic that looks like fraud). A transaction has at most one of the two.
 * Patterns and kinds are plain strings: one the report does not list yet is
 * reported after the listed ones.
 *
 * The figures ({@link evaluate}; docs/evaluation.md):
 * - recall of a pattern: its instances with at least one transaction in some
 *   anomaly's evidence ÷ its instances;
 * - precision of a rule, and overall: anomalies whose evidence contains a
 *   fraud-labelled transaction (true positives) ÷ anomalies;
 * - false positives per 10 000 legitimate users per day: false-positive
 *   anomalies ÷ (distinct users none of whose transactions carries a fraud
 *   label × days from the earliest to the latest event time) × 10 000;
 * - per hard-negative kind: its instances; those flagged (some false-positive
 *   anomaly's evidence contains one of its transactions); the false-positive
 *   rate flagged ÷ instances; and the precision of the anomalies whose
 *   evidence touches the kind.
 *
 * Anomalies are counted once per anomalyId.
 *
 * @module
 */
import {
  FRAUD_INSTANCE_HEADER,
  FRAUD_PATTERN_HEADER,
  FRAUD_PATTERNS,
  HARD_NEGATIVE_HEADER,
  HARD_NEGATIVE_INSTANCE_HEADER,
  HARD_NEGATIVE_KINDS,
} from "./generator.ts";
import type { Anomaly } from "./rules.ts";

/** The generator's label headers, which only the evaluator reads. */
export { HARD_NEGATIVE_HEADER, HARD_NEGATIVE_INSTANCE_HEADER };

/** The fraud patterns in report order; a label with another pattern is reported after them. */
export const REPORTED_FRAUD_PATTERNS: readonly string[] = FRAUD_PATTERNS;

/** The hard-negative kinds in report order; another kind is reported after them. */
export const REPORTED_HARD_NEGATIVE_KINDS: readonly string[] = HARD_NEGATIVE_KINDS;

/**
 * The rules always reported, in order (jobs/lib/rules.ts); another rule, such
 * as account_takeover, is reported after them once it raised an anomaly.
 */
const REPORTED_RULES: readonly string[] = [
  "velocity",
  "amount_spike",
  "impossible_travel",
  "card_testing",
];

/** The fraud pattern each rule is written for: a rule's own recall is measured on it. */
export const RULE_PATTERNS: Readonly<Record<string, string>> = {
  velocity: "velocity_burst",
  amount_spike: "amount_spike",
  impossible_travel: "impossible_travel",
  card_testing: "card_testing",
};

/** The fraud label of one transaction. */
export interface FraudTruth {
  readonly pattern: string;
  readonly instanceId: string;
}

/** The hard-negative label of one (legitimate) transaction. */
export interface HardNegativeTruth {
  readonly kind: string;
  readonly instanceId: string;
}

/** The labels of one transaction: at most one of the two. */
export interface Labels {
  readonly fraud?: FraudTruth;
  readonly hardNegative?: HardNegativeTruth;
}

/** What {@link GroundTruth.add} needs of a transaction. */
export interface TransactionRef {
  readonly transactionId: string;
  readonly userId: string;
  readonly transactionTime: number;
}

/**
 * The labels in a record's Kafka headers, by header name. A label needs both
 * its headers; an incomplete one is ignored.
 */
export function labelsFromHeaders(headers: Readonly<Record<string, string | undefined>>): Labels {
  const pattern = headers[FRAUD_PATTERN_HEADER];
  const fraudInstance = headers[FRAUD_INSTANCE_HEADER];
  const kind = headers[HARD_NEGATIVE_HEADER];
  const hardInstance = headers[HARD_NEGATIVE_INSTANCE_HEADER];
  if (pattern && fraudInstance) return { fraud: { pattern, instanceId: fraudInstance } };
  if (kind && hardInstance) return { hardNegative: { kind, instanceId: hardInstance } };
  return {};
}

/**
 * The ground truth of a stream of transactions, gathered one transaction at a
 * time (every transaction, labelled or not: the users and the event-time
 * span are part of the figures).
 */
export class GroundTruth {
  /** Fraud labels by transactionId. */
  readonly fraud = new Map<string, FraudTruth>();
  /** Hard-negative labels by transactionId. */
  readonly hardNegatives = new Map<string, HardNegativeTruth>();
  /** Event time of each fraud instance's latest transaction. */
  readonly fraudInstanceLast = new Map<string, number>();
  /** Event time of each hard-negative instance's latest transaction. */
  readonly hardNegativeInstanceLast = new Map<string, number>();
  /** Every user seen, and whether any of their transactions carries a fraud label. */
  readonly #users = new Map<string, boolean>();
  #transactions = 0;
  #minTime = Infinity;
  #maxTime = -Infinity;

  /** Adds one transaction and its labels (a transaction seen again is counted again). */
  add(tx: TransactionRef, labels: Labels = {}): void {
    this.#transactions++;
    const t = tx.transactionTime;
    if (t < this.#minTime) this.#minTime = t;
    if (t > this.#maxTime) this.#maxTime = t;
    const { fraud, hardNegative } = labels;
    if (fraud !== undefined) {
      this.fraud.set(tx.transactionId, fraud);
      latest(this.fraudInstanceLast, fraud.instanceId, t);
      this.#users.set(tx.userId, true);
    } else if (!this.#users.has(tx.userId)) {
      this.#users.set(tx.userId, false);
    }
    if (hardNegative !== undefined && fraud === undefined) {
      this.hardNegatives.set(tx.transactionId, hardNegative);
      latest(this.hardNegativeInstanceLast, hardNegative.instanceId, t);
    }
  }

  /** Transactions added. */
  get transactions(): number {
    return this.#transactions;
  }

  /** Distinct users none of whose transactions carries a fraud label. */
  get legitimateUsers(): number {
    let n = 0;
    for (const fraudulent of this.#users.values()) if (!fraudulent) n++;
    return n;
  }

  /** Milliseconds from the earliest to the latest event time (0 with fewer than two). */
  get spanMs(): number {
    return this.#transactions === 0 ? 0 : this.#maxTime - this.#minTime;
  }

  /** The latest event time seen (-Infinity before the first transaction). */
  get maxEventTime(): number {
    return this.#maxTime;
  }
}

function latest(map: Map<string, number>, key: string, t: number): void {
  const before = map.get(key);
  if (before === undefined || t > before) map.set(key, t);
}

/** Recall of one fraud pattern. */
export interface PatternRecall {
  pattern: string;
  /** Distinct instances of the pattern (settled ones, see {@link EvaluateOptions}). */
  instances: number;
  /** Instances with at least one transaction in some anomaly's evidence. */
  detected: number;
  /** detected ÷ instances; null when there were no instances. */
  recall: number | null;
}

/** Precision of one rule, and its recall on the pattern it is written for. */
export interface RulePrecision {
  rule: string;
  /** Distinct anomalies of the rule. */
  anomalies: number;
  /** Anomalies whose evidence contains at least one fraud-labelled transaction. */
  truePositives: number;
  /** truePositives ÷ anomalies; null when the rule raised nothing. */
  precision: number | null;
  /** The pattern the rule is written for ({@link RULE_PATTERNS}); null for a rule not listed. */
  pattern: string | null;
  /** Instances of `pattern` with a transaction in one of this rule's anomalies. */
  detected: number;
  /** detected ÷ instances of `pattern`; null without instances (or pattern). */
  recall: number | null;
}

/** How the detector did on one kind of hard negative (legitimate look-alikes). */
export interface HardNegativeScore {
  kind: string;
  /** Distinct instances of the kind (settled ones, see {@link EvaluateOptions}). */
  instances: number;
  /** Instances with a transaction in the evidence of a false-positive anomaly. */
  flagged: number;
  /** flagged ÷ instances; null without instances. */
  falsePositiveRate: number | null;
  /** Anomalies whose evidence contains a transaction of this kind. */
  anomalies: number;
  /** Those of them whose evidence contains no fraud-labelled transaction. */
  falsePositives: number;
  /** (anomalies − falsePositives) ÷ anomalies; null when no anomaly touched the kind. */
  precision: number | null;
}

/** The result of {@link evaluate}; every ratio is null when its denominator is 0. */
export interface Evaluation {
  patterns: PatternRecall[];
  /** Instances of every pattern together, detected ones, and detected ÷ instances. */
  instances: number;
  detected: number;
  recall: number | null;
  rules: RulePrecision[];
  /** Distinct anomalies (by anomalyId). */
  anomalies: number;
  truePositives: number;
  /** Overall precision: truePositives ÷ anomalies. */
  precision: number | null;
  /** anomalies − truePositives. */
  falsePositives: number;
  /** Distinct users none of whose transactions carries a fraud label. */
  legitimateUsers: number;
  /** Event-time days from the earliest to the latest transaction. */
  days: number;
  /** falsePositives ÷ (legitimateUsers × days) × 10 000. */
  falsePositivesPer10kUserDays: number | null;
  hardNegatives: HardNegativeScore[];
}

/** Options of {@link evaluate}. */
export interface EvaluateOptions {
  /**
   * Count an instance (fraud or hard negative) only once its latest
   * transaction's event time is at most this: live, a pattern still
   * unfolding is not a miss yet. Default: every instance.
   */
  settledBy?: number;
}

/** Milliseconds in a day. */
const DAY_MS = 86_400_000;

/** Scores `anomalies` against `truth`; see the module documentation for the figures. */
export function evaluate(
  truth: GroundTruth,
  anomalies: Iterable<Anomaly>,
  options: EvaluateOptions = {},
): Evaluation {
  const settledBy = options.settledBy ?? Infinity;
  const seen = new Set<string>();
  const detected = new Set<string>();
  const detectedByRule = new Map<string, Set<string>>();
  const byRule = new Map<string, { anomalies: number; truePositives: number }>();
  const flagged = new Set<string>();
  const touching = new Map<string, { anomalies: number; falsePositives: number }>();
  let truePositives = 0;
  for (const a of anomalies) {
    if (seen.has(a.anomalyId)) continue;
    seen.add(a.anomalyId);
    const row = getOr(byRule, a.rule, () => ({ anomalies: 0, truePositives: 0 }));
    row.anomalies++;
    const ruleDetected = getOr(detectedByRule, a.rule, () => new Set<string>());
    const kinds = new Set<string>();
    const hardInstances: string[] = [];
    let truePositive = false;
    for (const id of a.transactionIds) {
      const label = truth.fraud.get(id);
      if (label !== undefined) {
        truePositive = true;
        detected.add(label.instanceId);
        ruleDetected.add(label.instanceId);
      }
      const hard = truth.hardNegatives.get(id);
      if (hard !== undefined) {
        kinds.add(hard.kind);
        hardInstances.push(hard.instanceId);
      }
    }
    if (truePositive) {
      row.truePositives++;
      truePositives++;
    } else {
      for (const instance of hardInstances) flagged.add(instance);
    }
    for (const kind of kinds) {
      const t = getOr(touching, kind, () => ({ anomalies: 0, falsePositives: 0 }));
      t.anomalies++;
      if (!truePositive) t.falsePositives++;
    }
  }

  const fraudInstances = instancesBy(
    truth.fraud,
    truth.fraudInstanceLast,
    settledBy,
    (l) => l.pattern,
  );
  const patterns = ordered(REPORTED_FRAUD_PATTERNS, fraudInstances.keys()).map((pattern) => {
    const ids = fraudInstances.get(pattern) ?? [];
    const hit = ids.filter((id) => detected.has(id)).length;
    return { pattern, instances: ids.length, detected: hit, recall: ratio(hit, ids.length) };
  });
  const rules = ordered(REPORTED_RULES, byRule.keys()).map((rule): RulePrecision => {
    const row = byRule.get(rule) ?? { anomalies: 0, truePositives: 0 };
    const pattern = Object.hasOwn(RULE_PATTERNS, rule) ? RULE_PATTERNS[rule] : null;
    const ids = pattern === null ? [] : fraudInstances.get(pattern) ?? [];
    const own = detectedByRule.get(rule);
    const hit = own === undefined ? 0 : ids.filter((id) => own.has(id)).length;
    return {
      rule,
      anomalies: row.anomalies,
      truePositives: row.truePositives,
      precision: ratio(row.truePositives, row.anomalies),
      pattern,
      detected: hit,
      recall: ratio(hit, ids.length),
    };
  });
  const hardInstances = instancesBy(
    truth.hardNegatives,
    truth.hardNegativeInstanceLast,
    settledBy,
    (l) => l.kind,
  );
  const hardNegatives = ordered(
    REPORTED_HARD_NEGATIVE_KINDS,
    new Set([...hardInstances.keys(), ...touching.keys()]),
  ).map((kind): HardNegativeScore => {
    const ids = hardInstances.get(kind) ?? [];
    const hit = ids.filter((id) => flagged.has(id)).length;
    const t = touching.get(kind) ?? { anomalies: 0, falsePositives: 0 };
    return {
      kind,
      instances: ids.length,
      flagged: hit,
      falsePositiveRate: ratio(hit, ids.length),
      anomalies: t.anomalies,
      falsePositives: t.falsePositives,
      precision: ratio(t.anomalies - t.falsePositives, t.anomalies),
    };
  });

  const instances = patterns.reduce((sum, p) => sum + p.instances, 0);
  const detectedTotal = patterns.reduce((sum, p) => sum + p.detected, 0);
  const falsePositives = seen.size - truePositives;
  const legitimateUsers = truth.legitimateUsers;
  const days = truth.spanMs / DAY_MS;
  return {
    patterns,
    instances,
    detected: detectedTotal,
    recall: ratio(detectedTotal, instances),
    rules,
    anomalies: seen.size,
    truePositives,
    precision: ratio(truePositives, seen.size),
    falsePositives,
    legitimateUsers,
    days,
    falsePositivesPer10kUserDays: perTenThousandUserDays(falsePositives, legitimateUsers, days),
    hardNegatives,
  };
}

/**
 * False positives per 10 000 legitimate users per day: `falsePositives` ÷
 * (`users` × `days`) × 10 000; null when users × days is 0.
 */
export function perTenThousandUserDays(
  falsePositives: number,
  users: number,
  days: number,
): number | null {
  const userDays = users * days;
  return userDays > 0 ? (falsePositives * 10_000) / userDays : null;
}

/** The settled instance ids of each pattern (or kind), from labels by transaction. */
function instancesBy<L extends { readonly instanceId: string }>(
  labels: ReadonlyMap<string, L>,
  last: ReadonlyMap<string, number>,
  settledBy: number,
  name: (label: L) => string,
): Map<string, string[]> {
  const group = new Map<string, string>();
  for (const label of labels.values()) group.set(label.instanceId, name(label));
  const out = new Map<string, string[]>();
  for (const [instance, name] of group) {
    if ((last.get(instance) ?? -Infinity) > settledBy) continue;
    getOr(out, name, () => []).push(instance);
  }
  return out;
}

/** `listed`, then the other names of `seen` in alphabetical order. */
function ordered(listed: readonly string[], seen: Iterable<string>): string[] {
  const extra = [...new Set(seen)].filter((s) => !listed.includes(s)).sort();
  return [...listed, ...extra];
}

function getOr<K, V>(map: Map<K, V>, key: K, make: () => V): V {
  let v = map.get(key);
  if (v === undefined) {
    v = make();
    map.set(key, v);
  }
  return v;
}

function ratio(part: number, whole: number): number | null {
  return whole === 0 ? null : part / whole;
}

/** One column of {@link formatEvaluations}: a title and its figures. */
export interface EvaluationColumn {
  title: string;
  evaluation: Evaluation;
}

/**
 * The plain-text table of one or more evaluations side by side (one column
 * each), as `deno task evaluate` and `deno task tune` print it. Every ratio
 * shows its parts; `n/a` is a ratio with nothing to divide by.
 */
export function formatEvaluations(columns: readonly EvaluationColumn[]): string {
  const es = columns.map((c) => c.evaluation);
  const rows: string[][] = [];
  const section = (title: string) => rows.push([title]);
  const line = (name: string, cell: (e: Evaluation) => string) =>
    rows.push([`  ${name}`, ...es.map(cell)]);

  section("recall per pattern: instances detected / injected");
  for (const pattern of union(es, (e) => e.patterns.map((p) => p.pattern))) {
    line(pattern, (e) => {
      const p = e.patterns.find((x) => x.pattern === pattern);
      return p === undefined ? "" : share(p.recall, p.detected, p.instances);
    });
  }
  line("all patterns", (e) => share(e.recall, e.detected, e.instances));
  section("precision per rule: anomalies with fraud-labelled evidence / anomalies");
  for (const rule of union(es, (e) => e.rules.map((r) => r.rule))) {
    line(rule, (e) => {
      const r = e.rules.find((x) => x.rule === rule);
      return r === undefined ? "" : share(r.precision, r.truePositives, r.anomalies);
    });
  }
  line("all rules", (e) => share(e.precision, e.truePositives, e.anomalies));
  section("recall per rule on its own pattern: instances its anomalies cover / injected");
  for (const rule of union(es, (e) => e.rules.filter((r) => r.pattern).map((r) => r.rule))) {
    const pattern = RULE_PATTERNS[rule] ?? "";
    line(`${rule} (${pattern})`, (e) => {
      const r = e.rules.find((x) => x.rule === rule);
      const p = e.patterns.find((x) => x.pattern === pattern);
      return r === undefined ? "" : share(r.recall, r.detected, p?.instances ?? 0);
    });
  }
  section("false positives per 10 000 legitimate users per day");
  line("false-positive anomalies", (e) => String(e.falsePositives));
  line("legitimate users", (e) => String(e.legitimateUsers));
  line("days (event time)", (e) => e.days.toPrecision(3));
  line("per 10 000 users per day", (e) => fixed(e.falsePositivesPer10kUserDays));
  section("hard negatives: false-positive rate = instances flagged / instances");
  const kinds = union(es, (e) => e.hardNegatives.map((h) => h.kind));
  for (const kind of kinds) {
    line(kind, (e) => {
      const h = e.hardNegatives.find((x) => x.kind === kind);
      return h === undefined ? "" : share(h.falsePositiveRate, h.flagged, h.instances);
    });
  }
  section("hard negatives: precision of the anomalies touching them");
  for (const kind of kinds) {
    line(kind, (e) => {
      const h = e.hardNegatives.find((x) => x.kind === kind);
      return h === undefined ? "" : share(h.precision, h.anomalies - h.falsePositives, h.anomalies);
    });
  }

  const header = ["", ...columns.map((c) => c.title)];
  const nameWidth = Math.max(...[header, ...rows].map((r) => (r.length > 1 ? r[0].length : 0)));
  const widths = header.slice(1).map((title, i) =>
    Math.max(title.length, ...rows.map((r) => (r[i + 1] ?? "").length))
  );
  const render = (r: string[]) =>
    r.length === 1
      ? r[0]
      : [r[0].padEnd(nameWidth), ...r.slice(1).map((c, i) => c.padStart(widths[i]))].join("   ")
        .trimEnd();
  const out = columns.some((c) => c.title !== "") ? [render(header)] : [];
  return [...out, ...rows.map(render)].join("\n");
}

/** {@link formatEvaluations} of a single, untitled evaluation. */
export function formatEvaluation(e: Evaluation): string {
  return formatEvaluations([{ title: "", evaluation: e }]);
}

/** The names `pick` gives over every evaluation, first-seen order. */
function union(es: readonly Evaluation[], pick: (e: Evaluation) => string[]): string[] {
  return [...new Set(es.flatMap(pick))];
}

/** A ratio as a percentage with its parts: `50.00% (1/2)`, or `n/a (0/0)`. */
function share(value: number | null, part: number, whole: number): string {
  return `${value === null ? "n/a" : `${(value * 100).toFixed(2)}%`} (${part}/${whole})`;
}

function fixed(value: number | null): string {
  return value === null ? "n/a" : value.toFixed(2);
}
