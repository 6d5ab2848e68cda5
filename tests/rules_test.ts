import assert from "node:assert/strict";
import defaults from "../jobs/config/detect_defaults.json" with { type: "json" };
import { TransactionGenerator } from "../jobs/lib/generator.ts";
import {
  ENVELOPE_CONFIG_FILE,
  ENVELOPE_DETECT_CONFIG,
  ENVELOPE_PRIOR_GAP_MS,
  RULE_ENVELOPE,
} from "./helpers/traffic.ts";
import { evaluate, formatEvaluation, GroundTruth, RULE_PATTERNS } from "../jobs/lib/evaluation.ts";
import {
  type Anomaly,
  burstWindow,
  DEFAULT_DETECT_CONFIG,
  detect,
  type DetectConfig,
  nextRate,
  parseDetectConfig,
  PRIOR_WEIGHT,
  RATE_MAX_WEIGHT,
  spikeScore,
  type UserState,
} from "../jobs/lib/rules.ts";
import { toMinorUnits } from "../jobs/lib/currency.ts";
import { scoreSeeds } from "../jobs/tune.ts";
import { detectProcessor } from "../jobs/detect.ts";
import { runDetection } from "../jobs/lib/tuning.ts";
import type { Transaction } from "../jobs/lib/transaction.ts";

/** The patterns a rule is written for (account takeover has none yet: reported, not asserted). */
const RULE_PATTERN_NAMES = Object.values(RULE_PATTERNS);

const T0 = 1_700_000_000_000;
const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;

let counter = 0;
/** A valid transaction with a fresh, readable UUID v4; `at` is ms after T0. */
function tx(at: number, patch: Partial<Transaction> = {}): Transaction {
  counter++;
  return {
    transactionId: `00000000-0000-4000-8000-${String(counter).padStart(12, "0")}`,
    userId: "user-1",
    amount: 50,
    currency: "USD",
    transactionTime: T0 + at,
    merchantId: "merchant-1",
    transactionType: "purchase",
    location: "New York, US",
    paymentMethod: "credit_card",
    isInternational: false,
    ...patch,
  };
}

/** Runs detect over one user's transactions; returns the final state and every anomaly. */
function run(
  txs: Transaction[],
  o: { state?: UserState; config?: DetectConfig } = {},
): { state: UserState | undefined; anomalies: Anomaly[]; at: number[] } {
  let state = o.state;
  const anomalies: Anomaly[] = [];
  const at: number[] = [];
  txs.forEach((t, i) => {
    const minor = toMinorUnits(t.amount, t.currency);
    assert.ok(minor.ok);
    const d = detect(state, t, minor.minor, o.config ?? DEFAULT_DETECT_CONFIG);
    state = d.state;
    for (const a of d.anomalies) {
      anomalies.push(a);
      at.push(i);
    }
  });
  return { state, anomalies, at };
}

function only(anomalies: Anomaly[], rule: string): Anomaly[] {
  return anomalies.filter((a) => a.rule === rule);
}

/** A steady baseline: `n` purchases of about 50 USD, 5 minutes apart. */
function baseline(n: number, start = 0): Transaction[] {
  const amounts = [45, 50, 55, 48, 52, 47, 53, 50, 49, 51];
  return Array.from(
    { length: n },
    (_, i) => tx(start + i * 5 * MINUTE, { amount: amounts[i % 10] }),
  );
}

Deno.test("rules: default thresholds come from jobs/config/detect_defaults.json", () => {
  assert.deepEqual(DEFAULT_DETECT_CONFIG, defaults);
  assert.deepEqual(DEFAULT_DETECT_CONFIG, {
    velocity: {
      minCount: 5,
      windowMs: 600_000,
      minWindowMs: 60_000,
      gapFactor: 0.5,
      minMerchants: 3,
      minCountAnyMerchants: 11,
    },
    amountSpike: { warmup: 8, multiplier: 30, minZScore: 3, history: 16 },
    impossibleTravel: { maxSpeedKmh: 1000, minDistanceKm: 500 },
    cardTesting: {
      maxAmountUsd: 5,
      minCount: 3,
      windowMs: 900_000,
      minMerchants: 2,
      minCountUsual: 13,
      minWindowMs: 30_000,
      gapFactor: 0.5,
      maxShareOfTypical: 0.5,
    },
    accountTakeover: { minHistory: 3, maxCountries: 8, minMultiple: 2.5 },
    maxEvents: 64,
    priorGapMs: 43_200_000,
  });
});

