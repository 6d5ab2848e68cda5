/**
 * The configured currency set and exact conversion between JSON amounts and
 * integer minor units (cents, or whole yen for JPY).
 *
 * Money arithmetic in txpipe happens only on integer minor units. A JSON amount
 * becomes minor units by reading its shortest decimal representation (the one
 * `String(amount)` prints, which parses back to the same number), never by
 * rounding a product of floats, so `0.07` is 7 cents and `0.1 + 0.2` is rejected
 * for having 17 decimals instead of silently becoming 30 cents. (A quicker
 * path, {@link quickMinorUnits}, finds the same integer without the text and
 * proves it exact before using it.)
 *
 * @module
 */

/** A currency the pipeline accepts. */
export interface CurrencyInfo {
  /** ISO 4217 code, e.g. "USD". */
  readonly code: string;
  /**
   * ISO 4217 minor-unit exponent: digits after the decimal point, 2 for USD, 0 for
   * JPY. The contract allows at most 2, so currencies with 3 (e.g. KWD) are not in the set.
   */
  readonly exponent: 0 | 2;
  /**
   * Approximate units of this currency per US dollar. A reference *scale*, used to
   * make synthetic amounts realistic and to express currency-neutral thresholds
   * (card testing's "small amount"); never an exchange rate for money arithmetic.
   */
  readonly perUsd: number;
}

function currency(code: string, exponent: 0 | 2, perUsd: number): CurrencyInfo {
  return { code, exponent, perUsd };
}

/** The configured currency set, by ISO 4217 code. */
export const CURRENCIES: Readonly<Record<string, CurrencyInfo>> = Object.freeze({
  USD: currency("USD", 2, 1),
  EUR: currency("EUR", 2, 0.92),
  GBP: currency("GBP", 2, 0.79),
  JPY: currency("JPY", 0, 150),
  CAD: currency("CAD", 2, 1.36),
  AUD: currency("AUD", 2, 1.52),
  CHF: currency("CHF", 2, 0.88),
  INR: currency("INR", 2, 83),
  BRL: currency("BRL", 2, 5),
  SGD: currency("SGD", 2, 1.34),
  MXN: currency("MXN", 2, 17),
  KRW: currency("KRW", 0, 1350),
  CNY: currency("CNY", 2, 7.2),
  HKD: currency("HKD", 2, 7.8),
  ZAR: currency("ZAR", 2, 18.5),
  SEK: currency("SEK", 2, 10.5),
  AED: currency("AED", 2, 3.67),
  NZD: currency("NZD", 2, 1.65),
});

/** The configured ISO 4217 codes, in a fixed order. */
export const CURRENCY_CODES: readonly string[] = Object.freeze(Object.keys(CURRENCIES));

/** The configured currency with this code, or undefined when it is not in the set. */
export function currencyInfo(code: string): CurrencyInfo | undefined {
  return Object.hasOwn(CURRENCIES, code) ? CURRENCIES[code] : undefined;
}

/** Result of {@link toMinorUnits}: the exact integer minor units, or why not. */
export type MinorUnitsResult =
  | { ok: true; minor: number }
  | { ok: false; message: string };

/**
 * Converts a JSON amount into exact integer minor units of `currency`.
 *
 * Rejects non-numbers, non-finite and non-positive amounts, amounts with more
 * decimals than the currency has (2 for USD, 0 for JPY), unknown currencies and
 * amounts whose minor units exceed `Number.MAX_SAFE_INTEGER`.
 */
export function toMinorUnits(amount: unknown, currency: string): MinorUnitsResult {
  const info = currencyInfo(currency);
  if (info === undefined) {
    return {
      ok: false,
      message: `expected a currency in ${CURRENCY_CODES.join(",")}, given ${show(currency)}`,
    };
  }
  if (typeof amount !== "number" || !Number.isFinite(amount)) {
    return { ok: false, message: `expected a finite number, given ${show(amount)}` };
  }
  if (amount <= 0) {
    return { ok: false, message: `expected an amount greater than 0, given ${show(amount)}` };
  }
  const quick = quickMinorUnits(amount, info.exponent);
  return quick !== undefined ? { ok: true, minor: quick } : textMinorUnits(amount, info);
}

/**
 * The minor units of a positive finite `amount` read from its shortest
 * decimal text: the reference reading, and {@link toMinorUnits}'s answer
 * whenever {@link quickMinorUnits} has none. (Exported for the tests.)
 */
