/**
 * Named state stores (jobs/lib/stores.ts): their changelog keys, the
 * unprefixed store, and changelogs written before named stores restoring
 * into the right stores.
 */
import assert from "node:assert/strict";
import { PartitionState, type StreamProcessor } from "../jobs/lib/stream.ts";
import { batchContext, collectBatch } from "../jobs/lib/batch.ts";
import { STORE_SEPARATOR, StoreLayout } from "../jobs/lib/stores.ts";
import { aggregateProcessors } from "../jobs/aggregate.ts";
import { detectProcessor } from "../jobs/detect.ts";
import { DEFAULT_DETECT_CONFIG } from "../jobs/lib/rules.ts";
import { encodeTransaction } from "../jobs/lib/transaction.ts";
import { generate } from "./helpers/jobs.ts";
import { TestDriver } from "../jobs/lib/test_driver.ts";

const S = STORE_SEPARATOR;
const sink = { output: () => {}, deadLetter: () => {} };

/** A processor with stores `a` (unprefixed) and `b`, `c`; it only writes what a test makes it. */
function storesOf(
  legacy?: StreamProcessor<unknown, { a: string; b: number; c: number }>["legacy"],
): StreamProcessor<unknown, { a: string; b: number; c: number }> {
  return {
    name: "t",
    groupId: "t",
    source: "in",
    changelog: "t-changelog",
    stores: { a: { unprefixed: true }, b: {}, c: {} },
    legacy,
    parse: () => ({ ok: true, value: null }),
    process: () => {},
  };
}

