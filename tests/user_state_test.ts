import assert from "node:assert/strict";
import { detectProcessor } from "../jobs/detect.ts";
import { TransactionGenerator } from "../jobs/lib/generator.ts";
import {
  type Anomaly,
  DEFAULT_DETECT_CONFIG,
  detect,
  merchantKey,
  type UserState,
} from "../jobs/lib/rules.ts";
import { type OutputRecord, PartitionState } from "../jobs/lib/stream.ts";
import { batchContext } from "../jobs/lib/batch.ts";
import type { Transaction } from "../jobs/lib/transaction.ts";
import { decodeUserState, encodeUserState, type StoredUserState } from "../jobs/lib/user_state.ts";

const T0 = 1_700_000_000_000;

/** Every state the rules reach over a generated stream with fraud, per record. */
function generatedStates(seed: string, count: number): UserState[] {
  const generator = new TransactionGenerator({ seed, users: 300, fraudRate: 0.05 });
  const states = new Map<string, UserState>();
  const seen: UserState[] = [];
  for (const r of generator.take(count).concat(generator.flush())) {
    const d = detect(states.get(r.key), r.tx, r.amountMinor, DEFAULT_DETECT_CONFIG);
    states.set(r.key, d.state);
    seen.push(d.state);
  }
  return seen;
}

Deno.test("user state: every state of a generated stream with fraud comes back equal from its compact string", () => {
  let firing = 0;
  let returnTo = 0;
  let compactChars = 0;
  let jsonChars = 0;
  for (const state of generatedStates("user-state-1", 40_000)) {
    const stored = encodeUserState(state);
    assert.equal(typeof stored, "string");
    assert.deepEqual(decodeUserState(stored), state);
    if (state.velocity.firing || state.cardTesting.firing) firing++;
    if (state.travel?.returnTo) returnTo++;
    compactChars += (stored as string).length;
    jsonChars += JSON.stringify(state).length;
  }
  assert.ok(firing > 0 && returnTo > 0, "the stream reaches firing windows and returns");
  // the changelog record is a third of the object form's JSON or less
  assert.ok(compactChars * 3 < jsonChars, `${compactChars} vs ${jsonChars} characters`);
});

Deno.test("user state: the compact string needs no escaping in the changelog's JSON", () => {
  for (const state of generatedStates("user-state-2", 5_000)) {
    const stored = encodeUserState(state) as string;
    const json = JSON.stringify(stored);
    assert.equal(json, `"${stored}"`);
    assert.equal(JSON.parse(json), stored);
    assert.match(stored, /^[A-Za-z0-9_-]+$/);
  }
});

/** A state with everything the layout has a special case for. */
function unusualState(): UserState {
  const amounts: Record<string, UserState["amounts"][string]> = {
    USD: { recent: [5012, 4800, 1, 2 ** 40], since: T0 - 86_400_000 },
    XTS: { recent: [7], since: T0 }, // not in the list: written out
  };
  Object.defineProperty(amounts, "__proto__", {
    value: { recent: [], since: T0 + 5 },
    enumerable: true,
    writable: true,
    configurable: true,
  });
  return {
    velocity: {
      events: [
        {
          time: T0 - 59_000,
          id: "00000000-0000-4000-8000-000000000001",
          merchant: 0x7fffffff,
          unusual: false,
        },
        // upper case
        {
          time: T0 - 60_000,
          id: "ABCDEF01-2345-4678-9ABC-DEF012345678",
          merchant: 0,
          unusual: true,
        },
        { time: T0, id: "t-ü-€-😀", merchant: 12345, unusual: false }, // not a UUID
        { time: T0, id: "", merchant: 1, unusual: true },
      ],
      firing: true,
    },
    cardTesting: { events: [], firing: false },
    amounts,
    rate: { last: T0 - 1, gaps: 10, logGap: Math.log(3_600_000) },
    profile: { transactions: 1_000_000, countries: ["US", "XX", "ü😀"], methods: 15 },
    travel: {
      location: "Atlantis, XX",
      time: 946_684_800_000,
      id: "9f8e7d6c-5b4a-4392-8170-fedcba987654",
      returnTo: "São Paulo, BR",
    },
  };
}

