/**
 * The compact form of detect's per-user state ({@link UserState} of rules.ts),
 * as the detection job keeps it in memory and writes it to its changelog.
 *
 * {@link UserState} is the rules' working form: readable objects, one object
 * per remembered transaction with its UUID as a 36-character string. Kept as
 * such for every user, it cost about 800 heap bytes per user (measured with
 * 1 000 000 users of the generator, 5 transactions each), so a large
 * population took gigabytes. The job therefore keeps each user as one string
 * (about 110 heap bytes) and turns it into a {@link UserState} only for the
 * length of one transaction ({@link decodeUserState} → `detect` →
 * {@link encodeUserState}). The string is base64 (URL alphabet, no padding)
 * of this byte layout, so it needs no escaping in the changelog's JSON:
 *
 * - a version byte (2);
 * - flags: 1 velocity firing, 2 card testing firing, 4 a travel position,
 *   8 a `returnTo`, 16 the position's time and id are the newest velocity
 *   event's, 32 a pace;
 * - the velocity window, then the card-testing window: a count, then per
 *   event its time, id, and merchant key × 2 + 1 if unusual;
 * - the amount baselines, in their order: a count, then per currency its
 *   code, `since`, a count and the recent amounts (integer minor units);
 * - the pace when flagged: `last`, `gaps` and `logGap` (float64, exact);
 * - the profile: `transactions`, the `methods` bits, a count and the
 *   countries (length and code units each);
 * - the travel position when flagged: location, time and id (not written
 *   when flag 16 says they are those of the newest velocity event, as they
 *   mostly are: the user's last transaction), then `returnTo` when flagged.
 *
 * Version 1 (before per-user baselines: no merchants in the windows, Welford
 * amount statistics, no pace, no profile) is still read: see
 * {@link upgradeUserState} for what its states become. Measured over 7 days
 * of the default traffic (seed 1, 20 000 users, the users' final states), a
 * version-2 string is 114 characters at the median (85 bytes), 156 at the
 * 90th percentile, 211 at the 99th, 844 at most, 119 on average (version 1:
 * 70, 130, 188, 458 and 86).
 *
 * Integers are unsigned LEB128 varints. Each time is the zigzag difference to
 * the time written before it (the first to 0): a window's times are close, so
 * most take 2 or 3 bytes. An id in canonical UUID form (lower-case hex) takes
 * a 0 byte and its 16 bytes; any other id a length + 1, then its UTF-16 code
 * units. A currency or location of the version-1 lists below is its index + 1;
 * any other string a 0, its length and its code units. Every value thus comes
 * back exactly as it was: the rules see the same state whichever form it was
 * kept in.
 *
 * A state the layout cannot hold exactly (a time or count outside the safe
 * integers, which valid transactions never produce) stays a
 * {@link UserState} object, and so does a state restored from a changelog
 * written before this encoding (plain JSON objects): {@link decodeUserState}
 * takes either form.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import type {
  AmountBaseline,
  EventRef,
  Profile,
  RateBaseline,
  TravelState,
  UserState,
} from "./rules.ts";

/** A user's state as the job stores it: the compact string, or the object form. */
export type StoredUserState = string | UserState;

const VERSION = 2;
const VELOCITY_FIRING = 1;
const CARD_TESTING_FIRING = 2;
const HAS_TRAVEL = 4;
const HAS_RETURN_TO = 8;
const TRAVEL_IS_NEWEST_VELOCITY_EVENT = 16;
const HAS_RATE = 32;
/** Recent amounts a version-1 baseline becomes (amountSpike.history's default). */
const V1_BASELINE_AMOUNTS = 16;
/** Times are written as differences; their size keeps every difference a safe integer. */
const MAX_ABS_TIME = 2 ** 50;

/** Only characters of base64's URL alphabet. */
const BASE64URL = /^[A-Za-z0-9_-]*$/;
/** The hex digits, lower case, as a UUID writes them. */
const HEX_DIGITS = "0123456789abcdef";
/** The char codes of {@link HEX_DIGITS}. */
const HEX_CODES = Array.from(HEX_DIGITS, (c) => c.charCodeAt(0));
/** A UUID's char codes as {@link readId} makes one, the dashes in place (reused). */
const UUID_CODES = new Array<number>(36).fill("-".charCodeAt(0));
/** Where in a UUID each of its 16 bytes' two hex digits go. */
const UUID_DIGIT_AT = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
/** Hex digit values of '0'-'9' and 'a'-'f' by char code; -1 elsewhere (upper case too). */
const HEX_VALUES = new Int8Array(128).fill(-1);
for (let i = 0; i < 16; i++) HEX_VALUES[HEX_DIGITS.charCodeAt(i)] = i;

