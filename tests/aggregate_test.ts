/**
 * The aggregation job on the real 3+3 cluster: exact windows against a
 * reference computed here, poison and late records, kill -9 recovery and
 * scale-out, all compared through read_committed outputs.
 */
import assert from "node:assert/strict";
import {
  baselineRun,
  canonical,
  countReasons,
  deadLetterReasons,
  generate,
  inputTopic,
  type Instance,
  killThriceThenFinish,
  outputsOf,
  runSharingTwo,
  runToCompletion,
  runTopics,
  sharedInput,
  startInstance,
  stopCleanly,
  toMessage,
  waitCaughtUp,
} from "./helpers/jobs.ts";
import { partitionOf } from "../jobs/lib/partitioner.ts";
import { readTopic } from "./helpers/cluster.ts";
import { aggregateProcessors } from "../jobs/aggregate.ts";
import { internalTopicNames } from "../stacks/topology.ts";
import type { StreamProcessor } from "../jobs/lib/stream.ts";
import { type BatchInfo, TestDriver } from "../jobs/lib/test_driver.ts";
import { MARKER_HEADER } from "../jobs/lib/repartition.ts";
import { STORE_SEPARATOR } from "../jobs/lib/stores.ts";
import { rekeyV1, windowsV1 } from "./helpers/aggregate_v1.ts";
import { encodeTransaction, type Transaction } from "../jobs/lib/transaction.ts";
import {
  addToWindow,
  type Aggregate,
  combinedWatermark,
  decodePartial,
  encodePartial,
  toAggregate,
  watermark,
  type WindowInput,
  windowKey,
  windowStart,
  type WindowState,
} from "../jobs/lib/windows.ts";

const kafkaTest = { sanitizeOps: false, sanitizeResources: false };
const WINDOW_MS = 10_000;
const LATENESS_MS = 5_000;
const FLAGS = ["--window", "10s", "--allowed-lateness", "5s"];

/** The reference: computed here from the generator's own integer amounts, not by the job's code. */
async function reference(): Promise<Map<string, Omit<Aggregate, "minAmount" | "maxAmount">>> {
  const input = await sharedInput();
  // The job's watermark rule: each input partition's highest event time minus the
  // lateness; a window is final once the lowest of them has passed its end.
  const maxByPartition = new Map<number, number>();
  for (const r of input.records) {
    const p = input.partitionOf.get(r.tx.transactionId)!;
    maxByPartition.set(p, Math.max(maxByPartition.get(p) ?? -Infinity, r.tx.transactionTime));
  }
  assert.equal(maxByPartition.size, 5, "the dataset covers every input partition");
  const closedUntil = Math.min(...maxByPartition.values()) - LATENESS_MS;

  const out = new Map<string, Omit<Aggregate, "minAmount" | "maxAmount">>();
  for (const { tx, amountMinor } of input.records) {
    const start = Math.floor(tx.transactionTime / WINDOW_MS) * WINDOW_MS;
    if (start + WINDOW_MS > closedUntil) continue;
    const key = `${tx.merchantId}|${tx.currency}|${start}`;
    const a = out.get(key) ?? {
      merchantId: tx.merchantId,
      currency: tx.currency,
      windowStart: start,
      windowEnd: start + WINDOW_MS,
      transactionCount: 0,
      purchaseCount: 0,
      refundCount: 0,
      purchaseAmount: 0,
      refundAmount: 0,
      netAmount: 0,
      purchaseAmountMinor: 0,
      refundAmountMinor: 0,
      netAmountMinor: 0,
      minAmountMinor: Number.MAX_SAFE_INTEGER,
      maxAmountMinor: 0,
    };
    a.transactionCount++;
    if (tx.transactionType === "refund") {
      a.refundCount++;
      a.refundAmountMinor += amountMinor;
    } else {
      a.purchaseCount++;
      a.purchaseAmountMinor += amountMinor;
    }
    a.netAmountMinor = a.purchaseAmountMinor - a.refundAmountMinor;
    a.minAmountMinor = Math.min(a.minAmountMinor, amountMinor);
    a.maxAmountMinor = Math.max(a.maxAmountMinor, amountMinor);
    out.set(key, a);
  }
  return out;
}

/** The uninterrupted single-instance run every other test compares with. */
const baseline = baselineRun<Aggregate>("aggregate", "agg", FLAGS);

