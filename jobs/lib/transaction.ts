/**
 * The Transaction contract of docs/design.md: its type, the committed location
 * reference data, the JSON encoding and the validator that decides what goes
 * to the dead-letter topic (with a short, stable reason code).
 *
 * @module
 */
import locationData from "../data/locations.json" with { type: "json" };
import { Buffer, isAscii } from "node:buffer";
import { CURRENCY_CODES, currencyInfo, toMinorUnits } from "./currency.ts";

/** The values of `transactionType`. */
export const TRANSACTION_TYPES = ["purchase", "refund"] as const;
/** `purchase` or `refund`. */
export type TransactionType = typeof TRANSACTION_TYPES[number];

/** The values of `paymentMethod`. */
export const PAYMENT_METHODS = ["credit_card", "debit_card", "paypal", "bank_transfer"] as const;
/** How a transaction was paid. */
export type PaymentMethod = typeof PAYMENT_METHODS[number];

/** One financial transaction, exactly the JSON value on `financial_transactions`. */
export interface Transaction {
  /** UUID v4. */
  transactionId: string;
  /** The Kafka key. */
  userId: string;
  /** > 0, at most the currency's decimals (≤ 2); arithmetic happens in integer minor units. */
  amount: number;
  /** ISO 4217, from the configured set (currency.ts). */
  currency: string;
  /** Epoch milliseconds, an integer: the event time. */
  transactionTime: number;
  merchantId: string;
  transactionType: TransactionType;
  /** "City, CC", one of {@link LOCATIONS}. */
  location: string;
  paymentMethod: PaymentMethod;
  isInternational: boolean;
}

/** The contract's field names, in the order they are encoded. */
export const TRANSACTION_FIELDS = [
  "transactionId",
  "userId",
  "amount",
  "currency",
  "transactionTime",
  "merchantId",
  "transactionType",
  "location",
  "paymentMethod",
  "isInternational",
] as const;

/** A city of the committed reference data (jobs/data/locations.json). */
export interface Location {
  /** "City, CC" with an ISO 3166 alpha-2 country code. */
  readonly location: string;
  readonly lat: number;
  readonly lon: number;
  /** ISO 4217 currency of the country. */
  readonly currency: string;
}

/** The committed cities, listed by decreasing metropolitan population. */
export const LOCATIONS: readonly Location[] = Object.freeze(
  (locationData as Location[]).map((l) => Object.freeze({ ...l })),
);

const LOCATION_BY_NAME = new Map(LOCATIONS.map((l) => [l.location, l]));

/** The reference city named exactly `name` ("City, CC"), or undefined. */
export function findLocation(name: string): Location | undefined {
  return LOCATION_BY_NAME.get(name);
}

/** The ISO 3166 country code of a "City, CC" location name. */
export function countryOf(location: string): string {
  return location.slice(location.lastIndexOf(", ") + 2);
}

/** Great-circle (haversine) distance in kilometres between two points. */
export function distanceKm(
  a: { readonly lat: number; readonly lon: number },
  b: { readonly lat: number; readonly lon: number },
): number {
  const rad = Math.PI / 180;
  const dLat = (b.lat - a.lat) * rad;
  const dLon = (b.lon - a.lon) * rad;
  const h = Math.sin(dLat / 2) ** 2 +
    Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * 6371 * Math.asin(Math.min(1, Math.sqrt(h)));
}

const encoder = new TextEncoder();

/**
 * The JSON value of a transaction, UTF-8: exactly the contract's ten fields in
 * contract order, `amount` a JSON number. Nothing else (no fraud label) is written.
 */
export function encodeTransaction(tx: Transaction): Uint8Array {
  return encoder.encode(JSON.stringify(contractFields(tx)));
}

/** Exactly the contract's ten fields of `tx`, in contract order; anything else is left out. */
function contractFields(tx: Transaction): Transaction {
  return {
    transactionId: tx.transactionId,
    userId: tx.userId,
    amount: tx.amount,
    currency: tx.currency,
    transactionTime: tx.transactionTime,
    merchantId: tx.merchantId,
    transactionType: tx.transactionType,
    location: tx.location,
    paymentMethod: tx.paymentMethod,
    isInternational: tx.isInternational,
  };
}

