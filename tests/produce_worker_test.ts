/**
 * The producer's generation worker (jobs/lib/generation_worker.ts), without
 * Kafka: it makes exactly the records the generator makes in the send loop's
 * thread, routed as the delivery routes them, and its failures surface as one
 * error.
 */
import assert from "node:assert/strict";
import type { Admin } from "kafkajs";
import { PartitionRouter } from "../jobs/lib/kafka.ts";
import {
  encodeTransaction,
  FRAUD_PATTERNS,
  type GeneratorOptions,
  labelHeaders,
  TransactionGenerator,
} from "../jobs/lib/generator.ts";
import {
  batchMessages,
  encodeBatch,
  type EncodedBatch,
  GenerationError,
  GenerationWorker,
  KeyRouting,
} from "../jobs/lib/generation_worker.ts";

const DESTINATION = { topic: "t", partitions: 5 };
const OPTIONS: GeneratorOptions = { seed: "worker-test", fraudRate: 0.02, startTime: 1e12 };

/** A batch's records as comparable values. */
function flat(b: EncodedBatch) {
  const { messages } = batchMessages(b);
  return messages.map((m) => ({
    key: new TextDecoder().decode(m.key as Uint8Array),
    value: new TextDecoder().decode(m.value as Uint8Array),
    partition: m.partition,
    headers: m.headers,
  }));
}

Deno.test("generation worker: batch after batch (a smaller take in between), the same records, labels and partitions as the generator makes in the send loop's thread", async () => {
  const worker = new GenerationWorker(OPTIONS, DESTINATION, 1_000);
  const here = new TransactionGenerator(OPTIONS);
  const keys = new KeyRouting(DESTINATION);
  try {
    let labelled = 0;
    for (const n of [1_000, 1_000, 300, 1_000, 1_000, 1_000]) {
      const fromWorker = await worker.take(n);
      const expected = encodeBatch(here.take(fromWorker.count), keys);
      assert.ok(fromWorker.count > 0 && fromWorker.count <= n);
      assert.deepEqual(flat(fromWorker), flat(expected));
      labelled += fromWorker.labels.length + fromWorker.hardNegatives.length;
    }
    assert.ok(labelled > 20, `labelled records compared too (${labelled})`);
  } finally {
    worker.close();
  }
});

Deno.test("generation worker: a batch's messages hold the value bytes the summary counts", () => {
  const batch = encodeBatch(
    new TransactionGenerator(OPTIONS).take(100),
    new KeyRouting(DESTINATION),
  );
  const { messages, bytes } = batchMessages(batch);
  assert.equal(messages.length, 100);
  assert.equal(bytes, messages.reduce((n, m) => n + (m.value as Uint8Array).byteLength, 0));
});

Deno.test("generation worker: each value is byte for byte encodeTransaction's JSON of its record, each key the user id, each label in its headers (every fraud pattern, hard negatives, several seeds)", () => {
  const patterns = new Set<string>();
  const kinds = new Set<string>();
  let multiByte = 0; // "São Paulo, BR": UTF-8 longer than the text
  for (const seed of ["a", "b"]) {
    const generator = new TransactionGenerator({ ...OPTIONS, seed });
    const records = generator.take(50_000).concat(generator.flush());
    const batch = encodeBatch(records, new KeyRouting(DESTINATION));
    const { messages } = batchMessages(batch);
    records.forEach((r, i) => {
      assert.deepEqual(new Uint8Array(messages[i].value as Uint8Array), encodeTransaction(r.tx));
      assert.equal(new TextDecoder().decode(messages[i].key as Uint8Array), r.key);
      if (r.label) patterns.add(r.label.pattern);
      if (r.hardNegative) kinds.add(r.hardNegative.kind);
      const headers = labelHeaders(r.label, r.hardNegative);
      assert.deepEqual(messages[i].headers, Object.keys(headers).length > 0 ? headers : undefined);
      if (new TextEncoder().encode(r.tx.location).length > r.tx.location.length) multiByte++;
    });
  }
  assert.equal(patterns.size, FRAUD_PATTERNS.length, `every pattern compared (${[...patterns]})`);
  assert.ok(kinds.size >= 2, `hard negatives compared (${[...kinds]})`);
  assert.ok(multiByte > 0, "non-ASCII cities compared too");
});

Deno.test("generation worker: records are routed to the partition the delivery's router picks for their key", async () => {
  const admin = {
    fetchTopicMetadata: () =>
      Promise.resolve({
        topics: [{
          name: DESTINATION.topic,
          partitions: Array.from(
            { length: DESTINATION.partitions },
            (_, i) => ({ partitionId: i }),
          ),
        }],
      }),
  };
  const router = new PartitionRouter(admin as unknown as Admin);
  const records = new TransactionGenerator(OPTIONS).take(2_000);
  const routed = await router.route(
    DESTINATION.topic,
    records.map((r) => ({ key: r.key, value: null })),
  );
  const byKey = new Map<string, number>();
  for (const [partition, list] of routed) for (const m of list) byKey.set(String(m.key), partition);
  const keys = new KeyRouting(DESTINATION);
  for (const r of records) assert.equal(keys.of(r.key, r.user).partition, byKey.get(r.key), r.key);
  assert.equal(new Set(byKey.values()).size, DESTINATION.partitions);
});

Deno.test("generation worker: an error in the worker surfaces as one GenerationError naming it, for this and every later take", async () => {
  const worker = new GenerationWorker({ ...OPTIONS, users: 0 }, DESTINATION, 100);
  try {
    await assert.rejects(() => worker.take(100), (err: Error) => {
      assert.ok(err instanceof GenerationError);
      assert.match(err.message, /^the generation worker failed: RangeError: .*users/);
      assert.ok(!err.message.includes("\n"), "one line");
      return true;
    });
    await assert.rejects(() => worker.take(100), GenerationError);
  } finally {
    worker.close();
  }
});

Deno.test("generation worker: closed, it makes nothing more", async () => {
  const worker = new GenerationWorker(OPTIONS, DESTINATION, 100);
  assert.equal((await worker.take(100)).count, 100);
  worker.close();
  await assert.rejects(() => worker.take(100), /the generation worker failed: closed/);
});