Deno.test("user state: ids that are no lower-case UUID, unknown names, __proto__ and extreme values come back exactly", () => {
  const state = unusualState();
  const stored = encodeUserState(state);
  assert.equal(typeof stored, "string");
  const back = decodeUserState(JSON.parse(JSON.stringify(stored)));
  assert.deepEqual(back, state);
  assert.ok(Object.hasOwn(back.amounts, "__proto__"));
  assert.equal(Object.getPrototypeOf(back.amounts), Object.prototype);
  assert.deepEqual(back.amounts.__proto__.recent, []);
  assert.deepEqual(Object.keys(back.amounts), Object.keys(state.amounts));
  const empty: UserState = {
    velocity: { events: [], firing: false },
    cardTesting: { events: [], firing: true },
    amounts: {},
    rate: null,
    profile: { transactions: 0, countries: [], methods: 0 },
    travel: null,
  };
  assert.deepEqual(decodeUserState(encodeUserState(empty)), empty);
});

Deno.test("user state: an id shaped like a UUID with one character that is no lower-case hex digit, anywhere, comes back exactly, written in full", () => {
  const uuid = "0123abcd-ef45-4678-9abc-def012345678";
  const withId = (id: string): UserState => ({
    velocity: { events: [{ time: T0, id, merchant: 1, unusual: false }], firing: false },
    cardTesting: { events: [], firing: false },
    amounts: {},
    rate: null,
    profile: { transactions: 1, countries: [], methods: 0 },
    travel: null,
  });
  const canonical = encodeUserState(withId(uuid)) as string;
  assert.deepEqual(decodeUserState(canonical), withId(uuid));
  for (const at of [0, 1, 7, 9, 14, 19, 24, 34, 35]) {
    for (const c of ["g", "A", "é", "😀".charAt(0)]) {
      const id = uuid.slice(0, at) + c + uuid.slice(at + 1);
      const stored = encodeUserState(withId(id));
      assert.equal(typeof stored, "string");
      assert.deepEqual(decodeUserState(stored), withId(id), `${JSON.stringify(id)}`);
      assert.ok((stored as string).length > canonical.length, `${JSON.stringify(id)} in full`);
    }
  }
});

Deno.test("user state: a state the layout cannot hold exactly stays an object, used as it is", () => {
  const base = unusualState();
  const event = { time: 2 ** 53, id: "x", merchant: 1, unusual: false };
  const odd: UserState[] = [
    { ...base, travel: { ...base.travel!, time: 1.5 } },
    { ...base, velocity: { events: [event], firing: false } },
    { ...base, velocity: { events: [{ ...event, time: T0, merchant: 2 ** 31 }], firing: false } },
    { ...base, amounts: { USD: { recent: [0.5], since: T0 } } },
    { ...base, rate: { last: T0, gaps: 1.5, logGap: 1 } },
  ];
  for (const s of odd) {
    assert.equal(encodeUserState(s), s);
    assert.equal(decodeUserState(s), s);
  }
  // and a valid state afterwards is unaffected by the aborted encoding
  assert.deepEqual(decodeUserState(encodeUserState(base)), base);
});

const V1_EVENTS = [
  { time: T0, id: "00000000-0000-4000-8000-000000000001" },
  { time: T0 + 20_000, id: "00000000-0000-4000-8000-000000000002" },
];

