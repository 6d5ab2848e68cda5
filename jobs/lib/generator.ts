/**
 * A seeded, deterministic generator of synthetic transactions with optional,
 * labelled fraud patterns. Pure: no clock, no I/O; the same options give the
 * same records, byte for byte.
 *
 * The model:
 * - Event time is simulated and never decreases. By default arrivals are a Poisson
 *   process of `eventsPerSecond` starting at `startTime`; `take(count, { until })`
 *   instead places `count` arrivals between the previous arrival and `until`, so a
 *   paced producer that passes its wall clock gets event time that follows the
 *   clock at whatever rate it actually sends. Simulated time is compressed (a user
 *   transacts every minute or two, not every few days).
 * - `users` users, each with a home city (cities weighted by population rank), the
 *   home country's currency, a preferred payment method, a typical amount (median
 *   ~35 USD, lognormal across users) and an activity weight (lognormal). An arrival
 *   picks a user by activity (a few tries), then any user; a user is never picked
 *   again within {@link NORMAL_TRAFFIC}.minUserGapMs, so normal traffic never looks
 *   like a burst. When every user picked is resting, the arrival is dropped: a
 *   population too small for the rate yields fewer records than arrivals. Each
 *   user can make at most one normal transaction per minUserGapMs, so `users`
 *   sustains at most users / 20 s records per second of event time;
 *   {@link usersForRate} is the population that keeps up with a rate.
 * - `merchants` merchants with Zipf popularity (merchant-0000 is the most popular),
 *   each in a country. Normal transactions happen at the user's home city at a
 *   merchant of the home country; a small share goes to a foreign merchant
 *   (isInternational, charged in the merchant's currency).
 * - Amounts are integer minor units: the user's median times a lognormal factor
 *   (σ 0.5, truncated at ±2.5σ), never below 5 USD-equivalent; ~5% refunds.
 *
 * Fraud: `fraudRate` is the expected share of records that carry a fraud label
 * (0.01 → about 1% of records). Each arrival starts an instance instead of a normal
 * record with the probability that makes this so, given the mean instance size;
 * the instance's pattern is drawn uniformly from {@link FRAUD_PATTERNS}, its user
 * is one not in another instance (cooldown {@link FRAUD_SHAPES}.userCooldownMs),
 * and its records (shapes in {@link FRAUD_SHAPES}) wait in a small queue sorted by
 * event time, interleaved with normal traffic. Every record of an instance carries
 * a label meant for Kafka headers only, never for the JSON value (the ordinary
 * purchases an amount_spike may first make to build history are unlabelled).
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
  type PaymentMethod,
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

/** The injected fraud patterns. */
export const FRAUD_PATTERNS = [
  "velocity_burst",
  "amount_spike",
  "impossible_travel",
  "card_testing",
] as const;
/** One of {@link FRAUD_PATTERNS}. */
export type FraudPattern = typeof FRAUD_PATTERNS[number];

/** Ground truth of a record that belongs to an injected fraud instance. */
export interface FraudLabel {
  readonly pattern: FraudPattern;
  /** A UUID v4 shared by all records of one instance. */
  readonly instanceId: string;
}

/** One generated record: the Kafka key, the value, its exact amount and the label. */
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
}

/** What every injected instance looks like; the tests check these shapes. */
export const FRAUD_SHAPES = Object.freeze({
  /** One user, `transactions` purchases spread over 20–45 s of event time. */
  velocityBurst: { transactions: 12, minSpanMs: 20_000, maxSpanMs: 45_000 },
  /**
   * One purchase of 30–60× the user's typical (median) amount, by a user with at
   * least `minHistory` normal purchases in the home currency (a user with fewer
   * first makes the missing ones: ordinary, unlabelled purchases 20–40 s apart).
   */
  amountSpike: { minHistory: 10, minMultiple: 30, maxMultiple: 60 },
  /**
   * Two records: a purchase at home, then one 10–120 s later in a city at least
   * `minDistanceKm` away (thousands of km/h).
   */
  impossibleTravel: { minDistanceKm: 3_000, minGapMs: 10_000, maxGapMs: 120_000 },
  /**
   * 8–10 credit-card purchases of 0.10–2.00 USD-equivalent, each at a different
   * merchant, spread over 60–240 s.
   */
  cardTesting: {
    minTransactions: 8,
    maxTransactions: 10,
    minAmountUsd: 0.1,
    maxAmountUsd: 2,
    minSpanMs: 60_000,
    maxSpanMs: 240_000,
  },
  /** A user is not picked for another instance until this long after one ends. */
  userCooldownMs: 600_000,
});