Deno.test("stores: each store's entries under its own changelog key; the unprefixed store's as they are", () => {
  const processor = storesOf();
  const state = new PartitionState();
  const ctx = batchContext(processor, 0, state, sink);
  ctx.store("a").put("k", "in a");
  ctx.store("b").put("k", 1);
  ctx.store("c").put(`k${S}x`, 2);
  ctx.store("a").put(`x${S}y`, "a key may hold the separator");
  ctx.store("a").put(`c${S}`.slice(0, 1), "a key that is a store's name");
  assert.deepEqual(
    new Map(state.takeChanges()),
    new Map<string, unknown>([
      ["k", "in a"],
      [`b${S}k`, 1],
      [`c${S}k${S}x`, 2],
      [`x${S}y`, "a key may hold the separator"],
      ["c", "a key that is a store's name"],
    ]),
  );
  assert.deepEqual([...ctx.store("a").entries()].map(([k]) => k), ["k", `x${S}y`, "c"]);
  assert.deepEqual([...ctx.store("b").entries()], [["k", 1]]);
  assert.deepEqual([...ctx.store("c").entries()], [[`k${S}x`, 2]]);
  assert.equal(ctx.store("b").get(`${S}k`), undefined);
  // A key of the unprefixed store that would read back as another store's is refused.
  assert.throws(() => ctx.store("a").put(`b${S}k`, "?"), /would read back as another store's/);
  ctx.store("b").delete("k");
  assert.deepEqual(state.takeChanges(), [[`b${S}k`, null]]);
  // Restored, every entry is back in its store.
  const restored = new PartitionState();
  for (const [k, v] of state.entries()) restored.restore(k, v);
  const again = batchContext(processor, 0, restored, sink);
  assert.equal(again.store("c").get(`k${S}x`), 2);
  assert.equal(again.store("a").get("c"), "a key that is a store's name");
  assert.deepEqual(restored.takeChanges(), [], "nothing to rewrite");
});

Deno.test("stores: a declaration with two unprefixed stores or a bad name is refused", () => {
  const layout = (stores: Record<string, { unprefixed?: boolean }>) =>
    new StoreLayout<Record<string, unknown>>({ name: "t", stores });
  assert.throws(
    () => layout({ a: { unprefixed: true }, b: { unprefixed: true } }),
    /one unprefixed store at most/,
  );
  assert.throws(() => layout({ [`x${S}`]: {} }), /U\+001F/);
  assert.throws(() => layout({ "": {} }), /U\+001F/);
});

Deno.test("stores: an old changelog's unprefixed entries restore into the stores the processor's legacy names, rewritten at the next commit", () => {
  const processor = storesOf((key, value) =>
    key === "both" && typeof value === "number"
      ? [["b", "one", value], ["c", "two", value]]
      : undefined
  );
  const state = new PartitionState();
  // As the runtime restores it from the changelog.
  state.restore("plain", "stays in a");
  state.restore("both", 7);
  state.restore(`b${S}three`, 3);
  const out = collectBatch(processor, 0, state, []);
  assert.deepEqual(
    new Map(out.changes),
    new Map<string, unknown>([["both", null], [`b${S}one`, 7], [`c${S}two`, 7]]),
  );
  const ctx = batchContext(processor, 0, state, sink);
  assert.deepEqual([...ctx.store("a").entries()], [["plain", "stays in a"]]);
  assert.deepEqual(new Map(ctx.store("b").entries()), new Map([["three", 3], ["one", 7]]));
  // Without an unprefixed store, an entry nothing claims is an error, not silently dropped.
  const { name, groupId, source, parse, process } = storesOf();
  const strict: StreamProcessor<unknown, { b: number }> = {
    name,
    groupId,
    source,
    parse,
    process,
    stores: { b: {} },
  };
  const orphan = new PartitionState();
  orphan.restore("who", 1);
  assert.throws(() => collectBatch(strict, 0, orphan, []), /belongs to no store/);
});

Deno.test("stores: aggregation stage 2 restores the old single watermarks entry per input partition, its windows as they were", () => {
  const { windows } = aggregateProcessors({
    appId: "st",
    input: "in",
    output: "out",
    inputPartitions: 3,
    repartitionPartitions: 2,
    allowedLatenessMs: 0,
    windowMs: 10_000,
  });
  const window = {
    merchantId: "m",
    currency: "USD",
    windowStart: 1_700_000_000_000,
    windowEnd: 1_700_000_010_000,
    transactionCount: 1,
    purchaseCount: 1,
    refundCount: 0,
    purchaseMinor: 100,
    refundMinor: 0,
    minMinor: 100,
    maxMinor: 100,
  };
  const key = JSON.stringify(["m", "USD", 1_700_000_000_000]);
  const state = new PartitionState();
  state.restore(key, window);
  state.restore("watermarks", { "0": 1_700_000_020_000, "1": 1_700_000_005_000 });
  const ctx = batchContext(windows, 0, state, sink);
  assert.deepEqual([...ctx.store("windows").entries()], [[key, window]]);
  assert.deepEqual(
    Object.fromEntries(ctx.store("watermarks").entries()),
    { "0": 1_700_000_020_000, "1": 1_700_000_005_000 },
  );
  assert.deepEqual(
    new Map(state.takeChanges()),
    new Map<string, unknown>([
      ["watermarks", null],
      [`watermarks${S}0`, 1_700_000_020_000],
      [`watermarks${S}1`, 1_700_000_005_000],
    ]),
  );
});

Deno.test("stores: detection's changelog keys are the user ids, as before named stores", () => {
  const driver = new TestDriver({
    topics: { input: 2, anomalies: 1 },
    processors: [
      detectProcessor({
        appId: "stdet",
        input: "input",
        output: "anomalies",
        config: DEFAULT_DETECT_CONFIG,
      }),
    ],
  });
  const input = generate(2_000, "stores-detect", 0.02);
  driver.pipe("input", input.map((r) => ({ key: r.key, value: encodeTransaction(r.tx) })));
  driver.run({ batchSize: 300 });
  const users = new Set(input.map((r) => r.tx.userId));
  const keys = [0, 1].flatMap((p) => [...driver.changelog("detect", p).keys()]);
  assert.deepEqual(new Set(keys), users);
  // And an old changelog (those keys) restores into the users store.
  driver.crash();
  const restored = [0, 1].flatMap((p) => [...driver.store("detect", p, "users").keys()]);
  assert.deepEqual(new Set(restored), users);
});