/**
 * The names version 1 writes as an index: currency.ts's and locations.json's
 * as they were when it was made, fixed here so that a state written today
 * decodes the same after either list changes (a name added later is written
 * out in full).
 */
const CURRENCY_NAMES: readonly string[] = Object.freeze(
  "USD EUR GBP JPY CAD AUD CHF INR BRL SGD MXN KRW CNY HKD ZAR SEK AED NZD".split(" "),
);
const LOCATION_NAMES: readonly string[] = Object.freeze(
  ("Tokyo, JP|Delhi, IN|Shanghai, CN|São Paulo, BR|Mexico City, MX|Mumbai, IN|Beijing, CN|" +
    "Osaka, JP|New York, US|Los Angeles, US|Seoul, KR|London, GB|Paris, FR|Bengaluru, IN|" +
    "Rio de Janeiro, BR|Chicago, US|Johannesburg, ZA|Hong Kong, HK|Toronto, CA|Madrid, ES|" +
    "Houston, US|Singapore, SG|Sydney, AU|Dallas, US|Berlin, DE|Melbourne, AU|Miami, US|" +
    "Barcelona, ES|Guadalajara, MX|Dubai, AE|Milan, IT|Busan, KR|San Francisco, US|" +
    "Montreal, CA|Rome, IT|Cape Town, ZA|Seattle, US|Boston, US|Vancouver, CA|Munich, DE|" +
    "Manchester, GB|Hamburg, DE|Vienna, AT|Stockholm, SE|Amsterdam, NL|Brussels, BE|" +
    "Zurich, CH|Auckland, NZ|Dublin, IE|Geneva, CH|Lisbon, PT|Abu Dhabi, AE|Edinburgh, GB|" +
    "Perth, AU|Kyoto, JP").split("|"),
);
const CURRENCY_INDEX = new Map(CURRENCY_NAMES.map((c, i) => [c, i]));
const LOCATION_INDEX = new Map(LOCATION_NAMES.map((n, i) => [n, i]));

/** Thrown (inside {@link encodeUserState}) for a value the layout cannot hold exactly. */
class NotCompact extends Error {}

/** A growable byte buffer, reused by every encoding and decoding (single-threaded). */
let bytes = new Uint8Array(4096);
let view = new DataView(bytes.buffer);
/** `bytes` as a node:buffer Buffer, for its base64 (made once per buffer, not per state). */
let buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
let at = 0;
let lastTime = 0;

function room(n: number): void {
  if (at + n <= bytes.length) return;
  const bigger = new Uint8Array(Math.max(bytes.length * 2, at + n));
  bigger.set(bytes.subarray(0, at));
  bytes = bigger;
  view = new DataView(bytes.buffer);
  buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
}

function writeUint(n: number): void {
  // One, two or three bytes (times' differences, amounts) without the checks
  // and the loop a larger one needs.
  if (n >= 0 && n < 0x200000 && (n | 0) === n && at + 3 <= bytes.length) {
    if (n < 0x80) bytes[at++] = n;
    else if (n < 0x4000) {
      bytes[at++] = (n & 127) | 128;
      bytes[at++] = n >>> 7;
    } else {
      bytes[at++] = (n & 127) | 128;
      bytes[at++] = ((n >>> 7) & 127) | 128;
      bytes[at++] = n >>> 14;
    }
    return;
  }
  if (!Number.isSafeInteger(n) || n < 0) throw new NotCompact();
  room(8);
  if (n <= 0x7fffffff) { // most values: in 32-bit integer arithmetic (a quarter quicker)
    while (n >= 128) {
      bytes[at++] = (n & 127) | 128;
      n >>>= 7;
    }
  } else {
    while (n >= 128) {
      bytes[at++] = (n % 128) | 128;
      n = Math.floor(n / 128);
    }
  }
  bytes[at++] = n;
}

function writeTime(t: number): void {
  if (!Number.isSafeInteger(t) || Math.abs(t) >= MAX_ABS_TIME) throw new NotCompact();
  const d = t - lastTime;
  lastTime = t;
  writeUint(d >= 0 ? d * 2 : -d * 2 - 1);
}

