/**
 * A seeded, deterministic generator of synthetic transactions: background
 * traffic with realistic variety, labelled legitimate bursts and trips (hard
 * negatives) and labelled fraud whose parameters are drawn per instance. Pure:
 * no clock, no I/O; the same options give the same records, byte for byte.
 * docs/detection.md ("Traffic model") describes the model, its ranges and their
 * sources; this comment is the summary.
 *
 * Event time:
 * - Each user transacts {@link NORMAL_TRAFFIC}.transactionsPerUserPerDay times a
 *   day on average (an activity weight, lognormal across users), more by day
 *   than by night and more on Fridays and Saturdays than on Sundays: the arrival
 *   intensity follows {@link RHYTHM} at each user's local time (from the home
 *   city's longitude).
 * - `timeScale` compresses that: users behave `timeScale` times faster in event
 *   time. `timeScale: 1` is uncompressed (a simulated day is a day, per-user
 *   rates are real ones): for datasets that count false positives per user and
 *   day. By default the rate is `eventsPerSecond` (200) and the time scale
 *   follows from it (20 000 users: about 432). Shapes inside an instance
 *   (bursts, trips, fraud) are never compressed: their spans and speeds are in
 *   event time, as the rules' thresholds are. Compressed, a user's background
 *   transactions are at least {@link NORMAL_TRAFFIC}.minUserGapMs apart (so
 *   that compression alone makes no bursts), and trips and transit days, which
 *   last hours of event time whatever the scale, are `timeScale` times rarer.
 * - `take(count)` draws arrivals from that intensity; `take(count, { until })`
 *   places `count` arrivals between the previous arrival and `until`, so a paced
 *   producer passing its wall clock gets event time that follows the clock
 *   (compression then is its rate over the population's natural rate).
 *
 * Background traffic: `users` users, each with a home city (weighted by
 * population rank), a preferred and a second payment method, and a typical
 * (median) amount, lognormal across users; each amount is lognormal around it
 * with a heavy (Pareto) tail. `merchants` merchants with Zipf popularity, each
 * in a country; a small share of purchases goes to a foreign merchant; ~5%
 * refunds.
 *
 * Hard negatives (`hardNegativeRate`, share of records): legitimate behaviour
 * that looks like fraud, of the {@link HARD_NEGATIVE_KINDS}, labelled
 * {@link HardNegativeLabel} on every record of the instance. Fraud
 * (`fraudRate`, share of records): the {@link FRAUD_PATTERNS}, ranges in
 * {@link FRAUD_RANGES} drawn per instance, labelled {@link FraudLabel}. A
 * record carries at most one label; labels are meant for Kafka headers only,
 * never for the JSON value.
 *
 * @module
 */
import { fromMinorUnits, minorFromUsd } from "./currency.ts";
import {
  countryOf,
  distanceKm,
  encodeTransaction,
  LOCATIONS,
  MAX_TRANSACTION_TIME,
  MIN_TRANSACTION_TIME,
  PAYMENT_METHODS,
  type Transaction,
  type TransactionType,
} from "./transaction.ts";

/** The JSON bytes of a transaction (re-exported from transaction.ts for producers). */
export { encodeTransaction };

/**
 * The JSON text of a generated transaction: the same text as
 * {@link encodeTransaction} writes (a unit test compares them over every
 * pattern), built without JSON.stringify, about 4× faster (the producer's
 * generation worker spent a fifth of its time in it). Sound only for what
 * the generator makes: none of its strings needs escaping (user and merchant
 * ids `user-…`/`merchant-…`, lower-case hex UUIDs, the currency codes, the
 * enums, and the committed cities, checked when this module loads), and its
 * numbers are finite, which String() prints as JSON does.
 */
export function generatedJson(tx: Transaction): string {
  return `{"transactionId":"${tx.transactionId}","userId":"${tx.userId}","amount":${tx.amount},"currency":"${tx.currency}","transactionTime":${tx.transactionTime},"merchantId":"${tx.merchantId}","transactionType":"${tx.transactionType}","location":"${tx.location}","paymentMethod":"${tx.paymentMethod}","isInternational":${tx.isInternational}}`;
}

// generatedJson writes the cities as they are: none may need escaping.
for (const { location } of LOCATIONS) {
  if (JSON.stringify(location) !== `"${location}"`) {
    throw new Error(`jobs/data/locations.json: ${JSON.stringify(location)} needs JSON escaping`);
  }
}

/** Kafka header carrying the injected fraud pattern of a record. */
export const FRAUD_PATTERN_HEADER = "txpipe-fraud-pattern";
/** Kafka header carrying the id of the injected fraud instance a record belongs to. */
export const FRAUD_INSTANCE_HEADER = "txpipe-fraud-instance";
/** Kafka header carrying the hard-negative kind of a record (legitimate, looks like fraud). */
export const HARD_NEGATIVE_HEADER = "txpipe-hard-negative";
/** Kafka header carrying the id of the hard-negative instance a record belongs to. */
export const HARD_NEGATIVE_INSTANCE_HEADER = "txpipe-hard-negative-instance";

/** The injected fraud patterns. */
export const FRAUD_PATTERNS = [
  "velocity_burst",
  "amount_spike",
  "impossible_travel",
  "card_testing",
  "account_takeover",
] as const;
/** One of {@link FRAUD_PATTERNS}. */
export type FraudPattern = typeof FRAUD_PATTERNS[number];

/** Ground truth of a record that belongs to an injected fraud instance. */
export interface FraudLabel {
  readonly pattern: FraudPattern;
  /** A UUID v4 shared by all records of one instance. */
  readonly instanceId: string;
}

/** The kinds of legitimate behaviour that look like fraud (hard negatives). */
export const HARD_NEGATIVE_KINDS = [
  "multi_item",
  "micro_payments",
  "flight",
  "land_travel",
  "relocation",
] as const;
/** One of {@link HARD_NEGATIVE_KINDS}. */
export type HardNegativeKind = typeof HARD_NEGATIVE_KINDS[number];

/** Ground truth of a record that belongs to a hard-negative (legitimate) instance. */
export interface HardNegativeLabel {
  readonly kind: HardNegativeKind;
  /** A UUID v4 shared by all records of one instance. */
  readonly instanceId: string;
}

/** One generated record: the Kafka key, the value, its exact amount and its label, if any. */
export interface GeneratedRecord {
  /** The Kafka key: the userId. */
  key: string;
  /** The user's index in the generator's population (the same user, the same index). */
  user: number;
  tx: Transaction;
  /** `tx.amount` in integer minor units of `tx.currency`. */
  amountMinor: number;
  /** Present only on records of an injected fraud instance. */
  label?: FraudLabel;
  /** Present only on records of a hard-negative instance (never with `label`). */
  hardNegative?: HardNegativeLabel;
}

/** A closed range drawn once per instance. */
export interface Range {
  readonly min: number;
  readonly max: number;
}

/**
 * The fraud patterns' ranges, each drawn once per instance: counts uniformly
 * (integers), spans, multiples and speeds log-uniformly, small amounts
 * uniformly per charge. Sources: docs/detection.md.
 */
export interface FraudRanges {
  /** `transactions` purchases by one user within `spanMs`, at domestic merchants. */
  velocityBurst: { transactions: Range; spanMs: Range };
  /**
   * `transactions` credit-card purchases of `amountUsd` (USD-equivalent, each
   * drawn) within `spanMs`, at one merchant (share `singleMerchantShare`) or
   * each at a different one.
   */
  cardTesting: {
    transactions: Range;
    amountUsd: Range;
    spanMs: Range;
    singleMerchantShare: number;
  };
  /**
   * One purchase of `multiple` × the user's typical (median) amount, by a user
   * with at least `minHistory` purchases in the home currency (a user with
   * fewer first makes the missing ones: ordinary, unlabelled purchases at the
   * user's own pace).
   */
  amountSpike: { multiple: Range; minHistory: number };
  /**
   * A purchase where the user is, then one in a city at least `minDistanceKm`
   * away, as soon as `speedKmh` would take one there.
   */
  impossibleTravel: { minDistanceKm: number; speedKmh: Range };
  /**
   * `transactions` purchases within `spanMs`, all in a country that is neither
   * the user's home nor where the user is, with a payment method the user has
   * not used; the last one of `multiple` × the typical amount.
   */
  accountTakeover: { transactions: Range; spanMs: Range; multiple: Range };
}

/** Per-pattern partial overrides of {@link FRAUD_RANGES} (e.g. a test's envelope). */
export type FraudRangeOverrides = { [P in keyof FraudRanges]?: Partial<FraudRanges[P]> };

const SECOND = 1_000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** The default fraud ranges (issue 13; sources in docs/detection.md). */
export const FRAUD_RANGES: Readonly<FraudRanges> = Object.freeze({
  velocityBurst: { transactions: { min: 5, max: 15 }, spanMs: { min: MINUTE, max: 10 * MINUTE } },
  cardTesting: {
    transactions: { min: 3, max: 12 },
    amountUsd: { min: 0.5, max: 5 },
    spanMs: { min: MINUTE, max: 15 * MINUTE },
    singleMerchantShare: 0.5,
  },
  amountSpike: { multiple: { min: 5, max: 50 }, minHistory: 10 },
  impossibleTravel: { minDistanceKm: 500, speedKmh: { min: 1_000, max: 50_000 } },
  accountTakeover: {
    transactions: { min: 1, max: 3 },
    spanMs: { min: 5 * MINUTE, max: HOUR },
    multiple: { min: 3, max: 20 },
  },
});

/**
 * The hard negatives' ranges, drawn per instance like the fraud ranges (counts
 * uniformly, spans and stays log-uniformly, speeds and small amounts
 * uniformly). `weight` is each kind's share of instances at `timeScale` 1;
 * the long ones (trips, transit days) are `timeScale` times rarer when compressed.
 */
