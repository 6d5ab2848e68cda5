import assert from "node:assert/strict";
import { fromMinorUnits, minorFromUsd } from "../jobs/lib/currency.ts";
import {
  encodeTransaction,
  FRAUD_INSTANCE_HEADER,
  FRAUD_PATTERN_HEADER,
  FRAUD_PATTERNS,
  FRAUD_SHAPES,
  type GeneratedRecord,
  GENERATOR_DEFAULTS,
  labelHeaders,
  NORMAL_TRAFFIC,
  TransactionGenerator,
} from "../jobs/lib/generator.ts";
import {
  countryOf,
  distanceKm,
  findLocation,
  TRANSACTION_FIELDS,
  validateTransaction,
} from "../jobs/lib/transaction.ts";

const N = 50_000;

/** One shared run: 50k records at fraudRate 0.02 plus the flushed rest of its instances. */
const RUN: GeneratedRecord[] = (() => {
  const g = new TransactionGenerator({ seed: "generator-test", fraudRate: 0.02 });
  const records = g.take(N);
  return records.concat(g.flush());
})();
const NORMAL = RUN.filter((r) => r.label === undefined);

function instances(records: GeneratedRecord[]): Map<string, GeneratedRecord[]> {
  const out = new Map<string, GeneratedRecord[]>();
  for (const r of records) {
    if (r.label === undefined) continue;
    const list = out.get(r.label.instanceId) ?? [];
    list.push(r);
    out.set(r.label.instanceId, list);
  }
  return out;
}

function ofPattern(pattern: string): GeneratedRecord[][] {
  return [...instances(RUN).values()].filter((rs) => rs[0].label!.pattern === pattern);
}

function homeOf(): Map<string, string> {
  const home = new Map<string, string>();
  for (const r of NORMAL) home.set(r.key, r.tx.location);
  return home;
}

Deno.test("generator: every one of 50k records (fraudRate 0.02) passes validateTransaction with the same amountMinor", () => {
  assert.ok(RUN.length >= N);
  for (const r of RUN) {
    const v = validateTransaction(r.tx);
    assert.ok(v.ok, `${JSON.stringify(r.tx)}: ${!v.ok && v.message}`);
    assert.equal(v.amountMinor, r.amountMinor);
    assert.equal(r.key, r.tx.userId);
  }
});

Deno.test("generator: the encoded value holds exactly the ten contract fields, never the label", () => {
  for (const r of RUN.slice(0, 5_000).concat(RUN.filter((r) => r.label).slice(0, 500))) {
    const json = JSON.parse(new TextDecoder().decode(encodeTransaction(r.tx)));
    assert.deepEqual(Object.keys(json), [...TRANSACTION_FIELDS]);
    assert.deepEqual(json, r.tx);
  }
});

Deno.test("generator: the same options give byte-identical records, labels and times", () => {
  const a = new TransactionGenerator({ seed: 7, fraudRate: 0.05, startTime: 1_720_000_000_000 });
  const b = new TransactionGenerator({ seed: "7", fraudRate: 0.05, startTime: 1_720_000_000_000 });
  for (let i = 0; i < 20_000; i++) {
    const x = a.next();
    const y = b.next();
    assert.deepEqual(encodeTransaction(x.tx), encodeTransaction(y.tx), `record ${i}`);
    assert.deepEqual(x.label, y.label);
    assert.equal(x.amountMinor, y.amountMinor);
  }
  assert.deepEqual(a.flush(), b.flush());
});

Deno.test("generator: different seeds give different records", () => {
  const a = new TransactionGenerator({ seed: 1 }).take(100);
  const b = new TransactionGenerator({ seed: 2 }).take(100);
  const same = a.filter((r, i) => r.tx.transactionId === b[i].tx.transactionId).length;
  assert.equal(same, 0);
  assert.notDeepEqual(a.map((r) => r.tx.userId), b.map((r) => r.tx.userId));
});

