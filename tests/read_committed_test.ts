/**
 * read_committed as txpipe's clients see it (jobs/lib/read_committed.ts):
 * the filter on its own, then interleaved aborted and committed transactions
 * on the real cluster, read back through a kafkajs consumer.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { TOPICS } from "../stacks/topology.ts";
import { createKafka } from "../jobs/lib/kafka.ts";
import { dropAborted, type FetchedRecord, hideAborted } from "../jobs/lib/read_committed.ts";
import { BROKERS, freshTopic, readTopic } from "./helpers/cluster.ts";

const kafkaTest = { sanitizeOps: false, sanitizeResources: false };

const ABORT = new Uint8Array([0, 0, 0, 0]);
const COMMIT = new Uint8Array([0, 0, 0, 1]);
const data = (offset: number, producerId: string, inTransaction = true): FetchedRecord => ({
  offset: String(offset),
  key: null,
  batchContext: { producerId, inTransaction },
});
const marker = (offset: number, producerId: string, key: Uint8Array): FetchedRecord => ({
  offset: String(offset),
  key,
  isControlRecord: true,
  batchContext: { producerId, inTransaction: true },
});

Deno.test("read_committed: aborted transactions listed out of offset order are all skipped, and nothing else", () => {
  // p1 opens at 0, p2 at 1; p2 aborts first, then p1; p1 then commits a new
  // transaction; p3 writes without a transaction in between.
  const records = [
    data(0, "p1"),
    data(1, "p2"),
    data(2, "p1"),
    data(3, "p3", false),
    marker(4, "p2", ABORT),
    marker(5, "p1", ABORT),
    data(6, "p1"),
    marker(7, "p1", COMMIT),
  ];
  // The broker lists them in the order they were aborted: p2 (from 1), then p1 (from 0).
  const aborted = [{ producerId: "p2", firstOffset: "1" }, { producerId: "p1", firstOffset: "0" }];
  const kept = dropAborted(records, aborted).map((r) => Number(r.offset));
  assert.deepEqual(kept, [3, 4, 5, 6, 7], "p3's record, the markers and p1's committed record");
});

Deno.test("read_committed: transactions aborted before the fetched range start are skipped from its first record", () => {
  const records = [data(10, "a"), data(11, "b"), data(12, "c"), marker(13, "a", ABORT)];
  const aborted = [{ producerId: "a", firstOffset: "5" }, { producerId: "b", firstOffset: "7" }];
  const kept = dropAborted(records, aborted).map((r) => Number(r.offset));
  assert.deepEqual(kept, [12, 13]);
});

Deno.test("read_committed: aborted records are flagged as control records, never removed, so kafkajs moves past a fetch of only aborted records", () => {
  // A transaction larger than the fetch: only its records, its ABORT marker not yet fetched.
  const onlyAborted = [data(0, "big"), data(1, "big"), data(2, "big")];
  assert.equal(hideAborted(onlyAborted, [{ producerId: "big", firstOffset: "0" }]), 3);
  assert.equal(onlyAborted.length, 3, "every fetched record stays for kafkajs to move past");
  assert.ok(onlyAborted.every((r) => r.isControlRecord), "none is delivered");
  const mixed = [data(0, "p1"), data(1, "p2", false), marker(2, "p1", ABORT), data(3, "p1")];
  assert.equal(hideAborted(mixed, [{ producerId: "p1", firstOffset: "0" }]), 1);
  assert.deepEqual(mixed.filter((r) => !r.isControlRecord).map((r) => Number(r.offset)), [1, 3]);
});

Deno.test("read_committed: without aborted transactions every record stays", () => {
  const records = [data(0, "a"), marker(1, "a", COMMIT), data(2, "b", false)];
  assert.deepEqual(dropAborted(records, []), records);
});

Deno.test(
  "read_committed: a kafkajs consumer reads exactly the committed records when aborted transactions interleave on the real cluster",
  kafkaTest,
  async () => {
    const topic = await freshTopic(TOPICS.aggregates, "read_committed");
    const kafka = createKafka({
      principal: "admin",
      clientId: "txpipe-test-txn",
      brokers: BROKERS,
    });
    const producer = (id: string) =>
      kafka.producer({
        transactionalId: `test-rc-${id}-${crypto.randomUUID().slice(0, 8)}`,
        idempotent: true,
        maxInFlightRequests: 1,
      });
    const p1 = producer("p1");
    const p2 = producer("p2");
    await p1.connect();
    await p2.connect();
    try {
      const send = (t: Awaited<ReturnType<typeof p1.transaction>>, value: string) =>
        t.send({
          topic,
          acks: -1,
          messages: [{ key: "k", value: Buffer.from(value), partition: 0 }],
        });
      // p1 opens first, p2 second; p2 aborts first: the broker lists p2 before p1.
      const t1 = await p1.transaction();
      await send(t1, "aborted-p1-a");
      const t2 = await p2.transaction();
      await send(t2, "aborted-p2");
      await send(t1, "aborted-p1-b");
      await t2.abort();
      await t1.abort();
      const t3 = await p1.transaction();
      await send(t3, "committed-p1");
      await t3.commit();
      const t4 = await p2.transaction();
      await send(t4, "committed-p2");
      await t4.commit();
    } finally {
      await p1.disconnect();
      await p2.disconnect();
    }
    const values = (await readTopic(topic, { expected: 2, timeoutMs: 30_000, settleMs: 2000 }))
      .map((r) => new TextDecoder().decode(r.value!));
    assert.deepEqual(values, ["committed-p1", "committed-p2"]);
  },
);