/** What a version-1 state of {@link V1_EVENTS} becomes: see upgradeUserState. */
function upgraded(travel: UserState["travel"]): UserState {
  return {
    velocity: {
      events: V1_EVENTS.map((e) => ({ ...e, merchant: 0, unusual: false })),
      firing: false,
    },
    cardTesting: { events: [], firing: false },
    // Welford count 2, mean 1500: the mean as each of 2 recent purchases
    amounts: { EUR: { recent: [1500, 1500], since: T0 } },
    rate: null,
    profile: { transactions: 0, countries: [], methods: 0 },
    travel,
  };
}

Deno.test("user state: version 1 strings and objects (before per-user baselines) still restore, upgraded", () => {
  const paris = { location: "Paris, FR", ...V1_EVENTS[1], returnTo: null };
  const pinned: Array<[UserState["travel"], string]> = [
    [
      paris,
      "ARQCgKCr_vliAAAAAAAAAEAAgAAAAAAAAAHAuAIAAAAAAAAAQACAAAAAAAAAAgABAgIAAAAAAHCXQAAAAACAhB5Bv7gCDQ",
    ],
    [
      {
        location: "Paris, FR",
        time: T0 + 10_000,
        id: "00000000-0000-4000-8000-000000000003",
        returnTo: "London, GB",
      },
      "AQwCgKCr_vliAAAAAAAAAEAAgAAAAAAAAAHAuAIAAAAAAAAAQACAAAAAAAAAAgABAgIAAAAAAHCXQAAAAACAhB5Bv7gC" +
      "DaCcAQAAAAAAAABAAIAAAAAAAAADDA",
    ],
  ];
  for (const [travel, v1] of pinned) assert.deepEqual(decodeUserState(v1), upgraded(travel));
  // the object form written before the compact encoding
  const v1Object = {
    velocity: { events: V1_EVENTS, firing: false },
    cardTesting: { events: [], firing: false },
    amounts: { EUR: { count: 2, mean: 1500, m2: 500000, since: T0 } },
    travel: paris,
  };
  assert.deepEqual(decodeUserState(JSON.parse(JSON.stringify(v1Object))), upgraded(paris));
  // and the rules take an upgraded state like any other
  const next = detect(decodeUserState(pinned[0][1]), {
    transactionId: "00000000-0000-4000-8000-000000000009",
    userId: "user-1",
    amount: 15,
    currency: "EUR",
    transactionTime: T0 + 60_000,
    merchantId: "merchant-1",
    transactionType: "purchase",
    location: "Paris, FR",
    paymentMethod: "debit_card",
    isInternational: false,
  }, 1500);
  assert.deepEqual(next.state.amounts.EUR.recent, [1500, 1500, 1500]);
  assert.equal(next.state.profile.transactions, 1);
});

Deno.test("user state: version 2's layout is fixed (a string written today decodes the same later)", () => {
  const state = upgraded({ location: "Paris, FR", ...V1_EVENTS[1], returnTo: null });
  state.velocity.events[0].merchant = merchantKey("merchant-0001");
  state.cardTesting.events = [{ ...V1_EVENTS[0], merchant: 7, unusual: true }];
  state.rate = { last: T0 + 20_000, gaps: 3, logGap: 10.5 };
  state.profile = { transactions: 12, countries: ["FR", "GB"], methods: 5 };
  const v2 = encodeUserState(state);
  assert.equal(v2, PINNED_V2);
  assert.deepEqual(decodeUserState(PINNED_V2), state);
});

/** {@link encodeUserState} of the state in the test above, as version 2 writes it. */
const PINNED_V2 =
  "AjQCgKCr_vliAAAAAAAAAEAAgAAAAAAAAAH6hN7kCcC4AgAAAAAAAABAAIAAAAAAAAACAAG_uAIAAAAAAAAAQACAAAAAAAAAAQ8BAgAC3AvcC8C4AgMAAAAAAAAlQAwFAgJGUgJHQg0";