export const HARD_NEGATIVE_RANGES = Object.freeze({
  /** Several purchases at one merchant (a basket paid in parts, a bar tab). */
  multiItem: {
    weight: 0.3,
    transactions: { min: 3, max: 8 },
    spanMs: { min: 20 * SECOND, max: 3 * MINUTE },
  },
  /** In-app purchases at one app store: several small charges within minutes. */
  inApp: {
    weight: 0.15,
    transactions: { min: 2, max: 10 },
    amountUsd: { min: 0.5, max: 5 },
    spanMs: { min: MINUTE, max: 20 * MINUTE },
  },
  /** A day of transit fares: the same small fare a few times over the day. */
  transit: {
    weight: 0.15,
    transactions: { min: 2, max: 6 },
    amountUsd: { min: 1, max: 4 },
    spanMs: { min: 2 * HOUR, max: 14 * HOUR },
  },
  /**
   * A trip by plane, door to door at `speedKmh` (airport time included), to a
   * city at least `minDistanceKm` away, a stay, and the flight back. Labelled:
   * the purchase before leaving, the first `labelledAfter` at the destination,
   * the purchase before flying back and the first one home.
   */
  flight: {
    weight: 0.2,
    minDistanceKm: 300,
    speedKmh: { min: 300, max: 850 },
    stayMs: { min: DAY, max: 14 * DAY },
    labelledAfter: { min: 1, max: 2 },
  },
  /** A trip by train or car to a city `distanceKm` away, labelled as a flight is. */
  landTravel: {
    weight: 0.12,
    distanceKm: { min: 30, max: 1_200 },
    speedKmh: { min: 40, max: 140 },
    stayMs: { min: 6 * HOUR, max: 7 * DAY },
    labelledAfter: { min: 1, max: 2 },
  },
  /**
   * A move for good to a city at least `minDistanceKm` away (by land below
   * 1 000 km, else by plane): the last purchase at the old home and the first
   * `labelledAfter` at the new one. The new home's currency is the user's from
   * then on (the rhythm keeps the old home's time zone, a simplification).
   */
  relocation: { weight: 0.08, minDistanceKm: 100, labelledAfter: 3 },
});

/** Properties of background (unlabelled) traffic. */
export const NORMAL_TRAFFIC = Object.freeze({
  /**
   * Mean payments per user per day, uncompressed (the Diary of Consumer
   * Payment Choice: about two per consumer per day).
   */
  transactionsPerUserPerDay: 2,
  /** Spread (σ of the log) of the users' typical amounts around `medianUsd`. */
  medianUsd: 30,
  medianSigma: 0.8,
  /** Within one user: σ of the log of an amount around the user's typical one. */
  amountSigma: 0.9,
  /**
   * Within one user: share of amounts from a Pareto tail starting at
   * `tailFromMultiple` × the typical amount with exponent `tailAlpha` (at
   * most `tailMaxMultiple` ×), the occasional big purchase.
   */
  tailShare: 0.02,
  tailFromMultiple: 4,
  tailAlpha: 2.5,
  tailMaxMultiple: 60,
  /** No background amount is below this (USD-equivalent). */
  minAmountUsd: 1,
  /** Share of background transactions that are refunds. */
  refundShare: 0.05,
  /** Share of background transactions at a foreign merchant. */
  internationalShare: 0.04,
  /** Chance a transaction uses the user's preferred payment method (else the second one). */
  preferredMethodShare: 0.85,
  /**
   * Compressed only (`timeScale` > 1): least event time between two background
   * transactions of one user, so that compression alone makes no bursts.
   * Legitimate bursts come as labelled hard negatives.
   */
  minUserGapMs: 20_000,
  /**
   * Users per record/s that {@link usersForRate} asks for: compressed, each
   * user then transacts every 40 s on average, twice minUserGapMs, so arrivals
   * find a rested user and the generated rate is the requested one.
   */
  usersPerRecordPerSecond: 40,
  /**
   * Fewest users per record/s with which the generator still delivers over
   * 99% of the arrivals (measured: tests/generator_test.ts); fewer cannot
   * sustain the rate at all below minUserGapMs / 1000 = 20.
   */
  minUsersPerRecordPerSecond: 25,
});

/**
 * Relative arrival intensity by local hour (0–23) and local weekday (Monday
 * first), each of mean 1: low at night, a midday and an early-evening high,
 * Friday and Saturday busiest, Sunday quietest (docs/detection.md).
 */
export const RHYTHM = Object.freeze({
  hour: normalized([
    0.25,
    0.15,
    0.1,
    0.08,
    0.08,
    0.12,
    0.3,
    0.6,
    0.9,
    1.1,
    1.3,
    1.45,
    1.6,
    1.5,
    1.4,
    1.4,
    1.45,
    1.55,
    1.5,
    1.3,
    1.1,
    0.9,
    0.65,
    0.4,
  ]),
  weekday: normalized([0.92, 0.93, 0.97, 1.02, 1.12, 1.18, 0.86]),
});

function normalized(weights: number[]): readonly number[] {
  const mean = weights.reduce((s, w) => s + w, 0) / weights.length;
  return Object.freeze(weights.map((w) => w / mean));
}

/** Options of {@link TransactionGenerator}; every one has a default. */
export interface GeneratorOptions {
  /** Seed; numbers and strings both work and `42` equals `"42"`. Default 1. */
  seed?: number | string;
  /** Event time of the first arrival, epoch ms. Default 1_700_000_000_000 (2023-11-14). */
  startTime?: number;
  /** Simulated users. Default 20_000. */
  users?: number;
  /** Simulated merchants. Default 2_000. */
  merchants?: number;
  /**
   * Mean arrival rate in event time (not wall-clock), per second. Default 200.
   * Sets the time scale: eventsPerSecond ÷ {@link naturalEventsPerSecond}(users).
   * Not with `timeScale`.
   */
  eventsPerSecond?: number;
  /**
   * How many times faster than real life users behave in event time: 1 is
   * uncompressed (a simulated day is a day). Sets the rate instead of
   * `eventsPerSecond`. Default: from `eventsPerSecond`.
   */
  timeScale?: number;
  /** Expected share of records in injected fraud instances, 0 ≤ p < 1. Default 0. */
  fraudRate?: number;
  /**
   * Expected share of records in hard-negative instances (legitimate bursts,
   * micro-payments, trips, moves), 0 ≤ p < 1, with fraudRate + p < 1.
   * Default 0.05. 0 gives background traffic only.
   */
  hardNegativeRate?: number;
  /** The patterns injected, drawn uniformly. Default all of {@link FRAUD_PATTERNS}. */
  fraudPatterns?: readonly FraudPattern[];
  /** Narrower or other fraud ranges than {@link FRAUD_RANGES}, per pattern. Default none. */
  fraudRanges?: FraudRangeOverrides;
  /**
   * The spread of one user's amounts: `sigma` (default
   * {@link NORMAL_TRAFFIC}.amountSigma) and `tailShare` (default
   * {@link NORMAL_TRAFFIC}.tailShare).
   */
  spending?: { sigma?: number; tailShare?: number };
}

/** Defaults of {@link GeneratorOptions} (`timeScale` follows from `eventsPerSecond`). */
export const GENERATOR_DEFAULTS = Object.freeze({
  seed: 1 as number | string,
  startTime: 1_700_000_000_000,
  users: 20_000,
  merchants: 2_000,
  eventsPerSecond: 200,
  fraudRate: 0,
  hardNegativeRate: 0.05,
  fraudPatterns: FRAUD_PATTERNS as readonly FraudPattern[],
});

/** The largest population the generator builds. */
export const MAX_USERS = 10_000_000;

/**
 * The uncompressed (`timeScale` 1) mean arrival rate of `users` users, per
 * second: users × {@link NORMAL_TRAFFIC}.transactionsPerUserPerDay / 86 400.
 */
export function naturalEventsPerSecond(users: number): number {
  return (users * NORMAL_TRAFFIC.transactionsPerUserPerDay) / 86_400;
}

/**
 * The population for `recordsPerSecond` of plausible compressed traffic: the
 * default users, or {@link NORMAL_TRAFFIC}.usersPerRecordPerSecond per
 * record/s when that is more (20 000 users sustain about 1 000 records/s), at
 * most {@link MAX_USERS}.
 */
export function usersForRate(recordsPerSecond: number): number {
  const users = Math.ceil(recordsPerSecond * NORMAL_TRAFFIC.usersPerRecordPerSecond);
  return Math.min(MAX_USERS, Math.max(GENERATOR_DEFAULTS.users, users));
}

/**
 * How often, in ms of event time, one of `users` simulated users pays when
 * they make `recordsPerSecond` together (compressed traffic): the pace the
 * detection rules are told with `--prior-gap` (jobs/start.ts). `users`
 * defaults to the producer's population for the rate, {@link usersForRate}.
 */
export function meanUserGapMs(
  recordsPerSecond: number,
  users: number = usersForRate(recordsPerSecond),
): number {
  return (users / recordsPerSecond) * 1000;
}

/**
 * Fewest users that can sustain `recordsPerSecond` records per second of
 * compressed event time ({@link NORMAL_TRAFFIC}.minUsersPerRecordPerSecond per record/s).
 */
export function minUsersForRate(recordsPerSecond: number): number {
  return Math.ceil(recordsPerSecond * NORMAL_TRAFFIC.minUsersPerRecordPerSecond);
}

/**
 * The Kafka headers of a record's label: the two fraud headers, the two
 * hard-negative headers, or none for background records. Takes the record
 * (`labelHeaders(r)`), or its labels (`labelHeaders(r.label, r.hardNegative)`).
 */
export function labelHeaders(
  labels:
    | FraudLabel
    | { readonly label?: FraudLabel; readonly hardNegative?: HardNegativeLabel }
    | undefined,
  hardNegative?: HardNegativeLabel,
): Record<string, string> {
  let label: FraudLabel | undefined;
  if (labels !== undefined && "pattern" in labels) label = labels;
  else if (labels !== undefined) {
    label = labels.label;
    hardNegative ??= labels.hardNegative;
  }
  if (label !== undefined) {
    return { [FRAUD_PATTERN_HEADER]: label.pattern, [FRAUD_INSTANCE_HEADER]: label.instanceId };
  }
  if (hardNegative !== undefined) {
    return {
      [HARD_NEGATIVE_HEADER]: hardNegative.kind,
      [HARD_NEGATIVE_INSTANCE_HEADER]: hardNegative.instanceId,
    };
  }
  return {};
}