Deno.test("rules: parseDetectConfig fills gaps from the defaults and names the bad key, expected and given", () => {
  const c = parseDetectConfig({ velocity: { minCount: 6 } });
  assert.equal(c.velocity.minCount, 6);
  assert.equal(c.velocity.windowMs, 600_000);
  assert.throws(
    () => parseDetectConfig({ velocity: { minCount: 0 } }),
    /^RangeError: detect config velocity.minCount: expected an integer from 2 to 64, given 0$/,
  );
  assert.throws(
    () => parseDetectConfig({ impossibleTravel: { maxSpeedKmh: "fast" } }),
    /impossibleTravel.maxSpeedKmh: expected a finite number > 0, given "fast"/,
  );
  assert.throws(
    () => parseDetectConfig([]),
    /^RangeError: detect config: expected an object, given \[\]$/,
  );
  assert.throws(
    () => parseDetectConfig({ velocity: { minCnt: 3 } }),
    /detect config velocity.minCnt: expected one of velocity.minCount, velocity.windowMs/,
  );
  assert.throws(() => parseDetectConfig({ speed: 1 }), /detect config speed: expected one of/);
  assert.throws(
    () => parseDetectConfig({ velocity: { minWindowMs: 700_000 } }),
    /velocity.minWindowMs: expected at most velocity.windowMs \(600000\), given 700000/,
  );
  assert.throws(
    () => parseDetectConfig({ amountSpike: { warmup: 20 } }),
    /amountSpike.warmup: expected at most amountSpike.history \(16\), given 20/,
  );
  assert.throws(
    () => parseDetectConfig({ accountTakeover: { minMultiple: 0 } }),
    /accountTakeover.minMultiple: expected a finite number > 0, given 0/,
  );
  assert.throws(
    () => parseDetectConfig({ priorGapMs: -1 }),
    /^RangeError: detect config priorGapMs: expected a finite number > 0, given -1$/,
  );
  assert.equal(parseDetectConfig({ priorGapMs: 100_000 }).priorGapMs, 100_000);
});

Deno.test("rules: a config written before per-user baselines (no new keys) still parses, new keys from the defaults", () => {
  const before = {
    velocity: { minCount: 8, windowMs: 60000 },
    amountSpike: { warmup: 8, multiplier: 10, minZScore: 4 },
    impossibleTravel: { maxSpeedKmh: 1000, minDistanceKm: 1000 },
    cardTesting: { maxAmountUsd: 2, minCount: 6, windowMs: 300000 },
    maxEvents: 64,
  };
  const c = parseDetectConfig(before);
  assert.deepEqual(c.velocity, { ...DEFAULT_DETECT_CONFIG.velocity, ...before.velocity });
  assert.deepEqual(c.cardTesting, { ...DEFAULT_DETECT_CONFIG.cardTesting, ...before.cardTesting });
  assert.deepEqual(c.amountSpike, { ...DEFAULT_DETECT_CONFIG.amountSpike, ...before.amountSpike });
  assert.deepEqual(c.accountTakeover, DEFAULT_DETECT_CONFIG.accountTakeover);
});

/** `n` purchases at merchants m-0, m-1, … (or all at `merchant`), `gap` apart from `start`. */
function burst(n: number, start: number, gap: number, patch: Partial<Transaction> = {}) {
  return Array.from(
    { length: n },
    (_, i) => tx(start + i * gap, { merchantId: `m-${i}`, ...patch }),
  );
}

/** A user seen every `gap` for `n` transactions before `start` (at one merchant, 50 USD). */
function history(n: number, start: number, gap: number): Transaction[] {
  return Array.from({ length: n }, (_, i) => tx(start - (n - i) * gap));
}

Deno.test("rules: velocity fires once when the 5th transaction at 3+ merchants lands within 10 minutes, with the 5 as evidence", () => {
  const txs = [...history(3, 0, 6 * HOUR), ...burst(5, 0, 2 * MINUTE)]; // 5 in 8 minutes
  const { anomalies, at } = run(txs);
  const found = only(anomalies, "velocity");
  assert.equal(found.length, 1);
  assert.equal(at[anomalies.indexOf(found[0])], 7);
  const [a] = found;
  assert.deepEqual(a.transactionIds, txs.slice(3).map((t) => t.transactionId));
  assert.equal(a.observed, 5);
  assert.equal(a.threshold, 5);
  assert.equal(a.severity, "medium");
  assert.equal(a.windowStart, T0);
  assert.equal(a.windowEnd, T0 + 8 * MINUTE);
  assert.equal(a.detectedAt, txs[7].transactionTime);
  assert.match(a.anomalyId, /^[0-9a-f]{32}$/);
});