Deno.test(
  "aggregate: every closed window equals an independent reference to the cent; none missing or doubled",
  kafkaTest,
  async () => {
    const got = (await baseline()).outputs;
    const expected = await reference();

    const keys = got.map((a) => `${a.merchantId}|${a.currency}|${a.windowStart}`);
    assert.equal(new Set(keys).size, keys.length, "no window is emitted twice");
    assert.equal(got.length, expected.size, "no window is missing");
    assert.ok(got.length > 1000, `a meaningful number of windows (${got.length})`);
    for (const a of got) {
      const e = expected.get(`${a.merchantId}|${a.currency}|${a.windowStart}`);
      assert.ok(e, `unexpected window ${a.merchantId} ${a.currency} ${a.windowStart}`);
      for (const field of Object.keys(e) as Array<keyof typeof e>) {
        if (field.endsWith("Amount")) continue; // decimal forms: checked below against minor units
        assert.equal(
          a[field],
          e[field],
          `${field} of ${a.merchantId} ${a.currency} ${a.windowStart}`,
        );
      }
      const decimals = a.currency === "JPY" || a.currency === "KRW" ? 1 : 100;
      assert.equal(Math.round(a.purchaseAmount * decimals), a.purchaseAmountMinor);
      assert.equal(Math.round(a.netAmount * decimals), a.netAmountMinor);
      assert.equal(String(a.purchaseAmount), String(a.purchaseAmountMinor / decimals));
      assert.equal(a.windowEnd - a.windowStart, WINDOW_MS);
    }
  },
);

Deno.test(
  "aggregate: poison and late records land in the dead-letter topic with their reasons, nothing else does",
  kafkaTest,
  async () => {
    const input = await sharedInput();
    const { topics } = await baseline();
    assert.deepEqual(
      await deadLetterReasons(topics.deadLetters),
      countReasons([...input.poison.map((p) => p.reason), ...input.late.map(() => "late_record")]),
    );
  },
);

Deno.test(
  "aggregate: kill -9 three times at random moments, then restart, yields output identical to an uninterrupted run",
  kafkaTest,
  async () => {
    const expected = canonical((await baseline()).outputs);
    const input = await sharedInput();
    const t = runTopics(input.topic, "aggcrash");
    await killThriceThenFinish("aggregate", t, FLAGS);
    const got = canonical(await outputsOf<Aggregate>(t));
    assert.equal(got.length, expected.length);
    assert.deepEqual(got, expected);
  },
);

Deno.test(
  "aggregate: two instances in one group give output identical to one instance",
  kafkaTest,
  async () => {
    const expected = canonical((await baseline()).outputs);
    const input = await sharedInput();
    const t = runTopics(input.topic, "aggscale");
    await runSharingTwo("aggregate", t, "instances", FLAGS);
    const got = canonical(await outputsOf<Aggregate>(t));
    assert.deepEqual(got, expected);
  },
);

Deno.test(
  "aggregate: one instance with --threads 2 gives output identical to one instance; both threads are members of both stages' groups",
  kafkaTest,
  async () => {
    const expected = canonical((await baseline()).outputs);
    const input = await sharedInput();
    const t = runTopics(input.topic, "aggthreads");
    await runSharingTwo("aggregate", t, "threads", FLAGS);
    assert.deepEqual(canonical(await outputsOf<Aggregate>(t)), expected);
  },
);

// ------------------------------------------------- partials before the shuffle

/** Input records of one input partition, in offset order. */
type PartitionInput = Array<{ tx: Transaction; amountMinor: number }>;

/**
 * What the job must output, by the per-record pure functions of windows.ts
 * (what the job did before it combined per batch): each input partition's
 * records in order, a late one (behind that partition's watermark so far)
 * dropped, every other one added to its window; a window is output once the
 * lowest of the partitions' final watermarks has passed its end.
 */
