/**
 * The group-less partition reader a takeover restores its state with
 * (jobs/lib/partition_reader.ts), on the real cluster.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { TOPICS } from "../stacks/topology.ts";
import { createKafka } from "../jobs/lib/kafka.ts";
import { PartitionReader } from "../jobs/lib/partition_reader.ts";
import type { DecodedRecord } from "../jobs/lib/fetch_decode.ts";
import type { Kafka } from "kafkajs";
import { BROKERS, freshTopic, groupIds, withAdmin } from "./helpers/cluster.ts";

const kafkaTest = { sanitizeOps: false, sanitizeResources: false };
const kafka = createKafka({ principal: "admin", clientId: "txpipe-test-reader", brokers: BROKERS });

/** A transactional producer with a fresh id. */
function producer(label: string) {
  return kafka.producer({
    transactionalId: `test-reader-${label}-${crypto.randomUUID().slice(0, 8)}`,
    idempotent: true,
    maxInFlightRequests: 1,
  });
}

Deno.test(
  "partition reader: one partition's committed records in order, aborted transactions and markers passed over, the position at the end, and no consumer group",
  kafkaTest,
  async () => {
    const topic = await freshTopic(TOPICS.aggregates, "partition_reader");
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

Deno.test(
  "partition reader: reads on, nothing lost or repeated, after its partition's leader moves to another broker",
  kafkaTest,
  async () => {
    const topic = await freshTopic(TOPICS.aggregates, "reader_leader_moves");
    const p = producer("moves");
    await p.connect();
    const commit = async (values: string[]) => {
      const t = await p.transaction();
      await t.send({
        topic,
        acks: -1,
        messages: values.map((v) => ({ key: "k", value: Buffer.from(v), partition: 0 })),
      });
      await t.commit();
    };
    const leaderOf0 = () =>
      withAdmin(async (a) =>
        (await a.fetchTopicMetadata({ topics: [topic] })).topics[0].partitions
          .find((p) => p.partitionId === 0)!
      );
    let reader: PartitionReader | undefined;
    const got: string[] = [];
    const readUntil = async (n: number) => {
      for (let reads = 0; got.length < n; reads++) {
        assert.ok(reads < 600, `read ${got.length} of ${n}: the reader did not read on`);
        got.push(...(await reader!.next(100)).map((r) => r.value!.toString()));
      }
    };
    try {
      await commit(["a", "b"]);
      reader = await PartitionReader.open(kafka, topic, 0);
      await readUntil(2);
      // The replicas rotated: the controller then makes the new first one the leader.
      const before = await leaderOf0();
      const replicas = [...before.replicas.slice(1), before.replicas[0]];
      await withAdmin((a) =>
        a.alterPartitionReassignments({
          topics: [{ topic, partitionAssignment: [{ partition: 0, replicas }] }],
        })
      );
      for (let tries = 0; (await leaderOf0()).leader === before.leader; tries++) {
        assert.ok(tries < 300, "the leader did not move within 60 s");
        await new Promise((r) => setTimeout(r, 200));
      }
      // The reader still asks the broker it knew, now a follower, which answers a Fetch v11 of a
      // consumer too (KIP-392); a broker that refuses sends it to the new leader (the stand-in
      // tests below).
      await commit(["c", "d"]);
      await readUntil(4);
      assert.deepEqual(got, ["a", "b", "c", "d"]);
      assert.deepEqual(await reader.next(100), [], "nothing read twice");
    } finally {
      await reader?.close();
      await p.disconnect();
    }
  },
);

/** A fetched record as the decoder gives it (the fields the reader reads). */
function fetched(offset: number, value: string, control = false): DecodedRecord {
  return {
    offset: String(offset),
    value: Buffer.from(value),
    key: null,
    isControlRecord: control,
  } as unknown as DecodedRecord;
}

/**
 * A stand-in for kafkajs's cluster under the private factory the reader
 * uses: each fetch answers the next of `answers` (records, or an error to
 * throw), and the calls are counted.
 */
type Fetched = { partition: number; fetchOffset: string };

function standIn(answers: Array<DecodedRecord[] | Error>) {
  const calls = { fetches: [] as string[], refreshes: 0, disconnects: 0 };
  const cluster = {
    connect: () => Promise.resolve(),
    disconnect: () => (calls.disconnects++, Promise.resolve()),
    addTargetTopic: () => Promise.resolve(),
    refreshMetadata: () => (calls.refreshes++, Promise.resolve()),
    findLeaderForPartitions: () => ({ "1": [0] }),
    findBroker: () =>
      Promise.resolve({
        fetch: (r: { topics: Array<{ partitions: Array<Fetched> }> }) => {
          const { partition, fetchOffset } = r.topics[0].partitions[0];
          calls.fetches.push(fetchOffset);
          const answer = answers.shift() ?? [];
          if (answer instanceof Error) return Promise.reject(answer);
          return Promise.resolve({
            responses: [{ partitions: [{ partition, messages: answer }] }],
          });
        },
      }),
    fetchTopicsOffset: (
      topics: Array<{ topic: string; partitions: Array<{ partition: number }> }>,
    ) =>
      Promise.resolve(topics.map((t) => ({
        topic: t.topic,
        partitions: t.partitions.map((p) => ({ partition: p.partition, offset: "10" })),
      }))),
  };
  const kafka = { [Symbol("private:Kafka:createCluster")]: () => cluster } as unknown as Kafka;
  return { kafka, calls };
}

Deno.test("partition reader: from the first offset, whole batches' earlier records and control records passed over; a leader that moved or a lost connection is retried, any other error thrown", async () => {
  const notLeader = Object.assign(new Error("not the leader"), {
    name: "KafkaJSProtocolError",
    type: "NOT_LEADER_OR_FOLLOWER",
    retriable: true,
  });
  const refused = Object.assign(new Error("not authorized"), {
    name: "KafkaJSProtocolError",
    type: "TOPIC_AUTHORIZATION_FAILED",
    retriable: false,
  });
  const { kafka, calls } = standIn([
    // A batch from 8 (a fetch returns whole batches), a marker at 12.
    [
      fetched(8, "old"),
      fetched(9, "old"),
      fetched(10, "a"),
      fetched(11, "b"),
      fetched(12, "", true),
    ],
    notLeader,
    [fetched(13, "c")],
    refused,
  ]);
  const reader = await PartitionReader.open(kafka, "t", 0);
  assert.equal(reader.position, -1);
  assert.deepEqual((await reader.next(100)).map((r) => r.value!.toString()), ["a", "b"]);
  assert.equal(reader.position, 13, "past the marker");
  assert.deepEqual(await reader.next(100), [], "the leader moved: nothing, and no error");
  assert.equal(calls.refreshes, 1, "the metadata asked for again");
  assert.deepEqual((await reader.next(100)).map((r) => r.value!.toString()), ["c"]);
  await assert.rejects(reader.next(100), /not authorized/);
  assert.deepEqual(calls.fetches, ["10", "13", "13", "14"], "each fetch from the position");
  await reader.close();
  await reader.close();
  assert.equal(calls.disconnects, 1, "the connections go once");
});

Deno.test("partition reader: readers opened together share their connections until the last one closes; a closed reader's errors are thrown", async () => {
  const lost = Object.assign(new Error("Closed connection"), { name: "KafkaJSConnectionError" });
  const { kafka, calls } = standIn([lost, lost]);
  const [r0, r1] = await PartitionReader.openAll(kafka, "t", [0, 1]);
  assert.deepEqual(await r0.next(100), [], "a lost connection is retried");
  await r0.close();
  assert.equal(calls.disconnects, 0, "r1 still reads");
  await r1.close();
  assert.equal(calls.disconnects, 1);
  await assert.rejects(r1.next(100), /Closed connection/, "closed: the error is the caller's");
});