Deno.test("rules: velocity does not fire for 4 within 10 minutes, 5 spanning exactly 10 minutes, or 5 at 2 merchants", () => {
  const h = history(3, 0, 6 * HOUR);
  assert.equal(only(run([...h, ...burst(4, 0, MINUTE)]).anomalies, "velocity").length, 0);
  assert.equal(only(run([...h, ...burst(5, 0, 150 * SECOND)]).anomalies, "velocity").length, 0);
  const two = burst(5, 0, MINUTE).map((t, i) => ({ ...t, merchantId: `m-${i % 2}` }));
  assert.equal(only(run([...h, ...two]).anomalies, "velocity").length, 0);
});

Deno.test("rules: velocity at one merchant (a basket paid in parts) needs 11 transactions", () => {
  const h = history(3, 0, 6 * HOUR);
  const basket = (n: number) => burst(n, 0, 10 * SECOND, { merchantId: "m-bar" });
  assert.equal(only(run([...h, ...basket(10)]).anomalies, "velocity").length, 0);
  const { anomalies } = run([...h, ...basket(11)]);
  assert.deepEqual(only(anomalies, "velocity").map((a) => a.observed), [11]);
});

Deno.test("rules: velocity adapts to the user's pace: a busy user's window shrinks to half their usual gap, at least 1 minute", () => {
  // a user who pays every 3 minutes: their window is 90 s (shrinking a little as the burst goes)
  const busy = history(20, 0, 3 * MINUTE);
  assert.equal(only(run([...busy, ...burst(5, 0, 2 * MINUTE)]).anomalies, "velocity").length, 0);
  assert.equal(only(run([...busy, ...burst(5, 0, 20 * SECOND)]).anomalies, "velocity").length, 0);
  assert.equal(only(run([...busy, ...burst(5, 0, 10 * SECOND)]).anomalies, "velocity").length, 1);
  // a user who pays every 6 hours: 10 minutes (the cap)
  const idle = history(20, 0, 6 * HOUR);
  assert.equal(only(run([...idle, ...burst(5, 0, 2 * MINUTE)]).anomalies, "velocity").length, 1);
});

Deno.test("rules: velocity's cold start: a burst that is a new user's first activity is caught; the prior fades as the user's own gaps come", () => {
  // No history: the prior (12 h) outweighs the burst's own 1-2 minute gaps
  // while it lasts, so the window stays at 10 minutes.
  assert.equal(only(run(burst(5, 0, MINUTE)).anomalies, "velocity").length, 1);
  assert.equal(only(run(burst(5, 0, 2 * MINUTE)).anomalies, "velocity").length, 1);
  assert.equal(only(run(burst(7, 0, 85 * SECOND)).anomalies, "velocity").length, 1);
  // Without the prior (a prior of one minute), the first gap set the pace: a minute's window.
  const config = parseDetectConfig({ priorGapMs: MINUTE });
  assert.equal(only(run(burst(5, 0, MINUTE), { config }).anomalies, "velocity").length, 0);
  assert.equal(only(run(burst(5, 0, 10 * SECOND), { config }).anomalies, "velocity").length, 1);
  // A user who really pays every 2 minutes: by their 10th gap the prior is gone.
  const o = DEFAULT_DETECT_CONFIG.velocity;
  let rate = nextRate(null, T0);
  for (let i = 1; i <= 10; i++) rate = nextRate(rate, T0 + i * 2 * MINUTE);
  assert.equal(rate.gaps, RATE_MAX_WEIGHT);
  assert.equal(Math.round(burstWindow(rate, o, DEFAULT_DETECT_CONFIG.priorGapMs)), MINUTE);
  // Before: the prior and the gaps seen, weighted; no gap yet: the prior alone.
  assert.equal(burstWindow(null, o, 100_000), MINUTE); // half of 100 s, at least a minute
  assert.equal(Math.round(burstWindow(null, o, 1_000_000)), 500_000);
  const one = nextRate(nextRate(null, T0), T0 + 4 * MINUTE);
  const blended = Math.exp(
    (PRIOR_WEIGHT * 0.9 * Math.log(1_000_000) + Math.log(4 * MINUTE)) / (PRIOR_WEIGHT * 0.9 + 1),
  ) / 2;
  assert.ok(Math.abs(burstWindow(one, o, 1_000_000) - blended) < 1e-6);
});