function perRecordReference(
  partitions: readonly PartitionInput[],
  windowMs: number,
  latenessMs: number,
): { aggregates: Aggregate[]; late: number } {
  const windows = new Map<string, WindowState>();
  const marks: Record<string, number> = {};
  let late = 0;
  partitions.forEach((records, p) => {
    let max = -Infinity;
    for (const { tx, amountMinor } of records) {
      if (tx.transactionTime < watermark(max, latenessMs)) {
        late++;
        continue;
      }
      const key = windowKey(tx.merchantId, tx.currency, windowStart(tx.transactionTime, windowMs));
      windows.set(key, addToWindow(windows.get(key), { ...tx, amountMinor }, windowMs));
      max = Math.max(max, tx.transactionTime);
    }
    if (records.length > 0) marks[String(p)] = watermark(max, latenessMs);
  });
  const closedUntil = combinedWatermark(marks, partitions.length);
  const aggregates = [...windows.values()].filter((w) => w.windowEnd <= closedUntil)
    .map(toAggregate);
  return { aggregates, late };
}

/**
 * `count` generated transactions, a tenth of them moved back in event time
 * by up to 15 s: with 5 s of allowed lateness some become late, others are
 * out of order but count, some in a window after a later one has opened.
 */
function disorderedRecords(count: number, seed: string) {
  const rand = seeded(seed);
  return generate(count, seed, 0).map((r) =>
    rand() < 0.1
      ? {
        ...r,
        tx: { ...r.tx, transactionTime: r.tx.transactionTime - Math.floor(rand() * 15_000) },
      }
      : r
  );
}

