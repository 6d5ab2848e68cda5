import assert from "node:assert/strict";
import { seeded } from "./helpers/random.ts";
import {
  CURRENCIES,
  CURRENCY_CODES,
  currencyInfo,
  fromMinorUnits,
  minorFromUsd,
  quickMinorUnits,
  textMinorUnits,
  toMinorUnits,
  usdScale,
} from "../jobs/lib/currency.ts";

function minor(amount: unknown, currency: string): number {
  const r = toMinorUnits(amount, currency);
  if (!r.ok) throw new Error(r.message);
  return r.minor;
}

function rejection(amount: unknown, currency: string): string {
  const r = toMinorUnits(amount, currency);
  assert.equal(r.ok, false, `${amount} ${currency} should be rejected`);
  return (r as { message: string }).message;
}

Deno.test("currency: the set has ISO 4217 codes with exponent 0 (JPY, KRW) or 2 (the rest)", () => {
  assert.ok(CURRENCY_CODES.length >= 10);
  for (const code of CURRENCY_CODES) {
    assert.match(code, /^[A-Z]{3}$/);
    assert.equal(CURRENCIES[code].code, code);
    assert.ok(CURRENCIES[code].perUsd > 0);
  }
  assert.equal(CURRENCIES.JPY.exponent, 0);
  assert.equal(CURRENCIES.KRW.exponent, 0);
  for (const code of ["USD", "EUR", "GBP", "CAD", "AUD", "CHF", "INR", "BRL", "SGD"]) {
    assert.equal(CURRENCIES[code].exponent, 2, code);
  }
  assert.equal(currencyInfo("XXX"), undefined);
  assert.equal(currencyInfo("toString"), undefined);
});

Deno.test("currency: toMinorUnits converts exactly (12.34 USD → 1234, 0.07 → 7, 1234 JPY → 1234)", () => {
  assert.equal(minor(12.34, "USD"), 1234);
  assert.equal(minor(0.07, "USD"), 7);
  assert.equal(minor(0.1, "EUR"), 10);
  assert.equal(minor(1, "GBP"), 100);
  assert.equal(minor(19.99, "USD"), 1999);
  assert.equal(minor(1234, "JPY"), 1234);
  assert.equal(minor(90071992547409.9, "USD"), 9007199254740990);
});

Deno.test("currency: every USD amount from 0.01 to 1000.00 round-trips through minor units", () => {
  for (let cents = 1; cents <= 100_000; cents++) {
    const amount = fromMinorUnits(cents, "USD");
    assert.ok((String(amount).split(".")[1] ?? "").length <= 2, String(amount));
    assert.equal(minor(amount, "USD"), cents);
  }
});

Deno.test("currency: the quick conversion gives the text reading's minor units or none, never others", () => {
  const random = seeded(11);
  const bits = new DataView(new ArrayBuffer(8));
  const amounts: number[] = [0.01, 0.07, 0.1 + 0.2, 1.005 * 1000, 1e-7, 2 ** 50 / 100, 2 ** 53];
  for (let i = 0; i < 300_000; i++) {
    const digits = 1 + Math.floor(random() * 17); // decimal amounts of every size
    const cents = Math.floor(random() * 10 ** digits);
    amounts.push(cents / 100, cents / 1000, cents, cents / 100 + 0.1, (cents + 1) * 0.01);
    bits.setUint32(0, Math.floor(random() * 0x7ff00000)); // any positive finite double
    bits.setUint32(4, Math.floor(random() * 2 ** 32));
    amounts.push(bits.getFloat64(0));
  }
  const counted = { quick: 0, text: 0 };
  for (const info of [CURRENCIES.USD, CURRENCIES.JPY]) {
    for (const amount of amounts) {
      if (!(amount > 0) || !Number.isFinite(amount)) continue;
      const quick = quickMinorUnits(amount, info.exponent);
      const text = textMinorUnits(amount, info);
      if (quick === undefined) {
        counted.text++;
        // Only past 2^50 minor units does the text have an answer the quick way lacks.
        assert.ok(!text.ok || text.minor > 2 ** 50, `${amount} ${info.code}`);
      } else {
        counted.quick++;
        assert.deepEqual(text, { ok: true, minor: quick }, `${amount} ${info.code}`);
      }
    }
  }
  assert.ok(counted.quick > 500_000 && counted.text > 500_000, JSON.stringify(counted));
});