Deno.test("rules: the pace moves by a tenth of the way per gap, so a burst barely shortens its own window", () => {
  let rate = nextRate(null, T0);
  assert.deepEqual(rate, { last: T0, gaps: 0, logGap: 0 });
  rate = nextRate(rate, T0 + 6 * HOUR);
  assert.equal(rate.gaps, 1);
  assert.equal(Math.round(Math.exp(rate.logGap)), 6 * HOUR);
  const before = rate.logGap;
  rate = nextRate(rate, rate.last + 10 * SECOND); // clamped to 1 minute
  assert.ok(Math.abs(rate.logGap - (before + (Math.log(MINUTE) - before) / 10)) < 1e-12);
  assert.equal(nextRate(rate, rate.last - 1), rate); // out of order: unchanged
  const prior = DEFAULT_DETECT_CONFIG.priorGapMs;
  const window = burstWindow(rate, DEFAULT_DETECT_CONFIG.velocity, prior);
  assert.equal(window, 10 * MINUTE);
  assert.equal(burstWindow(null, DEFAULT_DETECT_CONFIG.velocity, prior), 10 * MINUTE);
});

Deno.test("rules: a continuing velocity burst is one incident; a later burst is a new one", () => {
  const h = history(3, 0, 6 * HOUR);
  const first = burst(30, 0, 2 * SECOND);
  // the first burst has shortened the pace: the window is now 1 minute
  const second = burst(10, 30 * MINUTE, 5 * SECOND);
  const { anomalies } = run([...h, ...first, ...second]);
  assert.deepEqual(only(anomalies, "velocity").map((a) => a.detectedAt), [
    first[4].transactionTime,
    second[4].transactionTime,
  ]);
});

/** `n` small purchases (1.50 USD) `gap` apart from `start`, at merchants m-0, m-1, … */
function smallCharges(n: number, start: number, gap: number, patch: Partial<Transaction> = {}) {
  return burst(n, start, gap, { amount: 1.5, ...patch });
}

Deno.test("rules: card_testing fires once for 3 purchases ≤ 5.00 USD at 2+ merchants within 15 minutes", () => {
  const h = history(3, 0, 6 * HOUR);
  const txs = [...h, ...smallCharges(6, 0, 2 * MINUTE)];
  const { anomalies, at } = run(txs);
  const found = only(anomalies, "card_testing");
  assert.equal(found.length, 1);
  assert.equal(at[anomalies.indexOf(found[0])], 5);
  assert.equal(found[0].severity, "high");
  assert.equal(found[0].observed, 3);
  assert.equal(found[0].threshold, 3);
  assert.deepEqual(found[0].transactionIds, txs.slice(3, 6).map((t) => t.transactionId));
  assert.equal(only(anomalies, "velocity").length, 1); // 6 in 10 minutes at 6 merchants
  assert.equal(
    only(run([...h, ...smallCharges(2, 0, MINUTE)]).anomalies, "card_testing").length,
    0,
  );
});

Deno.test("rules: card_testing at one merchant needs foreign charges (2 within 15 minutes, whatever the pace); else 13 charges (in-app purchases look the same)", () => {
  const h = history(3, 0, 6 * HOUR);
  const one = (n: number, gap: number, patch: Partial<Transaction> = {}) =>
    smallCharges(n, 0, gap, { merchantId: "m-app", ...patch });
  assert.equal(only(run([...h, ...one(12, 10 * SECOND)]).anomalies, "card_testing").length, 0);
  assert.deepEqual(
    only(run([...h, ...one(13, 10 * SECOND)]).anomalies, "card_testing").map((a) => a.threshold),
    [13],
  );
  // 3 foreign charges 6 minutes apart: 12 minutes, beyond velocity's reach
  const foreign = one(3, 6 * MINUTE, { isInternational: true });
  assert.equal(only(run([...h, ...foreign]).anomalies, "card_testing").length, 1);
  const oneForeign = one(3, 6 * MINUTE).map((t, i) => ({ ...t, isInternational: i === 0 }));
  assert.equal(only(run([...h, ...oneForeign]).anomalies, "card_testing").length, 0);
});

Deno.test("rules: card_testing counts credit-card charges only (card numbers are what is tested)", () => {
  const h = history(3, 0, 6 * HOUR);
  for (const paymentMethod of ["debit_card", "paypal", "bank_transfer"] as const) {
    const charges = smallCharges(6, 0, MINUTE, { paymentMethod });
    assert.equal(only(run([...h, ...charges]).anomalies, "card_testing").length, 0, paymentMethod);
  }
});