/** Seed of the simulated population, fixed so that every run shares it. */
const POPULATION_SEED = "txpipe-population-v2";

/** The preferred payment method's weights, in PAYMENT_METHODS order. */
const METHOD_WEIGHTS = [0.45, 0.35, 0.12, 0.08];

/** Hard-negative variants: the kinds, with micro_payments as in-app or transit. */
const VARIANTS = [
  "multi_item",
  "in_app",
  "transit",
  "flight",
  "land_travel",
  "relocation",
] as const;
type Variant = typeof VARIANTS[number];
/** Variants that last hours or days of event time, whatever the time scale. */
const LONG_VARIANTS: ReadonlySet<Variant> = new Set([
  "transit",
  "flight",
  "land_travel",
  "relocation",
]);

/** After an instance, its user is not picked for a fraud instance again for this long. */
const FRAUD_COOLDOWN_MS = 10 * MINUTE;

/**
 * The synthetic transaction stream. `next()` returns records in non-decreasing
 * event time; `flush()` returns the rest of the started, queued instances.
 */
export class TransactionGenerator {
  readonly #rng: Random;
  readonly #pop: Population;
  readonly #ranges: FraudRanges;
  readonly #patterns: readonly FraudPattern[];
  readonly #eventsPerSecond: number;
  readonly #ratePerMs: number;
  readonly #timeScale: number;
  readonly #restMs: number;
  /** Mean event time between two transactions of one user (compressed by the time scale). */
  readonly #meanUserGapMs: number;
  readonly #sigma: number;
  readonly #tailShare: number;
  /** Chance that an arrival starts a fraud instance; of fraud or a hard negative. */
  readonly #pFraud: number;
  readonly #pAny: number;
  readonly #variantCumulative: Float64Array;
  /** Per city: the cities each kind of travel may go to. */
  readonly #targets: Record<"far" | "flight" | "land" | "move", number[][]>;
  readonly #pending = new PendingQueue();
  /** Users on a trip, moved, or with labelled records still to make (flag set in the population). */
  readonly #trips = new Map<number, Trip>();
  #clock: number;
  #eligibleForSpike: number[] = [];

  /** Builds the population from `options` (throws RangeError on bad options). */
  constructor(options: GeneratorOptions = {}) {
    const o = checkOptions(options);
    this.#rng = new Random(String(o.seed));
    // The population (homes, currencies, merchants) depends only on its size,
    // not on the seed: runs with different seeds into the same topic describe
    // the same people, so no user "moves" between runs.
    this.#pop = buildPopulation(new Random(POPULATION_SEED), o.users, o.merchants);
    this.#ranges = o.ranges;
    this.#patterns = o.fraudPatterns;
    const natural = naturalEventsPerSecond(o.users);
    this.#eventsPerSecond = o.timeScale === undefined ? o.eventsPerSecond : natural * o.timeScale;
    this.#timeScale = this.#eventsPerSecond / natural;
    this.#ratePerMs = this.#eventsPerSecond / 1000;
    this.#restMs = this.#timeScale > 1 ? NORMAL_TRAFFIC.minUserGapMs : 0;
    this.#meanUserGapMs = meanUserGapMs(this.#eventsPerSecond, o.users);
    this.#sigma = o.spending.sigma;
    this.#tailShare = o.spending.tailShare;
    this.#clock = o.startTime;

    // Instance starts per arrival that give the requested shares of records
    // (docs/detection.md): a queued instance adds its records, a trip relabels
    // the user's own later records.
    const weights = VARIANTS.map((v) =>
      variantWeight(v) / (LONG_VARIANTS.has(v) ? Math.max(1, this.#timeScale) : 1)
    );
    this.#variantCumulative = cumulative(weights);
    const total = weights.reduce((s, w) => s + w, 0);
    const labelled = VARIANTS.reduce((s, v, i) => s + weights[i] * variantRecords(v).labelled, 0) /
      total;
    const added = VARIANTS.reduce((s, v, i) => s + weights[i] * variantRecords(v).added, 0) / total;
    const fraudRecords = this.#patterns.reduce((s, p) => s + patternRecords(p, o.ranges), 0) /
      this.#patterns.length;
    const f = o.fraudRate;
    const h = o.hardNegativeRate;
    const d = 1 / (1 + f / fraudRecords + h / labelled - f - (h * added) / labelled);
    this.#pFraud = (f * d) / fraudRecords;
    this.#pAny = this.#pFraud + (h * d) / labelled;

    const within = (lo: number, hi: number) =>
      LOCATIONS.map((a, i) =>
        LOCATIONS.flatMap((b, j) => {
          const km = distanceKm(a, b);
          return j !== i && km >= lo && km <= hi ? [j] : [];
        })
      );
    const far = within(o.ranges.impossibleTravel.minDistanceKm, Infinity);
    this.#targets = {
      far: far.map((list, i) => list.length > 0 ? list : [farthest(i)]),
      flight: within(HARD_NEGATIVE_RANGES.flight.minDistanceKm, Infinity),
      land: within(
        HARD_NEGATIVE_RANGES.landTravel.distanceKm.min,
        HARD_NEGATIVE_RANGES.landTravel.distanceKm.max,
      ),
      move: within(HARD_NEGATIVE_RANGES.relocation.minDistanceKm, Infinity),
    };
  }

  /** Records of started instances waiting for their event time. */
  get pending(): number {
    return this.#pending.size;
  }

  /**
   * How many times faster than real life the simulated users behave in event
   * time (1: uncompressed). Derived from `eventsPerSecond` unless given.
   */
  get timeScale(): number {
    return this.#timeScale;
  }

  /** The mean arrival rate in event time, per second (over a week of the rhythm). */
  get eventsPerSecond(): number {
    return this.#eventsPerSecond;
  }

  /**
   * The expected arrivals per second of event time at `time` (epoch ms) in
   * `take(count)`: eventsPerSecond × the population's rhythm in that hour.
   */
  intensityAt(time: number): number {
    return this.#eventsPerSecond * this.#pop.slotFactor[weekSlot(time)];
  }

  /** The next record in event-time order, from the arrivals at the rhythm's intensity. */
  next(): GeneratedRecord {
    for (;;) {
      if (this.#pending.peekTime() <= this.#clock) return this.#popPending();
      const t = this.#clock;
      this.#clock = this.#nextArrival(t);
      const record = this.#arrival(t);
      if (record) return record;
    }
  }

  /**
   * The next `count` records. Without `until`, from the arrivals at the
   * rhythm's intensity (event time simulated, see `timeScale`). With `until`
   * (epoch ms), the `count` arrivals fall between the previous call's `until`
   * (or the start time) and this one, uniformly, as a Poisson process with that
   * many arrivals would, so no record is later than `until`: a paced producer
   * passes its clock and event time follows the rate it actually reaches,
   * whatever it asked for (the rhythm then picks whose arrivals they are).
   * Then fewer than `count` records come back only when the population is too
   * small for the rate (see {@link minUsersForRate}).
   */
  take(count: number, options: { until?: number } = {}): GeneratedRecord[] {
    if (options.until === undefined) {
      const out = new Array<GeneratedRecord>(count);
      for (let i = 0; i < count; i++) out[i] = this.next();
      return out;
    }
    const until = checkEventTime("until", options.until);
    const from = this.#clock;
    const span = Math.max(0, until - from);
    const times = new Float64Array(count);
    for (let i = 0; i < count; i++) times[i] = from + (1 - this.#rng.float()) * span;
    times.sort();
    const out: GeneratedRecord[] = [];
    for (const t of times) {
      this.#clock = Math.max(this.#clock, t);
      const record = this.#recordAt(this.#clock);
      if (record) out.push(record);
    }
    this.#clock = Math.max(this.#clock, until);
    return out;
  }

  /**
   * Moves event time forward to `time` (epoch ms) without arrivals: the next
   * records are not earlier. A paced producer calls it when it starts
   * sending, so that the time spent connecting is not filled with records.
   * Queued records due before `time` come at `time`, in their order.
   */
  skipTo(time: number): void {
    this.#clock = Math.max(this.#clock, checkEventTime("time", time));
    const due: Queued[] = [];
    while (this.#pending.peekTime() < this.#clock) due.push(this.#pending.pop());
    for (const p of due) this.#pending.push({ ...p, time: this.#clock });
  }

  /**
   * The remaining records of queued instances already started, in event-time
   * order, so that a finite run ends with complete bursts and fraud. Later
   * `next()` records are not earlier than these. (Trips under way end with
   * the user's later records, which a finite run does not make.)
   */
  flush(): GeneratedRecord[] {
    const out: GeneratedRecord[] = [];
    while (this.#pending.size > 0) {
      this.#clock = Math.max(this.#clock, this.#pending.peekTime());
      out.push(this.#popPending());
    }
    return out;
  }

  /** The arrival after one at `t`: a Poisson process whose rate follows the rhythm hour by hour. */
  #nextArrival(t: number): number {
    let e = -Math.log(1 - this.#rng.float()); // unit exponential, spent hour by hour
    const factor = this.#pop.slotFactor;
    for (;;) {
      const hourEnd = (Math.floor(t / HOUR) + 1) * HOUR;
      const rate = this.#ratePerMs * factor[weekSlot(t)];
      const next = t + e / rate;
      if (next <= hourEnd) return next;
      e -= (hourEnd - t) * rate;
      t = hourEnd;
    }
  }

  /**
   * One record at event time `t` (the clock): a queued record now due, else a
   * new arrival; a few more arrivals at the same instant when one starts an
   * instance that begins later or finds every user picked resting.
   */
  #recordAt(t: number): GeneratedRecord | undefined {
    for (let attempt = 0; attempt < 4; attempt++) {
      if (this.#pending.peekTime() <= t) return this.#popPending();
      const record = this.#arrival(t);
      if (record) return record;
    }
    return undefined;
  }

  #popPending(): GeneratedRecord {
    const q = this.#pending.pop();
    return this.#record(q.user, q.time, q, q.label, q.hardNegative);
  }

  /**
   * An arrival at `t`: a background record, the first record of a trip or a
   * move, or nothing when it starts a queued instance (its records wait in
   * the queue) or every user picked is resting (the arrival is dropped).
   */
  #arrival(t: number): GeneratedRecord | undefined {
    const u = this.#pickUser(t);
    if (u < 0) return undefined;
    if (this.#pAny > 0) {
      const x = this.#rng.float();
      if (x < this.#pFraud) {
        this.#startFraud(t);
        return undefined;
      }
      if (x < this.#pAny) return this.#startHardNegative(u, t);
    }
    return this.#background(u, t);
  }

  /**
   * A user by the rhythm (their time zone's weight at `t`) and activity (16
   * tries), else any user (16 more), free for background traffic at `t`
   * (rested when compressed, not travelling); -1 if none.
   */
  #pickUser(t: number): number {
    const pop = this.#pop;
    const rng = this.#rng;
    const groups = pop.slotGroupCumulative[weekSlot(t)];
    for (let tries = 0; tries < 16; tries++) {
      const g = pickWeighted(groups, rng);
      const u = pop.order[pickAlias(pop.alias, pop.groupStart[g], pop.groupStart[g + 1], rng)];
      if (pop.nextFree[u] <= t) return u;
    }
    // The active users are all resting (a busy population): anyone rested will do.
    for (let tries = 0; tries < 16; tries++) {
      const u = rng.int(pop.userIds.length);
      if (pop.nextFree[u] <= t) return u;
    }
    return -1;
  }

  /** A background record of `u` at `t`, where the user is; on a trip, labelled when it is one of the trip's. */
  #background(u: number, t: number): GeneratedRecord {
    const pop = this.#pop;
    pop.nextFree[u] = t + this.#restMs;
    if (pop.flags[u] === 0) return this.#normal(u, t);
    const trip = this.#trips.get(u)!;
    if (t >= trip.returnAt) return this.#travelHome(u, t, trip);
    if (trip.left === 0) return this.#normal(u, t);
    trip.left--;
    if (trip.left === 0 && trip.returnAt === Infinity) {
      this.#trips.delete(u);
      pop.flags[u] = 0;
    }
    return this.#normal(u, t, trip.label);
  }

  /** A background transaction where `u` is now, optionally labelled as a hard negative's. */
  #normal(u: number, t: number, hardNegative?: HardNegativeLabel): GeneratedRecord {
    const pop = this.#pop;
    const rng = this.#rng;
    const at = pop.userAt[u];
    const country = pop.locationCountry[at];
    let merchant = -1;
    if (rng.float() < NORMAL_TRAFFIC.internationalShare) merchant = this.#foreignMerchant(country);
    if (merchant < 0) merchant = this.#merchantIn(country);
    const currency = pop.countryCurrency[pop.merchantCountry[merchant]];
    const type: TransactionType = rng.float() < NORMAL_TRAFFIC.refundShare ? "refund" : "purchase";
    const amountMinor = this.#typicalAmount(u, currency);
    if (
      type === "purchase" && at === pop.userHome[u] && currency === pop.countryCurrency[country]
    ) {
      this.#countHomePurchase(u);
    }
    const fields = { merchant, currency, amountMinor, type, location: at, method: this.#method(u) };
    return this.#record(u, t, fields, undefined, hardNegative);
  }

  #countHomePurchase(u: number): void {
    if (++this.#pop.homePurchases[u] === this.#ranges.amountSpike.minHistory) {
      this.#eligibleForSpike.push(u);
    }
  }

  // ------------------------------------------------------------ hard negatives

  /** A hard negative for `u` (a queued burst, or the first record of a trip or move). */
  #startHardNegative(u: number, t: number): GeneratedRecord | undefined {
    const pop = this.#pop;
    if (pop.busyUntil[u] > t || pop.flags[u] !== 0) return this.#background(u, t);
    const variant = VARIANTS[pickWeighted(this.#variantCumulative, this.#rng)];
    if (variant === "flight" || variant === "land_travel" || variant === "relocation") {
      return this.#startTrip(u, t, variant);
    }
    const label: HardNegativeLabel = {
      kind: variant === "multi_item" ? "multi_item" : "micro_payments",
      instanceId: this.#rng.uuid(),
    };
    const planned = variant === "multi_item"
      ? this.#multiItem(u, t, label)
      : this.#smallCharges(u, t, label, variant);
    pop.busyUntil[u] = this.#queue(planned, t);
    return undefined;
  }

  /** Several purchases at one merchant where the user is, within a minute or few. */
  #multiItem(u: number, t: number, label: HardNegativeLabel): Planned[] {
    const r = HARD_NEGATIVE_RANGES.multiItem;
    const rng = this.#rng;
    const { at, country, currency } = this.#whereIs(u);
    const merchant = this.#merchantIn(country);
    const method = this.#pop.userMethod[u];
    const times = this.#spread(t, rng.logUniform(r.spanMs), rng.intRange(r.transactions));
    return times.map((time) => ({
      user: u,
      time,
      fields: {
        merchant,
        currency,
        amountMinor: this.#typicalAmount(u, currency),
        type: "purchase",
        location: at,
        method,
      },
      hardNegative: label,
    }));
  }

  /** In-app purchases (minutes, each amount drawn) or a day of one transit fare (hours). */
  #smallCharges(u: number, t: number, label: HardNegativeLabel, variant: Variant): Planned[] {
    const r = variant === "transit" ? HARD_NEGATIVE_RANGES.transit : HARD_NEGATIVE_RANGES.inApp;
    const rng = this.#rng;
    const { at, country, currency } = this.#whereIs(u);
    const merchant = this.#merchantIn(country);
    const method = this.#pop.userMethod[u];
    const low = Math.max(1, minorFromUsd(r.amountUsd.min, currency));
    const high = Math.max(low, minorFromUsd(r.amountUsd.max, currency));
    const fare = low + rng.int(high - low + 1);
    const times = this.#spread(t, rng.logUniform(r.spanMs), rng.intRange(r.transactions));
    return times.map((time) => ({
      user: u,
      time,
      fields: {
        merchant,
        currency,
        amountMinor: variant === "transit" ? fare : low + rng.int(high - low + 1),
        type: "purchase",
        location: at,
        method,
      },
      hardNegative: label,
    }));
  }

