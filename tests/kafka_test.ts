/** Kafka client plumbing of jobs/lib/kafka.ts that needs no cluster. */
import assert from "node:assert/strict";
import type { Admin, Consumer } from "kafkajs";
import {
  KafkaJSAggregateError,
  KafkaJSConnectionError,
  KafkaJSCreateTopicError,
  KafkaJSNonRetriableError,
} from "kafkajs/src/errors.js";
import { createErrorFromCode } from "kafkajs/src/protocol/error.js";
import { ensureTopics, refusals, subscribeWhenKnown } from "../jobs/lib/kafka.ts";
import { topicAs, TOPICS, topology } from "../stacks/topology.ts";

/** A consumer whose subscribe fails with `errors` in turn, then succeeds. */
function consumerFailing(errors: Array<{ type: string }>): { consumer: Consumer; calls: number } {
  const state = { consumer: undefined as unknown as Consumer, calls: 0 };
  state.consumer = {
    subscribe: () => {
      const err = errors[state.calls++];
      return err ? Promise.reject(Object.assign(new Error(err.type), err)) : Promise.resolve();
    },
  } as unknown as Consumer;
  return state;
}

Deno.test("kafka: subscribing to a topic a broker does not know yet is tried again until it does", async () => {
  const c = consumerFailing([
    { type: "UNKNOWN_TOPIC_OR_PARTITION" },
    { type: "LEADER_NOT_AVAILABLE" },
  ]);
  await subscribeWhenKnown(c.consumer, ["t"], { fromBeginning: true });
  assert.equal(c.calls, 3);
});

Deno.test("kafka: any other subscribe error is thrown at once", async () => {
  const c = consumerFailing([{ type: "TOPIC_AUTHORIZATION_FAILED" }]);
  await assert.rejects(
    subscribeWhenKnown(c.consumer, ["t"], { fromBeginning: true }),
    /TOPIC_AUTHORIZATION_FAILED/,
  );
  assert.equal(c.calls, 1);
});

Deno.test("kafka: a topic still unknown past the deadline fails the subscribe", async () => {
  const c = consumerFailing(Array(100).fill({ type: "UNKNOWN_TOPIC_OR_PARTITION" }));
  await assert.rejects(
    subscribeWhenKnown(c.consumer, ["t"], { fromBeginning: true, timeoutMs: 500 }),
    /UNKNOWN_TOPIC_OR_PARTITION/,
  );
  assert.ok(c.calls >= 2 && c.calls <= 4, `tried until the deadline (calls: ${c.calls})`);
});

/**
 * A createTopics failure as kafkajs 2.2.4 throws it: the broker's answer per
 * topic in an aggregate error, wrapped by its retrier.
 */
function createTopicsFailure(answers: Array<[topic: string, code: number]>): Error {
  const perTopic = answers.map(([topic, code]) =>
    new KafkaJSCreateTopicError(createErrorFromCode(code), topic)
  );
  const aggregate = new KafkaJSAggregateError("Topic creation errors", perTopic);
  return new KafkaJSNonRetriableError(aggregate, { cause: aggregate });
}

Deno.test("kafka: a topic Kafka refuses to create is named with the reason; a topic that exists already is no refusal", () => {
  // 38 INVALID_REPLICATION_FACTOR, 36 TOPIC_ALREADY_EXISTS
  assert.deepEqual(refusals(createTopicsFailure([["t1", 38], ["t2", 36]])), [
    "t1: Replication-factor is invalid (INVALID_REPLICATION_FACTOR)",
  ]);
  assert.deepEqual(refusals(createTopicsFailure([["t1", 36], ["t2", 36]])), []);
});

Deno.test("kafka: a timed-out or lost createTopics request is no refusal (the topics may exist yet)", () => {
  // 7 REQUEST_TIMED_OUT: retriable, the controller may still create the topic
  assert.deepEqual(refusals(createTopicsFailure([["t1", 7]])), []);
  const lost = new KafkaJSConnectionError("Connection error: connect ECONNREFUSED");
  assert.deepEqual(refusals(new KafkaJSNonRetriableError(lost, { cause: lost })), []);
});

/**
 * An admin client for a cluster where no topic exists, whose createTopics
 * fails with `failure`, and whose one broker listens on no port (so it never
 * knows a topic); counts the broker-list requests.
 */
function adminFailingCreate(failure: Error): { admin: Admin; brokerLists: number } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const state = { admin: undefined as unknown as Admin, brokerLists: 0 };
  state.admin = {
    listTopics: () => Promise.resolve([]),
    describeCluster: () => {
      state.brokerLists++;
      return Promise.resolve({ brokers: [{ nodeId: 4, host: "127.0.0.1", port }], controller: 4 });
    },
    describeConfigs: () => Promise.reject(new Error("not needed here")),
    createTopics: () => Promise.reject(failure),
  } as unknown as Admin;
  return state;
}

const T1 = topicAs(topology("cluster"), TOPICS.aggregates, "t1");

Deno.test("kafka: ensureTopics fails at once, naming the topic and the reason, when Kafka refuses to create it", async () => {
  const c = adminFailingCreate(createTopicsFailure([["t1", 38]]));
  await assert.rejects(
    ensureTopics(c.admin, [T1]),
    new Error(
      "could not create topics t1: Kafka refused t1: Replication-factor is invalid " +
        "(INVALID_REPLICATION_FACTOR)",
    ),
  );
  assert.equal(c.brokerLists, 1, "no wait for leaders (the one call read the replication limits)");
});

Deno.test("kafka: a createTopics request lost on the way waits for the topics, and when they never come the error says both", async () => {
  const lost = new KafkaJSConnectionError("Connection error: read ECONNRESET");
  const c = adminFailingCreate(new KafkaJSNonRetriableError(lost, { cause: lost }));
  await assert.rejects(
    ensureTopics(c.admin, [T1], { timeoutMs: 500 }),
    /^Error: could not create topics t1: Connection error: read ECONNRESET; topics t1 not ready after 0\.5 s: .*still missing on broker 4 \(127\.0\.0\.1:\d+\): no answer/,
  );
  assert.ok(c.brokerLists >= 3, `asked again until the deadline (${c.brokerLists} broker lists)`);
});
