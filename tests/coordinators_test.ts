/**
 * A transaction's coordinators as txpipe's clients handle them
 * (jobs/lib/coordinators.ts): a request retried on a coordinator that loads,
 * sent again to the one found anew when it moved, other errors untouched;
 * then, on the real cluster, a transactional producer that asks Kafka for
 * its coordinator once. tests/detect_test.ts moves every coordinator under
 * a running job.
 */
import assert from "node:assert/strict";
import { createErrorFromCode } from "kafkajs/src/protocol/error.js";
import { TOPICS } from "../stacks/topology.ts";
import { createKafka, PARTITIONER, PRODUCER_RETRY } from "../jobs/lib/kafka.ts";
import {
  coordinatorError,
  coordinatorLookups,
  coordinatorRequest,
  coordinatorRetries,
  FOUND_BY,
  whileCoordinatorMoves,
} from "../jobs/lib/coordinators.ts";
import { BROKERS, freshTopic, readTopic } from "./helpers/cluster.ts";

const kafkaTest = { sanitizeOps: false, sanitizeResources: false };

/** kafkajs's own errors for Kafka's codes 14 (loading), 15 (not available), 16 (not coordinator) and 49. */
const LOADING = createErrorFromCode(14);
const NOT_AVAILABLE = createErrorFromCode(15);
const NOT_COORDINATOR = createErrorFromCode(16);
const INVALID_PRODUCER_ID_MAPPING = createErrorFromCode(49);

/** A stand-in cluster whose coordinator lookups answer `next` and are recorded. */
function standInCluster(next: { nodeId: number }) {
  const lookups: Array<{ groupId: string; coordinatorType?: number }> = [];
  return {
    lookups,
    findGroupCoordinator(args: { groupId: string; coordinatorType?: number }) {
      lookups.push(args);
      return Promise.resolve(next);
    },
    findBroker: () => Promise.resolve(next),
  };
}

Deno.test("coordinators: kafkajs's errors for a coordinator that loads or moved are told apart from the rest", () => {
  assert.equal(coordinatorError(LOADING), "loading");
  assert.equal(coordinatorError(NOT_COORDINATOR), "moved");
  assert.equal(coordinatorError(NOT_AVAILABLE), "moved");
  assert.equal(coordinatorError(INVALID_PRODUCER_ID_MAPPING), undefined);
  assert.equal(coordinatorError(new Error("ECONNREFUSED")), undefined);
  assert.equal(coordinatorError(undefined), undefined);
});

Deno.test("coordinators: a request to a coordinator that is loading is sent again to it until it answers", async () => {
  const broker = { nodeId: 1 };
  const sentTo: number[] = [];
  const before = coordinatorRetries.endTxn.loading;
  const result = await coordinatorRequest(
    "endTxn",
    broker,
    { transactionalId: "t-1" },
    (b) => {
      sentTo.push(b.nodeId!);
      return sentTo.length <= 3 ? Promise.reject(LOADING) : Promise.resolve("committed");
    },
  );
  assert.equal(result, "committed");
  assert.deepEqual(sentTo, [1, 1, 1, 1]);
  assert.equal(coordinatorRetries.endTxn.loading - before, 3);
});

Deno.test("coordinators: a request to a coordinator that moved goes to the one found anew: the transactional id's transaction coordinator, the group's group coordinator", async () => {
  for (
    const [name, request, expected] of [
      ["addOffsetsToTxn", { transactionalId: "t-2", groupId: "g" }, {
        groupId: "t-2",
        coordinatorType: 1,
      }],
      ["txnOffsetCommit", { transactionalId: "t-2", groupId: "g" }, {
        groupId: "g",
        coordinatorType: 0,
      }],
    ] as const
  ) {
    const cluster = standInCluster({ nodeId: 2 });
    const old = { nodeId: 1, [FOUND_BY]: cluster };
    const sentTo: number[] = [];
    const result = await coordinatorRequest(name, old, request, (b) => {
      sentTo.push(b.nodeId!);
      return b.nodeId === 1 ? Promise.reject(NOT_COORDINATOR) : Promise.resolve("done");
    });
    assert.equal(result, "done");
    assert.deepEqual(sentTo, [1, 2], name);
    assert.deepEqual(cluster.lookups, [expected], name);
  }
});