  /**
   * The purchase before leaving on a trip or moving; the user is in transit
   * (no transactions) until arrival, then transacts at the destination, the
   * first records labelled, until the trip's end (drawn stay) brings them home.
   */
  #startTrip(u: number, t: number, variant: Variant): GeneratedRecord {
    const pop = this.#pop;
    const rng = this.#rng;
    const from = pop.userAt[u];
    let kind: HardNegativeKind = variant === "relocation"
      ? "relocation"
      : variant === "land_travel"
      ? "land_travel"
      : "flight";
    let targets = kind === "relocation"
      ? this.#targets.move[from]
      : kind === "land_travel"
      ? this.#targets.land[from]
      : this.#targets.flight[from];
    if (targets.length === 0) { // no city within reach by land: fly
      kind = "flight";
      targets = this.#targets.flight[from];
    }
    const to = targets[rng.int(targets.length)];
    const label: HardNegativeLabel = { kind, instanceId: rng.uuid() };
    const departure = this.#normal(u, t, label);
    const arrival = t + this.#travelMs(kind, from, to);
    pop.userAt[u] = to;
    pop.nextFree[u] = arrival;
    let trip: Trip;
    if (kind === "relocation") {
      pop.userHome[u] = to;
      pop.homePurchases[u] = 0;
      trip = { label, left: HARD_NEGATIVE_RANGES.relocation.labelledAfter, returnAt: Infinity };
      pop.busyUntil[u] = arrival;
    } else {
      const r = kind === "flight" ? HARD_NEGATIVE_RANGES.flight : HARD_NEGATIVE_RANGES.landTravel;
      const returnAt = arrival + rng.logUniform(r.stayMs);
      trip = { label, left: rng.intRange(r.labelledAfter), returnAt };
      pop.busyUntil[u] = returnAt + (arrival - t); // until home again
    }
    this.#trips.set(u, trip);
    pop.flags[u] = 1;
    return departure;
  }

  /** The purchase before travelling home (a new instance of the trip's kind); the first one home is labelled too. */
  #travelHome(u: number, t: number, trip: Trip): GeneratedRecord {
    const pop = this.#pop;
    const label: HardNegativeLabel = { kind: trip.label.kind, instanceId: this.#rng.uuid() };
    const departure = this.#normal(u, t, label);
    const home = pop.userHome[u];
    const arrival = t + this.#travelMs(label.kind, pop.userAt[u], home);
    pop.userAt[u] = home;
    pop.nextFree[u] = arrival;
    pop.busyUntil[u] = Math.max(pop.busyUntil[u], arrival);
    trip.label = label;
    trip.left = 1;
    trip.returnAt = Infinity;
    return departure;
  }

  /** Door-to-door time from city `from` to `to` at a speed drawn for `kind`. */
  #travelMs(kind: HardNegativeKind, from: number, to: number): number {
    const km = distanceKm(LOCATIONS[from], LOCATIONS[to]);
    const byLand = kind === "land_travel" ||
      (kind === "relocation" && km < 1_000);
    const speed = byLand
      ? HARD_NEGATIVE_RANGES.landTravel.speedKmh
      : HARD_NEGATIVE_RANGES.flight.speedKmh;
    return (km / this.#rng.range(speed.min, speed.max)) * HOUR;
  }

  // ------------------------------------------------------------------- fraud

  #startFraud(t: number): void {
    const patterns = this.#patterns;
    const first = this.#rng.int(patterns.length);
    for (let i = 0; i < patterns.length; i++) {
      const pattern = patterns[(first + i) % patterns.length];
      let user = pattern === "amount_spike" ? this.#spikeUser(t) : -1;
      if (user < 0) user = this.#restedUser(t);
      if (user < 0) continue; // every user picked is in an instance: try the next pattern
      const label: FraudLabel = { pattern, instanceId: this.#rng.uuid() };
      const planned = pattern === "velocity_burst"
        ? this.#velocityBurst(user, t, label)
        : pattern === "amount_spike"
        ? this.#amountSpike(user, t, label)
        : pattern === "impossible_travel"
        ? this.#impossibleTravel(user, t, label)
        : pattern === "card_testing"
        ? this.#cardTesting(user, t, label)
        : this.#accountTakeover(user, t, label);
      this.#pop.busyUntil[user] = this.#queue(planned, t) + FRAUD_COOLDOWN_MS;
      return;
    }
  }

  /** Queues `planned`; the event time of its last record (at least `t`). */
  #queue(planned: Planned[], t: number): number {
    let end = t;
    for (const { user, time, fields: f, label, hardNegative } of planned) {
      // Flat, one shape: the queue can hold many (about 1.5 M at 180 000 records/s).
      this.#pending.push({
        merchant: f.merchant,
        currency: f.currency,
        amountMinor: f.amountMinor,
        type: f.type,
        location: f.location,
        method: f.method,
        user,
        time,
        label,
        hardNegative,
      });
      end = Math.max(end, time);
    }
    return end;
  }

  /** A user at home and in no instance at `t` (16 tries); -1 if none. */
  #restedUser(t: number): number {
    const pop = this.#pop;
    for (let tries = 0; tries < 16; tries++) {
      const u = this.#rng.int(pop.userIds.length);
      if (pop.busyUntil[u] <= t && pop.flags[u] === 0) return u;
    }
    return -1;
  }

  #spikeUser(t: number): number {
    const pop = this.#pop;
    const eligible = this.#eligibleForSpike;
    for (let tries = 0; tries < 16 && eligible.length > 0; tries++) {
      const u = eligible[this.#rng.int(eligible.length)];
      if (
        pop.busyUntil[u] <= t && pop.flags[u] === 0 &&
        pop.homePurchases[u] >= this.#ranges.amountSpike.minHistory
      ) return u;
    }
    return -1;
  }

  /** Where `u` is: the city, its country and currency. */
  #whereIs(u: number): { at: number; country: number; currency: string } {
    const at = this.#pop.userAt[u];
    const country = this.#pop.locationCountry[at];
    return { at, country, currency: this.#pop.countryCurrency[country] };
  }

  #velocityBurst(u: number, t: number, label: FraudLabel): Planned[] {
    const r = this.#ranges.velocityBurst;
    const { at, country, currency } = this.#whereIs(u);
    const method = this.#pop.userMethod[u];
    const times = this.#spread(
      t,
      this.#rng.logUniform(r.spanMs),
      this.#rng.intRange(r.transactions),
    );
    return times.map((time) => ({
      user: u,
      time,
      fields: {
        merchant: this.#merchantIn(country),
        currency,
        amountMinor: this.#typicalAmount(u, currency),
        type: "purchase",
        location: at,
        method,
      },
      label,
    }));
  }

  /**
   * The spike, preceded (when the user has too little history) by ordinary,
   * unlabelled purchases at the user's own pace that build the history.
   */
  #amountSpike(u: number, t: number, label: FraudLabel): Planned[] {
    const r = this.#ranges.amountSpike;
    const pop = this.#pop;
    const rng = this.#rng;
    const { at, country, currency } = this.#whereIs(u);
    const purchase = (time: number, amountMinor: number, spike?: FraudLabel): Planned => ({
      user: u,
      time,
      fields: {
        merchant: this.#merchantIn(country),
        currency,
        amountMinor,
        type: "purchase",
        location: at,
        method: this.#method(u),
      },
      label: spike,
    });
    const out: Planned[] = [];
    let time = Math.max(t, pop.nextFree[u]);
    while (pop.homePurchases[u] < r.minHistory) {
      out.push(purchase(time, this.#typicalAmount(u, currency)));
      this.#countHomePurchase(u);
      pop.nextFree[u] = time + this.#restMs; // background waits for the history
      time += Math.max(this.#restMs, rng.exponential(this.#meanUserGapMs));
    }
    const usd = pop.userMedianUsd[u] * rng.logUniform(r.multiple);
    out.push(purchase(time, minorFromUsd(usd, currency), label));
    return out;
  }

  #impossibleTravel(u: number, t: number, label: FraudLabel): Planned[] {
    const r = this.#ranges.impossibleTravel;
    const pop = this.#pop;
    const rng = this.#rng;
    const here = this.#whereIs(u);
    const far = this.#targets.far[here.at];
    const away = far[rng.int(far.length)];
    const awayCountry = pop.locationCountry[away];
    const awayCurrency = pop.countryCurrency[awayCountry];
    const km = distanceKm(LOCATIONS[here.at], LOCATIONS[away]);
    const later = t + Math.max(1, (km / rng.logUniform(r.speedKmh)) * HOUR);
    const method = pop.userMethod[u];
    return [
      {
        user: u,
        time: t,
        fields: {
          merchant: this.#merchantIn(here.country),
          currency: here.currency,
          amountMinor: this.#typicalAmount(u, here.currency),
          type: "purchase",
          location: here.at,
          method,
        },
        label,
      },
      {
        user: u,
        time: later,
        fields: {
          merchant: this.#merchantIn(awayCountry),
          currency: awayCurrency,
          amountMinor: this.#typicalAmount(u, awayCurrency),
          type: "purchase",
          location: away,
          method,
        },
        label,
      },
    ];
  }

  #cardTesting(u: number, t: number, label: FraudLabel): Planned[] {
    const r = this.#ranges.cardTesting;
    const rng = this.#rng;
    const { at, currency } = this.#whereIs(u);
    const count = rng.intRange(r.transactions);
    const low = Math.max(1, minorFromUsd(r.amountUsd.min, currency));
    const high = Math.max(low, minorFromUsd(r.amountUsd.max, currency));
    const single = rng.float() < r.singleMerchantShare;
    const popular = this.#pop.merchantCumulative;
    const first = pickWeighted(popular, rng);
    const used = new Set<number>([first]);
    return this.#spread(t, rng.logUniform(r.spanMs), count).map((time, i) => {
      let merchant = first;
      if (!single && i > 0) {
        merchant = pickWeighted(popular, rng);
        for (let tries = 0; tries < 16 && used.has(merchant); tries++) {
          merchant = pickWeighted(popular, rng);
        }
        used.add(merchant);
      }
      return {
        user: u,
        time,
        fields: {
          merchant,
          currency,
          amountMinor: low + rng.int(high - low + 1),
          type: "purchase",
          location: at,
          method: CREDIT_CARD,
        },
        label,
      };
    });
  }

  /**
   * Purchases in a country that is neither the user's home nor where the user
   * is, with a payment method the user has not used, the last one high.
   */
  #accountTakeover(u: number, t: number, label: FraudLabel): Planned[] {
    const r = this.#ranges.accountTakeover;
    const pop = this.#pop;
    const rng = this.#rng;
    const homeCountry = pop.locationCountry[pop.userHome[u]];
    const hereCountry = pop.locationCountry[pop.userAt[u]];
    const foreign = (c: number) =>
      pop.locationCountry[c] !== homeCountry && pop.locationCountry[c] !== hereCountry;
    let city = rng.int(LOCATIONS.length);
    for (let tries = 0; tries < 32 && !foreign(city); tries++) city = rng.int(LOCATIONS.length);
    if (!foreign(city)) city = LOCATIONS.findIndex((_, c) => foreign(c));
    const country = pop.locationCountry[city];
    const currency = pop.countryCurrency[country];
    const used = pop.methodsUsed[u] | (1 << pop.userMethod[u]) | (1 << pop.userSecondMethod[u]);
    const unused = PAYMENT_METHODS.flatMap((_, m) => (used & (1 << m)) === 0 ? [m] : []);
    const method = unused.length > 0
      ? unused[rng.int(unused.length)]
      : (pop.userMethod[u] + 1 + rng.int(PAYMENT_METHODS.length - 1)) % PAYMENT_METHODS.length;
    const times = this.#spread(t, rng.logUniform(r.spanMs), rng.intRange(r.transactions));
    return times.map((time, i) => ({
      user: u,
      time,
      fields: {
        merchant: this.#merchantIn(country),
        currency,
        amountMinor: i === times.length - 1
          ? minorFromUsd(pop.userMedianUsd[u] * rng.logUniform(r.multiple), currency)
          : this.#typicalAmount(u, currency),
        type: "purchase",
        location: city,
        method,
      },
      label,
    }));
  }

  // ----------------------------------------------------------------- helpers

  /** `count` sorted event times from `t` to `t + span` (both ends included; one: `t`). */
  #spread(t: number, span: number, count: number): number[] {
    if (count === 1) return [t];
    const times = [t, t + span];
    for (let i = 2; i < count; i++) times.push(t + this.#rng.float() * span);
    return times.sort((a, b) => a - b);
  }

  #merchantIn(country: number): number {
    const cumulative = this.#pop.countryMerchantCumulative[country];
    if (cumulative.length === 0) return pickWeighted(this.#pop.merchantCumulative, this.#rng);
    return this.#pop.countryMerchants[country][pickWeighted(cumulative, this.#rng)];
  }

  #foreignMerchant(homeCountry: number): number {
    for (let tries = 0; tries < 8; tries++) {
      const m = pickWeighted(this.#pop.merchantCumulative, this.#rng);
      if (this.#pop.merchantCountry[m] !== homeCountry) return m;
    }
    return -1;
  }

  /**
   * A background amount for user `u` in `currency`, integer minor units: the
   * user's typical amount times a lognormal factor, or from the Pareto tail.
   */
  #typicalAmount(u: number, currency: string): number {
    const rng = this.#rng;
    const median = this.#pop.userMedianUsd[u];
    let usd: number;
    if (this.#tailShare > 0 && rng.float() < this.#tailShare) {
      const n = NORMAL_TRAFFIC;
      usd = median *
        Math.min(n.tailMaxMultiple, n.tailFromMultiple * (1 - rng.float()) ** (-1 / n.tailAlpha));
    } else {
      usd = median * Math.exp(this.#sigma * Math.max(-3, Math.min(3.5, rng.normal())));
    }
    return minorFromUsd(Math.max(NORMAL_TRAFFIC.minAmountUsd, usd), currency);
  }

  /** The user's preferred payment method, else the second one (indexes into PAYMENT_METHODS). */
  #method(u: number): number {
    return this.#rng.float() < NORMAL_TRAFFIC.preferredMethodShare
      ? this.#pop.userMethod[u]
      : this.#pop.userSecondMethod[u];
  }

  #record(
    u: number,
    time: number,
    f: RecordFields,
    label?: FraudLabel,
    hardNegative?: HardNegativeLabel,
  ): GeneratedRecord {
    const pop = this.#pop;
    pop.methodsUsed[u] |= 1 << f.method;
    const tx: Transaction = {
      transactionId: this.#rng.uuid(),
      userId: pop.userIds[u],
      amount: fromMinorUnits(f.amountMinor, f.currency),
      currency: f.currency,
      transactionTime: Math.floor(time),
      merchantId: pop.merchantIds[f.merchant],
      transactionType: f.type,
      location: LOCATIONS[f.location].location,
      paymentMethod: PAYMENT_METHODS[f.method],
      isInternational: pop.merchantCountry[f.merchant] !== pop.locationCountry[pop.userHome[u]],
    };
    if (label !== undefined) {
      return { key: tx.userId, user: u, tx, amountMinor: f.amountMinor, label };
    }
    if (hardNegative !== undefined) {
      return { key: tx.userId, user: u, tx, amountMinor: f.amountMinor, hardNegative };
    }
    return { key: tx.userId, user: u, tx, amountMinor: f.amountMinor };
  }
}

