/**
 * Pure per-user fraud detection: {@link detect} takes one user's state and their
 * next transaction (in partition order) and returns the new state and the
 * anomalies it raises. No clock, no I/O, no labels: the same input stream gives
 * the same anomalies with the same ids, so reprocessing cannot duplicate them.
 *
 * Each rule compares a transaction with the user's own baseline, kept in the
 * state (thresholds in jobs/config/detect_defaults.json):
 * - velocity: at least `minCount` transactions at `minMerchants` different
 *   merchants within the user's burst window: `gapFactor` × their usual gap
 *   between transactions (a geometric running mean), at least `minWindowMs`,
 *   at most `windowMs`. Cold start: the usual gap starts from `priorGapMs`
 *   (the population's), which the user's own gaps outweigh over their first
 *   {@link RATE_MAX_WEIGHT}, so that a new user's burst cannot set the pace
 *   that is to catch it.
 * - card_testing: credit-card purchases of at most `maxAmountUsd`
 *   (USD-equivalent, per currency) that are small for the user too (at most
 *   `maxShareOfTypical` of their typical amount in the currency, once
 *   {@link TYPICAL_WARMUP} purchases tell it): `minCount` of them at
 *   `minMerchants` merchants within the user's window (as velocity's, from
 *   `minWindowMs`, `gapFactor` and `windowMs`), or `minCount` within
 *   `windowMs` of which 2 at foreign merchants, or `minCountUsual` at one.
 * - amount_spike: a purchase ≥ `multiplier` × the median of the user's last
 *   `history` purchases in that currency and ≥ `minZScore` robust standard
 *   deviations (1.4826 × the median absolute deviation of the logarithms)
 *   above it, once `warmup` purchases form the baseline; small
 *   card-testing-sized amounts and flagged spikes stay out of it.
 * - impossible_travel: consecutive transactions at least `minDistanceKm` apart
 *   that would need more than `maxSpeedKmh`.
 * - account_takeover: a purchase from a country the user has not transacted
 *   in, with a payment method they have not used, once they have
 *   `minHistory` transactions.
 *
 * Once per incident: velocity and card testing fire when their condition first
 * holds and re-arm only after it has stopped holding; an amount spike is one
 * transaction; after an impossible jump A→B the way back B→A is the same
 * incident; a takeover's country is known to the user from its first purchase.
 *
 * `detectedAt` is the event time of the transaction that triggered the anomaly
 * (never the wall clock), so it is deterministic too.
 *
 * @module
 */
import { createHash } from "node:crypto";
import defaults from "../config/detect_defaults.json" with { type: "json" };
import { minorFromUsd, usdScale } from "./currency.ts";
import {
  countryOf,
  distanceKm,
  findLocation,
  PAYMENT_METHODS,
  type Transaction,
} from "./transaction.ts";

/** The detection rules, in the order their anomalies are emitted. */
export const RULES = [
  "velocity",
  "amount_spike",
  "impossible_travel",
  "card_testing",
  "account_takeover",
] as const;
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
  /**
   * velocity/card_testing: count; amount_spike: amount ÷ the baseline's median;
   * impossible_travel: km/h; account_takeover: the user's transactions before it.
   */
  observed: number;
  /** The configured limit `observed` is compared with (count, multiplier, km/h, history). */
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
  velocity: {
    minCount: number;
    /** The longest burst window (and the window before the user's first gap). */
    windowMs: number;
    /** The shortest burst window, however busy the user. */
    minWindowMs: number;
    /** The burst window in usual gaps between the user's transactions. */
    gapFactor: number;
    minMerchants: number;
    /** Transactions that are a burst whatever the merchants (above a legitimate basket). */
    minCountAnyMerchants: number;
  };
  amountSpike: {
    warmup: number;
    multiplier: number;
    minZScore: number;
    /** Purchases per currency the baseline keeps (the most recent). */
    history: number;
  };
  impossibleTravel: { maxSpeedKmh: number; minDistanceKm: number };
  cardTesting: {
    maxAmountUsd: number;
    minCount: number;
    windowMs: number;
    /** Merchants that make `minCount` small purchases a test without another sign. */
    minMerchants: number;
    /** Small purchases at one merchant, none unusual, that still are a test. */
    minCountUsual: number;
    /** The shortest window, however busy the user (the user's window as velocity's). */
    minWindowMs: number;
    /** The window in usual gaps between the user's transactions. */
    gapFactor: number;
    /**
     * A small purchase counts only when it is at most this share of the user's
     * typical amount in its currency (the median of a warm amount baseline):
     * a user who often pays small amounts is not testing a card by doing so.
     */
    maxShareOfTypical: number;
  };
  accountTakeover: {
    /** Transactions the user must have made before a new country and method count. */
    minHistory: number;
    /** Countries the user's profile remembers (the most recent). */
    maxCountries: number;
    /**
     * The purchase's amount over the user's typical one (the median of their
     * fullest amount baseline), both on the US-dollar reference scale.
     */
    minMultiple: number;
  };
  /** Most transactions a sliding window keeps per user (bounds the state). */
  maxEvents: number;
  /**
   * The gap between a new user's transactions that the burst windows
   * (velocity, card testing) assume until the user's own gaps tell them
   * (see {@link burstWindow}): the population's usual gap. Default 12 hours,
   * about two payments a day; traffic compressed in event time (the demo's
   * generator) has a shorter one.
   */
  priorGapMs: number;
}