/** Properties of normal (unlabelled) traffic that the detection thresholds rely on. */
export const NORMAL_TRAFFIC = Object.freeze({
  /** Minimum event time between two normal transactions of one user. */
  minUserGapMs: 20_000,
  /** No normal amount is below this (USD-equivalent), so none looks like card testing. */
  minAmountUsd: 5,
  /** Share of normal transactions that are refunds. */
  refundShare: 0.05,
  /** Share of normal transactions at a foreign merchant. */
  internationalShare: 0.04,
  /** Chance a transaction uses the user's preferred payment method. */
  preferredMethodShare: 0.85,
  /**
   * Users per record/s that {@link usersForRate} asks for: each user then
   * transacts every 40 s on average, twice minUserGapMs, so arrivals find a
   * rested user and the generated rate is the requested one.
   */
  usersPerRecordPerSecond: 40,
  /**
   * Fewest users per record/s with which the generator still delivers over
   * 99% of the arrivals (measured: tests/generator_test.ts); fewer cannot
   * sustain the rate at all below minUserGapMs / 1000 = 20.
   */
  minUsersPerRecordPerSecond: 25,
});

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
  /** Simulated arrival rate in event time (not wall-clock). Default 200. */
  eventsPerSecond?: number;
  /** Expected share of records in injected fraud instances, 0 ≤ p < 1. Default 0. */
  fraudRate?: number;
}

/** Defaults of {@link GeneratorOptions}. */
export const GENERATOR_DEFAULTS: Readonly<Required<GeneratorOptions>> = Object.freeze({
  seed: 1,
  startTime: 1_700_000_000_000,
  users: 20_000,
  merchants: 2_000,
  eventsPerSecond: 200,
  fraudRate: 0,
});

/** The largest population the generator builds. */
export const MAX_USERS = 10_000_000;

/**
 * The population for `recordsPerSecond` of plausible traffic: the default
 * users, or {@link NORMAL_TRAFFIC}.usersPerRecordPerSecond per record/s when
 * that is more (20 000 users sustain about 1 000 records/s), at most
 * {@link MAX_USERS}.
 */
export function usersForRate(recordsPerSecond: number): number {
  const users = Math.ceil(recordsPerSecond * NORMAL_TRAFFIC.usersPerRecordPerSecond);
  return Math.min(MAX_USERS, Math.max(GENERATOR_DEFAULTS.users, users));
}

/**
 * Fewest users that can sustain `recordsPerSecond` records per second of
 * event time ({@link NORMAL_TRAFFIC}.minUsersPerRecordPerSecond per record/s).
 */
export function minUsersForRate(recordsPerSecond: number): number {
  return Math.ceil(recordsPerSecond * NORMAL_TRAFFIC.minUsersPerRecordPerSecond);
}

/** The Kafka headers of a record's label (none for normal records). */
export function labelHeaders(label: FraudLabel | undefined): Record<string, string> {
  if (label === undefined) return {};
  return { [FRAUD_PATTERN_HEADER]: label.pattern, [FRAUD_INSTANCE_HEADER]: label.instanceId };
}

/** Seed of the simulated population, fixed so that every run shares it. */
const POPULATION_SEED = "txpipe-population-v1";

/** Records per instance on average when patterns are drawn uniformly. */
const MEAN_INSTANCE_RECORDS = (FRAUD_SHAPES.velocityBurst.transactions + 1 + 2 +
  (FRAUD_SHAPES.cardTesting.minTransactions + FRAUD_SHAPES.cardTesting.maxTransactions) / 2) /
  FRAUD_PATTERNS.length;

const METHOD_WEIGHTS = [0.45, 0.35, 0.12, 0.08]; // in PAYMENT_METHODS order

/**
 * The synthetic transaction stream. `next()` returns records in non-decreasing
 * event time; `flush()` returns the rest of the started fraud instances.
 */