/** PAYMENT_METHODS index of credit_card. */
const CREDIT_CARD = PAYMENT_METHODS.indexOf("credit_card");

/** A user's trip or move under way: the label of its current leg and how many more records carry it. */
interface Trip {
  label: HardNegativeLabel;
  left: number;
  /** When the user starts back home (Infinity: not, or already on the way). */
  returnAt: number;
}

interface RecordFields {
  merchant: number;
  currency: string;
  amountMinor: number;
  type: TransactionType;
  /** Index into LOCATIONS. */
  location: number;
  /** Index into PAYMENT_METHODS. */
  method: number;
}

/** A queued record: made (transaction id drawn) when its time comes. */
interface Planned {
  user: number;
  time: number;
  fields: RecordFields;
  label?: FraudLabel;
  hardNegative?: HardNegativeLabel;
}

/** A planned record as the queue keeps it. */
interface Queued extends RecordFields {
  user: number;
  time: number;
  label: FraudLabel | undefined;
  hardNegative: HardNegativeLabel | undefined;
}

/** The hour of the week of epoch ms `time`, 0 = Monday 00:00–01:00 UTC (1970-01-01 was a Thursday). */
function weekSlot(time: number): number {
  return (((Math.floor(time / HOUR) + 72) % 168) + 168) % 168;
}