/** A repeatable pseudo-random sequence in [0, 1) from a text seed (xorshift32). */
function seeded(seed: string): () => number {
  let x = 2166136261;
  for (const c of seed) x = Math.imul(x ^ c.charCodeAt(0), 16777619) >>> 0;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

const APP = "mem";
const topics = internalTopicNames(APP);
const REPARTITION_PARTITIONS = 3;

/** The new topology's two stages over `inputPartitions`. */
function stages(inputPartitions: number) {
  return aggregateProcessors({
    appId: APP,
    input: "input",
    output: "output",
    inputPartitions,
    repartitionPartitions: REPARTITION_PARTITIONS,
    allowedLatenessMs: LATENESS_MS,
    windowMs: WINDOW_MS,
  });
}

/** The version before named stores (with `perRecord`, before partials): tests/helpers/aggregate_v1.ts. */
function stagesV1(inputPartitions: number, perRecord = false) {
  return {
    rekey: rekeyV1({
      appId: APP,
      input: "input",
      repartitionPartitions: REPARTITION_PARTITIONS,
      allowedLatenessMs: LATENESS_MS,
      windowMs: WINDOW_MS,
      perRecord,
    }),
    windows: windowsV1({ appId: APP, output: "output", inputPartitions, windowMs: WINDOW_MS }),
  };
}

/** A driver over `partitions` (each record on its partition) running `processors`. */
function driverOf(
  partitions: readonly PartitionInput[],
  // deno-lint-ignore no-explicit-any
  processors: ReadonlyArray<StreamProcessor<any, any>>,
): TestDriver {
  const driver = new TestDriver({
    topics: { input: partitions.length, [topics.repartition]: REPARTITION_PARTITIONS, output: 3 },
    processors,
  });
  driver.pipe(
    "input",
    partitions.flatMap((records, partition) =>
      records.map(({ tx }) => ({ key: tx.userId, value: encodeTransaction({ ...tx }), partition }))
    ),
  );
  return driver;
}

/**
 * Run options for the aggregation: batches of random sizes, mostly small
 * (many boundaries to get wrong), now and then a large one, stage 1's up to
 * 2000 records, stage 2's up to 400; with `failures`, now and then a batch
 * first fails halfway (its outputs and state changes dropped) and runs again.
 */
function randomBatches(seed: string, o: { failures?: boolean; maxBatches?: number } = {}) {
  const rand = seeded(seed);
  return {
    batchSize: (b: BatchInfo) =>
      1 + Math.floor(rand() ** 2 * (b.groupId.endsWith("-rekey") ? 2000 : 400)),
    failBatch: () => o.failures === true && rand() < 0.3,
    maxBatches: o.maxBatches,
  };
}

/**
 * What the driver's run produced: the output values, the partials on the
 * repartition topic (markers aside), and the late records dead-lettered;
 * every dead letter is a late record (stage 2 reads every repartition record).
 */
function results(driver: TestDriver) {
  const dead = driver.deadLetters();
  assert.deepEqual(dead.filter((d) => d.reason !== "late_record"), [], "only late records");
  const partials = driver.read(topics.repartition).filter((r) => r.headers[MARKER_HEADER] !== "1");
  return { outputs: driver.readValues("output"), partials, late: dead.length };
}

/** The generated records split over `n` input partitions by user, as a key hash would. */
function byUser(records: ReturnType<typeof disorderedRecords>, n: number): PartitionInput[] {
  const partitions: PartitionInput[] = Array.from({ length: n }, () => []);
  for (const r of records) partitions[hash(r.key) % n].push(r);
  return partitions;
}

/** A stand-in for the key hash: any fixed function keeps a key on one partition. */
function hash(key: string): number {
  let h = 0;
  for (const c of key) h = (Math.imul(h, 31) + c.charCodeAt(0)) >>> 0;
  return h;
}

const sourceRecord = (topic: string, partition: number, offset: number, value: Uint8Array) => ({
  topic,
  partition,
  offset: String(offset),
  key: null,
  value,
  headers: {},
});

const inputCount = (partitions: readonly PartitionInput[]) =>
  partitions.reduce((n, p) => n + p.length, 0);

/** The sum of the partials' transaction counts: each on-time record in exactly one. */
/** A repartition record's partial, as stage 2 reads it. */
const partialOf = (r: { value: Uint8Array | null }) =>
  decodePartial(JSON.parse(new TextDecoder().decode(r.value!)), WINDOW_MS);

const summed = (partials: ReturnType<typeof results>["partials"]) =>
  partials.reduce((n, r) => n + partialOf(r)!.transactionCount, 0);

Deno.test("aggregate (in memory): partials give the per-record output, late drops included", () => {
  const partitions = byUser(disorderedRecords(20_000, "partials-in-memory"), 5);
  const expected = perRecordReference(partitions, WINDOW_MS, LATENESS_MS);
  assert.ok(expected.late > 100, `late records in the input (${expected.late})`);
  assert.ok(expected.aggregates.length > 1000, `windows (${expected.aggregates.length})`);
  const inputs = inputCount(partitions);
  for (const seed of ["a", "b", "c"]) {
    const driver = driverOf(partitions, Object.values(stages(5)));
    driver.run(randomBatches(seed));
    const got = results(driver);
    assert.deepEqual(canonical(got.outputs), canonical(expected.aggregates), `seed ${seed}`);
    assert.equal(got.late, expected.late);
    assert.equal(summed(got.partials), inputs - expected.late);
    assert.ok(got.partials.length < inputs - expected.late, `${got.partials.length} partials`);
  }
});

Deno.test("aggregate (in memory): a batch that fails halfway and runs again leaks nothing into the retry", () => {
  const partitions = byUser(disorderedRecords(20_000, "partials-retried"), 5);
  const expected = perRecordReference(partitions, WINDOW_MS, LATENESS_MS);
  for (const seed of ["d", "e"]) {
    const driver = driverOf(partitions, Object.values(stages(5)));
    driver.run(randomBatches(seed, { failures: true }));
    const got = results(driver);
    assert.deepEqual(canonical(got.outputs), canonical(expected.aggregates), `seed ${seed}`);
    assert.equal(got.late, expected.late);
    assert.equal(summed(got.partials), inputCount(partitions) - expected.late);
  }
});

Deno.test("aggregate (in memory): stage 2 still reads the previous version's per-record values, mixed with partials", () => {
  const partitions = byUser(disorderedRecords(20_000, "partials-upgrade"), 5);
  const expected = perRecordReference(partitions, WINDOW_MS, LATENESS_MS);
  // The version before partials writes the first batches; then the new stage 1 takes over.
  const driver = driverOf(partitions, [stagesV1(5, true).rekey, stages(5).windows]);
  const options = randomBatches("f");
  driver.run({ ...options, maxBatches: 120 });
  const perRecord = driver.read(topics.repartition).length;
  assert.ok(perRecord > 1000, `per-record values written (${perRecord})`);
  driver.upgrade(stages(5).rekey);
  driver.run(options);
  assert.deepEqual(canonical(results(driver).outputs), canonical(expected.aggregates));
  // And the shapes themselves: a per-record value, a partial, a partial of another window size.
  const stage2 = aggregateProcessors({
    appId: "x",
    input: "i",
    output: "o",
    inputPartitions: 5,
    repartitionPartitions: 3,
    allowedLatenessMs: LATENESS_MS,
    windowMs: WINDOW_MS,
  }).windows;
  const value = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
  const tx: WindowInput = {
    merchantId: "m",
    currency: "EUR",
    transactionTime: 12_345,
    transactionType: "refund",
    amountMinor: 250,
  };
  const partial = addToWindow(undefined, tx, WINDOW_MS);
  const parse = (v: unknown) => stage2.parse(sourceRecord("r", 0, 0, value(v)));
  // A per-record value is the partial of its one transaction.
  assert.deepEqual(parse(tx), { ok: true, value: { kind: "partial", window: partial } });
  assert.deepEqual(parse(partial), { ok: true, value: { kind: "partial", window: partial } });
  // The compact array of today's stage 1.
  const compact = JSON.parse(encodePartial(partial));
  assert.deepEqual(parse(compact), { ok: true, value: { kind: "partial", window: partial } });
  for (
    const bad of [
      compact.slice(0, 9),
      [...compact.slice(0, 2), compact[2] + 1, ...compact.slice(3)],
      [...compact.slice(0, 6), 0.5, ...compact.slice(7)],
      [7, ...compact.slice(1)],
      { ...partial, windowEnd: partial.windowStart + 2 * WINDOW_MS },
      { ...partial, windowStart: partial.windowStart + 1, windowEnd: partial.windowEnd + 1 },
      { ...partial, purchaseMinor: 0.5 },
      { ...partial, transactionCount: 0, refundCount: 0 },
      { ...partial, merchantId: 7 },
      null,
      42,
    ]
  ) {
    const parsed = parse(bad);
    assert.deepEqual(parsed, {
      ok: false,
      reason: "invalid_repartition_record",
      message: `expected a partial window of ${WINDOW_MS} ms, a window input or a watermark ` +
        "marker from the rekey stage",
    }, JSON.stringify(bad));
  }
});

Deno.test("aggregate (in memory): stage 2 still reads the partials the version before wrote as objects, mixed with compact ones", () => {
  const partitions = byUser(disorderedRecords(20_000, "partials-objects"), 5);
  const expected = perRecordReference(partitions, WINDOW_MS, LATENESS_MS);
  const driver = driverOf(partitions, [stagesV1(5).rekey, stages(5).windows]);
  const options = randomBatches("j");
  driver.run({ ...options, maxBatches: 120 });
  const objects = driver.read(topics.repartition).filter((r) => r.headers[MARKER_HEADER] !== "1");
  assert.ok(objects.length > 500, `object partials written (${objects.length})`);
  assert.ok(objects.every((r) => !new TextDecoder().decode(r.value!).startsWith("[")));
  driver.upgrade(stages(5).rekey);
  driver.run(options);
  assert.deepEqual(canonical(results(driver).outputs), canonical(expected.aggregates));
});

Deno.test("aggregate (in memory): the topology writes byte for byte what the version before it wrote, output and dead letters; the same partials, now as compact arrays", () => {
  const partitions = byUser(disorderedRecords(20_000, "partials-bytes"), 5);
  const before = driverOf(partitions, Object.values(stagesV1(5)));
  before.run(randomBatches("g"));
  const now = driverOf(partitions, Object.values(stages(5)));
  now.run(randomBatches("g"));
  for (const topic of ["output", "dead_letters"]) {
    const a = before.read(topic);
    assert.ok(a.length > 100, `${topic}: ${a.length} records`);
    assert.deepEqual(now.read(topic), a, topic);
  }
  // The repartition topic: the same records (keys, partitions, markers byte for byte), each
  // partial the same window totals, written as the compact array in under a third of the bytes.
  const a = before.read(topics.repartition);
  const b = now.read(topics.repartition);
  assert.ok(a.length > 100, `repartition: ${a.length} records`);
  assert.equal(b.length, a.length);
  let bytesBefore = 0;
  let bytesNow = 0;
  for (let i = 0; i < a.length; i++) {
    const { value: va, ...ra } = a[i];
    const { value: vb, ...rb } = b[i];
    assert.deepEqual(rb, ra, `record ${i}`);
    if (a[i].headers[MARKER_HEADER] === "1") assert.deepEqual(vb, va, `marker ${i}`);
    else {
      assert.deepEqual(partialOf(b[i]), partialOf(a[i]), `partial ${i}`);
      assert.ok(Array.isArray(JSON.parse(new TextDecoder().decode(vb!))));
      bytesBefore += va!.length;
      bytesNow += vb!.length;
    }
  }
  assert.ok(
    bytesNow * 3 < bytesBefore,
    `${bytesNow} bytes of partials where there were ${bytesBefore}`,
  );
  // The dead letters' messages too.
  assert.deepEqual(
    now.deadLetters().map((d) => [d.reason, d.message]),
    before.deadLetters().map((d) => [d.reason, d.message]),
  );
});

Deno.test("aggregate (in memory): changelogs of the version before named stores restore into the stores; the old watermarks entry is rewritten", () => {
  const partitions = byUser(disorderedRecords(20_000, "stores-upgrade"), 5);
  const expected = perRecordReference(partitions, WINDOW_MS, LATENESS_MS);
  const driver = driverOf(partitions, Object.values(stagesV1(5)));
  const rand = seeded("h");
  driver.run({ ...randomBatches("h"), maxBatches: 60 });
  // The old changelogs: unprefixed keys, the watermarks in one entry.
  for (let p = 0; p < REPARTITION_PARTITIONS; p++) {
    const keys = [...driver.changelog(`${APP}-windows`, p).keys()];
    assert.ok(keys.includes("watermarks"), `partition ${p}: ${keys.slice(0, 3)}`);
    assert.ok(keys.every((k) => !k.includes(STORE_SEPARATOR)));
  }
  assert.deepEqual([...driver.changelog(`${APP}-rekey`, 0).keys()], ["progress"]);
  const old = driver.state<Record<string, number>>(`${APP}-windows`, 0).get("watermarks")!;

  const now = stages(5);
  driver.upgrade(now.rekey, now.windows);
  // Restored into the stores: the windows as they were, the watermarks one per input partition.
  assert.deepEqual(
    Object.fromEntries(driver.store(`${APP}-windows`, 0, "watermarks")),
    { ...old },
  );
  const windows = driver.store<WindowState>(`${APP}-windows`, 0, "windows");
  assert.ok(windows.size > 0);
  for (const [key, w] of windows) {
    assert.equal(key, windowKey(w.merchantId, w.currency, w.windowStart));
  }
  assert.deepEqual(driver.store(`${APP}-rekey`, 0, "progress").size, 1);
  // The rest, with crashes now and then: the output of a run that never upgraded.
  while (driver.run({ ...randomBatches("i"), maxBatches: 1 + Math.floor(rand() * 20) }) > 0) {
    driver.crash();
  }
  assert.deepEqual(canonical(results(driver).outputs), canonical(expected.aggregates));
  for (let p = 0; p < REPARTITION_PARTITIONS; p++) {
    const keys = [...driver.changelog(`${APP}-windows`, p).keys()];
    assert.ok(!keys.includes("watermarks"), "the old entry is gone (a tombstone)");
    assert.deepEqual(
      keys.filter((k) => k.startsWith(`watermarks${STORE_SEPARATOR}`)).sort(),
      ["0", "1", "2", "3", "4"].map((s) => `watermarks${STORE_SEPARATOR}${s}`),
    );
  }
  // Stage 1's changelog key stays what it was.
  assert.deepEqual([...driver.changelog(`${APP}-rekey`, 0).keys()], ["progress"]);
});

Deno.test(
  "aggregate: on the cluster, output equals the per-record reference record for record, late drops included; repartition holds partials",
  kafkaTest,
  async () => {
    const records = disorderedRecords(20_000, "partials-cluster");
    const topic = await inputTopic("agg_partials", records.map((r) => toMessage(r)));
    const t = runTopics(topic, "aggpart");
    await runToCompletion("aggregate", t, FLAGS);

    // The reference from the input as Kafka holds it: per partition, in offset order.
    const expected = await referenceOnCluster(topic, records);
    assert.ok(expected.late > 100, `late records in the input (${expected.late})`);

    const out = await readTopic(t.output, { expected: expected.aggregates.length });
    const got = out.map((r) => JSON.parse(new TextDecoder().decode(r.value!)) as Aggregate);
    assert.deepEqual(canonical(got), canonical(expected.aggregates));
    for (const r of out) {
      assert.equal(r.key, JSON.parse(new TextDecoder().decode(r.value!)).merchantId);
    }
    // Each merchant and currency's windows in window order within its output partition.
    const last = new Map<string, number>();
    for (
      const r of out.sort((a, b) =>
        a.partition - b.partition || Number(a.offset) - Number(b.offset)
      )
    ) {
      const a = JSON.parse(new TextDecoder().decode(r.value!)) as Aggregate;
      const k = `${a.merchantId}|${a.currency}`;
      assert.ok((last.get(k) ?? -Infinity) < a.windowStart, `${k}: windows in order`);
      last.set(k, a.windowStart);
    }
    assert.deepEqual(await deadLetterReasons(t.deadLetters), [["late_record", expected.late]]);

    // The shuffle carries partials and markers only: each on-time record in exactly one
    // partial, and fewer partials than records (how many fewer depends on how many
    // merchants share a window and a batch).
    const repartition = await readTopic(internalTopicNames(t.appId).repartition, {
      expected: 1,
      settleMs: 1000,
    });
    const partials = repartition.filter((r) => r.headers["txpipe-watermark"] !== "1");
    const summed = partials.reduce((n, r) => n + partialOf(r)!.transactionCount, 0);
    assert.equal(summed, records.length - expected.late, "every on-time record in one partial");
    assert.ok(partials.length < summed, `${partials.length} partials for ${summed} records`);
  },
);

Deno.test(
  "aggregate: with one input partition an hour ahead in event time, it is paused until the others catch up, and the output equals the per-record reference",
  kafkaTest,
  async () => {
    // Every record of the users on input partition 0 an hour later: that partition
    // would run an hour ahead of the others (the job's own partitioner places them).
    const HOUR = 3_600_000;
    const records = disorderedRecords(20_000, "aligned").map((r) =>
      partitionOf(r.key, 5) === 0
        ? { ...r, tx: { ...r.tx, transactionTime: r.tx.transactionTime + HOUR } }
        : r
    );
    const topic = await inputTopic("agg_aligned", records.map((r) => toMessage(r)));
    const t = runTopics(topic, "aggalign");
    // Small fetches and batches, so that the partitions take turns.
    const i = startInstance("aggregate", t, [
      ...FLAGS,
      "--max-watermark-drift",
      "1m",
      "--fetch-bytes",
      "16KiB",
      "--max-batch-bytes",
      "64KiB",
    ]);
    let pauses: number;
    try {
      await waitCaughtUp("aggregate", t);
      pauses = await counterOf(i, "txpipe_alignment_pauses_total");
    } finally {
      await stopCleanly(i, "aggregate");
    }
    assert.ok(pauses > 0, `input partitions were paused (${pauses} times)`);

    const expected = await referenceOnCluster(topic, records);
    const out = await readTopic(t.output, { expected: expected.aggregates.length });
    const got = out.map((r) => JSON.parse(new TextDecoder().decode(r.value!)) as Aggregate);
    assert.ok(got.length > 100, `windows closed (${got.length})`);
    assert.deepEqual(canonical(got), canonical(expected.aggregates));
    assert.deepEqual(await deadLetterReasons(t.deadLetters), [["late_record", expected.late]]);
  },
);

/**
 * {@link perRecordReference} of `records` as `topic` holds them: per input
 * partition, in offset order.
 */
async function referenceOnCluster(topic: string, records: ReturnType<typeof disorderedRecords>) {
  const back = await readTopic(topic, { expected: records.length });
  const byId = new Map(records.map((r) => [r.tx.transactionId, r]));
  const partitions: PartitionInput[] = Array.from({ length: 5 }, () => []);
  back.sort((a, b) => a.partition - b.partition || Number(a.offset) - Number(b.offset));
  for (const r of back) {
    const tx = JSON.parse(new TextDecoder().decode(r.value!)) as Transaction;
    partitions[r.partition].push(byId.get(tx.transactionId)!);
  }
  return perRecordReference(partitions, WINDOW_MS, LATENESS_MS);
}

/** The value of a counter (summed over its series) on a running instance's /metrics. */
async function counterOf(i: Instance, name: string): Promise<number> {
  const first = (await Deno.readTextFile(i.logFile)).split("\n")[0];
  const url = JSON.parse(first)["url.full"] as string;
  const text = await (await fetch(url)).text();
  return text.split("\n").filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
    .reduce((n, l) => n + Number(l.split(" ").pop()), 0);
}