Deno.test("user state: a string that is not a compact state is refused", () => {
  const good = encodeUserState(unusualState()) as string;
  for (
    const bad of [
      "",
      "A",
      "!!!!",
      "Ag",
      good.slice(0, -3),
      good + "AAAA",
      // node:buffer's decoder would take these (the standard alphabet, padding, a space)
      "/" + good.slice(1),
      good.slice(0, 4) + "+" + good.slice(5),
      good + "==",
      good.slice(0, 8) + " " + good.slice(8),
    ]
  ) {
    assert.throws(() => decodeUserState(bad), /not a valid compact user state/, bad);
  }
});

/** Runs the detect processor over `txs` on one partition state; returns its anomalies. */
function runProcessor(
  state: PartitionState<StoredUserState>,
  txs: Array<{ tx: Transaction; amountMinor: number }>,
): Anomaly[] {
  const p = detectProcessor({
    appId: "user-state-test",
    input: "in",
    output: "out",
    config: DEFAULT_DETECT_CONFIG,
  });
  const out: OutputRecord[] = [];
  // The state is the changelog's view: one unprefixed store, keys are the user ids.
  const ctx = batchContext(p, 0, state, {
    output: (r) => out.push(r),
    deadLetter: () => assert.fail("no dead letters here"),
  });
  const source = { topic: "in", partition: 0, offset: "0", key: null, value: null, headers: {} };
  for (const t of txs) p.process(t, source, ctx);
  return out.map((r) => JSON.parse(r.value!) as Anomaly);
}

Deno.test("user state: the detect processor gives the rules' anomalies, and resumes from a changelog of the object form or of the compact form", () => {
  const generator = new TransactionGenerator({ seed: "user-state-3", users: 200, fraudRate: 0.05 });
  const txs = generator.take(30_000).concat(generator.flush()).map((r) => ({
    tx: r.tx,
    amountMinor: r.amountMinor,
  }));
  // the reference: the rules on object states, as before the compact form
  const objects = new Map<string, UserState>();
  const expected: Anomaly[] = [];
  for (const { tx, amountMinor } of txs) {
    const d = detect(objects.get(tx.userId), tx, amountMinor, DEFAULT_DETECT_CONFIG);
    objects.set(tx.userId, d.state);
    expected.push(...d.anomalies);
  }
  assert.ok(expected.length > 100);
  const half = 15_000;
  const changelog = (s: PartitionState<StoredUserState>) => {
    const restored = new PartitionState<StoredUserState>();
    // what the runtime writes (JSON.stringify) and reads back (JSON.parse)
    for (const [k, v] of s.takeChanges()) restored.restore(k, JSON.parse(JSON.stringify(v)));
    return restored;
  };

  const whole = new PartitionState<StoredUserState>();
  assert.deepEqual(runProcessor(whole, txs), expected);
  for (const [user, stored] of whole.entries()) {
    assert.equal(typeof stored, "string");
    assert.deepEqual(decodeUserState(stored), objects.get(user));
  }

  // a changelog written before the compact form: plain objects
  const old = new PartitionState<UserState>();
  const oldAnomalies: Anomaly[] = [];
  for (const { tx, amountMinor } of txs.slice(0, half)) {
    const d = detect(old.get(tx.userId), tx, amountMinor, DEFAULT_DETECT_CONFIG);
    old.put(tx.userId, d.state);
    oldAnomalies.push(...d.anomalies);
  }
  const fromOld = changelog(old as unknown as PartitionState<StoredUserState>);
  assert.ok([...fromOld.entries()].every(([, v]) => typeof v === "object"));
  assert.deepEqual([...oldAnomalies, ...runProcessor(fromOld, txs.slice(half))], expected);

  // a changelog of the compact form
  const head = new PartitionState<StoredUserState>();
  const headAnomalies = runProcessor(head, txs.slice(0, half));
  const fromNew = changelog(head);
  assert.deepEqual([...headAnomalies, ...runProcessor(fromNew, txs.slice(half))], expected);
  for (const [user, stored] of fromNew.entries()) {
    assert.deepEqual(decodeUserState(stored), objects.get(user));
  }
});