function variantWeight(v: Variant): number {
  const r = HARD_NEGATIVE_RANGES;
  return v === "multi_item"
    ? r.multiItem.weight
    : v === "in_app"
    ? r.inApp.weight
    : v === "transit"
    ? r.transit.weight
    : v === "flight"
    ? r.flight.weight
    : v === "land_travel"
    ? r.landTravel.weight
    : r.relocation.weight;
}

/**
 * A variant's mean labelled records, and the records its start adds to the
 * stream (a queued burst adds all of them; a trip's are the user's own).
 */
function variantRecords(v: Variant): { labelled: number; added: number } {
  const r = HARD_NEGATIVE_RANGES;
  const mean = (x: Range) => (x.min + x.max) / 2;
  if (v === "multi_item") {
    return { labelled: mean(r.multiItem.transactions), added: mean(r.multiItem.transactions) };
  }
  if (v === "in_app") {
    return { labelled: mean(r.inApp.transactions), added: mean(r.inApp.transactions) };
  }
  if (v === "transit") {
    return { labelled: mean(r.transit.transactions), added: mean(r.transit.transactions) };
  }
  if (v === "relocation") return { labelled: 1 + r.relocation.labelledAfter, added: 1 };
  const trip = v === "flight" ? r.flight : r.landTravel;
  return { labelled: 3 + mean(trip.labelledAfter), added: 1 }; // out, arrivals, back, home
}

/** A pattern's mean records per instance. */
function patternRecords(p: FraudPattern, r: FraudRanges): number {
  const mean = (x: Range) => (x.min + x.max) / 2;
  return p === "velocity_burst"
    ? mean(r.velocityBurst.transactions)
    : p === "amount_spike"
    ? 1
    : p === "impossible_travel"
    ? 2
    : p === "card_testing"
    ? mean(r.cardTesting.transactions)
    : mean(r.accountTakeover.transactions);
}

/** The city farthest from city `i`. */
function farthest(i: number): number {
  let best = i;
  for (let j = 0; j < LOCATIONS.length; j++) {
    if (distanceKm(LOCATIONS[i], LOCATIONS[j]) > distanceKm(LOCATIONS[i], LOCATIONS[best])) {
      best = j;
    }
  }
  return best;
}

/** `value` when it is an epoch ms the contract accepts; else a RangeError naming `name`. */
function checkEventTime(name: string, value: number): number {
  if (!Number.isFinite(value) || value >= MAX_TRANSACTION_TIME) {
    throw new RangeError(
      `${name}: expected epoch ms below ${MAX_TRANSACTION_TIME}, given ${JSON.stringify(value)}`,
    );
  }
  return value;
}

/** The options with their defaults, checked. */
interface CheckedOptions {
  seed: number | string;
  startTime: number;
  users: number;
  merchants: number;
  eventsPerSecond: number;
  timeScale: number | undefined;
  fraudRate: number;
  hardNegativeRate: number;
  fraudPatterns: readonly FraudPattern[];
  ranges: FraudRanges;
  spending: { sigma: number; tailShare: number };
}

function fail(name: string, expected: string, given: unknown): never {
  throw new RangeError(`${name}: expected ${expected}, given ${JSON.stringify(given)}`);
}

function checkOptions(options: GeneratorOptions): CheckedOptions {
  const o = { ...GENERATOR_DEFAULTS, ...options };
  if (typeof o.seed !== "string" && !(typeof o.seed === "number" && Number.isFinite(o.seed))) {
    fail("seed", "a string or a finite number", o.seed);
  }
  if (
    !Number.isSafeInteger(o.startTime) || o.startTime < MIN_TRANSACTION_TIME ||
    o.startTime >= MAX_TRANSACTION_TIME
  ) {
    fail(
      "startTime",
      `integer epoch ms in [${MIN_TRANSACTION_TIME}, ${MAX_TRANSACTION_TIME})`,
      o.startTime,
    );
  }
  if (!Number.isInteger(o.users) || o.users < 1 || o.users > MAX_USERS) {
    fail("users", `an integer from 1 to ${MAX_USERS}`, o.users);
  }
  if (!Number.isInteger(o.merchants) || o.merchants < 1 || o.merchants > 1_000_000) {
    fail("merchants", "an integer from 1 to 1000000", o.merchants);
  }
  if (!(o.eventsPerSecond > 0 && o.eventsPerSecond <= 1e6)) {
    fail("eventsPerSecond", "a number in (0, 1000000]", o.eventsPerSecond);
  }
  if (o.timeScale !== undefined) {
    if (options.eventsPerSecond !== undefined) {
      fail("timeScale", "no eventsPerSecond with it (either sets the rate)", o.timeScale);
    }
    const most = 1e6 / naturalEventsPerSecond(o.users);
    if (!(o.timeScale > 0 && o.timeScale <= most)) {
      fail("timeScale", `a number in (0, ${most}] for ${o.users} users`, o.timeScale);
    }
  }
  if (!(o.fraudRate >= 0 && o.fraudRate < 1)) fail("fraudRate", "a number in [0, 1)", o.fraudRate);
  if (!(o.hardNegativeRate >= 0 && o.hardNegativeRate < 1 - o.fraudRate)) {
    fail(
      "hardNegativeRate",
      `a number in [0, ${1 - o.fraudRate}) (1 - fraudRate)`,
      o.hardNegativeRate,
    );
  }
  if (
    !Array.isArray(o.fraudPatterns) || o.fraudPatterns.length === 0 ||
    !o.fraudPatterns.every((p) => FRAUD_PATTERNS.includes(p))
  ) {
    fail("fraudPatterns", `a non-empty list of ${FRAUD_PATTERNS.join(", ")}`, o.fraudPatterns);
  }
  const sigma = o.spending?.sigma ?? NORMAL_TRAFFIC.amountSigma;
  const tailShare = o.spending?.tailShare ?? NORMAL_TRAFFIC.tailShare;
  if (!(sigma > 0 && sigma <= 3)) fail("spending.sigma", "a number in (0, 3]", sigma);
  if (!(tailShare >= 0 && tailShare <= 0.5)) {
    fail("spending.tailShare", "a number in [0, 0.5]", tailShare);
  }
  return {
    seed: o.seed,
    startTime: o.startTime,
    users: o.users,
    merchants: o.merchants,
    eventsPerSecond: o.eventsPerSecond,
    timeScale: o.timeScale,
    fraudRate: o.fraudRate,
    hardNegativeRate: o.hardNegativeRate,
    fraudPatterns: [...o.fraudPatterns],
    ranges: fraudRanges(o.fraudRanges ?? {}),
    spending: { sigma, tailShare },
  };
}