/** A transaction remembered in a sliding window. */
export interface EventRef {
  time: number;
  id: string;
  /** {@link merchantKey} of its merchant. */
  merchant: number;
  /** card_testing: at a foreign merchant (`isInternational`). */
  unusual: boolean;
}

/** A sliding event-time window and whether its incident has already fired. */
export interface BurstState {
  /** Oldest first, at most `maxEvents`. */
  events: EventRef[];
  firing: boolean;
}

/** The user's recent purchase amounts in one currency (integer minor units). */
export interface AmountBaseline {
  /** Oldest first, at most `amountSpike.history`. */
  recent: number[];
  /** Event time of the first purchase in the baseline. */
  since: number;
}

/** The user's usual pace: a running mean of the logarithm of the gaps between transactions. */
export interface RateBaseline {
  /** Event time of the user's last transaction. */
  last: number;
  /** Gaps seen (at most {@link RATE_MAX_WEIGHT}). */
  gaps: number;
  /** Running mean of ln(gap in ms); 0 before the first gap. */
  logGap: number;
}

/** What the user is known to use: countries and payment methods. */
export interface Profile {
  /** Transactions seen (at most {@link PROFILE_MAX_COUNT}). */
  transactions: number;
  /** ISO country codes of the locations seen, least recent first. */
  countries: string[];
  /** Payment methods seen: bit i for PAYMENT_METHODS[i]. */
  methods: number;
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
 * topic, bounded (two windows of at most `maxEvents`, at most
 * {@link MAX_CURRENCIES} amount baselines of `history` amounts, at most
 * `maxCountries` countries, one pace, one position).
 */
export interface UserState {
  velocity: BurstState;
  cardTesting: BurstState;
  /** By ISO 4217 currency code, least recently used first. */
  amounts: Record<string, AmountBaseline>;
  rate: RateBaseline | null;
  profile: Profile;
  travel: TravelState | null;
}

/** What {@link detect} returns. */
export interface Detection {
  state: UserState;
  anomalies: Anomaly[];
}

/** Most currencies with an amount baseline per user (the least recently used goes). */
export const MAX_CURRENCIES = 4;
/** The pace's running mean weighs a new gap at least 1 / this. */
export const RATE_MAX_WEIGHT = 10;
/** Gaps are clamped to [1 min, 7 days] before their logarithm is taken. */
const GAP_RANGE = { min: 60_000, max: 7 * 86_400_000 };
/** The profile counts transactions up to this. */
export const PROFILE_MAX_COUNT = 1_000_000;

/**
 * A merchant id as 31 bits (FNV-1a, top bit dropped): the windows remember
 * merchants to count distinct ones, compactly. Two merchants sharing a key
 * count as one, which can only make a rule fire less.
 */
export function merchantKey(merchantId: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < merchantId.length; i++) {
    h ^= merchantId.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 1) & 0x7fffffff;
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
  const a = section("accountTakeover");
  const maxEvents = integer("maxEvents", given.maxEvents ?? base.maxEvents, 2);
  const priorGapMs = positive("priorGapMs", given.priorGapMs ?? base.priorGapMs);
  const config: DetectConfig = {
    velocity: {
      minCount: integer("velocity.minCount", v.minCount, 2, maxEvents),
      windowMs: positive("velocity.windowMs", v.windowMs),
      minWindowMs: positive("velocity.minWindowMs", v.minWindowMs),
      gapFactor: positive("velocity.gapFactor", v.gapFactor),
      minMerchants: integer("velocity.minMerchants", v.minMerchants, 1, maxEvents),
      minCountAnyMerchants: integer(
        "velocity.minCountAnyMerchants",
        v.minCountAnyMerchants,
        2,
        maxEvents + 1,
      ),
    },
    amountSpike: {
      warmup: integer("amountSpike.warmup", s.warmup, 2, 1_000),
      multiplier: positive("amountSpike.multiplier", s.multiplier),
      minZScore: positive("amountSpike.minZScore", s.minZScore),
      history: integer("amountSpike.history", s.history, 2, 1_000),
    },
    impossibleTravel: {
      maxSpeedKmh: positive("impossibleTravel.maxSpeedKmh", t.maxSpeedKmh),
      minDistanceKm: positive("impossibleTravel.minDistanceKm", t.minDistanceKm),
    },
    cardTesting: {
      maxAmountUsd: positive("cardTesting.maxAmountUsd", c.maxAmountUsd),
      minCount: integer("cardTesting.minCount", c.minCount, 2, maxEvents),
      windowMs: positive("cardTesting.windowMs", c.windowMs),
      minMerchants: integer("cardTesting.minMerchants", c.minMerchants, 1, maxEvents),
      minCountUsual: integer("cardTesting.minCountUsual", c.minCountUsual, 2, maxEvents + 1),
      minWindowMs: positive("cardTesting.minWindowMs", c.minWindowMs),
      gapFactor: positive("cardTesting.gapFactor", c.gapFactor),
      maxShareOfTypical: positive("cardTesting.maxShareOfTypical", c.maxShareOfTypical),
    },
    accountTakeover: {
      minHistory: integer("accountTakeover.minHistory", a.minHistory, 1, PROFILE_MAX_COUNT),
      maxCountries: integer("accountTakeover.maxCountries", a.maxCountries, 1, 64),
      minMultiple: positive("accountTakeover.minMultiple", a.minMultiple),
    },
    maxEvents,
    priorGapMs,
  };
  if (config.velocity.minWindowMs > config.velocity.windowMs) {
    fail(
      "velocity.minWindowMs",
      `at most velocity.windowMs (${config.velocity.windowMs})`,
      v.minWindowMs,
    );
  }
  if (config.cardTesting.minWindowMs > config.cardTesting.windowMs) {
    fail(
      "cardTesting.minWindowMs",
      `at most cardTesting.windowMs (${config.cardTesting.windowMs})`,
      c.minWindowMs,
    );
  }
  if (config.amountSpike.warmup > config.amountSpike.history) {
    fail(
      "amountSpike.warmup",
      `at most amountSpike.history (${config.amountSpike.history})`,
      s.warmup,
    );
  }
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
    rate: null,
    profile: { transactions: 0, countries: [], methods: 0 },
    travel: null,
  };
}