Deno.test("currency: float sums with more than 2 decimals are rejected, not rounded (0.1 + 0.2)", () => {
  const message = rejection(0.1 + 0.2, "USD");
  assert.match(message, /expected at most 2 decimal places for USD, given 0.30000000000000004/);
  assert.match(rejection(12.345, "USD"), /given 12.345/);
  assert.match(rejection(1.005 * 1000, "USD"), /given 1004.9999999999999/);
  assert.match(rejection(1e-7, "USD"), /at most 2 decimal places.*given 1e-7/);
});

Deno.test("currency: JPY and KRW amounts must be whole numbers", () => {
  assert.match(rejection(12.5, "JPY"), /expected at most 0 decimal places for JPY, given 12.5/);
  assert.match(rejection(0.1, "KRW"), /at most 0 decimal places for KRW/);
});

Deno.test("currency: non-positive, non-finite, non-number and too large amounts are rejected", () => {
  assert.match(rejection(0, "USD"), /expected an amount greater than 0, given 0/);
  assert.match(rejection(-0, "USD"), /greater than 0/);
  assert.match(rejection(-5, "USD"), /greater than 0, given -5/);
  assert.match(rejection(NaN, "USD"), /expected a finite number, given NaN/);
  assert.match(rejection(Infinity, "USD"), /finite number, given Infinity/);
  assert.match(rejection("12.50", "USD"), /expected a finite number, given "12.50"/);
  assert.match(rejection(null, "USD"), /finite number, given null/);
  assert.match(rejection(1e21, "USD"), /below 9007199254740991 minor units, given 1e\+21/);
  assert.match(
    rejection(1e15, "USD"),
    /below 9007199254740991 minor units, given 1000000000000000/,
  );
});

Deno.test("currency: an unknown currency is rejected with the configured set in the message", () => {
  const message = rejection(1, "XYZ");
  assert.match(message, /expected a currency in USD,EUR,.*given "XYZ"/);
});

Deno.test("currency: fromMinorUnits gives at most the currency's decimals and rejects bad input", () => {
  assert.equal(fromMinorUnits(1234, "USD"), 12.34);
  assert.equal(fromMinorUnits(7, "USD"), 0.07);
  assert.equal(fromMinorUnits(1234, "JPY"), 1234);
  assert.equal(JSON.stringify(fromMinorUnits(123456789, "EUR")), "1234567.89");
  assert.throws(() => fromMinorUnits(1.5, "USD"), /expected integer minor units, given 1.5/);
  assert.throws(() => fromMinorUnits(1, "XYZ"), /expected a currency in .*given "XYZ"/);
});

Deno.test("currency: minorFromUsd scales by the reference rate (2 USD = 200 cents = 300 JPY)", () => {
  assert.equal(minorFromUsd(2, "USD"), 200);
  assert.equal(minorFromUsd(2, "JPY"), 300);
  assert.equal(minorFromUsd(2, "KRW"), 2700);
  assert.equal(minorFromUsd(2, "EUR"), 184);
  assert.throws(() => minorFromUsd(2, "XYZ"), /given "XYZ"/);
});

Deno.test("currency: usdScale is minorFromUsd's inverse, on the reference scale (300 JPY = 200 cents = 2)", () => {
  assert.equal(usdScale(200, "USD"), 2);
  assert.equal(usdScale(300, "JPY"), 2);
  for (const code of CURRENCY_CODES) {
    assert.ok(Math.abs(usdScale(minorFromUsd(40, code), code) - 40) < 0.01, code);
  }
  assert.throws(() => usdScale(1, "XTS"), /expected a currency in USD,/);
});