export class TransactionGenerator {
  readonly #rng: Random;
  readonly #pop: Population;
  readonly #meanGapMs: number;
  readonly #instanceProbability: number;
  readonly #pending = new PendingQueue();
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
    this.#meanGapMs = 1000 / o.eventsPerSecond;
    this.#clock = o.startTime;
    const f = o.fraudRate;
    this.#instanceProbability = f / (MEAN_INSTANCE_RECORDS * (1 - f) + f);
  }

  /** Records of started fraud instances waiting for their event time. */
  get pending(): number {
    return this.#pending.size;
  }

  /** The next record in event-time order, from the Poisson arrivals of `eventsPerSecond`. */
  next(): GeneratedRecord {
    for (;;) {
      const head = this.#pending.peekTime();
      if (head <= this.#clock) return this.#pending.pop();
      const t = this.#clock;
      this.#clock += this.#rng.exponential(this.#meanGapMs);
      const record = this.#arrival(t);
      if (record) return record;
    }
  }

  /**
   * The next `count` records. Without `until`, from the Poisson arrivals of
   * `eventsPerSecond` (event time simulated). With `until` (epoch ms), the
   * `count` arrivals fall between the previous call's `until` (or the start
   * time) and this one, uniformly, as a Poisson process with that many
   * arrivals would, so no record is later than `until`: a paced producer
   * passes its clock and event time follows the rate it actually reaches,
   * whatever it asked for. Then fewer than `count` records come back only
   * when the population is too small for the rate (see {@link minUsersForRate}).
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
   */
  skipTo(time: number): void {
    this.#clock = Math.max(this.#clock, checkEventTime("time", time));
  }

  /**
   * One record at event time `t` (the clock): a fraud record now due, else a
   * new arrival; a few more arrivals at the same instant when one starts an
   * instance that begins later or finds every user picked resting.
   */
  #recordAt(t: number): GeneratedRecord | undefined {
    for (let attempt = 0; attempt < 4; attempt++) {
      if (this.#pending.peekTime() <= t) return this.#pending.pop();
      const record = this.#arrival(t);
      if (record) return record;
    }
    return undefined;
  }

  /**
   * An arrival at `t`: a normal record, or nothing when it starts a fraud
   * instance (its records wait in the queue) or every user picked is resting
   * (the arrival is dropped).
   */
  #arrival(t: number): GeneratedRecord | undefined {
    const u = this.#pickNormalUser(t);
    if (u < 0) return undefined;
    if (this.#instanceProbability > 0 && this.#rng.float() < this.#instanceProbability) {
      this.#startInstance(t);
      return undefined;
    }
    return this.#normal(u, t);
  }

  /**
   * The remaining records of fraud instances already started, in event-time
   * order, so that a finite run ends with complete instances. Later `next()`
   * records are not earlier than these.
   */
  flush(): GeneratedRecord[] {
    const out: GeneratedRecord[] = [];
    while (this.#pending.size > 0) {
      this.#clock = Math.max(this.#clock, this.#pending.peekTime());
      out.push(this.#pending.pop());
    }
    return out;
  }

  #normal(u: number, t: number): GeneratedRecord {
    const pop = this.#pop;
    const rng = this.#rng;
    pop.lastNormal[u] = t;
    const home = pop.userHome[u];
    const homeCountry = pop.locationCountry[home];
    let merchant = -1;
    if (rng.float() < NORMAL_TRAFFIC.internationalShare) {
      merchant = this.#foreignMerchant(homeCountry);
    }
    if (merchant < 0) merchant = this.#merchantIn(homeCountry);
    const currency = pop.countryCurrency[pop.merchantCountry[merchant]];
    const type: TransactionType = rng.float() < NORMAL_TRAFFIC.refundShare ? "refund" : "purchase";
    const amountMinor = this.#typicalAmount(u, currency);
    if (type === "purchase" && currency === pop.countryCurrency[homeCountry]) {
      this.#countHomePurchase(u);
    }
    return this.#record(u, t, {
      merchant,
      currency,
      amountMinor,
      type,
      location: home,
      method: this.#method(u),
    });
  }

  #countHomePurchase(u: number): void {
    if (++this.#pop.homePurchases[u] === FRAUD_SHAPES.amountSpike.minHistory) {
      this.#eligibleForSpike.push(u);
    }
  }

  /** A user by activity (16 tries), else any user (16 more), who is not resting at `t`; -1 if none. */
  #pickNormalUser(t: number): number {
    const pop = this.#pop;
    for (let tries = 0; tries < 16; tries++) {
      const u = pickWeighted(pop.userCumulative, this.#rng);
      if (t - pop.lastNormal[u] >= NORMAL_TRAFFIC.minUserGapMs) return u;
    }
    // The active users are all resting (a busy population): anyone rested will do.
    for (let tries = 0; tries < 16; tries++) {
      const u = this.#rng.int(pop.userIds.length);
      if (t - pop.lastNormal[u] >= NORMAL_TRAFFIC.minUserGapMs) return u;
    }
    return -1;
  }

  #startInstance(t: number): void {
    const first = this.#rng.int(FRAUD_PATTERNS.length);
    for (let i = 0; i < FRAUD_PATTERNS.length; i++) {
      const pattern = FRAUD_PATTERNS[(first + i) % FRAUD_PATTERNS.length];
      let user = pattern === "amount_spike" ? this.#spikeUser(t) : -1;
      if (user < 0) user = this.#restedUser(t);
      if (user < 0) continue; // every user picked is in an instance: try the next pattern
      const label: FraudLabel = { pattern, instanceId: this.#rng.uuid() };
      const records = pattern === "velocity_burst"
        ? this.#velocityBurst(user, t, label)
        : pattern === "amount_spike"
        ? this.#amountSpike(user, t, label)
        : pattern === "impossible_travel"
        ? this.#impossibleTravel(user, t, label)
        : this.#cardTesting(user, t, label);
      let end = t;
      for (const [time, record] of records) {
        this.#pending.push(time, record);
        end = Math.max(end, time);
      }
      this.#pop.busyUntil[user] = end + FRAUD_SHAPES.userCooldownMs;
      return;
    }
  }

  #restedUser(t: number): number {
    for (let tries = 0; tries < 16; tries++) {
      const u = this.#rng.int(this.#pop.userIds.length);
      if (this.#pop.busyUntil[u] <= t) return u;
    }
    return -1;
  }

  #spikeUser(t: number): number {
    const eligible = this.#eligibleForSpike;
    for (let tries = 0; tries < 16 && eligible.length > 0; tries++) {
      const u = eligible[this.#rng.int(eligible.length)];
      if (this.#pop.busyUntil[u] <= t) return u;
    }
    return -1;
  }

  #velocityBurst(u: number, t: number, label: FraudLabel): [number, GeneratedRecord][] {
    const shape = FRAUD_SHAPES.velocityBurst;
    const span = this.#rng.range(shape.minSpanMs, shape.maxSpanMs);
    const home = this.#pop.userHome[u];
    const country = this.#pop.locationCountry[home];
    const currency = this.#pop.countryCurrency[country];
    return this.#spread(t, span, shape.transactions).map((time) => [
      time,
      this.#record(u, time, {
        merchant: this.#merchantIn(country),
        currency,
        amountMinor: this.#typicalAmount(u, currency),
        type: "purchase",
        location: home,
        method: this.#method(u),
      }, label),
    ]);
  }

  /**
   * The spike, preceded (when the user has too little history) by ordinary,
   * unlabelled purchases at the normal per-user pace that build the history.
   */
  #amountSpike(u: number, t: number, label: FraudLabel): [number, GeneratedRecord][] {
    const shape = FRAUD_SHAPES.amountSpike;
    const pop = this.#pop;
    const home = pop.userHome[u];
    const country = pop.locationCountry[home];
    const currency = pop.countryCurrency[country];
    const purchase = (time: number, amountMinor: number, spike?: FraudLabel) =>
      this.#record(u, time, {
        merchant: this.#merchantIn(country),
        currency,
        amountMinor,
        type: "purchase",
        location: home,
        method: this.#method(u),
      }, spike);
    const out: [number, GeneratedRecord][] = [];
    let time = Math.max(t, pop.lastNormal[u] + NORMAL_TRAFFIC.minUserGapMs);
    while (pop.homePurchases[u] < shape.minHistory) {
      out.push([time, purchase(time, this.#typicalAmount(u, currency))]);
      this.#countHomePurchase(u);
      pop.lastNormal[u] = time; // normal arrivals of this user wait for the history
      time += this.#rng.range(1, 2) * NORMAL_TRAFFIC.minUserGapMs;
    }
    const usd = pop.userMedianUsd[u] * this.#rng.range(shape.minMultiple, shape.maxMultiple);
    out.push([time, purchase(time, minorFromUsd(usd, currency), label)]);
    return out;
  }

  #impossibleTravel(u: number, t: number, label: FraudLabel): [number, GeneratedRecord][] {
    const shape = FRAUD_SHAPES.impossibleTravel;
    const pop = this.#pop;
    const home = pop.userHome[u];
    const homeCountry = pop.locationCountry[home];
    const homeCurrency = pop.countryCurrency[homeCountry];
    const far = pop.farLocations[home];
    const away = far[this.#rng.int(far.length)];
    const awayCountry = pop.locationCountry[away];
    const awayCurrency = pop.countryCurrency[awayCountry];
    const later = t + this.#rng.range(shape.minGapMs, shape.maxGapMs);
    return [
      [
        t,
        this.#record(u, t, {
          merchant: this.#merchantIn(homeCountry),
          currency: homeCurrency,
          amountMinor: this.#typicalAmount(u, homeCurrency),
          type: "purchase",
          location: home,
          method: "credit_card",
        }, label),
      ],
      [
        later,
        this.#record(u, later, {
          merchant: this.#merchantIn(awayCountry),
          currency: awayCurrency,
          amountMinor: this.#typicalAmount(u, awayCurrency),
          type: "purchase",
          location: away,
          method: "credit_card",
        }, label),
      ],
    ];
  }

  #cardTesting(u: number, t: number, label: FraudLabel): [number, GeneratedRecord][] {
    const shape = FRAUD_SHAPES.cardTesting;
    const rng = this.#rng;
    const home = this.#pop.userHome[u];
    const currency = this.#pop.countryCurrency[this.#pop.locationCountry[home]];
    const count = shape.minTransactions +
      rng.int(shape.maxTransactions - shape.minTransactions + 1);
    const low = Math.max(1, minorFromUsd(shape.minAmountUsd, currency));
    const high = minorFromUsd(shape.maxAmountUsd, currency);
    const used = new Set<number>();
    return this.#spread(t, rng.range(shape.minSpanMs, shape.maxSpanMs), count).map((time) => {
      let merchant = pickWeighted(this.#pop.merchantCumulative, rng);
      for (let tries = 0; tries < 16 && used.has(merchant); tries++) {
        merchant = pickWeighted(this.#pop.merchantCumulative, rng);
      }
      used.add(merchant);
      return [
        time,
        this.#record(u, time, {
          merchant,
          currency,
          amountMinor: low + rng.int(high - low + 1),
          type: "purchase",
          location: home,
          method: "credit_card",
        }, label),
      ];
    });
  }

  /** `count` sorted event times from `t` to `t + span` (both ends included). */
  #spread(t: number, span: number, count: number): number[] {
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

  /** A normal amount for user `u` in `currency`, integer minor units. */
  #typicalAmount(u: number, currency: string): number {
    const z = Math.max(-2.5, Math.min(2.5, this.#rng.normal()));
    const usd = Math.max(
      NORMAL_TRAFFIC.minAmountUsd,
      this.#pop.userMedianUsd[u] * Math.exp(0.5 * z),
    );
    return minorFromUsd(usd, currency);
  }

  #method(u: number): PaymentMethod {
    if (this.#rng.float() < NORMAL_TRAFFIC.preferredMethodShare) {
      return PAYMENT_METHODS[this.#pop.userMethod[u]];
    }
    return PAYMENT_METHODS[this.#rng.int(PAYMENT_METHODS.length)];
  }

  #record(u: number, time: number, f: RecordFields, label?: FraudLabel): GeneratedRecord {
    const pop = this.#pop;
    const tx: Transaction = {
      transactionId: this.#rng.uuid(),
      userId: pop.userIds[u],
      amount: fromMinorUnits(f.amountMinor, f.currency),
      currency: f.currency,
      transactionTime: Math.floor(time),
      merchantId: pop.merchantIds[f.merchant],
      transactionType: f.type,
      location: LOCATIONS[f.location].location,
      paymentMethod: f.method,
      isInternational: pop.merchantCountry[f.merchant] !== pop.locationCountry[pop.userHome[u]],
    };
    return label === undefined
      ? { key: tx.userId, user: u, tx, amountMinor: f.amountMinor }
      : { key: tx.userId, user: u, tx, amountMinor: f.amountMinor, label };
  }
}

