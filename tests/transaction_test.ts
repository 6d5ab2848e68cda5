import assert from "node:assert/strict";
import { seeded } from "./helpers/random.ts";
import { Buffer } from "node:buffer";
import { CURRENCIES } from "../jobs/lib/currency.ts";
import {
  countryOf,
  distanceKm,
  encodeTransaction,
  findLocation,
  isUuidV4,
  LOCATIONS,
  parseTransaction,
  type RejectReason,
  type Transaction,
  TRANSACTION_FIELDS,
  validateTransaction,
} from "../jobs/lib/transaction.ts";

const VALID: Transaction = {
  transactionId: "3f1c2a9e-7b4d-4c1e-9a2b-5d6e7f809a1b",
  userId: "user-00042",
  amount: 12.34,
  currency: "USD",
  transactionTime: 1_700_000_000_000,
  merchantId: "merchant-0007",
  transactionType: "purchase",
  location: "New York, US",
  paymentMethod: "credit_card",
  isInternational: false,
};

function bytes(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

function rejected(value: unknown): { reason: RejectReason; message: string } {
  const r = validateTransaction(value);
  assert.equal(r.ok, false, `expected a rejection of ${JSON.stringify(value)}`);
  return r as { reason: RejectReason; message: string };
}

Deno.test("transaction: a valid transaction is accepted with its exact amount in minor units", () => {
  const r = validateTransaction(structuredClone(VALID));
  assert.deepEqual(r, { ok: true, tx: VALID, amountMinor: 1234 });
  const yen = validateTransaction({ ...VALID, amount: 1500, currency: "JPY" });
  assert.equal(yen.ok && yen.amountMinor, 1500);
});

Deno.test("transaction: fields outside the contract are ignored and not copied", () => {
  const r = validateTransaction({ ...VALID, label: "velocity_burst" });
  assert.ok(r.ok);
  assert.deepEqual(Object.keys(r.tx), [...TRANSACTION_FIELDS]);
});

Deno.test("transaction: each kind of bad field is rejected with its reason code and a message naming field, expected and given", () => {
  const cases: [string, Record<string, unknown>, RejectReason, RegExp][] = [
    ["missing field", { amount: undefined }, "missing_field", /^amount: expected a value/],
    ["null field", { userId: null }, "wrong_type", /^userId: expected a string, given null/],
    [
      "amount as string",
      { amount: "12.34" },
      "wrong_type",
      /^amount: expected a number, given a string "12.34"/,
    ],
    [
      "time as string",
      { transactionTime: "1700000000000" },
      "wrong_type",
      /^transactionTime: expected a number/,
    ],
    [
      "boolean as string",
      { isInternational: "false" },
      "wrong_type",
      /^isInternational: expected a boolean, given a string/,
    ],
    [
      "object as id",
      { merchantId: { id: 1 } },
      "wrong_type",
      /^merchantId: expected a string, given an object/,
    ],
    [
      "uuid v1",
      { transactionId: "3f1c2a9e-7b4d-1c1e-9a2b-5d6e7f809a1b" },
      "invalid_uuid",
      /^transactionId: expected a UUID v4, given "3f1c2a9e-7b4d-1c1e/,
    ],
    [
      "uuid wrong variant",
      { transactionId: "3f1c2a9e-7b4d-4c1e-1a2b-5d6e7f809a1b" },
      "invalid_uuid",
      /UUID v4/,
    ],
    ["not a uuid", { transactionId: "tx-1" }, "invalid_uuid", /given "tx-1"/],
    [
      "blank user",
      { userId: "  " },
      "invalid_id",
      /^userId: expected 1 to 128 characters, not blank, given " {2}"/,
    ],
    [
      "long merchant",
      { merchantId: "m".repeat(129) },
      "invalid_id",
      /^merchantId: expected 1 to 128/,
    ],
    [
      "unknown currency",
      { currency: "XYZ" },
      "unknown_currency",
      /^currency: expected one of USD,EUR,.*given "XYZ"/,
    ],
    ["lower-case currency", { currency: "usd" }, "unknown_currency", /given "usd"/],
    [
      "zero amount",
      { amount: 0 },
      "invalid_amount",
      /^amount: expected an amount greater than 0, given 0/,
    ],
    ["negative amount", { amount: -1 }, "invalid_amount", /greater than 0, given -1/],
    [
      "three decimals",
      { amount: 12.345 },
      "invalid_amount",
      /^amount: expected at most 2 decimal places for USD, given 12.345/,
    ],
    [
      "yen with decimals",
      { amount: 12.5, currency: "JPY" },
      "invalid_amount",
      /at most 0 decimal places for JPY/,
    ],
    [
      "fractional time",
      { transactionTime: 1_700_000_000_000.5 },
      "invalid_time",
      /^transactionTime: expected integer epoch milliseconds in \[946684800000, 4102444800000\), given 1700000000000.5/,
    ],
    ["time in seconds", { transactionTime: 1_700_000_000 }, "invalid_time", /given 1700000000$/],
    ["negative time", { transactionTime: -1 }, "invalid_time", /given -1/],
    [
      "bad type",
      { transactionType: "chargeback" },
      "invalid_transaction_type",
      /^transactionType: expected one of purchase,refund, given "chargeback"/,
    ],
    [
      "unknown city",
      { location: "Atlantis, XX" },
      "unknown_location",
      /^location: expected a known "City, CC".*given "Atlantis, XX"/,
    ],
    ["city without country", { location: "New York" }, "unknown_location", /given "New York"/],
    [
      "bad method",
      { paymentMethod: "cash" },
      "invalid_payment_method",
      /^paymentMethod: expected one of credit_card,debit_card,paypal,bank_transfer, given "cash"/,
    ],
  ];
  for (const [name, patch, reason, message] of cases) {
    const value: Record<string, unknown> = { ...VALID, ...patch };
    for (const [k, v] of Object.entries(patch)) if (v === undefined) delete value[k];
    const r = rejected(value);
    assert.equal(r.reason, reason, name);
    assert.match(r.message, message, name);
  }
});

Deno.test("transaction: non-objects are rejected as not_object", () => {
  for (const value of [null, 42, "tx", true, [VALID]]) {
    assert.equal(rejected(value).reason, "not_object");
  }
  assert.match(rejected([1]).message, /^value: expected a JSON object, given \[1\]/);
});

Deno.test("transaction: parseTransaction rejects empty, non-UTF-8 and malformed bytes before the fields", () => {
  const cases: [Uint8Array | null, RejectReason][] = [
    [null, "empty_value"],
    [new Uint8Array(0), "empty_value"],
    [new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), "invalid_utf8"],
    [bytes("{not json"), "malformed_json"],
    [bytes('{"amount": 1,}'), "malformed_json"],
    [bytes("null"), "not_object"],
    [bytes("[1,2]"), "not_object"],
    [bytes('"a string"'), "not_object"],
    [bytes("{}"), "missing_field"],
  ];
  for (const [value, reason] of cases) {
    const r = parseTransaction(value);
    assert.equal(r.ok ? "ok" : r.reason, reason, String(value));
  }
  const malformed = parseTransaction(bytes("{not json"));
  assert.match(!malformed.ok ? malformed.message : "", /^value: expected JSON, given "\{not json"/);
});

