import assert from "node:assert/strict";
import { detectProcessor } from "../jobs/detect.ts";
import { TransactionGenerator } from "../jobs/lib/generator.ts";
import { type Anomaly, DEFAULT_DETECT_CONFIG, detect, type UserState } from "../jobs/lib/rules.ts";
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
    USD: { count: 12, mean: 5012.416666666667, m2: 1234567.0833333333, since: T0 - 86_400_000 },
    XTS: { count: 1, mean: 7, m2: 0, since: T0 }, // not in the list: written out
  };
  Object.defineProperty(amounts, "__proto__", {
    value: { count: 2, mean: 0.5, m2: -0, since: T0 + 5 },
    enumerable: true,
    writable: true,
    configurable: true,
  });
  return {
    velocity: {
      events: [
        { time: T0 - 59_000, id: "00000000-0000-4000-8000-000000000001" },
        { time: T0 - 60_000, id: "ABCDEF01-2345-4678-9ABC-DEF012345678" }, // upper case
        { time: T0, id: "t-ü-€-😀" }, // not a UUID
        { time: T0, id: "" },
      ],
      firing: true,
    },
    cardTesting: { events: [], firing: false },
    amounts,
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
  assert.ok(Object.is(back.amounts.__proto__.m2, -0));
  assert.deepEqual(Object.keys(back.amounts), Object.keys(state.amounts));
  const empty = {
    velocity: { events: [], firing: false },
    cardTesting: { events: [], firing: true },
  };
  for (const s of [{ ...empty, amounts: {}, travel: null }]) {
    assert.deepEqual(decodeUserState(encodeUserState(s)), s);
  }
});

Deno.test("user state: a state the layout cannot hold exactly stays an object, used as it is", () => {
  const base = unusualState();
  const odd: UserState[] = [
    { ...base, travel: { ...base.travel!, time: 1.5 } },
    { ...base, velocity: { events: [{ time: 2 ** 53, id: "x" }], firing: false } },
    { ...base, amounts: { USD: { count: 0.5, mean: 1, m2: 0, since: T0 } } },
  ];
  for (const s of odd) {
    assert.equal(encodeUserState(s), s);
    assert.equal(decodeUserState(s), s);
  }
  // and a valid state afterwards is unaffected by the aborted encoding
  assert.deepEqual(decodeUserState(encodeUserState(base)), base);
});

Deno.test("user state: version 1's layout is fixed (a string written today decodes the same later)", () => {
  const velocity = {
    events: [
      { time: T0, id: "00000000-0000-4000-8000-000000000001" },
      { time: T0 + 20_000, id: "00000000-0000-4000-8000-000000000002" },
    ],
    firing: false,
  };
  const common = {
    velocity,
    cardTesting: { events: [], firing: false },
    amounts: { EUR: { count: 2, mean: 1500, m2: 500000, since: T0 } },
  };
  const pinned: Array<[UserState, string]> = [
    [
      // the position is the newest velocity event: written once
      { ...common, travel: { location: "Paris, FR", ...velocity.events[1], returnTo: null } },
      "ARQCgKCr_vliAAAAAAAAAEAAgAAAAAAAAAHAuAIAAAAAAAAAQACAAAAAAAAAAgABAgIAAAAAAHCXQAAAAACAhB5Bv7gCDQ",
    ],
    [
      {
        ...common,
        travel: {
          location: "Paris, FR",
          time: T0 + 10_000,
          id: "00000000-0000-4000-8000-000000000003",
          returnTo: "London, GB",
        },
      },
      "AQwCgKCr_vliAAAAAAAAAEAAgAAAAAAAAAHAuAIAAAAAAAAAQACAAAAAAAAAAgABAgIAAAAAAHCXQAAAAACAhB5Bv7gC" +
      "DaCcAQAAAAAAAABAAIAAAAAAAAADDA",
    ],
  ];
  for (const [state, v1] of pinned) {
    assert.equal(encodeUserState(state), v1);
    assert.deepEqual(decodeUserState(v1), state);
  }
});

Deno.test("user state: a string that is not a compact state is refused", () => {
  const good = encodeUserState(unusualState()) as string;
  for (
    const bad of ["", "A", "!!!!", "Ag", good.slice(0, -3), good + "AAAA", "/" + good.slice(1)]
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