export function textMinorUnits(amount: number, info: CurrencyInfo): MinorUnitsResult {
  const text = String(amount); // shortest decimal that parses back to `amount`
  const decimals = `at most ${info.exponent} decimal places for ${info.code}`;
  if (text.includes("e")) {
    // V8 switches to exponent notation below 1e-6 and from 1e21 on.
    const why = amount < 1 ? decimals : "an amount below 9007199254740991 minor units";
    return { ok: false, message: `expected ${why}, given ${text}` };
  }
  const dot = text.indexOf(".");
  const whole = dot < 0 ? text : text.slice(0, dot);
  const fraction = dot < 0 ? "" : text.slice(dot + 1);
  if (fraction.length > info.exponent) {
    return { ok: false, message: `expected ${decimals}, given ${text}` };
  }
  const minor = Number(whole + fraction.padEnd(info.exponent, "0"));
  if (!Number.isSafeInteger(minor)) {
    return {
      ok: false,
      message: `expected an amount below 9007199254740991 minor units, given ${text}`,
    };
  }
  if (fromMinorUnits(minor, info.code) !== amount) {
    // Cannot happen for the inputs above; kept as the round-trip guarantee.
    return { ok: false, message: `expected an amount that round-trips exactly, given ${text}` };
  }
  return { ok: true, minor };
}

/** Largest minor-unit count {@link quickMinorUnits} answers for (2^50). */
const QUICK_MAX_MINOR = 2 ** 50;

/**
 * The minor units of a positive finite `amount` without printing it, or
 * undefined (then {@link textMinorUnits} reads its decimals as text). The
 * same answer, never a different one (tests/currency_test.ts compares the two):
 *
 * - exponent 0: a safe integer is its own minor units;
 * - exponent 2: `m = Math.round(amount * 100)` is kept only when `m / 100`
 *   gives `amount` back exactly. Division is correctly rounded, so `amount` is
 *   then the double nearest the decimal m/100; below 2^50 minor units a double's
 *   spacing is under 0.01, so no other 2-decimal number is that near, and the
 *   shortest decimal printing `amount` is m/100 itself (what the text reading
 *   finds). The product is off by at most m·2^-52 < 0.5 there, so rounding
 *   finds m whenever it exists. Above 2^50, and for more decimals, the text.
 *
 * 5 ns against the text's 91 (the jobs validate every input record).
 */
export function quickMinorUnits(amount: number, exponent: 0 | 2): number | undefined {
  if (exponent === 0) return Number.isSafeInteger(amount) ? amount : undefined;
  const m = Math.round(amount * 100);
  return m <= QUICK_MAX_MINOR && m / 100 === amount ? m : undefined;
}

/**
 * Converts integer minor units of `currency` into the JSON amount (a number with
 * at most the currency's decimals): 1234 USD minor units → 12.34, 1234 JPY → 1234.
 *
 * Exact: dividing an integer by 100 is correctly rounded, so the result is the
 * double nearest to the decimal and prints as that decimal.
 */
export function fromMinorUnits(minor: number, currency: string): number {
  const info = currencyInfo(currency);
  if (info === undefined) {
    throw new RangeError(
      `expected a currency in ${CURRENCY_CODES.join(",")}, given ${show(currency)}`,
    );
  }
  if (!Number.isSafeInteger(minor)) {
    throw new RangeError(`expected integer minor units, given ${show(minor)}`);
  }
  return info.exponent === 0 ? minor : minor / 100;
}

/**
 * The whole number of minor units of `currency` nearest to `usd` US dollars at the
 * reference scale {@link CurrencyInfo.perUsd}: 2 USD → 200 USD cents, 300 JPY.
 * For synthetic amounts and currency-neutral thresholds only.
 */
export function minorFromUsd(usd: number, currency: string): number {
  const info = currencyInfo(currency);
  if (info === undefined) {
    throw new RangeError(
      `expected a currency in ${CURRENCY_CODES.join(",")}, given ${show(currency)}`,
    );
  }
  return Math.round(usd * info.perUsd * (info.exponent === 0 ? 1 : 100));
}

/**
 * Minor units of `currency` on the US-dollar reference scale of
 * {@link CurrencyInfo.perUsd} (the inverse of {@link minorFromUsd}): for
 * comparing an amount with a currency-neutral threshold or with a user's
 * typical amount in another currency, never for money arithmetic.
 */
export function usdScale(minor: number, currency: string): number {
  const info = currencyInfo(currency);
  if (info === undefined) {
    throw new RangeError(
      `expected a currency in ${CURRENCY_CODES.join(",")}, given ${show(currency)}`,
    );
  }
  return minor / (info.perUsd * (info.exponent === 0 ? 1 : 100));
}

function show(value: unknown): string {
  if (typeof value === "number") return String(value);
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}