/** Bit of `method` in {@link Profile.methods} (0 for a method not in PAYMENT_METHODS). */
function methodBit(method: string): number {
  const i = (PAYMENT_METHODS as readonly string[]).indexOf(method);
  return i < 0 ? 0 : 1 << i;
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
  const merchant = merchantKey(tx.merchantId);
  const event: EventRef = {
    time: tx.transactionTime,
    id: tx.transactionId,
    merchant,
    unusual: false,
  };
  const small = tx.transactionType === "purchase" &&
    amountMinor <= minorFromUsd(config.cardTesting.maxAmountUsd, tx.currency);
  // Small for the user too: the amount baseline leaves it out (so that card
  // tests and micro-payments do not drag it down); card testing counts it when
  // it is a credit-card charge.
  const smallForUser = small &&
    amountMinor <= config.cardTesting.maxShareOfTypical *
        typicalIn(s.amounts, tx.currency);
  const bit = methodBit(tx.paymentMethod);
  const seasoned = s.profile.transactions >= config.accountTakeover.minHistory;
  const newMethod = seasoned && bit !== 0 && (s.profile.methods & bit) === 0;

  // The rules take their thresholds and their per-transaction inputs apart:
  // an options object spread per transaction was a good part of detect's
  // garbage (docs/benchmarks.md).
  const velocity = velocityRule(
    s.velocity,
    tx,
    event,
    burstWindow(s.rate, config.velocity, config.priorGapMs),
    config.maxEvents,
    config.velocity,
  );
  const spike = amountSpikeRule(s.amounts, tx, amountMinor, smallForUser, config.amountSpike);
  const travel = travelRule(s.travel, tx, config.impossibleTravel);
  const cardTesting = cardTestingRule(
    s.cardTesting,
    tx,
    smallForUser && CARD_METHODS.has(tx.paymentMethod)
      ? { ...event, unusual: tx.isInternational }
      : undefined,
    burstWindow(s.rate, config.cardTesting, config.priorGapMs),
    config.maxEvents,
    config.cardTesting,
  );
  const takeover = accountTakeoverRule(
    s.profile,
    tx,
    newMethod,
    s.amounts,
    amountMinor,
    config.accountTakeover,
  );

  const anomalies: Anomaly[] = [];
  if (velocity.anomaly !== undefined) anomalies.push(velocity.anomaly);
  if (spike.anomaly !== undefined) anomalies.push(spike.anomaly);
  if (travel.anomaly !== undefined) anomalies.push(travel.anomaly);
  if (cardTesting.anomaly !== undefined) anomalies.push(cardTesting.anomaly);
  if (takeover !== undefined) anomalies.push(takeover);
  return {
    state: {
      velocity: velocity.state,
      cardTesting: cardTesting.state,
      amounts: spike.amounts,
      rate: nextRate(s.rate, tx.transactionTime),
      profile: nextProfile(s.profile, tx, bit, config.accountTakeover.maxCountries),
      travel: travel.state,
    },
    anomalies,
  };
}

