/**
 * The group-less partition reader a takeover restores its state with
 * (jobs/lib/partition_reader.ts), on the real cluster.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { TOPICS } from "../stacks/topology.ts";
import { createKafka } from "../jobs/lib/kafka.ts";
import { PartitionReader } from "../jobs/lib/partition_reader.ts";
import { BROKERS, freshTopic, groupIds, withAdmin } from "./helpers/cluster.ts";

const kafkaTest = { sanitizeOps: false, sanitizeResources: false };

Deno.test(
  "partition reader: one partition's committed records in order, aborted transactions and markers passed over, the position at the end, and no consumer group",
  kafkaTest,
  async () => {
    const topic = await freshTopic(TOPICS.aggregates, "partition_reader");
    const kafka = createKafka({
      principal: "admin",
      clientId: "txpipe-test-reader",
      brokers: BROKERS,
    });
    const producer = (id: string) =>
      kafka.producer({
        transactionalId: `test-reader-${id}-${crypto.randomUUID().slice(0, 8)}`,
        idempotent: true,
        maxInFlightRequests: 1,
      });
    const p1 = producer("p1");
    const p2 = producer("p2");
    const plain = kafka.producer();
    await Promise.all([p1.connect(), p2.connect(), plain.connect()]);
    type Txn = Awaited<ReturnType<typeof p1.transaction>>;
    const send = (t: Txn | typeof plain, value: string, partition = 0) =>
      t.send({ topic, acks: -1, messages: [{ key: "k", value: Buffer.from(value), partition }] });
    const groupsBefore = new Set(await groupIds());
    let reader: PartitionReader | undefined;
    try {
      // Aborted transactions interleaved with committed ones, listed by the
      // broker out of offset order (p2 aborts before p1, which began first).
      const t1 = await p1.transaction();
      await send(t1, "aborted-p1-a");
      const t2 = await p2.transaction();
      await send(t2, "aborted-p2");
      await send(t1, "aborted-p1-b");
      await send(t2, "other-partition", 1);
      await t2.abort();
      await t1.abort();
      await send(plain, "plain");
      const t3 = await p1.transaction();
      await send(t3, "committed-p1");
      await send(t3, "other-partition", 1);
      await t3.commit();
      const t4 = await p2.transaction();
      await send(t4, "committed-p2-a");
      await send(t4, "committed-p2-b");
      await t4.commit();

      reader = await PartitionReader.open(kafka, topic, 0);
      const end = await withAdmin(async (a) =>
        Number((await a.fetchTopicOffsets(topic)).find((p) => p.partition === 0)!.high)
      );
      const values: string[] = [];
      for (let reads = 0; reader.position < end; reads++) {
        assert.ok(reads < 100, `the reader stalled at ${reader.position} of ${end}`);
        values.push(...(await reader.next(100)).map((r) => r.value!.toString()));
      }
      assert.deepEqual(values, ["plain", "committed-p1", "committed-p2-a", "committed-p2-b"]);
      assert.equal(reader.position, end, "past the last commit marker");

      // It reads on from there: a later commit, and nothing when there is nothing.
      const t5 = await p1.transaction();
      await send(t5, "later");
      await t5.commit();
      const later: string[] = [];
      for (let reads = 0; later.length === 0; reads++) {
        assert.ok(reads < 100, "the later record never came");
        later.push(...(await reader.next(100)).map((r) => r.value!.toString()));
      }
      assert.deepEqual(later, ["later"]);
      assert.deepEqual(await reader.next(100), []);
    } finally {
      await reader?.close();
      await Promise.all([p1.disconnect(), p2.disconnect(), plain.disconnect()]);
    }
    const groupsAfter = await groupIds();
    assert.deepEqual(groupsAfter.filter((g) => !groupsBefore.has(g)), [], "no group was joined");
  },
);