/** {@link FRAUD_RANGES} with `overrides`, checked. */
function fraudRanges(overrides: FraudRangeOverrides): FraudRanges {
  const r: FraudRanges = {
    velocityBurst: { ...FRAUD_RANGES.velocityBurst, ...overrides.velocityBurst },
    cardTesting: { ...FRAUD_RANGES.cardTesting, ...overrides.cardTesting },
    amountSpike: { ...FRAUD_RANGES.amountSpike, ...overrides.amountSpike },
    impossibleTravel: { ...FRAUD_RANGES.impossibleTravel, ...overrides.impossibleTravel },
    accountTakeover: { ...FRAUD_RANGES.accountTakeover, ...overrides.accountTakeover },
  };
  const range = (name: string, x: Range, integer: boolean) => {
    const ok = typeof x === "object" && x !== null && Number.isFinite(x.min) &&
      Number.isFinite(x.max) && x.min > 0 && x.min <= x.max &&
      (!integer || (Number.isInteger(x.min) && Number.isInteger(x.max)));
    if (!ok) {
      fail(
        `fraudRanges.${name}`,
        `{ min, max } with 0 < min ≤ max${integer ? ", integers" : ""}`,
        x,
      );
    }
  };
  range("velocityBurst.transactions", r.velocityBurst.transactions, true);
  range("velocityBurst.spanMs", r.velocityBurst.spanMs, false);
  range("cardTesting.transactions", r.cardTesting.transactions, true);
  range("cardTesting.amountUsd", r.cardTesting.amountUsd, false);
  range("cardTesting.spanMs", r.cardTesting.spanMs, false);
  range("amountSpike.multiple", r.amountSpike.multiple, false);
  range("impossibleTravel.speedKmh", r.impossibleTravel.speedKmh, false);
  range("accountTakeover.transactions", r.accountTakeover.transactions, true);
  range("accountTakeover.spanMs", r.accountTakeover.spanMs, false);
  range("accountTakeover.multiple", r.accountTakeover.multiple, false);
  const share = r.cardTesting.singleMerchantShare;
  if (!(share >= 0 && share <= 1)) {
    fail("fraudRanges.cardTesting.singleMerchantShare", "[0, 1]", share);
  }
  const history = r.amountSpike.minHistory;
  if (!(Number.isInteger(history) && history >= 0)) {
    fail("fraudRanges.amountSpike.minHistory", "an integer ≥ 0", history);
  }
  const km = r.impossibleTravel.minDistanceKm;
  if (!(km >= 0 && km < 20_000)) {
    fail("fraudRanges.impossibleTravel.minDistanceKm", "[0, 20000)", km);
  }
  return r;
}

/** Everything about users, merchants and cities, in flat arrays indexed by number. */
interface Population {
  userIds: string[];
  /** Home city (changes when the user moves). */
  userHome: Uint16Array;
  /** Where the user is now (home, or a trip's destination). */
  userAt: Uint16Array;
  userMedianUsd: Float64Array;
  /** Preferred and second payment method (PAYMENT_METHODS indexes). */
  userMethod: Uint8Array;
  userSecondMethod: Uint8Array;
  /** Payment methods used so far, one bit each. */
  methodsUsed: Uint8Array;
  /** Users by time-zone group; `groupStart[g]` is group g's first index into `order`. */
  order: Int32Array;
  groupStart: Int32Array;
  /** Activity along `order`, as alias tables, one per group (O(1) draws). */
  alias: AliasTable;
  /** Per hour of the week: the rhythm's factor over the population (mean 1) and cumulative weights of the groups. */
  slotFactor: Float64Array;
  slotGroupCumulative: Float64Array[];
  /** Earliest event time of the user's next background record. */
  nextFree: Float64Array;
  /** Until when the user is in an instance (none starts for them before). */
  busyUntil: Float64Array;
  /** 1 when the user has a trip or move under way (see the generator's trips). */
  flags: Uint8Array;
  homePurchases: Uint32Array;
  merchantIds: string[];
  merchantCountry: Uint16Array;
  merchantCumulative: Float64Array;
  countryMerchants: Int32Array[];
  countryMerchantCumulative: Float64Array[];
  countryCurrency: string[];
  locationCountry: Uint16Array;
}

function buildPopulation(rng: Random, users: number, merchants: number): Population {
  // Cities: weight by population rank (the file lists them largest first).
  const cityWeights = LOCATIONS.map((_, i) => 1 / (i + 1) ** 0.8);
  const cityCumulative = cumulative(cityWeights);
  const countries: string[] = [];
  const countryCurrency: string[] = [];
  const countryWeights: number[] = [];
  const locationCountry = new Uint16Array(LOCATIONS.length);
  LOCATIONS.forEach((l, i) => {
    const code = countryOf(l.location);
    let c = countries.indexOf(code);
    if (c < 0) {
      c = countries.push(code) - 1;
      countryCurrency.push(l.currency);
      countryWeights.push(0);
    }
    locationCountry[i] = c;
    countryWeights[c] += cityWeights[i];
  });
  // Time zones: whole hours from each city's longitude (solar time, within
  // about an hour of the civil one), one group of users per offset.
  const offsets = [...new Set(LOCATIONS.map((l) => Math.round(l.lon / 15)))].sort((a, b) => a - b);
  const cityGroup = LOCATIONS.map((l) => offsets.indexOf(Math.round(l.lon / 15)));

  const pad = (n: number, width: number) => String(n).padStart(width, "0");
  const userWidth = Math.max(5, String(users - 1).length);
  const userIds = new Array<string>(users);
  const userHome = new Uint16Array(users);
  const userMedianUsd = new Float64Array(users);
  const userMethod = new Uint8Array(users);
  const userSecondMethod = new Uint8Array(users);
  const activity = new Float64Array(users);
  const methodCumulative = cumulative(METHOD_WEIGHTS);
  const n = NORMAL_TRAFFIC;
  for (let u = 0; u < users; u++) {
    userIds[u] = `user-${pad(u, userWidth)}`;
    userHome[u] = pickWeighted(cityCumulative, rng);
    const z = Math.max(-3, Math.min(3, rng.normal()));
    userMedianUsd[u] = Math.min(800, Math.max(4, n.medianUsd * Math.exp(n.medianSigma * z)));
    userMethod[u] = pickWeighted(methodCumulative, rng);
    let second = pickWeighted(methodCumulative, rng);
    for (let tries = 0; tries < 8 && second === userMethod[u]; tries++) {
      second = pickWeighted(methodCumulative, rng);
    }
    userSecondMethod[u] = second === userMethod[u] ? (second + 1) % METHOD_WEIGHTS.length : second;
    activity[u] = Math.exp(0.9 * Math.max(-3, Math.min(3, rng.normal())));
  }

  // Users ordered by time-zone group (a counting sort), activity summed in that order.
  const groups = offsets.length;
  const groupStart = new Int32Array(groups + 1);
  for (let u = 0; u < users; u++) groupStart[cityGroup[userHome[u]] + 1]++;
  for (let g = 0; g < groups; g++) groupStart[g + 1] += groupStart[g];
  const order = new Int32Array(users);
  const fill = groupStart.slice(0, groups);
  for (let u = 0; u < users; u++) order[fill[cityGroup[userHome[u]]]++] = u;
  const alias: AliasTable = {
    probability: new Float32Array(users),
    alias: new Int32Array(users),
  };
  const groupActivity = Array.from(
    { length: groups },
    (_, g) => fillAlias(alias, groupStart[g], groupStart[g + 1], (i) => activity[order[i]]),
  );
  const sum = groupActivity.reduce((s, a) => s + a, 0);
  // Per hour of the week (UTC), each group's weight: its activity at its local hour and weekday.
  const slotFactor = new Float64Array(168);
  const slotGroupCumulative = Array.from({ length: 168 }, (_, slot) => {
    const weights = offsets.map((offset, g) => {
      const local = (slot + offset + 336) % 168;
      return groupActivity[g] * RHYTHM.hour[local % 24] * RHYTHM.weekday[Math.floor(local / 24)];
    });
    const c = cumulative(weights);
    slotFactor[slot] = c[groups - 1] / sum;
    return c;
  });

  // Merchants: Zipf popularity by index; countries weighted like cities, and each
  // country gets at least one merchant (taken from the least popular) when possible.
  const merchantWidth = Math.max(4, String(merchants - 1).length);
  const merchantIds = new Array<string>(merchants);
  const merchantCountry = new Uint16Array(merchants);
  const countryCumulative = cumulative(countryWeights);
  for (let m = 0; m < merchants; m++) {
    merchantIds[m] = `merchant-${pad(m, merchantWidth)}`;
    merchantCountry[m] = pickWeighted(countryCumulative, rng);
  }
  const perCountry = new Array<number>(countries.length).fill(0);
  for (const c of merchantCountry) perCountry[c]++;
  let tail = merchants - 1;
  for (let c = 0; c < countries.length; c++) {
    while (perCountry[c] === 0 && tail >= 0) {
      const donor = merchantCountry[tail];
      if (perCountry[donor] > 1) {
        perCountry[donor]--;
        perCountry[c]++;
        merchantCountry[tail] = c;
      }
      tail--;
    }
  }
  const popularity = Array.from({ length: merchants }, (_, m) => 1 / (m + 1));
  const countryMerchants = countries.map((_, c) =>
    Int32Array.from(popularity.keys()).filter((m) => merchantCountry[m] === c)
  );

  return {
    userIds,
    userHome,
    userAt: userHome.slice(),
    userMedianUsd,
    userMethod,
    userSecondMethod,
    methodsUsed: new Uint8Array(users),
    order,
    groupStart,
    alias,
    slotFactor,
    slotGroupCumulative,
    nextFree: new Float64Array(users).fill(-Infinity),
    busyUntil: new Float64Array(users).fill(-Infinity),
    flags: new Uint8Array(users),
    homePurchases: new Uint32Array(users),
    merchantIds,
    merchantCountry,
    merchantCumulative: cumulative(popularity),
    countryMerchants,
    countryMerchantCumulative: countryMerchants.map((ms) =>
      cumulative(Array.from(ms, (m) => popularity[m]))
    ),
    countryCurrency,
    locationCountry,
  };
}

function cumulative(weights: ArrayLike<number>): Float64Array {
  const out = new Float64Array(weights.length);
  let sum = 0;
  for (let i = 0; i < weights.length; i++) out[i] = sum += weights[i];
  return out;
}