/** The stable machine codes of a rejected record, e.g. for a dead-letter header. */
export const REJECT_REASONS = [
  "empty_value",
  "invalid_utf8",
  "malformed_json",
  "not_object",
  "missing_field",
  "wrong_type",
  "invalid_uuid",
  "invalid_id",
  "invalid_amount",
  "unknown_currency",
  "invalid_time",
  "invalid_transaction_type",
  "unknown_location",
  "invalid_payment_method",
] as const;
/** Why a record is not a valid Transaction. */
export type RejectReason = typeof REJECT_REASONS[number];

/** A valid transaction with its exact amount, or the reason and a human message. */
export type ValidationResult =
  | { ok: true; tx: Transaction; amountMinor: number }
  | { ok: false; reason: RejectReason; message: string };

/** Earliest accepted `transactionTime`: 2000-01-01T00:00:00Z. */
export const MIN_TRANSACTION_TIME = 946_684_800_000;
/** First rejected `transactionTime`: 2100-01-01T00:00:00Z. */
export const MAX_TRANSACTION_TIME = 4_102_444_800_000;

/** Longest accepted `userId` / `merchantId`. */
export const MAX_ID_LENGTH = 128;

/** Per position of a UUID: 1 where a hex digit goes, 0 for the fixed characters. */
const UUID_HEX_AT = Uint8Array.from(
  { length: 36 },
  (_, i) => [8, 13, 14, 18, 19, 23].includes(i) ? 0 : 1,
);
/** 1 for the hex digits, either case, by character code below 128. */
const HEX_DIGIT = Uint8Array.from(
  { length: 128 },
  (_, c) => /[0-9a-fA-F]/.test(String.fromCharCode(c)) ? 1 : 0,
);

/**
 * Whether `s` is a UUID v4, in either case: exactly what
 * `/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i`
 * accepts (tests/transaction_test.ts compares them): 48 ns where the regular
 * expression took 140 of the 1.9 µs that validating a record took.
 */
export function isUuidV4(s: string): boolean {
  if (s.length !== 36) return false;
  if (
    s.charCodeAt(8) !== 0x2d || s.charCodeAt(13) !== 0x2d || s.charCodeAt(18) !== 0x2d ||
    s.charCodeAt(23) !== 0x2d || s.charCodeAt(14) !== 0x34 // "-" and the version, "4"
  ) return false;
  const variant = s.charCodeAt(19); // "8", "9", "a", "b" in either case
  const lower = variant | 0x20; // "A"/"a" → "a", "B"/"b" → "b" (and nothing else to either)
  if (variant !== 0x38 && variant !== 0x39 && lower !== 0x61 && lower !== 0x62) return false;
  for (let i = 0; i < 36; i++) {
    if (UUID_HEX_AT[i] === 0) continue;
    const c = s.charCodeAt(i);
    if (c > 127 || HEX_DIGIT[c] === 0) return false;
  }
  return true;
}
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Decodes and validates one Kafka record value: `null` or empty (a tombstone),
 * invalid UTF-8, malformed JSON and non-objects are rejected before the fields
 * are checked by {@link validateTransaction}.
 */
export function parseTransaction(bytes: Uint8Array | null): ValidationResult {
  if (bytes === null || bytes.byteLength === 0) {
    return reject("empty_value", `value: expected a JSON object, given an empty value`);
  }
  let text: string;
  if (bytes instanceof Buffer && isAscii(bytes)) {
    // ASCII reads the same in Latin-1 as in UTF-8, and Latin-1 needs no checks:
    // a quarter of the strict decoder's time (kafkajs's values are Buffers).
    text = bytes.toString("latin1");
  } else {
    try {
      text = decoder.decode(bytes);
    } catch {
      return reject("invalid_utf8", `value: expected UTF-8 text, given invalid UTF-8 bytes`);
    }
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return reject(
      "malformed_json",
      `value: expected JSON, given ${show(text)} (${(err as Error).message})`,
    );
  }
  return validateTransaction(value);
}

/**
 * Checks a parsed JSON value against the Transaction contract, field by field in
 * contract order, and reports the first problem. Fields outside the contract are
 * ignored and not copied into the returned `tx`.
 */