/**
 * The user's burst window: `gapFactor` × their usual gap within
 * [`minWindowMs`, `windowMs`]. The usual gap is the exponential of a weighted
 * mean of ln `priorGapMs` (weight {@link PRIOR_WEIGHT} before the first gap,
 * fading to none by the {@link RATE_MAX_WEIGHT}th) and the user's running
 * mean of ln gap (weight: their gaps seen). Without the prior, a new user's
 * first gap would set the pace, and a burst that is the user's first activity
 * would shrink its own window to a minute.
 */
export function burstWindow(
  rate: RateBaseline | null,
  o: { windowMs: number; minWindowMs: number; gapFactor: number },
  priorGapMs: number,
): number {
  const n = rate === null ? 0 : rate.gaps;
  const w = PRIOR_WEIGHT * Math.max(0, 1 - n / RATE_MAX_WEIGHT);
  const logGap = n === 0
    ? Math.log(priorGapMs)
    : (w * Math.log(priorGapMs) + n * rate!.logGap) / (w + n);
  return Math.min(o.windowMs, Math.max(o.minWindowMs, o.gapFactor * Math.exp(logGap)));
}

/**
 * What the prior gap weighs in the usual gap before the user's first gap, in
 * gaps (3, 5 and 8 give the same recall on held-out seeds 2-5 and precision
 * within 0.01 %; 0, the first gap alone, misses a burst that is a new user's
 * first activity).
 */
export const PRIOR_WEIGHT = 3;

/**
 * The pace after a transaction at `time`: the first gap since the last one
 * (clamped to [1 min, 7 days]) sets the mean of ln gap; each later one moves it
 * by 1/{@link RATE_MAX_WEIGHT} of the way, so that a burst's own short gaps
 * barely shorten the window that is to catch it.
 */
export function nextRate(rate: RateBaseline | null, time: number): RateBaseline {
  if (rate === null) return { last: time, gaps: 0, logGap: 0 };
  if (time < rate.last) return rate; // out of order: the pace stays
  const gap = Math.log(Math.min(GAP_RANGE.max, Math.max(GAP_RANGE.min, time - rate.last)));
  const gaps = Math.min(RATE_MAX_WEIGHT, rate.gaps + 1);
  const logGap = rate.gaps === 0 ? gap : rate.logGap + (gap - rate.logGap) / RATE_MAX_WEIGHT;
  return { last: time, gaps, logGap };
}