Deno.test("coordinators: any other error is thrown at once; so is a move when it is not known which client found the coordinator", async () => {
  let calls = 0;
  const cluster = standInCluster({ nodeId: 2 });
  await assert.rejects(
    coordinatorRequest("addPartitionsToTxn", { nodeId: 1, [FOUND_BY]: cluster }, {
      transactionalId: "t-3",
    }, () => {
      calls++;
      return Promise.reject(INVALID_PRODUCER_ID_MAPPING);
    }),
    (err) => err === INVALID_PRODUCER_ID_MAPPING,
  );
  await assert.rejects(
    coordinatorRequest("endTxn", { nodeId: 1 }, { transactionalId: "t-3" }, () => {
      calls++;
      return Promise.reject(NOT_COORDINATOR);
    }),
    (err) => err === NOT_COORDINATOR,
  );
  assert.equal(calls, 2);
  assert.deepEqual(cluster.lookups, []);
});

Deno.test("coordinators: past the deadline the error goes to kafkajs", async () => {
  let calls = 0;
  await assert.rejects(
    coordinatorRequest("endTxn", { nodeId: 1 }, { transactionalId: "t-4" }, () => {
      calls++;
      return Promise.reject(LOADING);
    }, 100),
    (err) => err === LOADING,
  );
  // Waits of 2, 4, 8, 16 and 32 ms fit in 100 ms, the next 50 does not.
  assert.ok(calls >= 4 && calls <= 6, `retried until the deadline (calls: ${calls})`);
});

Deno.test("coordinators: a call that finds its coordinator itself is repeated while it loads or moves, not on other errors", async () => {
  const errors = [LOADING, NOT_COORDINATOR];
  let calls = 0;
  assert.equal(
    await whileCoordinatorMoves(() => {
      const err = errors[calls++];
      return err ? Promise.reject(err) : Promise.resolve("offsets");
    }),
    "offsets",
  );
  assert.equal(calls, 3);
  await assert.rejects(
    whileCoordinatorMoves(() => Promise.reject(INVALID_PRODUCER_ID_MAPPING)),
    (err) => err === INVALID_PRODUCER_ID_MAPPING,
  );
});

Deno.test(
  "coordinators: a transactional producer asks Kafka for its transaction coordinator once, then sends every transaction's requests to it; every record is committed once",
  kafkaTest,
  async () => {
    const topic = await freshTopic(TOPICS.aggregates, "coordinators");
    const kafka = createKafka({ principal: "admin", clientId: "txpipe-test", brokers: BROKERS });
    const producer = kafka.producer({
      transactionalId: `test-coordinators-${crypto.randomUUID().slice(0, 8)}`,
      idempotent: true,
      maxInFlightRequests: 1,
      retry: PRODUCER_RETRY,
      createPartitioner: PARTITIONER,
    });
    // Every retry on a coordinator that loads or moved may cost one more lookup
    // (the memory is forgotten at any error): counted, so that a coordinator
    // loading just then (a cluster just started) is not taken for a lookup too many.
    const retries = () =>
      Object.values(coordinatorRetries).reduce((n, r) => n + r.loading + r.moved, 0);
    const before = { ...coordinatorLookups, retries: retries() };
    await producer.connect(); // InitProducerId: the one lookup
    const transactions = 10;
    try {
      for (let t = 0; t < transactions; t++) {
        const txn = await producer.transaction();
        await txn.send({ topic, acks: -1, messages: [{ key: "k", value: `t${t}`, partition: 0 }] });
        await txn.sendOffsets({
          consumerGroupId: `test-coordinators-group-${crypto.randomUUID().slice(0, 8)}`,
          topics: [{ topic, partitions: [{ partition: 0, offset: String(t + 1) }] }],
        });
        await txn.commit();
      }
    } finally {
      await producer.disconnect();
    }
    const retried = retries() - before.retries;
    const asked = coordinatorLookups.asked - before.asked;
    assert.ok(
      asked >= 1 && asked <= 1 + retried,
      `asked Kafka once (${asked}; ${retried} retries)`,
    );
    // AddPartitionsToTxn, AddOffsetsToTxn and EndTxn of every transaction.
    const remembered = coordinatorLookups.remembered - before.remembered;
    assert.ok(
      remembered <= 3 * transactions && remembered >= 3 * transactions - retried,
      `every other lookup remembered (${remembered} of ${3 * transactions}; ${retried} retries)`,
    );
    const records = await readTopic(topic, { expected: transactions });
    assert.deepEqual(
      records.map((r) => new TextDecoder().decode(r.value!)),
      Array.from({ length: transactions }, (_, t) => `t${t}`),
    );
  },
);