Deno.test("transaction: the UUID v4 check accepts exactly what the regular expression does", () => {
  const pattern = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i;
  const random = seeded(7);
  const hex = (n: number) =>
    Array.from({ length: n }, () => "0123456789abcdef"[Math.floor(random() * 16)]).join("");
  // Characters near every boundary the check draws, and some far from them.
  const alphabet = "0123456789abcdefABCDEF-4" + String.fromCharCode(...Array(128).keys()) +
    "\u00e9\u0130\u212a\uff21\u0138\u0139";
  const seen = { accepted: 0, refused: 0 };
  for (let i = 0; i < 200_000; i++) {
    let s = `${hex(8)}-${hex(4)}-4${hex(3)}-${"89ab"[Math.floor(random() * 4)]}${hex(3)}-${
      hex(12)
    }`;
    if (i % 2 === 0) s = s.toUpperCase();
    const edits = Math.floor(random() * 3); // 0: a valid one; else one or two characters changed
    for (let e = 0; e < edits; e++) {
      const at = Math.floor(random() * s.length);
      const c = alphabet[Math.floor(random() * alphabet.length)];
      s = s.slice(0, at) + c + s.slice(at + 1);
    }
    if (i % 97 === 0) s = random() < 0.5 ? s + "0" : s.slice(1); // wrong lengths
    if (i % 101 === 0) s = s + "\n"; // `$` does not match before a final newline in JavaScript
    const expected = pattern.test(s);
    assert.equal(isUuidV4(s), expected, JSON.stringify(s));
    seen[expected ? "accepted" : "refused"]++;
  }
  assert.ok(seen.accepted > 50_000 && seen.refused > 50_000, JSON.stringify(seen));
});