export function validateTransaction(value: unknown): ValidationResult {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return reject("not_object", `value: expected a JSON object, given ${show(value)}`);
  }
  const v = value as Record<string, unknown>;
  for (const field of TRANSACTION_FIELDS) {
    if (!Object.hasOwn(v, field)) {
      return reject("missing_field", `${field}: expected a value, given none (field missing)`);
    }
  }
  // Every type right (the usual case) in one expression; else the first wrong one.
  if (
    typeof v.transactionId !== "string" || typeof v.userId !== "string" ||
    typeof v.amount !== "number" || typeof v.currency !== "string" ||
    typeof v.transactionTime !== "number" || typeof v.merchantId !== "string" ||
    typeof v.transactionType !== "string" || typeof v.location !== "string" ||
    typeof v.paymentMethod !== "string" || typeof v.isInternational !== "boolean"
  ) {
    for (const field of TRANSACTION_FIELDS) {
      if (jsonType(v[field]) !== FIELD_TYPES[field]) {
        return reject(
          "wrong_type",
          `${field}: expected a ${FIELD_TYPES[field]}, given ${describe(v[field])}`,
        );
      }
    }
  }
  const tx = v as unknown as Transaction;

  if (!isUuidV4(tx.transactionId)) {
    return reject(
      "invalid_uuid",
      `transactionId: expected a UUID v4, given ${show(tx.transactionId)}`,
    );
  }
  for (const field of ["userId", "merchantId"] as const) {
    const id = tx[field];
    if (id.trim().length === 0 || id.length > MAX_ID_LENGTH) {
      return reject(
        "invalid_id",
        `${field}: expected 1 to ${MAX_ID_LENGTH} characters, not blank, given ${show(id)}`,
      );
    }
  }
  if (currencyInfo(tx.currency) === undefined) {
    return reject(
      "unknown_currency",
      `currency: expected one of ${CURRENCY_CODES.join(",")}, given ${show(tx.currency)}`,
    );
  }
  const minor = toMinorUnits(tx.amount, tx.currency);
  if (!minor.ok) return reject("invalid_amount", `amount: ${minor.message}`);
  const t = tx.transactionTime;
  if (!Number.isSafeInteger(t) || t < MIN_TRANSACTION_TIME || t >= MAX_TRANSACTION_TIME) {
    return reject(
      "invalid_time",
      `transactionTime: expected integer epoch milliseconds in [${MIN_TRANSACTION_TIME}, ` +
        `${MAX_TRANSACTION_TIME}), given ${show(t)}`,
    );
  }
  if (!(TRANSACTION_TYPES as readonly string[]).includes(tx.transactionType)) {
    return reject(
      "invalid_transaction_type",
      `transactionType: expected one of ${TRANSACTION_TYPES.join(",")}, ` +
        `given ${show(tx.transactionType)}`,
    );
  }
  if (findLocation(tx.location) === undefined) {
    return reject(
      "unknown_location",
      `location: expected a known "City, CC" from jobs/data/locations.json, ` +
        `given ${show(tx.location)}`,
    );
  }
  if (!(PAYMENT_METHODS as readonly string[]).includes(tx.paymentMethod)) {
    return reject(
      "invalid_payment_method",
      `paymentMethod: expected one of ${PAYMENT_METHODS.join(",")}, ` +
        `given ${show(tx.paymentMethod)}`,
    );
  }
  return {
    ok: true,
    amountMinor: minor.minor,
    tx: contractFields(tx),
  };
}

/** The JSON type of each contract field. */
const FIELD_TYPES: Readonly<Record<(typeof TRANSACTION_FIELDS)[number], string>> = {
  transactionId: "string",
  userId: "string",
  amount: "number",
  currency: "string",
  transactionTime: "number",
  merchantId: "string",
  transactionType: "string",
  location: "string",
  paymentMethod: "string",
  isInternational: "boolean",
};

function reject(reason: RejectReason, message: string): ValidationResult {
  return { ok: false, reason, message };
}

function jsonType(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  return typeof value;
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return `an array ${show(value)}`;
  const type = typeof value;
  return `${type === "object" || type === "undefined" ? "an" : "a"} ${type} ${show(value)}`;
}

function show(value: unknown): string {
  if (typeof value === "number") return String(value);
  const text = typeof value === "string" && value.length > 60
    ? JSON.stringify(value.slice(0, 57) + "...")
    : JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}