interface RecordFields {
  merchant: number;
  currency: string;
  amountMinor: number;
  type: TransactionType;
  /** Index into LOCATIONS. */
  location: number;
  method: PaymentMethod;
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

function checkOptions(options: GeneratorOptions): Required<GeneratorOptions> {
  const o = { ...GENERATOR_DEFAULTS, ...options };
  const fail = (name: string, expected: string, given: unknown) => {
    throw new RangeError(`${name}: expected ${expected}, given ${JSON.stringify(given)}`);
  };
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
  if (!(o.fraudRate >= 0 && o.fraudRate < 1)) fail("fraudRate", "a number in [0, 1)", o.fraudRate);
  return o;
}

/** Everything about users, merchants and cities, in flat arrays indexed by number. */
interface Population {
  userIds: string[];
  userHome: Uint16Array;
  userMedianUsd: Float64Array;
  userMethod: Uint8Array;
  userCumulative: Float64Array;
  lastNormal: Float64Array;
  busyUntil: Float64Array;
  homePurchases: Uint32Array;
  merchantIds: string[];
  merchantCountry: Uint16Array;
  merchantCumulative: Float64Array;
  countryMerchants: Int32Array[];
  countryMerchantCumulative: Float64Array[];
  countryCurrency: string[];
  locationCountry: Uint16Array;
  /** Per city, the cities at least FRAUD_SHAPES.impossibleTravel.minDistanceKm away. */
  farLocations: number[][];
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
  const farLocations = LOCATIONS.map((a) =>
    LOCATIONS.flatMap((b, j) =>
      distanceKm(a, b) >= FRAUD_SHAPES.impossibleTravel.minDistanceKm ? [j] : []
    )
  );