Deno.test("transaction: parseTransaction reads Buffers and Uint8Arrays, ASCII or not, the same way", () => {
  const texts = [
    JSON.stringify(VALID),
    JSON.stringify({ ...VALID, location: "São Paulo, BR", currency: "BRL" }),
    "\ufeff" + JSON.stringify(VALID), // a byte order mark: the decoder drops it, as before
    JSON.stringify({ ...VALID, userId: "user-\u0000" }),
    '{"amount": 1,}',
  ];
  for (const text of texts) {
    const plain = bytes(text);
    // A view into a larger buffer, as kafkajs hands values over.
    const pool = Buffer.concat([Buffer.from("xx"), Buffer.from(plain), Buffer.from("yy")]);
    const view = pool.subarray(2, 2 + plain.byteLength);
    assert.deepEqual(parseTransaction(view), parseTransaction(plain), text);
  }
  const invalid = parseTransaction(Buffer.from([0x7b, 0xc3, 0x28, 0x7d])); // not UTF-8
  assert.equal(invalid.ok ? "ok" : invalid.reason, "invalid_utf8");
  const r = parseTransaction(Buffer.from(texts[1]));
  assert.equal(r.ok && r.tx.location, "São Paulo, BR");
});

Deno.test("transaction: encodeTransaction writes the ten contract fields in order and parses back identically", () => {
  const tx: Transaction = { ...VALID, location: "São Paulo, BR", currency: "BRL", amount: 0.5 };
  const encoded = encodeTransaction(tx);
  const text = new TextDecoder().decode(encoded);
  assert.deepEqual(Object.keys(JSON.parse(text)), [...TRANSACTION_FIELDS]);
  assert.ok(text.includes('"amount":0.5,'));
  assert.ok(text.includes("São Paulo"));
  assert.deepEqual(parseTransaction(encoded), { ok: true, tx, amountMinor: 50 });
});

Deno.test("transaction: locations.json has 40-60 unique real cities as 'City, CC' with coordinates and a configured currency", () => {
  assert.ok(LOCATIONS.length >= 40 && LOCATIONS.length <= 60, `${LOCATIONS.length} cities`);
  assert.equal(new Set(LOCATIONS.map((l) => l.location)).size, LOCATIONS.length);
  const currencyOfCountry = new Map<string, string>();
  for (const l of LOCATIONS) {
    assert.match(l.location, /^[^,]+, [A-Z]{2}$/);
    assert.ok(Math.abs(l.lat) <= 90 && Math.abs(l.lon) <= 180, l.location);
    assert.ok(Object.hasOwn(CURRENCIES, l.currency), `${l.location}: ${l.currency}`);
    const country = countryOf(l.location);
    assert.equal(
      currencyOfCountry.get(country) ?? l.currency,
      l.currency,
      `one currency per ${country}`,
    );
    currencyOfCountry.set(country, l.currency);
    assert.equal(findLocation(l.location), l);
  }
  assert.equal(findLocation("Tokyo, JP")?.currency, "JPY");
  assert.equal(countryOf("Rio de Janeiro, BR"), "BR");
});

Deno.test("transaction: distanceKm is the great-circle distance (New York–London ≈ 5570 km)", () => {
  const ny = findLocation("New York, US")!;
  const london = findLocation("London, GB")!;
  const sydney = findLocation("Sydney, AU")!;
  assert.ok(Math.abs(distanceKm(ny, london) - 5570) < 30, String(distanceKm(ny, london)));
  assert.ok(Math.abs(distanceKm(london, sydney) - 16990) < 100, String(distanceKm(london, sydney)));
  assert.equal(distanceKm(ny, ny), 0);
  assert.equal(distanceKm(ny, london), distanceKm(london, ny));
});