Deno.test("rules: card_testing ignores amounts above 5.00 USD-equivalent and refunds; 750 JPY is small, 751 is not", () => {
  const h = history(3, 0, 6 * HOUR);
  assert.equal(
    only(run([...h, ...smallCharges(5, 0, MINUTE, { amount: 5.01 })]).anomalies, "card_testing")
      .length,
    0,
  );
  const refunds = smallCharges(5, 0, MINUTE, { transactionType: "refund" });
  assert.equal(only(run([...h, ...refunds]).anomalies, "card_testing").length, 0);
  const jpy = (amount: number) =>
    smallCharges(3, 0, MINUTE, { amount, currency: "JPY", location: "Tokyo, JP" });
  assert.equal(only(run([...h, ...jpy(750)]).anomalies, "card_testing").length, 1);
  assert.equal(only(run([...h, ...jpy(751)]).anomalies, "card_testing").length, 0);
});

Deno.test("rules: card_testing adapts to the user's amounts: small charges are not small for a user who usually pays little", () => {
  // a user whose usual purchase is 6 USD (not small, but 1.50 is a quarter of it) …
  const cheap = Array.from({ length: 8 }, (_, i) => tx(-(8 - i) * 6 * HOUR, { amount: 6 }));
  assert.equal(
    only(run([...cheap, ...smallCharges(3, 0, MINUTE)]).anomalies, "card_testing").length,
    1,
  );
  // … and one whose usual purchase is 5.50: 3.00 is more than half of it
  const cheaper = cheap.map((t) => ({ ...t, amount: 5.5 }));
  const three = smallCharges(3, 0, MINUTE, { amount: 3 });
  assert.equal(only(run([...cheaper, ...three]).anomalies, "card_testing").length, 0);
});

Deno.test("rules: card_testing adapts to the user's pace like velocity (a busy user's window is shorter)", () => {
  const busy = history(20, 0, 3 * MINUTE);
  assert.equal(
    only(run([...busy, ...smallCharges(3, 0, 2 * MINUTE)]).anomalies, "card_testing").length,
    0,
  );
  assert.equal(
    only(run([...busy, ...smallCharges(3, 0, 20 * SECOND)]).anomalies, "card_testing").length,
    1,
  );
});

Deno.test("rules: amount_spike fires for a purchase ≥ 30× the median of the last purchases after 8 of them", () => {
  const base = baseline(8);
  const spike = tx(60 * MINUTE, { amount: 1600 });
  const { anomalies, state } = run([...base, ...spike ? [spike] : []]);
  const found = only(anomalies, "amount_spike");
  assert.equal(found.length, 1);
  const [a] = found;
  assert.deepEqual(a.transactionIds, [spike.transactionId]);
  assert.equal(a.observed, 32); // 1600 / 50 (the median of 45…55)
  assert.equal(a.threshold, 30);
  assert.equal(a.severity, "medium");
  assert.equal(a.windowStart, T0);
  assert.equal(a.windowEnd, spike.transactionTime);
  assert.equal(state!.amounts.USD.recent.length, 8); // the spike stays out of the baseline
});

Deno.test("rules: amount_spike does not fire just under 30× the median, nor before warm-up", () => {
  assert.equal(
    only(run([...baseline(8), tx(60 * MINUTE, { amount: 1490 })]).anomalies, "amount_spike").length,
    0,
  );
  assert.equal(
    only(run([...baseline(7), tx(60 * MINUTE, { amount: 5000 })]).anomalies, "amount_spike").length,
    0,
  );
});

Deno.test("rules: amount_spike's baseline is robust: one big purchase in it moves neither the median nor the spread", () => {
  const withOutlier = [...baseline(7), tx(40 * MINUTE, { amount: 1400 })]; // 28×: no spike
  const { anomalies, state } = run([...withOutlier, tx(60 * MINUTE, { amount: 1600 })]);
  // the median moved from 50 to 51 (the mean would have moved from 50 to 219)
  assert.deepEqual(only(anomalies, "amount_spike").map((a) => a.observed), [31.37]);
  assert.equal(state!.amounts.USD.recent.length, 8);
  const flat = spikeScore([100, 100, 100, 100], 400); // no spread: the floor, 0.1
  assert.equal(flat.ratio, 4);
  assert.ok(Math.abs(flat.z - Math.log(4) / 0.1) < 1e-9);
});

Deno.test("rules: amount_spike adapts to the user's spread: a user whose amounts vary widely needs more standard deviations", () => {
  const wide = [5, 10, 20, 50, 100, 200, 5, 10, 20, 50, 100, 200, 50, 20, 10, 5].map((amount, i) =>
    tx(i * 5 * MINUTE, { amount })
  );
  // median 20, spread 1.4826 × MAD of ln amounts ≈ 1.7: 30× is only 2 deviations above
  const z = spikeScore(wide.map((t) => t.amount * 100), 600 * 100).z;
  assert.ok(z > 1.5 && z < 3, String(z));
  assert.equal(
    only(run([...wide, tx(2 * HOUR, { amount: 600 })]).anomalies, "amount_spike").length,
    0,
  );
});