function writeFloat(x: number): void {
  room(8);
  view.setFloat64(at, x, true);
  at += 8;
}

function writeChars(s: string): void {
  writeUint(s.length);
  for (let i = 0; i < s.length; i++) writeUint(s.charCodeAt(i));
}

function writeName(s: string, index: Map<string, number>): void {
  const i = index.get(s);
  if (i !== undefined) writeUint(i + 1);
  else {
    writeUint(0);
    writeChars(s);
  }
}

function writeId(id: string): void {
  // xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx in lower-case hex (the generator's,
  // any version): a 0 and its 16 bytes, checked while they are written (and
  // written again in full when a digit is not one).
  if (
    id.length === 36 && id.charCodeAt(8) === 45 && id.charCodeAt(13) === 45 &&
    id.charCodeAt(18) === 45 && id.charCodeAt(23) === 45
  ) {
    room(17);
    const start = at;
    bytes[at++] = 0;
    let bad = 0;
    for (let i = 0; i < 36; i += 2) {
      if (i === 8 || i === 13 || i === 18 || i === 23) i++;
      const c1 = id.charCodeAt(i);
      const c2 = id.charCodeAt(i + 1);
      const high = c1 < 128 ? HEX_VALUES[c1] : -1;
      const low = c2 < 128 ? HEX_VALUES[c2] : -1;
      bad |= high | low; // negative once any is not a digit
      bytes[at++] = high * 16 + low;
    }
    if (bad >= 0) return;
    at = start;
  }
  writeUint(id.length + 1);
  for (let i = 0; i < id.length; i++) writeUint(id.charCodeAt(i));
}

function writeEvents(events: EventRef[]): void {
  writeUint(events.length);
  for (const e of events) {
    writeTime(e.time);
    writeId(e.id);
    if (!Number.isInteger(e.merchant) || e.merchant < 0 || e.merchant > 0x7fffffff) {
      throw new NotCompact();
    }
    writeUint(e.merchant * 2 + (e.unusual ? 1 : 0));
  }
}

/**
 * The compact form of `state` (see the module doc), or `state` itself when the
 * layout cannot hold it exactly. {@link decodeUserState} gives back an equal
 * {@link UserState}.
 */
export function encodeUserState(state: UserState): StoredUserState {
  at = 0;
  lastTime = 0;
  try {
    room(2);
    bytes[at++] = VERSION;
    const t = state.travel;
    const v = state.velocity.events;
    const newest = v.length > 0 ? v[v.length - 1] : undefined;
    // The position is usually the user's last transaction, which is also the
    // newest event of the velocity window: then it is written once.
    const sameAsNewest = t !== null && newest !== undefined && t.id === newest.id &&
      t.time === newest.time;
    bytes[at++] = (state.velocity.firing ? VELOCITY_FIRING : 0) |
      (state.cardTesting.firing ? CARD_TESTING_FIRING : 0) |
      (t !== null ? HAS_TRAVEL : 0) |
      (t !== null && t.returnTo !== null ? HAS_RETURN_TO : 0) |
      (sameAsNewest ? TRAVEL_IS_NEWEST_VELOCITY_EVENT : 0) |
      (state.rate !== null ? HAS_RATE : 0);
    writeEvents(state.velocity.events);
    writeEvents(state.cardTesting.events);
    const currencies = Object.keys(state.amounts);
    writeUint(currencies.length);
    for (const code of currencies) {
      const a = state.amounts[code];
      writeName(code, CURRENCY_INDEX);
      writeTime(a.since);
      writeUint(a.recent.length);
      for (const x of a.recent) writeUint(x);
    }
    if (state.rate !== null) {
      writeTime(state.rate.last);
      writeUint(state.rate.gaps);
      writeFloat(state.rate.logGap);
    }
    const p = state.profile;
    writeUint(p.transactions);
    writeUint(p.methods);
    writeUint(p.countries.length);
    for (const c of p.countries) writeChars(c);
    if (t !== null) {
      writeName(t.location, LOCATION_INDEX);
      if (!sameAsNewest) {
        writeTime(t.time);
        writeId(t.id);
      }
      if (t.returnTo !== null) writeName(t.returnTo, LOCATION_INDEX);
    }
  } catch (err) {
    if (err instanceof NotCompact) return state;
    throw err;
  }
  return toBase64(at);
}