  const pad = (n: number, width: number) => String(n).padStart(width, "0");
  const userWidth = Math.max(5, String(users - 1).length);
  const userIds = new Array<string>(users);
  const userHome = new Uint16Array(users);
  const userMedianUsd = new Float64Array(users);
  const userMethod = new Uint8Array(users);
  const activity = new Array<number>(users);
  const methodCumulative = cumulative(METHOD_WEIGHTS);
  for (let u = 0; u < users; u++) {
    userIds[u] = `user-${pad(u, userWidth)}`;
    userHome[u] = pickWeighted(cityCumulative, rng);
    userMedianUsd[u] = Math.min(400, Math.max(12, Math.exp(Math.log(35) + 0.7 * rng.normal())));
    userMethod[u] = pickWeighted(methodCumulative, rng);
    activity[u] = Math.exp(0.9 * Math.max(-3, Math.min(3, rng.normal())));
  }

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
    userMedianUsd,
    userMethod,
    userCumulative: cumulative(activity),
    lastNormal: new Float64Array(users).fill(-Infinity),
    busyUntil: new Float64Array(users).fill(-Infinity),
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
    farLocations,
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

/** Fraud records waiting for their event time: a binary min-heap on (time, sequence). */
class PendingQueue {
  #times: number[] = [];
  #seqs: number[] = [];
  #records: GeneratedRecord[] = [];
  #seq = 0;