Deno.test("generator: transactionIds are unique UUID v4 (version and variant bits set)", () => {
  const ids = new Set(RUN.map((r) => r.tx.transactionId));
  assert.equal(ids.size, RUN.length);
  for (const id of ids) {
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  }
});

Deno.test("generator: transactionTime is integer ms from startTime, never decreasing, at ~eventsPerSecond", () => {
  const startTime = GENERATOR_DEFAULTS.startTime;
  assert.ok(RUN[0].tx.transactionTime >= startTime && RUN[0].tx.transactionTime < startTime + 1000);
  for (let i = 1; i < RUN.length; i++) {
    assert.ok(Number.isInteger(RUN[i].tx.transactionTime));
    assert.ok(RUN[i].tx.transactionTime >= RUN[i - 1].tx.transactionTime, `record ${i} goes back`);
  }
  const seconds = (RUN[N - 1].tx.transactionTime - startTime) / 1000;
  const rate = N / seconds; // 200/s of arrivals, a few dropped when a picked user is resting
  assert.ok(rate > 170 && rate < 215, `simulated ${rate.toFixed(1)} records/s`);
});

Deno.test("generator: merchant popularity is skewed (top 1% of merchants get > 25% of normal transactions)", () => {
  const counts = new Map<string, number>();
  for (const r of NORMAL) counts.set(r.tx.merchantId, (counts.get(r.tx.merchantId) ?? 0) + 1);
  const sorted = [...counts.values()].sort((a, b) => b - a);
  const top = sorted.slice(0, GENERATOR_DEFAULTS.merchants / 100).reduce((s, n) => s + n, 0);
  const share = top / NORMAL.length;
  assert.ok(share > 0.25, `top 1% share ${share}`);
  assert.ok(counts.size > 1_000, `${counts.size} merchants used`);
});

Deno.test("generator: refunds are 5% ± 0.6% of normal transactions", () => {
  const refunds = NORMAL.filter((r) => r.tx.transactionType === "refund").length / NORMAL.length;
  assert.ok(Math.abs(refunds - NORMAL_TRAFFIC.refundShare) < 0.006, `refund share ${refunds}`);
});

Deno.test("generator: international transactions are a small share and exactly those at a foreign merchant", () => {
  const home = homeOf();
  const intl = NORMAL.filter((r) => r.tx.isInternational).length / NORMAL.length;
  assert.ok(intl > 0.02 && intl < 0.06, `international share ${intl}`);
  // A merchant's country is the home country of the users buying there domestically.
  const merchantCountry = new Map<string, string>();
  for (const r of NORMAL) {
    if (r.tx.isInternational) continue;
    const country = countryOf(home.get(r.key)!);
    assert.equal(merchantCountry.get(r.tx.merchantId) ?? country, country, r.tx.merchantId);
    merchantCountry.set(r.tx.merchantId, country);
  }
  let checked = 0;
  for (const r of NORMAL) {
    const country = merchantCountry.get(r.tx.merchantId);
    if (country === undefined) continue;
    assert.equal(r.tx.isInternational, country !== countryOf(home.get(r.key)!));
    checked++;
  }
  assert.ok(checked > NORMAL.length * 0.99);
});

Deno.test("generator: each user's normal transactions are at one home city, domestic ones in its currency", () => {
  const home = homeOf();
  for (const r of NORMAL) {
    assert.equal(r.tx.location, home.get(r.key));
    if (!r.tx.isInternational) assert.equal(r.tx.currency, findLocation(r.tx.location)!.currency);
  }
  const cities = new Map<string, number>();
  for (const city of home.values()) cities.set(city, (cities.get(city) ?? 0) + 1);
  const [[biggest]] = [...cities].sort((a, b) => b[1] - a[1]);
  assert.equal(biggest, "Tokyo, JP"); // homes are skewed toward the largest cities
});