/**
 * Base64 (URL alphabet, no padding) of the first `n` bytes of the buffer:
 * node:buffer's native encoder, 4× faster than a loop here (docs/benchmarks.md).
 */
function toBase64(n: number): string {
  return buffer.toString("base64url", 0, n);
}

/**
 * Decodes base64 `s` (URL alphabet, no padding) into the buffer; returns the
 * byte count. Every character is checked first: node:buffer's decoder skips
 * what is not base64 (and takes the standard alphabet and padding too),
 * where a corrupt state must be an error.
 */
function fromBase64(s: string): number {
  if (s.length % 4 === 1) corrupt("a base64 length");
  if (!BASE64URL.test(s)) corrupt("base64"); // half the time of a loop over the characters
  const n = Math.floor(s.length * 3 / 4);
  at = 0;
  room(n + 3);
  const written = buffer.write(s, "base64url");
  if (written !== n) corrupt("base64");
  return n;
}

function corrupt(what: string): never {
  throw new Error(`detect state: not a valid compact user state (${what})`);
}

let end = 0;

function readByte(): number {
  if (at >= end) corrupt("truncated");
  return bytes[at++];
}

function readUint(): number {
  // One, two or three bytes (most values), without the loop.
  if (at + 3 <= end) {
    const b0 = bytes[at];
    if (b0 < 128) {
      at++;
      return b0;
    }
    const b1 = bytes[at + 1];
    if (b1 < 128) {
      at += 2;
      return (b0 & 127) | (b1 << 7);
    }
    const b2 = bytes[at + 2];
    if (b2 < 128) {
      at += 3;
      return (b0 & 127) | ((b1 & 127) << 7) | (b2 << 14);
    }
  } else if (at < end && bytes[at] < 128) return bytes[at++];
  let n = 0;
  let scale = 1;
  for (;;) {
    const b = readByte();
    n += (b & 127) * scale;
    if (b < 128) return n;
    scale *= 128;
    if (scale > 2 ** 56) corrupt("a varint");
  }
}

function readTime(): number {
  const z = readUint();
  lastTime += z % 2 === 0 ? z / 2 : -(z + 1) / 2;
  return lastTime;
}

function readFloat(): number {
  if (at + 8 > end) corrupt("truncated");
  const x = view.getFloat64(at, true);
  at += 8;
  return x;
}

function readChars(length: number): string {
  let s = "";
  for (let i = 0; i < length; i++) s += String.fromCharCode(readUint());
  return s;
}

function readName(names: readonly string[]): string {
  const i = readUint();
  if (i === 0) return readChars(readUint());
  if (i > names.length) corrupt("a name index");
  return names[i - 1];
}

function readId(): string {
  const tag = readUint();
  if (tag !== 0) return readChars(tag - 1);
  if (at + 16 > end) corrupt("truncated");
  const b = bytes;
  const p = at;
  at += 16;
  // One flat string: concatenating the 20 pieces made a rope of 19 strings
  // per id, flattened again as soon as the id was written back.
  for (let i = 0; i < 16; i++) {
    const x = b[p + i];
    const to = UUID_DIGIT_AT[i];
    UUID_CODES[to] = HEX_CODES[x >> 4];
    UUID_CODES[to + 1] = HEX_CODES[x & 15];
  }
  return String.fromCharCode.apply(null, UUID_CODES);
}

function readEvents(version: number): EventRef[] {
  const count = readUint();
  const events = new Array<EventRef>(count);
  for (let i = 0; i < count; i++) {
    const time = readTime();
    const id = readId();
    const m = version === 1 ? 0 : readUint();
    events[i] = { time, id, merchant: Math.floor(m / 2), unusual: m % 2 === 1 };
  }
  return events;
}

