/** Kafka client plumbing of jobs/lib/kafka.ts that needs no cluster. */
import assert from "node:assert/strict";
import type { Consumer } from "kafkajs";
import { subscribeWhenKnown } from "../jobs/lib/kafka.ts";

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