  get size(): number {
    return this.#records.length;
  }

  /** Event time of the earliest record, Infinity when empty. */
  peekTime(): number {
    return this.#records.length > 0 ? this.#times[0] : Infinity;
  }

  push(time: number, record: GeneratedRecord): void {
    this.#times.push(time);
    this.#seqs.push(this.#seq++);
    this.#records.push(record);
    let i = this.#records.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.#less(i, parent)) break;
      this.#swap(i, parent);
      i = parent;
    }
  }

  pop(): GeneratedRecord {
    const top = this.#records[0];
    const last = this.#records.length - 1;
    this.#swap(0, last);
    this.#times.pop();
    this.#seqs.pop();
    this.#records.pop();
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let smallest = i;
      if (l < last && this.#less(l, smallest)) smallest = l;
      if (r < last && this.#less(r, smallest)) smallest = r;
      if (smallest === i) return top;
      this.#swap(i, smallest);
      i = smallest;
    }
  }

  #less(a: number, b: number): boolean {
    const ta = this.#times[a];
    const tb = this.#times[b];
    return ta < tb || (ta === tb && this.#seqs[a] < this.#seqs[b]);
  }

  #swap(a: number, b: number): void {
    [this.#times[a], this.#times[b]] = [this.#times[b], this.#times[a]];
    [this.#seqs[a], this.#seqs[b]] = [this.#seqs[b], this.#seqs[a]];
    [this.#records[a], this.#records[b]] = [this.#records[b], this.#records[a]];
  }
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