/** Sets `record[key]` as an own property, even for `__proto__` (as JSON.parse makes it). */
function setOwn<T>(record: Record<string, T>, key: string, value: T): void {
  if (key !== "__proto__") record[key] = value;
  else {
    Object.defineProperty(record, key, {
      value,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
}

/**
 * A version-1 amount baseline (Welford: count, mean, m2) as a version-2 one:
 * its mean, rounded, as each of min(count, {@link V1_BASELINE_AMOUNTS})
 * recent purchases. The rules then see the old mean as the median with no
 * spread until new purchases replace it (a migration, documented in the
 * module doc).
 */
function fromWelford(count: number, mean: number, since: number): AmountBaseline {
  const amount = Math.max(1, Math.round(mean));
  const n = Math.max(0, Math.min(V1_BASELINE_AMOUNTS, count));
  return { recent: new Array<number>(n).fill(amount), since };
}

/** The version-1 object form (before the compact encoding) of a user's state. */
interface UserStateV1 {
  velocity: { events: Array<{ time: number; id: string }>; firing: boolean };
  cardTesting: { events: Array<{ time: number; id: string }>; firing: boolean };
  amounts: Record<string, { count: number; mean: number; m2: number; since: number }>;
  travel: TravelState | null;
}

/**
 * A state in the object form as the rules take it: today's as it is, one
 * written before per-user baselines (version 1: no pace, no profile, Welford
 * amounts, windows without merchants) upgraded: its windows' events at one
 * unknown merchant (key 0), its amounts as {@link fromWelford}, no pace and an
 * empty profile (the user starts learning them again).
 */
export function upgradeUserState(state: UserState | UserStateV1): UserState {
  if ("profile" in state) return state;
  const events = (b: UserStateV1["velocity"]) => ({
    events: b.events.map((e) => ({ time: e.time, id: e.id, merchant: 0, unusual: false })),
    firing: b.firing,
  });
  const amounts: Record<string, AmountBaseline> = {};
  for (const [code, a] of Object.entries(state.amounts)) {
    setOwn(amounts, code, fromWelford(a.count, a.mean, a.since));
  }
  return {
    velocity: events(state.velocity),
    cardTesting: events(state.cardTesting),
    amounts,
    rate: null,
    profile: { transactions: 0, countries: [], methods: 0 },
    travel: state.travel,
  };
}

/**
 * The {@link UserState} a stored state stands for: the compact string decoded
 * (version 2, or version 1 upgraded as {@link upgradeUserState} says), or the
 * object form (this encoding's fallback, or a changelog record written before
 * it, upgraded likewise). Throws on a string that is not a compact state.
 */
export function decodeUserState(stored: StoredUserState | UserStateV1): UserState {
  if (typeof stored !== "string") return upgradeUserState(stored);
  end = fromBase64(stored);
  at = 0;
  lastTime = 0;
  const version = readByte();
  if (version !== 1 && version !== VERSION) corrupt("an unknown version");
  const flags = readByte();
  const velocity = { events: readEvents(version), firing: (flags & VELOCITY_FIRING) !== 0 };
  const cardTesting = {
    events: readEvents(version),
    firing: (flags & CARD_TESTING_FIRING) !== 0,
  };
  const amounts: Record<string, AmountBaseline> = {};
  const currencies = readUint();
  for (let i = 0; i < currencies; i++) {
    const code = readName(CURRENCY_NAMES);
    if (version === 1) {
      const count = readUint();
      const mean = readFloat();
      readFloat(); // m2: no use to a median
      setOwn(amounts, code, fromWelford(count, mean, readTime()));
      continue;
    }
    const since = readTime();
    const n = readUint();
    const recent = new Array<number>(n);
    for (let j = 0; j < n; j++) recent[j] = readUint();
    setOwn(amounts, code, { recent, since });
  }
  let rate: RateBaseline | null = null;
  const profile: Profile = { transactions: 0, countries: [], methods: 0 };
  if (version !== 1) {
    if ((flags & HAS_RATE) !== 0) {
      const last = readTime();
      const gaps = readUint();
      rate = { last, gaps, logGap: readFloat() };
    }
    profile.transactions = readUint();
    profile.methods = readUint();
    const countries = readUint();
    for (let i = 0; i < countries; i++) profile.countries.push(readChars(readUint()));
  }
  let travel: TravelState | null = null;
  if ((flags & HAS_TRAVEL) !== 0) {
    const location = readName(LOCATION_NAMES);
    let time: number;
    let id: string;
    if ((flags & TRAVEL_IS_NEWEST_VELOCITY_EVENT) !== 0) {
      const newest = velocity.events[velocity.events.length - 1];
      if (newest === undefined) corrupt("no velocity event for the position");
      ({ time, id } = newest);
    } else {
      time = readTime();
      id = readId();
    }
    const returnTo = (flags & HAS_RETURN_TO) !== 0 ? readName(LOCATION_NAMES) : null;
    travel = { location, time, id, returnTo };
  }
  if (at !== end) corrupt("trailing bytes");
  return { velocity, cardTesting, amounts, rate, profile, travel };
}