Deno.test("rules: amount_spike compares within one currency, keeps the last 16 purchases per currency, and ignores refunds", () => {
  const eur = tx(60 * MINUTE, { amount: 5000, currency: "EUR" });
  assert.equal(run([...baseline(10), eur]).anomalies.length, 0);
  const refund = tx(60 * MINUTE, { amount: 5000, transactionType: "refund" });
  assert.equal(run([...baseline(10), refund]).anomalies.length, 0);
  assert.equal(run(baseline(40)).state!.amounts.USD.recent.length, 16);
  const currencies = ["USD", "EUR", "GBP", "CAD", "AUD"].map((currency, i) =>
    tx(i * MINUTE, { currency })
  );
  assert.deepEqual(Object.keys(run(currencies).state!.amounts), ["EUR", "GBP", "CAD", "AUD"]);
});

Deno.test("rules: small card-testing amounts stay out of the amount baseline", () => {
  const tiny = Array.from({ length: 8 }, (_, i) => tx(40 * MINUTE + i * 5 * MINUTE, { amount: 1 }));
  const { state } = run([...baseline(8), ...tiny]);
  assert.equal(state!.amounts.USD.recent.length, 8);
});

Deno.test("rules: account_takeover fires once for a high purchase from a new country with a new method", () => {
  const home = baseline(8); // New York, credit card, about 50 USD
  const away = (at: number, amount: number) =>
    tx(at, {
      location: "Paris, FR",
      currency: "EUR",
      amount,
      paymentMethod: "paypal",
      isInternational: true,
    });
  const takeover = [away(5 * HOUR, 400), away(5 * HOUR + 10 * MINUTE, 500)];
  const { anomalies } = run([...home, ...takeover]);
  const found = only(anomalies, "account_takeover");
  assert.equal(found.length, 1); // the country is known after the first
  assert.deepEqual(found[0].transactionIds, [takeover[0].transactionId]);
  assert.equal(found[0].severity, "high");
  assert.equal(found[0].threshold, 2.5);
  assert.ok(found[0].observed > 8 && found[0].observed < 9, String(found[0].observed)); // 400 EUR ≈ 435 USD
  // an ordinary amount, a known method, a known country, or too short a history: nothing
  assert.equal(only(run([...home, away(5 * HOUR, 60)]).anomalies, "account_takeover").length, 0);
  const card = { ...away(5 * HOUR, 400), paymentMethod: "credit_card" as const };
  assert.equal(only(run([...home, card]).anomalies, "account_takeover").length, 0);
  const ny = { ...away(5 * HOUR, 400), location: "Boston, US", currency: "USD" };
  assert.equal(only(run([...home, ny]).anomalies, "account_takeover").length, 0);
  assert.equal(
    only(run([...home.slice(0, 2), away(5 * HOUR, 400)]).anomalies, "account_takeover").length,
    0,
  );
});

Deno.test("rules: impossible_travel fires for New York → London within 1 hour (≈ 5570 km/h)", () => {
  const ny = tx(0);
  const london = tx(60 * MINUTE, { location: "London, GB", currency: "GBP", amount: 40 });
  const { anomalies } = run([ny, london]);
  assert.equal(anomalies.length, 1);
  const [a] = anomalies;
  assert.equal(a.rule, "impossible_travel");
  assert.deepEqual(a.transactionIds, [ny.transactionId, london.transactionId]);
  assert.ok(a.observed > 5500 && a.observed < 5600, String(a.observed));
  assert.equal(a.threshold, 1000);
  assert.equal(a.severity, "medium");
  assert.deepEqual([a.windowStart, a.windowEnd], [ny.transactionTime, london.transactionTime]);
  const fast = run([tx(0), tx(5 * MINUTE, { location: "London, GB" })]).anomalies[0];
  assert.equal(fast.severity, "high"); // ≥ 10× the limit
});

Deno.test("rules: impossible_travel does not fire at a feasible speed or for a short hop", () => {
  const slow = run([tx(0), tx(6 * 60 * MINUTE, { location: "London, GB" })]); // ≈ 928 km/h
  assert.equal(slow.anomalies.length, 0);
  const hop = run([tx(0), tx(MINUTE, { location: "Boston, US" })]); // 306 km in a minute
  assert.equal(hop.anomalies.length, 0);
});