/** The profile after `tx`: its country last (at most `maxCountries`), its method, one more transaction. */
function nextProfile(p: Profile, tx: Transaction, bit: number, maxCountries: number): Profile {
  const country = countryOf(tx.location);
  const countries = p.countries[p.countries.length - 1] === country
    ? p.countries
    : [...p.countries.filter((c) => c !== country), country].slice(-maxCountries);
  return {
    transactions: Math.min(PROFILE_MAX_COUNT, p.transactions + 1),
    countries,
    methods: p.methods | bit,
  };
}

/**
 * velocity: `minCount` transactions at `minMerchants` merchants, or
 * `minCountAnyMerchants` at any, within the user's burst window.
 */
function velocityRule(
  s: BurstState,
  tx: Transaction,
  added: EventRef,
  window: number,
  maxEvents: number,
  o: DetectConfig["velocity"],
): { state: BurstState; anomaly?: Anomaly } {
  const events = slide(s.events, tx.transactionTime, added, window, maxEvents);
  const count = events.length;
  const holds = count >= o.minCountAnyMerchants ||
    (count >= o.minCount && merchants(events) >= o.minMerchants); // merchants only when due
  if (!holds) return { state: { events, firing: false } };
  if (s.firing) return { state: { events, firing: true } };
  return {
    state: { events, firing: true },
    anomaly: anomaly("velocity", tx, {
      severity: "medium",
      evidence: events,
      observed: count,
      threshold: o.minCount,
      windowStart: events[0].time,
    }),
  };
}

/**
 * card_testing: small credit-card charges, `minCount` at several merchants
 * within the user's window or with {@link UNUSUAL_MIN} foreign ones within
 * `windowMs`, or `minCountUsual` at one merchant.
 */
function cardTestingRule(
  s: BurstState,
  tx: Transaction,
  added: EventRef | undefined,
  window: number,
  maxEvents: number,
  o: DetectConfig["cardTesting"],
): { state: BurstState; anomaly?: Anomaly } {
  // The whole window is kept; the user's (pace) window is its newest part.
  const all = slide(s.events, tx.transactionTime, added, o.windowMs, maxEvents);
  let from = all.length;
  while (from > 0 && all[from - 1].time > tx.transactionTime - window) from--;
  const fast = all.slice(from);
  // Unusual charges (a foreign merchant, a new method) count over the whole
  // window; others only within the user's window, at several merchants.
  const unusual = all.length >= o.minCount && all.filter((e) => e.unusual).length >= UNUSUAL_MIN;
  const spread = fast.length >= o.minCount && merchants(fast) >= o.minMerchants;
  const events = unusual ? all : fast;
  const threshold = unusual || spread ? o.minCount : o.minCountUsual;
  if (events.length < threshold) return { state: { events: all, firing: false } };
  if (s.firing || added === undefined) return { state: { events: all, firing: s.firing } };
  return {
    state: { events: all, firing: true },
    anomaly: anomaly("card_testing", tx, {
      severity: "high",
      evidence: events,
      observed: events.length,
      threshold,
      windowStart: events[0].time,
    }),
  };
}

/** International small charges that make a test over the whole window. */
const UNUSUAL_MIN = 2;
/** Distinct merchants among `events`. */
function merchants(events: readonly EventRef[]): number {
  const seen = new Set<number>();
  for (const e of events) seen.add(e.merchant);
  return seen.size;
}

/**
 * The window after adding `added` (kept in time order): events older than
 * `windowMs` before the newest time seen are dropped, and at most `maxEvents`
 * kept. `events` is not modified; the window comes back as one new array (or
 * `events` itself when nothing changes).
 */