Deno.test("generator: amounts are exact minor units: ≤ 2 decimals, JPY/KRW whole, normal ≥ 5 USD-equivalent", () => {
  const currencies = new Set<string>();
  for (const r of RUN) {
    assert.ok(Number.isSafeInteger(r.amountMinor) && r.amountMinor > 0);
    assert.equal(r.tx.amount, fromMinorUnits(r.amountMinor, r.tx.currency));
    const decimals = (String(r.tx.amount).split(".")[1] ?? "").length;
    assert.ok(decimals <= (r.tx.currency === "JPY" || r.tx.currency === "KRW" ? 0 : 2));
    currencies.add(r.tx.currency);
  }
  for (const r of NORMAL) {
    assert.ok(r.amountMinor >= minorFromUsd(NORMAL_TRAFFIC.minAmountUsd, r.tx.currency) - 1);
  }
  assert.ok(currencies.has("JPY") && currencies.has("USD") && currencies.size >= 12);
});

Deno.test("generator: a user's normal transactions are ≥ 20 s apart, so normal traffic has no bursts", () => {
  const last = new Map<string, number>();
  for (const r of NORMAL) {
    const previous = last.get(r.key);
    if (previous !== undefined) {
      assert.ok(r.tx.transactionTime - previous >= NORMAL_TRAFFIC.minUserGapMs - 1, r.key);
    }
    last.set(r.key, r.tx.transactionTime);
  }
});

Deno.test("generator: fraudRate 0 labels nothing", () => {
  const g = new TransactionGenerator({ seed: 3 });
  assert.equal(g.take(20_000).filter((r) => r.label).length, 0);
  assert.equal(g.pending, 0);
});

Deno.test("generator: fraudRate 0.02 labels ~2% of records and injects every pattern", () => {
  const share = (RUN.length - NORMAL.length) / RUN.length;
  assert.ok(share > 0.015 && share < 0.025, `labelled share ${share}`);
  for (const pattern of FRAUD_PATTERNS) {
    assert.ok(ofPattern(pattern).length >= 20, `${pattern}: ${ofPattern(pattern).length}`);
  }
  for (const records of instances(RUN).values()) {
    const { pattern, instanceId } = records[0].label!;
    assert.match(instanceId, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-/);
    assert.ok(records.every((r) => r.label!.pattern === pattern && r.key === records[0].key));
  }
});

Deno.test("generator: a velocity_burst is 12 purchases by one user within 45 s", () => {
  const shape = FRAUD_SHAPES.velocityBurst;
  for (const records of ofPattern("velocity_burst")) {
    assert.equal(records.length, shape.transactions);
    const times = records.map((r) => r.tx.transactionTime);
    assert.ok(times.at(-1)! - times[0] <= shape.maxSpanMs);
    assert.ok(records.every((r) => r.tx.transactionType === "purchase"));
  }
});

Deno.test("generator: an amount_spike is one purchase ≥ 10× the user's earlier mean, after ≥ 10 purchases", () => {
  const spikes = ofPattern("amount_spike");
  for (const [spike] of spikes) {
    const index = RUN.indexOf(spike);
    const history = RUN.slice(0, index).filter((r) =>
      r.key === spike.key && !r.label && r.tx.transactionType === "purchase" &&
      r.tx.currency === spike.tx.currency
    );
    assert.ok(history.length >= FRAUD_SHAPES.amountSpike.minHistory, `${history.length} earlier`);
    const mean = history.reduce((s, r) => s + r.amountMinor, 0) / history.length;
    assert.ok(spike.amountMinor >= 10 * mean, `${spike.amountMinor} vs mean ${mean}`);
    assert.equal(spike.tx.transactionType, "purchase");
  }
});

Deno.test("generator: an impossible_travel is a purchase at home then one ≥ 3000 km away needing > 1000 km/h", () => {
  const home = homeOf();
  for (const [first, second] of ofPattern("impossible_travel")) {
    assert.equal(first.tx.location, home.get(first.key) ?? first.tx.location);
    const km = distanceKm(findLocation(first.tx.location)!, findLocation(second.tx.location)!);
    const hours = (second.tx.transactionTime - first.tx.transactionTime) / 3_600_000;
    assert.ok(km >= FRAUD_SHAPES.impossibleTravel.minDistanceKm, `${km} km`);
    assert.ok(km / hours > 10 * 1000, `${km / hours} km/h`);
    assert.equal(second.tx.currency, findLocation(second.tx.location)!.currency);
  }
});