Deno.test("rules: the way back from an impossible jump is the same incident, not a new anomaly", () => {
  const trip = [
    tx(0),
    tx(MINUTE, { location: "London, GB" }),
    tx(2 * MINUTE, { location: "London, GB" }),
    tx(3 * MINUTE),
    tx(4 * MINUTE, { location: "Sydney, AU" }),
  ];
  const { anomalies } = run(trip);
  assert.deepEqual(anomalies.map((a) => a.transactionIds), [
    [trip[0].transactionId, trip[1].transactionId],
    [trip[3].transactionId, trip[4].transactionId],
  ]);
});

Deno.test("rules: the same stream gives the same anomalies and ids; different evidence, different ids", () => {
  const txs = [...burst(8, 0, SECOND), tx(MINUTE, { location: "Tokyo, JP" })];
  const a = run(txs).anomalies;
  const b = run(txs).anomalies;
  assert.equal(a.length, 2);
  assert.deepEqual(a, b);
  assert.notEqual(a[0].anomalyId, a[1].anomalyId);
  const other = run(txs.map((t) => ({ ...t, userId: "user-2" }))).anomalies;
  assert.notEqual(other[0].anomalyId, a[0].anomalyId);
});

Deno.test("rules: detect does not modify the state it is given", () => {
  const { state } = run(baseline(9));
  const before = structuredClone(state);
  detect(
    state,
    tx(MINUTE * 100, { amount: 900, location: "Paris, FR" }),
    90000,
    DEFAULT_DETECT_CONFIG,
  );
  assert.deepEqual(state, before);
});

Deno.test("rules: state survives a JSON round trip (changelog) with identical results", () => {
  const txs = [
    ...baseline(9),
    ...smallCharges(5, 50 * MINUTE, SECOND, { amount: 1 }),
    ...smallCharges(5, 50 * MINUTE + 20 * SECOND, SECOND, { amount: 1 }),
    tx(52 * MINUTE, { amount: 1600 }),
    tx(53 * MINUTE, {
      location: "Dubai, AE",
      currency: "AED",
      amount: 1500,
      paymentMethod: "bank_transfer",
    }),
  ];
  const whole = run(txs);
  const head = run(txs.slice(0, 12));
  const restored = JSON.parse(JSON.stringify(head.state)) as UserState;
  const tail = run(txs.slice(12), { state: restored });
  assert.deepEqual([...head.anomalies, ...tail.anomalies], whole.anomalies);
  assert.deepEqual(tail.state, whole.state);
  assert.deepEqual(
    whole.anomalies.map((a) => a.rule).sort(),
    ["account_takeover", "amount_spike", "card_testing", "impossible_travel", "velocity"],
  );
});

Deno.test("rules: state stays bounded: 5000 transactions in 50 s keep at most 64 events per window", () => {
  const txs = Array.from(
    { length: 5_000 },
    (_, i) => tx(i * 10, { amount: (100 + (i % 100)) / 100 }),
  );
  const { state, anomalies } = run(txs);
  assert.ok(state!.velocity.events.length <= 64);
  assert.ok(state!.cardTesting.events.length <= 64);
  assert.ok(JSON.stringify(state).length < 16_000, `${JSON.stringify(state).length} bytes`);
  // one incident each: velocity at the 11th (one merchant), card testing at the 13th
  assert.deepEqual(anomalies.map((a) => a.rule), ["velocity", "card_testing"]);
  assert.ok(anomalies.every((a) => a.transactionIds.length <= 64));
});

Deno.test("rules: velocity windows prune by event time, so an idle user's state empties", () => {
  const { state } = run([
    ...Array.from({ length: 5 }, (_, i) => tx(i * SECOND)),
    tx(2 * 60 * MINUTE),
  ]);
  assert.equal(state!.velocity.events.length, 1);
  assert.equal(state!.cardTesting.events.length, 0);
});

/** Generates `count` records (plus the rest of started instances) and detects per user. */
function endToEnd(seed: string, count: number, fraudRate: number) {
  // Traffic inside the default thresholds' envelope (tests/helpers/traffic.ts).
  const generator = new TransactionGenerator({ ...RULE_ENVELOPE, seed, fraudRate });
  const records = generator.take(count).concat(generator.flush());
  const states = new Map<string, UserState>();
  const truth = new GroundTruth();
  const anomalies: Anomaly[] = [];
  for (const r of records) {
    truth.add(r.tx, { fraud: r.label });
    const d = detect(states.get(r.key), r.tx, r.amountMinor, ENVELOPE_DETECT_CONFIG);
    states.set(r.key, d.state);
    anomalies.push(...d.anomalies);
  }
  return evaluate(truth, anomalies);
}

