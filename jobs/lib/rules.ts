/**
 * Pure per-user fraud detection: {@link detect} takes one user's state and their
 * next transaction (in partition order) and returns the new state and the
 * anomalies it raises. No clock, no I/O, no labels: the same input stream gives
 * the same anomalies with the same ids, so reprocessing cannot duplicate them.
 *
 * The rules (thresholds in jobs/config/detect_defaults.json):
 * - velocity: at least `minCount` transactions within `windowMs` of event time.
 * - card_testing: at least `minCount` purchases of at most `maxAmountUsd`
 *   (USD-equivalent, per currency) within `windowMs`.
 * - amount_spike: a purchase ≥ `multiplier` × the user's mean in that currency and
 *   ≥ `minZScore` standard deviations above it, once `warmup` purchases form the
 *   baseline (Welford, integer minor units, one baseline per currency; small
 *   card-testing-sized amounts and flagged spikes stay out of it).
 * - impossible_travel: consecutive transactions at least `minDistanceKm` apart
 *   that would need more than `maxSpeedKmh`.
 *
 * Once per incident: velocity and card testing fire when the count first reaches
 * the threshold and re-arm only after it has dropped below; an amount spike is one
 * transaction; after an impossible jump A→B the way back B→A is the same incident.
 *
 * `detectedAt` is the event time of the transaction that triggered the anomaly
 * (never the wall clock), so it is deterministic too.
 *
 * @module
 */
import { createHash } from "node:crypto";
import defaults from "../config/detect_defaults.json" with { type: "json" };
import { minorFromUsd } from "./currency.ts";
import { distanceKm, findLocation, type Transaction } from "./transaction.ts";

/** The detection rules, in the order their anomalies are emitted. */
export const RULES = ["velocity", "amount_spike", "impossible_travel", "card_testing"] as const;
/** One of {@link RULES}. */
export type Rule = typeof RULES[number];
/** How urgent an anomaly is. */
export type Severity = "low" | "medium" | "high";

/** The value on `transaction_anomalies` (key userId), per docs/design.md. */
export interface Anomaly {
  /** 32 hex digits of SHA-256(rule, userId, evidence ids): the same evidence, the same id. */
  anomalyId: string;
  rule: Rule;
  severity: Severity;
  userId: string;
  /** The evidence, oldest first. */
  transactionIds: string[];
  /** velocity/card_testing: count; amount_spike: amount ÷ mean; impossible_travel: km/h. */
  observed: number;
  /** The configured limit `observed` is compared with (count, multiplier, km/h). */
  threshold: number;
  /** Event time of the oldest evidence (for amount_spike: of the baseline's first purchase). */
  windowStart: number;
  /** Event time of the newest evidence. */
  windowEnd: number;
  /** Event time of the transaction that triggered the anomaly. */
  detectedAt: number;
}

/** Thresholds of the rules; defaults in jobs/config/detect_defaults.json. */
export interface DetectConfig {
  velocity: { minCount: number; windowMs: number };
  amountSpike: { warmup: number; multiplier: number; minZScore: number };
  impossibleTravel: { maxSpeedKmh: number; minDistanceKm: number };
  cardTesting: { maxAmountUsd: number; minCount: number; windowMs: number };
  /** Most transactions a sliding window keeps per user (bounds the state). */
  maxEvents: number;
}

/** A transaction remembered in a sliding window. */
export interface EventRef {
  time: number;
  id: string;
}

/** A sliding event-time window and whether its incident has already fired. */
export interface BurstState {
  /** Oldest first, at most `maxEvents`. */
  events: EventRef[];
  firing: boolean;
}

/** Welford running statistics of purchase amounts in one currency (minor units). */
export interface AmountStats {
  count: number;
  mean: number;
  /** Sum of squared deviations from the mean. */
  m2: number;
  /** Event time of the first purchase in the baseline. */
  since: number;
}

/** The user's last position. */
export interface TravelState {
  location: string;
  time: number;
  id: string;
  /** Where the user was before the last impossible jump; going back there is not a new incident. */
  returnTo: string | null;
}

/**
 * Everything {@link detect} remembers about one user: plain JSON for the changelog
 * topic, bounded (two windows of at most `maxEvents`, one baseline per configured
 * currency, one position).
 */
export interface UserState {
  velocity: BurstState;
  cardTesting: BurstState;
  /** By ISO 4217 currency code. */
  amounts: Record<string, AmountStats>;
  travel: TravelState | null;
}

/** What {@link detect} returns. */
export interface Detection {
  state: UserState;
  anomalies: Anomaly[];
}

/**
 * Checks a partial or complete config (e.g. parsed from a JSON file) and fills the
 * missing values from the defaults. Throws a RangeError naming the key, what was
 * expected and what was given.
 */
