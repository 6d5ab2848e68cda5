/**
 * The kafkajs produce patch of jobs/lib/produce_timeout.ts, on kafkajs's own
 * Broker.produce with stand-in brokers (no Kafka): a timed-out request ends
 * its connection, and revoked records are never sent again.
 * tests/produce_outage_test.ts shows its effect on the real cluster.
 */
import assert from "node:assert/strict";
import Broker from "kafkajs/src/broker/index.js";
import kafkaErrors from "kafkajs/src/errors.js";
import { revoke, REVOKED_MESSAGE, wasSent } from "../jobs/lib/produce_timeout.ts";
import { patchKafkajs } from "../jobs/lib/kafkajs_patches.ts";

const TOPIC = "t";

patchKafkajs();
// deno-lint-ignore no-explicit-any
const produce = (Broker.prototype as any).produce;

/** A kafkajs Broker whose produce request times out at once. */
function timingOutBroker() {
  return {
    disconnected: false,
    connectionPool: { host: "127.0.0.1", port: 9094 },
    disconnect() {
      this.disconnected = true;
      return Promise.resolve();
    },
    lookupRequest() {
      throw new kafkaErrors.KafkaJSRequestTimeoutError(
        "Request Produce(key: 0, version: 7) timed out",
      );
    },
  };
}

function produceRequest(messages: object[], transactionalId?: string) {
  return {
    transactionalId,
    topicData: [{ topic: TOPIC, partitions: [{ partition: 0, messages }] }],
  };
}

Deno.test("produce_timeout: a timed-out produce request of an idempotent producer closes its connection and is reported as a closed connection, so kafkajs finds the new leader", async () => {
  const broker = timingOutBroker();
  await assert.rejects(
    () => produce.call(broker, produceRequest([{ value: "a" }])),
    (err: Error) => {
      assert.equal(err.name, "KafkaJSConnectionClosedError");
      assert.match(err.message, /timed out; connection to 127\.0\.0\.1:9094 closed/);
      assert.equal((err as unknown as { host: string }).host, "127.0.0.1");
      return true;
    },
  );
  assert.equal(broker.disconnected, true);
});

Deno.test("produce_timeout: records handed to a connection are known as possibly written", async () => {
  const message = { value: "b" };
  await produce.call(timingOutBroker(), produceRequest([message])).catch(() => {});
  assert.equal(wasSent([message]), true);
});

Deno.test("produce_timeout: a transactional producer's timed-out request keeps kafkajs's behaviour", async () => {
  const broker = timingOutBroker();
  await assert.rejects(
    () => produce.call(broker, produceRequest([{ value: "a" }], "txn-1")),
    (err: Error) => err.name === "KafkaJSRequestTimeoutError",
  );
  assert.equal(broker.disconnected, false);
});

Deno.test("produce_timeout: a request carrying revoked messages is refused before it is sent, with an error kafkajs does not retry", async () => {
  const broker = timingOutBroker();
  const message = { value: "a" };
  revoke([message]);
  await assert.rejects(
    () => produce.call(broker, produceRequest([message])),
    (err: Error & { retriable?: boolean }) => {
      assert.equal(err.message, REVOKED_MESSAGE);
      assert.equal(err.retriable, false);
      return true;
    },
  );
  assert.equal(broker.disconnected, false, "nothing was sent");
  assert.equal(wasSent([message]), false);
});