Deno.test("rules: end to end, 200k generated records at fraudRate 0.01 (two seeds) give recall ≥ 0.99 per pattern and precision ≥ 0.95", () => {
  for (const seed of ["txpipe-e2e-1", "txpipe-e2e-2"]) {
    const e = endToEnd(seed, 200_000, 0.01);
    const report = `seed ${seed}\n${formatEvaluation(e)}`;
    for (const p of e.patterns.filter((p) => RULE_PATTERN_NAMES.includes(p.pattern))) {
      assert.ok(p.instances >= 40, `${p.pattern}: only ${p.instances} instances\n${report}`);
      assert.ok(p.recall! >= 0.99, `${p.pattern} recall ${p.recall}\n${report}`);
    }
    assert.ok(e.precision! >= 0.95, `precision ${e.precision}\n${report}`);
  }
});

Deno.test("rules: held-out regression: 2 days of held-out seeds 4 and 5 (realistic traffic, hard negatives, fraud 1 %) keep the figures reached", () => {
  // Tuned on seed 1 only (docs/evaluation.md); these floors sit below what the
  // defaults score here (velocity 96 %, card testing 96 %, impossible travel
  // 100 %, precision 97 %, 0.4 false positives per 10 000 users per day), with
  // room for two days' noise (about 40 instances per pattern and seed).
  const { evaluation: e } = scoreSeeds(
    ["4", "5"],
    { days: 2, fraudRate: 0.01, hardNegatives: true },
    DEFAULT_DETECT_CONFIG,
  );
  const report = formatEvaluation(e);
  const recall = (pattern: string) => e.patterns.find((p) => p.pattern === pattern)!.recall!;
  const precision = (rule: string) => e.rules.find((r) => r.rule === rule)!.precision!;
  assert.ok(recall("impossible_travel") >= 0.95, report);
  assert.ok(recall("card_testing") >= 0.9, report);
  assert.ok(recall("velocity_burst") >= 0.9, report);
  for (const rule of ["velocity", "impossible_travel", "card_testing"]) {
    assert.ok(precision(rule) >= 0.9, `${rule}\n${report}`);
  }
  assert.ok(e.precision! >= 0.9, report);
  assert.ok(e.falsePositivesPer10kUserDays! <= 5, report);
  for (const h of e.hardNegatives) assert.ok(h.falsePositiveRate! <= 0.01, `${h.kind}\n${report}`);
});

Deno.test("rules: the cluster tests' dataset, replayed in process through the detect processor, holds tests/detect_test.ts's recall ≥ 0.99 and precision ≥ 0.95", () => {
  // tests/helpers/jobs.ts's sharedInput: generate(80_000, "stream-tests", 0.03)
  const generator = new TransactionGenerator({
    ...RULE_ENVELOPE,
    seed: "stream-tests",
    fraudRate: 0.03,
  });
  const records = generator.take(80_000).concat(generator.flush());
  const processor = detectProcessor({
    appId: "txpipe-detect",
    input: "financial_transactions",
    output: "transaction_anomalies",
    config: ENVELOPE_DETECT_CONFIG, // as tests/helpers/jobs.ts's startInstance gives it
  });
  const run = runDetection(records, processor);
  const e = evaluate(run.truth, run.anomalies);
  const report = formatEvaluation(e);
  for (const p of e.patterns.filter((p) => RULE_PATTERN_NAMES.includes(p.pattern))) {
    assert.ok(p.instances >= 20, `${p.pattern}: ${p.instances} instances\n${report}`);
    assert.ok(p.recall! >= 0.99, `${p.pattern} recall ${p.recall}\n${report}`);
  }
  assert.ok(e.precision! >= 0.95, `precision ${e.precision}\n${report}`);
  const ids = run.anomalies.map((a) => a.anomalyId);
  assert.equal(new Set(ids).size, ids.length, "no anomaly twice");
});

Deno.test("rules: the envelope's detect config (what the cluster tests give detect) assumes the envelope's own pace, users ÷ records per second", async () => {
  assert.equal(ENVELOPE_PRIOR_GAP_MS, 100_000);
  const file = JSON.parse(await Deno.readTextFile(ENVELOPE_CONFIG_FILE));
  assert.deepEqual(file, { priorGapMs: ENVELOPE_PRIOR_GAP_MS });
  assert.deepEqual(ENVELOPE_DETECT_CONFIG, parseDetectConfig(file));
});