export function parseDetectConfig(value: unknown): DetectConfig {
  const base = defaults as DetectConfig;
  if (!isObject(value)) fail("", "an object", value);
  const given = value as Record<string, unknown>;
  knownKeys("", given, base);
  const section = <K extends keyof DetectConfig>(key: K) => {
    const v = given[key] ?? {};
    if (!isObject(v)) fail(key, "an object", v);
    knownKeys(`${key}.`, v, base[key] as object);
    return { ...(base[key] as object), ...v } as Record<string, unknown>;
  };
  const v = section("velocity");
  const s = section("amountSpike");
  const t = section("impossibleTravel");
  const c = section("cardTesting");
  const maxEvents = integer("maxEvents", given.maxEvents ?? base.maxEvents, 2);
  const config: DetectConfig = {
    velocity: {
      minCount: integer("velocity.minCount", v.minCount, 2, maxEvents),
      windowMs: positive("velocity.windowMs", v.windowMs),
    },
    amountSpike: {
      warmup: integer("amountSpike.warmup", s.warmup, 2),
      multiplier: positive("amountSpike.multiplier", s.multiplier),
      minZScore: positive("amountSpike.minZScore", s.minZScore),
    },
    impossibleTravel: {
      maxSpeedKmh: positive("impossibleTravel.maxSpeedKmh", t.maxSpeedKmh),
      minDistanceKm: positive("impossibleTravel.minDistanceKm", t.minDistanceKm),
    },
    cardTesting: {
      maxAmountUsd: positive("cardTesting.maxAmountUsd", c.maxAmountUsd),
      minCount: integer("cardTesting.minCount", c.minCount, 2, maxEvents),
      windowMs: positive("cardTesting.windowMs", c.windowMs),
    },
    maxEvents,
  };
  return config;
}

/** The default thresholds (jobs/config/detect_defaults.json). */
export const DEFAULT_DETECT_CONFIG: DetectConfig = parseDetectConfig(defaults);

/** The state of a user never seen before. */
export function initialUserState(): UserState {
  return {
    velocity: { events: [], firing: false },
    cardTesting: { events: [], firing: false },
    amounts: {},
    travel: null,
  };
}

/**
 * Runs every rule on a user's next transaction. `tx` must be valid (see
 * validateTransaction) and `amountMinor` its exact amount; `state` is the state
 * returned for the user's previous transaction (undefined for a new user) and is
 * not modified.
 */
export function detect(
  state: UserState | undefined,
  tx: Transaction,
  amountMinor: number,
  config: DetectConfig = DEFAULT_DETECT_CONFIG,
): Detection {
  const s = state ?? initialUserState();
  const event: EventRef = { time: tx.transactionTime, id: tx.transactionId };
  const small = tx.transactionType === "purchase" &&
    amountMinor <= minorFromUsd(config.cardTesting.maxAmountUsd, tx.currency);

  const velocity = burstRule("velocity", s.velocity, tx, {
    added: event,
    window: config.velocity,
    maxEvents: config.maxEvents,
  });
  const spike = amountSpikeRule(s.amounts, tx, { amountMinor, small, ...config.amountSpike });
  const travel = travelRule(s.travel, tx, config.impossibleTravel);
  const cardTesting = burstRule("card_testing", s.cardTesting, tx, {
    added: small ? event : undefined,
    window: config.cardTesting,
    maxEvents: config.maxEvents,
  });

  const anomalies: Anomaly[] = [];
  for (const a of [velocity.anomaly, spike.anomaly, travel.anomaly, cardTesting.anomaly]) {
    if (a !== undefined) anomalies.push(a);
  }
  return {
    state: {
      velocity: velocity.state,
      cardTesting: cardTesting.state,
      amounts: spike.amounts,
      travel: travel.state,
    },
    anomalies,
  };
}

/** velocity and card_testing: a count of transactions in a sliding event-time window. */
function burstRule(
  rule: "velocity" | "card_testing",
  s: BurstState,
  tx: Transaction,
  o: {
    added: EventRef | undefined;
    window: { minCount: number; windowMs: number };
    maxEvents: number;
  },
): { state: BurstState; anomaly?: Anomaly } {
  const events = slide(s.events, tx.transactionTime, o);
  const count = events.length;
  if (count < o.window.minCount) return { state: { events, firing: false } };
  if (s.firing || o.added === undefined) return { state: { events, firing: s.firing } };
  return {
    state: { events, firing: true },
    anomaly: anomaly(rule, tx, {
      severity: rule === "card_testing" ? "high" : "medium",
      evidence: events,
      observed: count,
      threshold: o.window.minCount,
      windowStart: events[0].time,
    }),
  };
}

/**
 * The window after adding `o.added` (kept in time order): events older than
 * `windowMs` before the newest time seen are dropped, and at most `maxEvents` kept.
 */
function slide(
  events: EventRef[],
  now: number,
  o: { added: EventRef | undefined; window: { windowMs: number }; maxEvents: number },
): EventRef[] {
  let all = events;
  if (o.added !== undefined) {
    let at = events.length;
    while (at > 0 && events[at - 1].time > o.added.time) at--;
    all = [...events.slice(0, at), o.added, ...events.slice(at)];
  }
  const newest = Math.max(now, all.length > 0 ? all[all.length - 1].time : now);
  let start = Math.max(0, all.length - o.maxEvents);
  while (start < all.length && all[start].time <= newest - o.window.windowMs) start++;
  return start === 0 && all !== events ? all : all.slice(start);
}