Deno.test("generator: a card_testing is 8-10 card purchases ≤ 2.00 USD-equivalent at distinct merchants within 4 min", () => {
  const shape = FRAUD_SHAPES.cardTesting;
  for (const records of ofPattern("card_testing")) {
    assert.ok(records.length >= shape.minTransactions && records.length <= shape.maxTransactions);
    const times = records.map((r) => r.tx.transactionTime);
    assert.ok(times.at(-1)! - times[0] <= shape.maxSpanMs);
    for (const r of records) {
      assert.ok(r.amountMinor <= minorFromUsd(shape.maxAmountUsd, r.tx.currency));
      assert.equal(r.tx.paymentMethod, "credit_card");
    }
    assert.equal(new Set(records.map((r) => r.tx.merchantId)).size, records.length);
  }
});

Deno.test("generator: flush returns the rest of started instances in time order; later records do not go back", () => {
  const g = new TransactionGenerator({ seed: 11, fraudRate: 0.2 });
  const last = g.take(5_000).at(-1)!;
  assert.ok(g.pending > 0);
  const rest = g.flush();
  assert.equal(g.pending, 0);
  // Unlabelled ones can only be the history an amount_spike builds before its spike.
  const spikers = new Set(
    rest.filter((r) => r.label?.pattern === "amount_spike").map((r) => r.key),
  );
  assert.ok(rest.every((r) => r.label !== undefined || spikers.has(r.key)));
  assert.ok(rest[0].tx.transactionTime >= last.tx.transactionTime);
  for (let i = 1; i < rest.length; i++) {
    assert.ok(rest[i].tx.transactionTime >= rest[i - 1].tx.transactionTime);
  }
  assert.ok(g.next().tx.transactionTime >= rest.at(-1)!.tx.transactionTime);
});

Deno.test("generator: a label becomes the two fraud headers; normal records get none", () => {
  const label = { pattern: "card_testing" as const, instanceId: "i-1" };
  assert.deepEqual(labelHeaders(label), {
    "txpipe-fraud-pattern": "card_testing",
    "txpipe-fraud-instance": "i-1",
  });
  assert.equal(FRAUD_PATTERN_HEADER, "txpipe-fraud-pattern");
  assert.equal(FRAUD_INSTANCE_HEADER, "txpipe-fraud-instance");
  assert.deepEqual(labelHeaders(undefined), {});
});

Deno.test("generator: bad options throw a RangeError naming the option, expected and given", () => {
  const cases: [object, RegExp][] = [
    [{ users: 0 }, /^users: expected an integer from 1 to 10000000, given 0$/],
    [{ merchants: 1.5 }, /^merchants: expected an integer/],
    [{ fraudRate: 1 }, /^fraudRate: expected a number in \[0, 1\), given 1$/],
    [{ fraudRate: -0.1 }, /^fraudRate: .*given -0.1$/],
    [{ eventsPerSecond: 0 }, /^eventsPerSecond: expected a number in \(0, 1000000\], given 0$/],
    [{ startTime: 1.5 }, /^startTime: expected integer epoch ms/],
    [{ seed: NaN }, /^seed: expected a string or a finite number/],
  ];
  for (const [options, message] of cases) {
    assert.throws(() => new TransactionGenerator(options), (err: Error) => {
      assert.ok(err instanceof RangeError);
      assert.match(err.message, message);
      return true;
    });
  }
});

Deno.test("generator: a tiny population still makes progress and keeps the contract", () => {
  const g = new TransactionGenerator({ seed: 5, users: 3, merchants: 1, fraudRate: 0.3 });
  for (const r of g.take(500).concat(g.flush())) assert.ok(validateTransaction(r.tx).ok);
});