/** An index drawn with probability proportional to its weight (binary search). */
function pickWeighted(cumulative: Float64Array, rng: Random): number {
  const x = rng.float() * cumulative[cumulative.length - 1];
  let lo = 0;
  let hi = cumulative.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (cumulative[mid] > x) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/**
 * Walker's alias tables over consecutive ranges of indexes: index i keeps
 * itself with `probability[i]`, else goes to `alias[i]`.
 */
interface AliasTable {
  probability: Float32Array;
  alias: Int32Array;
}

/**
 * Fills `t` over [from, to) for the weights `weight(i)` (Vose's method); their
 * sum. A weightless range draws uniformly.
 */
function fillAlias(t: AliasTable, from: number, to: number, weight: (i: number) => number): number {
  let sum = 0;
  for (let i = from; i < to; i++) sum += weight(i);
  const n = to - from;
  const small: number[] = [];
  const large: number[] = [];
  const scaled = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    scaled[i] = sum > 0 ? (weight(from + i) * n) / sum : 1;
    (scaled[i] < 1 ? small : large).push(i);
  }
  while (small.length > 0 && large.length > 0) {
    const s = small.pop()!;
    const l = large[large.length - 1];
    t.probability[from + s] = scaled[s];
    t.alias[from + s] = from + l;
    scaled[l] -= 1 - scaled[s];
    if (scaled[l] < 1) small.push(large.pop()!);
  }
  for (const i of [...large, ...small]) {
    t.probability[from + i] = 1;
    t.alias[from + i] = from + i;
  }
  return sum;
}

/** An index in [from, to) drawn by the alias table over that range. */
function pickAlias(t: AliasTable, from: number, to: number, rng: Random): number {
  const i = from + rng.int(to - from);
  return rng.float() < t.probability[i] ? i : t.alias[i];
}

/**
 * Queued records waiting for their event time: a binary min-heap on (time,
 * sequence) over slots of flat typed arrays, about 50 bytes a record (an
 * object each took about 200 with the heap's garbage; at 180 000 records/s
 * the queue holds over a million).
 */
class PendingQueue {
  // The heap: time, sequence and slot of each entry.
  #times = new Float64Array(1024);
  #seqs = new Float64Array(1024);
  #heap = new Int32Array(1024);
  #size = 0;
  #seq = 0;
  // The slots: each queued record's fields; free slots are reused.
  #user = new Int32Array(1024);
  #merchant = new Int32Array(1024);
  #amountMinor = new Float64Array(1024);
  #location = new Uint16Array(1024);
  #method = new Uint8Array(1024);
  #refund = new Uint8Array(1024);
  #currency: string[] = [];
  #label: Array<FraudLabel | undefined> = [];
  #hardNegative: Array<HardNegativeLabel | undefined> = [];
  #free: number[] = [];
  #slots = 0;

  get size(): number {
    return this.#size;
  }

  /** Event time of the earliest record, Infinity when empty. */
  peekTime(): number {
    return this.#size > 0 ? this.#times[0] : Infinity;
  }

  push(item: Queued): void {
    const slot = this.#free.length > 0 ? this.#free.pop()! : this.#newSlot();
    this.#user[slot] = item.user;
    this.#merchant[slot] = item.merchant;
    this.#amountMinor[slot] = item.amountMinor;
    this.#location[slot] = item.location;
    this.#method[slot] = item.method;
    this.#refund[slot] = item.type === "refund" ? 1 : 0;
    this.#currency[slot] = item.currency;
    this.#label[slot] = item.label;
    this.#hardNegative[slot] = item.hardNegative;
    if (this.#size === this.#heap.length) this.#growHeap();
    let i = this.#size++;
    this.#times[i] = item.time;
    this.#seqs[i] = this.#seq++;
    this.#heap[i] = slot;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.#less(i, parent)) break;
      this.#swap(i, parent);
      i = parent;
    }
  }

  pop(): Queued {
    const slot = this.#heap[0];
    const item: Queued = {
      merchant: this.#merchant[slot],
      currency: this.#currency[slot],
      amountMinor: this.#amountMinor[slot],
      type: this.#refund[slot] === 1 ? "refund" : "purchase",
      location: this.#location[slot],
      method: this.#method[slot],
      user: this.#user[slot],
      time: this.#times[0],
      label: this.#label[slot],
      hardNegative: this.#hardNegative[slot],
    };
    this.#label[slot] = undefined;
    this.#hardNegative[slot] = undefined;
    this.#free.push(slot);
    const last = --this.#size;
    this.#swap(0, last);
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let smallest = i;
      if (l < last && this.#less(l, smallest)) smallest = l;
      if (r < last && this.#less(r, smallest)) smallest = r;
      if (smallest === i) return item;
      this.#swap(i, smallest);
      i = smallest;
    }
  }

  #newSlot(): number {
    if (this.#slots === this.#user.length) {
      const n = this.#slots * 2;
      this.#user = grown(this.#user, new Int32Array(n));
      this.#merchant = grown(this.#merchant, new Int32Array(n));
      this.#amountMinor = grown(this.#amountMinor, new Float64Array(n));
      this.#location = grown(this.#location, new Uint16Array(n));
      this.#method = grown(this.#method, new Uint8Array(n));
      this.#refund = grown(this.#refund, new Uint8Array(n));
    }
    return this.#slots++;
  }

  #growHeap(): void {
    const n = this.#heap.length * 2;
    this.#times = grown(this.#times, new Float64Array(n));
    this.#seqs = grown(this.#seqs, new Float64Array(n));
    this.#heap = grown(this.#heap, new Int32Array(n));
  }

  #less(a: number, b: number): boolean {
    const ta = this.#times[a];
    const tb = this.#times[b];
    return ta < tb || (ta === tb && this.#seqs[a] < this.#seqs[b]);
  }

  #swap(a: number, b: number): void {
    const t = this.#times[a];
    this.#times[a] = this.#times[b];
    this.#times[b] = t;
    const s = this.#seqs[a];
    this.#seqs[a] = this.#seqs[b];
    this.#seqs[b] = s;
    const h = this.#heap[a];
    this.#heap[a] = this.#heap[b];
    this.#heap[b] = h;
  }
}

/** `to` (larger) with `from` copied into its start. */
function grown<T extends Float64Array | Int32Array | Uint16Array | Uint8Array>(from: T, to: T): T {
  to.set(from);
  return to;
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/** sfc32 (Chris Doty-Humphrey's small fast counting PRNG), seeded by hashing a string. */
class Random {
  #a: number;
  #b: number;
  #c: number;
  #d: number;
  #spare = NaN;

  constructor(seed: string) {
    [this.#a, this.#b, this.#c, this.#d] = cyrb128(seed);
    for (let i = 0; i < 15; i++) this.uint32();
  }

  uint32(): number {
    const t = (((this.#a + this.#b) | 0) + this.#d) | 0;
    this.#d = (this.#d + 1) | 0;
    this.#a = this.#b ^ (this.#b >>> 9);
    this.#b = (this.#c + (this.#c << 3)) | 0;
    this.#c = (this.#c << 21) | (this.#c >>> 11);
    this.#c = (this.#c + t) | 0;
    return t >>> 0;
  }

  /** Uniform in [0, 1). */
  float(): number {
    return this.uint32() / 4294967296;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.float() * n);
  }

  /** Uniform in [lo, hi). */
  range(lo: number, hi: number): number {
    return lo + this.float() * (hi - lo);
  }

  /** Uniform integer in [r.min, r.max] (both included). */
  intRange(r: Range): number {
    return r.min + this.int(r.max - r.min + 1);
  }

  /** Log-uniform in [r.min, r.max): uniform in the logarithm. */
  logUniform(r: Range): number {
    return r.min * (r.max / r.min) ** this.float();
  }

  /** Exponential with the given mean. */
  exponential(mean: number): number {
    return -Math.log(1 - this.float()) * mean;
  }

  /** Standard normal (Box–Muller, the second value kept for the next call). */
  normal(): number {
    if (!Number.isNaN(this.#spare)) {
      const z = this.#spare;
      this.#spare = NaN;
      return z;
    }
    const r = Math.sqrt(-2 * Math.log(1 - this.float()));
    const theta = 2 * Math.PI * this.float();
    this.#spare = r * Math.sin(theta);
    return r * Math.cos(theta);
  }

  /** A random UUID v4 (RFC 9562: version 4, variant 10xx), lower-case. */
  uuid(): string {
    const a = this.uint32();
    const b = (this.uint32() & 0xffff0fff) | 0x00004000;
    const c = ((this.uint32() & 0x3fffffff) | 0x80000000) >>> 0;
    const d = this.uint32();
    return HEX[a >>> 24] + HEX[(a >>> 16) & 255] + HEX[(a >>> 8) & 255] + HEX[a & 255] + "-" +
      HEX[(b >>> 24) & 255] + HEX[(b >>> 16) & 255] + "-" + HEX[(b >>> 8) & 255] + HEX[b & 255] +
      "-" + HEX[c >>> 24] + HEX[(c >>> 16) & 255] + "-" + HEX[(c >>> 8) & 255] + HEX[c & 255] +
      HEX[d >>> 24] + HEX[(d >>> 16) & 255] + HEX[(d >>> 8) & 255] + HEX[d & 255];
  }
}

/** A 128-bit string hash (cyrb128) used to seed {@link Random}. */
function cyrb128(text: string): [number, number, number, number] {
  let h1 = 1779033703;
  let h2 = 3144134277;
  let h3 = 1013904242;
  let h4 = 2773480762;
  for (let i = 0; i < text.length; i++) {
    const k = text.charCodeAt(i);
    h1 = h2 ^ Math.imul(h1 ^ k, 597399067);
    h2 = h3 ^ Math.imul(h2 ^ k, 2869860233);
    h3 = h4 ^ Math.imul(h3 ^ k, 951274213);
    h4 = h1 ^ Math.imul(h4 ^ k, 2716044179);
  }
  h1 = Math.imul(h3 ^ (h1 >>> 18), 597399067);
  h2 = Math.imul(h4 ^ (h2 >>> 22), 2869860233);
  h3 = Math.imul(h1 ^ (h3 >>> 17), 951274213);
  h4 = Math.imul(h2 ^ (h4 >>> 19), 2716044179);
  h1 ^= h2 ^ h3 ^ h4;
  h2 ^= h1;
  h3 ^= h1;
  h4 ^= h1;
  return [h1 >>> 0, h2 >>> 0, h3 >>> 0, h4 >>> 0];
}