/** amount_spike: a purchase far above the user's own baseline in the same currency. */
function amountSpikeRule(
  amounts: Record<string, AmountStats>,
  tx: Transaction,
  o: { amountMinor: number; small: boolean } & DetectConfig["amountSpike"],
): { amounts: Record<string, AmountStats>; anomaly?: Anomaly } {
  if (tx.transactionType !== "purchase" || o.small) return { amounts };
  const stats = Object.hasOwn(amounts, tx.currency) ? amounts[tx.currency] : undefined;
  if (stats !== undefined && stats.count >= o.warmup) {
    const std = Math.sqrt(stats.m2 / (stats.count - 1));
    const ratio = o.amountMinor / stats.mean;
    const z = std > 0 ? (o.amountMinor - stats.mean) / std : Infinity;
    if (ratio >= o.multiplier && z >= o.minZScore) {
      return {
        amounts, // the outlier stays out of the baseline
        anomaly: anomaly("amount_spike", tx, {
          severity: ratio >= 3 * o.multiplier ? "high" : "medium",
          evidence: [{ time: tx.transactionTime, id: tx.transactionId }],
          observed: Math.round(ratio * 100) / 100,
          threshold: o.multiplier,
          windowStart: stats.since,
        }),
      };
    }
  }
  return { amounts: { ...amounts, [tx.currency]: welford(stats, o.amountMinor, tx) } };
}

function welford(s: AmountStats | undefined, x: number, tx: Transaction): AmountStats {
  if (s === undefined) return { count: 1, mean: x, m2: 0, since: tx.transactionTime };
  const count = s.count + 1;
  const delta = x - s.mean;
  const mean = s.mean + delta / count;
  return { count, mean, m2: s.m2 + delta * (x - mean), since: s.since };
}

/** impossible_travel: the speed needed between the previous and this transaction. */
function travelRule(
  prev: TravelState | null,
  tx: Transaction,
  o: DetectConfig["impossibleTravel"],
): { state: TravelState; anomaly?: Anomaly } {
  const here = { location: tx.location, time: tx.transactionTime, id: tx.transactionId };
  if (prev === null) return { state: { ...here, returnTo: null } };
  if (prev.returnTo === tx.location) return { state: { ...here, returnTo: null } }; // way back
  const from = findLocation(prev.location);
  const to = findLocation(tx.location);
  const km = from && to ? distanceKm(from, to) : 0;
  const hours = Math.max(1, Math.abs(tx.transactionTime - prev.time)) / 3_600_000;
  const speed = km / hours;
  if (km < o.minDistanceKm || speed <= o.maxSpeedKmh) {
    return { state: { ...here, returnTo: prev.returnTo } };
  }
  const [first, second] = prev.time <= here.time ? [prev, here] : [here, prev];
  return {
    state: { ...here, returnTo: prev.location },
    anomaly: anomaly("impossible_travel", tx, {
      severity: speed >= 10 * o.maxSpeedKmh ? "high" : "medium",
      evidence: [first, second],
      observed: Math.round(speed),
      threshold: o.maxSpeedKmh,
      windowStart: first.time,
    }),
  };
}

function anomaly(
  rule: Rule,
  tx: Transaction,
  o: {
    severity: Severity;
    evidence: EventRef[];
    observed: number;
    threshold: number;
    windowStart: number;
  },
): Anomaly {
  const transactionIds = o.evidence.map((e) => e.id);
  const windowEnd = o.evidence.reduce((max, e) => Math.max(max, e.time), o.windowStart);
  return {
    anomalyId: createHash("sha256")
      .update(`${rule}\n${tx.userId}\n${transactionIds.join("\n")}`)
      .digest("hex")
      .slice(0, 32),
    rule,
    severity: o.severity,
    userId: tx.userId,
    transactionIds,
    observed: o.observed,
    threshold: o.threshold,
    windowStart: o.windowStart,
    windowEnd,
    detectedAt: tx.transactionTime,
  };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function fail(key: string, expected: string, given: unknown): never {
  const where = key === "" ? "detect config" : `detect config ${key}`;
  throw new RangeError(`${where}: expected ${expected}, given ${JSON.stringify(given)}`);
}

function knownKeys(prefix: string, given: object, known: object): void {
  for (const key of Object.keys(given)) {
    if (!Object.hasOwn(known, key)) {
      fail(prefix + key, `one of ${Object.keys(known).map((k) => prefix + k).join(", ")}`, key);
    }
  }
}

function positive(key: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
    fail(key, "a finite number > 0", value);
  }
  return value;
}

function integer(key: string, value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    fail(key, `an integer from ${min} to ${max}`, value);
  }
  return value as number;
}
