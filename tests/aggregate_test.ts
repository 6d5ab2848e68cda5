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
  killThriceThenFinish,
  outputsOf,
  runToCompletion,
  runTopics,
  runTwoInstances,
  sharedInput,
  toMessage,
} from "./helpers/jobs.ts";
import { readTopic } from "./helpers/cluster.ts";
import { rekeyProcessor, windowProcessor } from "../jobs/aggregate.ts";
import { internalTopicNames } from "../stacks/topology.ts";
import {
  type OutputRecord,
  PartitionState,
  type ProcessContext,
  type SourceRecord,
  type StreamProcessor,
} from "../jobs/lib/stream.ts";
import { encodeTransaction, type Transaction } from "../jobs/lib/transaction.ts";
import {
  addToWindow,
  type Aggregate,
  combinedWatermark,
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
    await runTwoInstances("aggregate", t, FLAGS);
    const got = canonical(await outputsOf<Aggregate>(t));
    assert.deepEqual(got, expected);
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

/** A fake runtime context: what a batch emits and dead-letters. */
function fakeContext<S>(partition: number, state: PartitionState<S>) {
  const emitted: OutputRecord[] = [];
  const dead: Array<{ source: SourceRecord; reason: string }> = [];
  const ctx: ProcessContext<S> = {
    partition,
    state,
    emit: (r) => emitted.push(r),
    deadLetter: (source, reason) => dead.push({ source, reason }),
  };
  return { ctx, emitted, dead };
}

/** One run of a batch the way runStream runs it (parse, beginBatch, process…, endBatch). */
function runBatch<T, S>(
  processor: StreamProcessor<T, S>,
  partition: number,
  state: PartitionState<S>,
  records: readonly SourceRecord[],
) {
  const c = fakeContext(partition, state);
  processor.beginBatch?.(c.ctx);
  for (const r of records) {
    const parsed = processor.parse(r);
    if (parsed.ok) processor.process(parsed.value, r, c.ctx);
    else c.ctx.deadLetter(r, parsed.reason, parsed.message);
  }
  processor.endBatch?.(c.ctx);
  return c;
}

/** A copy of `state` as a restore from the changelog would give (values are replaced, never mutated). */
function copyOf<S>(state: PartitionState<S>): PartitionState<S> {
  const copy = new PartitionState<S>();
  for (const [k, v] of state.entries()) copy.restore(k, v);
  return copy;
}

const sourceRecord = (topic: string, partition: number, offset: number, value: Uint8Array) => ({
  topic,
  partition,
  offset: String(offset),
  key: null,
  value,
  headers: {},
});

/**
 * Both stages in memory, batch by batch as the runtime runs them, over
 * `partitions`: stage 1 batches of random sizes, round robin over the input
 * partitions, each followed by stage 2 over what is new on the repartition
 * partitions, in batches of random sizes. With `failures`, a batch now and
 * then first runs halfway and fails (its outputs and state changes dropped,
 * as runStream drops them) before it runs whole. With `perRecordUntil`, the
 * first rounds write per-record repartition values, as the previous version
 * did. Returns the output values and stage 1's repartition and dead-letter
 * counts.
 */
function runInMemory(partitions: readonly PartitionInput[], o: {
  seed: string;
  failures?: boolean;
  perRecordUntil?: number;
}) {
  const rand = seeded(o.seed);
  const appId = "mem";
  const repartitionPartitions = 3;
  const topic = internalTopicNames(appId).repartition;
  const rekey = rekeyProcessor({
    appId,
    input: "input",
    repartitionPartitions,
    allowedLatenessMs: LATENESS_MS,
    windowMs: WINDOW_MS,
  });
  const windows = windowProcessor({
    appId,
    output: "output",
    inputPartitions: partitions.length,
    windowMs: WINDOW_MS,
  });
  const rekeyStates = partitions.map(() => new PartitionState<never>());
  const windowStates = Array.from({ length: repartitionPartitions }, () => new PartitionState());
  const logs: SourceRecord[][] = Array.from({ length: repartitionPartitions }, () => []);
  const read = logs.map(() => 0);
  const outputs: unknown[] = [];
  let repartitioned = 0;
  let late = 0;
  const positions = partitions.map(() => 0);
  // Mostly small batches (many boundaries to get wrong), now and then a large one.
  const batchSize = (most: number) => 1 + Math.floor(rand() ** 2 * most);
  // deno-lint-ignore no-explicit-any
  const anyRekey = rekey as StreamProcessor<any, any>;
  for (let round = 0; positions.some((at, p) => at < partitions[p].length); round++) {
    partitions.forEach((records, p) => {
      const from = positions[p];
      if (from >= records.length) return;
      const batch = records.slice(from, from + batchSize(2000)).map((r, i) =>
        sourceRecord("input", p, from + i, encodeTransaction({ ...r.tx }))
      );
      positions[p] += batch.length;
      if (o.failures && rand() < 0.3) {
        // A failed run: its outputs never commit, its state is dropped (restored anew).
        const half = batch.slice(0, Math.ceil(batch.length / 2));
        const scratch = copyOf(rekeyStates[p]);
        const failed = fakeContext(p, scratch);
        anyRekey.beginBatch?.(failed.ctx);
        for (const r of half) {
          const parsed = anyRekey.parse(r);
          if (parsed.ok) anyRekey.process(parsed.value, r, failed.ctx);
        }
        // (no endBatch: it failed before)
      }
      const done = runBatch(anyRekey, p, rekeyStates[p], batch);
      late += done.dead.filter((d) => d.reason === "late_record").length;
      const dropped = new Set(done.dead.map((d) => d.source.offset));
      const onTime = batch.filter((r) => !dropped.has(r.offset)).map((r) => Number(r.offset));
      // Exactly one partial per window the batch's on-time records fall in.
      const keys = new Set(onTime.map((i) => {
        const { tx } = partitions[p][i];
        return windowKey(tx.merchantId, tx.currency, windowStart(tx.transactionTime, WINDOW_MS));
      }));
      assert.equal(done.emitted.filter((r) => r.partition === undefined).length, keys.size);
      let emitted = done.emitted;
      if (o.perRecordUntil !== undefined && round < o.perRecordUntil) {
        // The previous version: every on-time record, then the markers.
        const accepted = onTime.map((i) => {
          const { tx, amountMinor } = partitions[p][i];
          const input: WindowInput = {
            merchantId: tx.merchantId,
            currency: tx.currency,
            transactionTime: tx.transactionTime,
            transactionType: tx.transactionType,
            amountMinor,
          };
          return { topic, key: `${tx.merchantId}|${tx.currency}`, value: JSON.stringify(input) };
        });
        emitted = [...accepted, ...emitted.filter((r) => r.partition !== undefined)];
      }
      for (const r of emitted) {
        const target = r.partition ?? hash(r.key!) % repartitionPartitions;
        const log = logs[target];
        log.push({
          topic,
          partition: target,
          offset: String(log.length),
          key: r.key,
          value: new TextEncoder().encode(r.value!),
          headers: r.headers ?? {},
        });
        if (r.partition === undefined) repartitioned++;
      }
    });
    logs.forEach((log, q) => {
      while (read[q] < log.length) {
        const batch = log.slice(read[q], read[q] + batchSize(400));
        read[q] += batch.length;
        const done = runBatch(windows, q, windowStates[q], batch);
        assert.deepEqual(done.dead, [], "stage 2 reads every repartition record");
        for (const r of done.emitted) outputs.push(JSON.parse(r.value!));
      }
    });
  }
  return { outputs, repartitioned, late };
}

/** A stand-in for the key hash: any fixed function keeps a key on one partition. */
function hash(key: string): number {
  let h = 0;
  for (const c of key) h = (Math.imul(h, 31) + c.charCodeAt(0)) >>> 0;
  return h;
}

/** The generated records split over `n` input partitions by user, as the key hash would. */
function byUser(records: ReturnType<typeof disorderedRecords>, n: number): PartitionInput[] {
  const partitions: PartitionInput[] = Array.from({ length: n }, () => []);
  for (const r of records) partitions[hash(r.key) % n].push(r);
  return partitions;
}

Deno.test("aggregate (in memory): partials give the per-record output, late drops included", () => {
  const partitions = byUser(disorderedRecords(20_000, "partials-in-memory"), 5);
  const expected = perRecordReference(partitions, WINDOW_MS, LATENESS_MS);
  assert.ok(expected.late > 100, `late records in the input (${expected.late})`);
  assert.ok(expected.aggregates.length > 1000, `windows (${expected.aggregates.length})`);
  const inputs = partitions.reduce((n, p) => n + p.length, 0);
  for (const seed of ["a", "b", "c"]) {
    const got = runInMemory(partitions, { seed });
    assert.deepEqual(canonical(got.outputs), canonical(expected.aggregates), `seed ${seed}`);
    assert.equal(got.late, expected.late);
    assert.ok(got.repartitioned < inputs - expected.late, `${got.repartitioned} partials`);
  }
});

Deno.test("aggregate (in memory): a batch that fails halfway and runs again leaks nothing into the retry", () => {
  const partitions = byUser(disorderedRecords(20_000, "partials-retried"), 5);
  const expected = perRecordReference(partitions, WINDOW_MS, LATENESS_MS);
  for (const seed of ["d", "e"]) {
    const got = runInMemory(partitions, { seed, failures: true });
    assert.deepEqual(canonical(got.outputs), canonical(expected.aggregates), `seed ${seed}`);
    assert.equal(got.late, expected.late);
  }
});

Deno.test("aggregate (in memory): stage 2 still reads the previous version's per-record values, mixed with partials", () => {
  const partitions = byUser(disorderedRecords(20_000, "partials-upgrade"), 5);
  const expected = perRecordReference(partitions, WINDOW_MS, LATENESS_MS);
  const got = runInMemory(partitions, { seed: "f", perRecordUntil: 40 });
  assert.deepEqual(canonical(got.outputs), canonical(expected.aggregates));
  // And the shapes themselves: a per-record value, a partial, a partial of another window size.
  const stage2 = windowProcessor({
    appId: "x",
    output: "o",
    inputPartitions: 5,
    windowMs: WINDOW_MS,
  });
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
  assert.deepEqual(parse(tx), { ok: true, value: { kind: "tx", input: tx, eventTime: 12_345 } });
  assert.deepEqual(parse(partial), { ok: true, value: { kind: "partial", window: partial } });
  for (
    const bad of [
      { ...partial, windowEnd: partial.windowStart + 2 * WINDOW_MS },
      { ...partial, windowStart: partial.windowStart + 1, windowEnd: partial.windowEnd + 1 },
      { ...partial, purchaseMinor: 0.5 },
      { ...partial, transactionCount: 0, refundCount: 0 },
      { ...partial, merchantId: 7 },
      null,
      42,
    ]
  ) {
    assert.equal(parse(bad).ok, false, JSON.stringify(bad));
  }
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
    const back = await readTopic(topic, { expected: records.length });
    const byId = new Map(records.map((r) => [r.tx.transactionId, r]));
    const partitions: PartitionInput[] = Array.from({ length: 5 }, () => []);
    back.sort((a, b) => a.partition - b.partition || Number(a.offset) - Number(b.offset));
    for (const r of back) {
      const tx = JSON.parse(new TextDecoder().decode(r.value!)) as Transaction;
      partitions[r.partition].push(byId.get(tx.transactionId)!);
    }
    const expected = perRecordReference(partitions, WINDOW_MS, LATENESS_MS);
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
    const summed = partials.reduce(
      (n, r) => n + JSON.parse(new TextDecoder().decode(r.value!)).transactionCount,
      0,
    );
    assert.equal(summed, records.length - expected.late, "every on-time record in one partial");
    assert.ok(partials.length < summed, `${partials.length} partials for ${summed} records`);
  },
);