function slide(
  events: EventRef[],
  now: number,
  added: EventRef | undefined,
  windowMs: number,
  maxEvents: number,
): EventRef[] {
  // `added` goes before the first event later than it (mostly: at the end).
  let at = events.length;
  if (added !== undefined) { while (at > 0 && events[at - 1].time > added.time) at--; }
  const length = events.length + (added === undefined ? 0 : 1);
  const nth = (i: number) =>
    added === undefined || i < at ? events[i] : i === at ? added : events[i - 1];
  const newest = Math.max(now, length > 0 ? nth(length - 1).time : now);
  let start = Math.max(0, length - maxEvents);
  while (start < length && nth(start).time <= newest - windowMs) start++;
  if (added === undefined && start === 0) return events;
  const out = new Array<EventRef>(length - start);
  for (let i = start; i < length; i++) out[i - start] = nth(i);
  return out;
}

/** Room for {@link median}'s sorting, reused: it never allocates for a baseline's few amounts. */
const MEDIAN_SCRATCH: number[] = [];
/** Up to this many values {@link median} sorts by insertion in {@link MEDIAN_SCRATCH}. */
const MEDIAN_INSERTION = 64;

/** The median of `xs` (not modified; the mean of the middle two for an even count). */
function median(xs: readonly number[]): number {
  const n = xs.length;
  let sorted: readonly number[];
  if (n <= MEDIAN_INSERTION) {
    const a = MEDIAN_SCRATCH;
    for (let i = 0; i < n; i++) {
      const x = xs[i];
      let j = i;
      while (j > 0 && a[j - 1] > x) {
        a[j] = a[j - 1];
        j--;
      }
      a[j] = x;
    }
    sorted = a;
  } else sorted = [...xs].sort((a, b) => a - b);
  const mid = n >> 1;
  return n % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** The floor of the robust spread of ln amounts (a user who always pays the same). */
const MIN_LOG_SPREAD = 0.1;

/**
 * How far `amountMinor` is above a baseline: `ratio` to its median, and `z`,
 * robust standard deviations of ln amount above its median (1.4826 × the
 * median absolute deviation of the logarithms, at least 0.1).
 */
export function spikeScore(
  recent: readonly number[],
  amountMinor: number,
): { ratio: number; z: number } {
  const logs = recent.map((x) => Math.log(x));
  const center = median(logs);
  const spread = Math.max(MIN_LOG_SPREAD, 1.4826 * median(logs.map((l) => Math.abs(l - center))));
  return {
    ratio: amountMinor / median(recent),
    z: (Math.log(amountMinor) - center) / spread,
  };
}

/** amount_spike: a purchase far above the user's own baseline in the same currency. */
function amountSpikeRule(
  amounts: Record<string, AmountBaseline>,
  tx: Transaction,
  amountMinor: number,
  small: boolean,
  o: DetectConfig["amountSpike"],
): { amounts: Record<string, AmountBaseline>; anomaly?: Anomaly } {
  if (tx.transactionType !== "purchase" || small || amountMinor <= 0) return { amounts };
  const base = Object.hasOwn(amounts, tx.currency) ? amounts[tx.currency] : undefined;
  // The ratio first: the robust z only for a purchase already far above the median.
  if (
    base !== undefined && base.recent.length >= o.warmup &&
    amountMinor >= o.multiplier * median(base.recent)
  ) {
    const { ratio, z } = spikeScore(base.recent, amountMinor);
    if (ratio >= o.multiplier && z >= o.minZScore) {
      return {
        amounts, // the outlier stays out of the baseline
        anomaly: anomaly("amount_spike", tx, {
          severity: ratio >= 3 * o.multiplier ? "high" : "medium",
          evidence: [{ time: tx.transactionTime, id: tx.transactionId }],
          observed: Math.round(ratio * 100) / 100,
          threshold: o.multiplier,
          windowStart: base.since,
        }),
      };
    }
  }
  const next: AmountBaseline = base === undefined
    ? { recent: [amountMinor], since: tx.transactionTime }
    : { recent: appended(base.recent, amountMinor, o.history), since: base.since };
  // The other currencies in their order (the least recently used beyond
  // MAX_CURRENCIES - 1 dropped), then this one.
  const out: Record<string, AmountBaseline> = {};
  const codes = Object.keys(amounts);
  let drop = codes.length - (base === undefined ? 0 : 1) - (MAX_CURRENCIES - 1);
  for (const c of codes) {
    if (c === tx.currency) continue;
    if (drop-- > 0) continue;
    out[c] = amounts[c];
  }
  if (tx.currency === "__proto__") {
    Object.defineProperty(out, tx.currency, {
      value: next,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  } else out[tx.currency] = next;
  return { amounts: out };
}

/** The last `max` of `xs` followed by `x`, as one new array. */
function appended(xs: readonly number[], x: number, max: number): number[] {
  const start = Math.max(0, xs.length + 1 - max);
  const out = new Array<number>(xs.length + 1 - start);
  for (let i = start; i < xs.length; i++) out[i - start] = xs[i];
  out[out.length - 1] = x;
  return out;
}

/**
 * `amountMinor` over the user's typical amount: the median of their fullest
 * amount baseline (the most recent on a tie), both on the US-dollar reference
 * scale; 0 without a baseline.
 */
function typicalMultiple(
  amounts: Record<string, AmountBaseline>,
  tx: Transaction,
  amountMinor: number,
): number {
  let best: string | undefined;
  for (const code of Object.keys(amounts)) {
    if (best === undefined || amounts[code].recent.length >= amounts[best].recent.length) {
      best = code;
    }
  }
  if (best === undefined) return 0;
  const typical = usdScale(median(amounts[best].recent), best);
  return typical > 0 ? usdScale(amountMinor, tx.currency) / typical : 0;
}

/**
 * The payment methods card testing counts: stolen credit-card numbers are
 * what is tested (docs/detection.md's sources); debit cards, PayPal and bank
 * transfers are left out (with debit cards too, the compressed traffic of
 * the cluster tests gives card testing a precision of 77 %, not 88 %).
 */
export const CARD_METHODS: ReadonlySet<string> = new Set(["credit_card"]);

/** Purchases a baseline needs before card testing compares small charges with its median. */
export const TYPICAL_WARMUP = 3;

/**
 * The user's typical amount in `currency`: the median of its baseline once
 * it holds {@link TYPICAL_WARMUP} purchases; Infinity before (cold start:
 * every small purchase counts as small for the user).
 */
function typicalIn(amounts: Record<string, AmountBaseline>, currency: string): number {
  const base = Object.hasOwn(amounts, currency) ? amounts[currency] : undefined;
  return base !== undefined && base.recent.length >= TYPICAL_WARMUP
    ? median(base.recent)
    : Infinity;
}

/** account_takeover: a high purchase from a new country with a new payment method. */
function accountTakeoverRule(
  p: Profile,
  tx: Transaction,
  /** A seasoned user paying with a method new to them (see {@link detect}). */
  newMethod: boolean,
  amounts: Record<string, AmountBaseline>,
  amountMinor: number,
  o: DetectConfig["accountTakeover"],
): Anomaly | undefined {
  if (tx.transactionType !== "purchase" || !newMethod) return undefined;
  if (p.countries.includes(countryOf(tx.location))) return undefined;
  const multiple = typicalMultiple(amounts, tx, amountMinor);
  if (multiple < o.minMultiple) return undefined;
  return anomaly("account_takeover", tx, {
    severity: "high",
    evidence: [{ time: tx.transactionTime, id: tx.transactionId }],
    observed: Math.round(multiple * 100) / 100,
    threshold: o.minMultiple,
    windowStart: tx.transactionTime,
  });
}

/** impossible_travel: the speed needed between the previous and this transaction. */
function travelRule(
  prev: TravelState | null,
  tx: Transaction,
  o: DetectConfig["impossibleTravel"],
): { state: TravelState; anomaly?: Anomaly } {
  const at = (returnTo: string | null): TravelState => ({
    location: tx.location,
    time: tx.transactionTime,
    id: tx.transactionId,
    returnTo,
  });
  if (prev === null) return { state: at(null) };
  if (prev.returnTo === tx.location) return { state: at(null) }; // way back
  const from = findLocation(prev.location);
  const to = findLocation(tx.location);
  const km = from && to ? distanceKm(from, to) : 0;
  const hours = Math.max(1, Math.abs(tx.transactionTime - prev.time)) / 3_600_000;
  const speed = km / hours;
  if (km < o.minDistanceKm || speed <= o.maxSpeedKmh) {
    return { state: at(prev.returnTo) };
  }
  const state = at(prev.location);
  const [first, second] = prev.time <= state.time ? [prev, state] : [state, prev];
  return {
    state,
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
    evidence: ReadonlyArray<{ time: number; id: string }>;
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
