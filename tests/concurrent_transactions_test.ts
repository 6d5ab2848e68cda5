/**
 * CONCURRENT_TRANSACTIONS as txpipe's clients handle it
 * (jobs/lib/concurrent_transactions.ts): the retry on its own, then
 * back-to-back transactions on the real cluster, which meet it, commit every
 * record exactly once and log no warning.
 */
import assert from "node:assert/strict";
import { TOPICS } from "../stacks/topology.ts";
import { createKafka, PARTITIONER, PRODUCER_RETRY } from "../jobs/lib/kafka.ts";
import {
  concurrentTransactionRetries,
  retryConcurrentTransactions,
  transactionRequest,
} from "../jobs/lib/concurrent_transactions.ts";
import { BROKERS, freshTopic, readTopic } from "./helpers/cluster.ts";
import { captureLogs } from "./helpers/logs.ts";

const kafkaTest = { sanitizeOps: false, sanitizeResources: false };

function brokerError(type: string): Error {
  return Object.assign(new Error(`broker said ${type}`), { type, name: "KafkaJSProtocolError" });
}

Deno.test("concurrent transactions: a request refused with CONCURRENT_TRANSACTIONS is sent again, 2 ms, 4 ms, ... later, at most 50 ms apart", async () => {
  let calls = 0;
  const waits: number[] = [];
  const result = await retryConcurrentTransactions(() => {
    calls++;
    if (calls <= 7) return Promise.reject(brokerError("CONCURRENT_TRANSACTIONS"));
    return Promise.resolve("accepted");
  }, { onRetry: (ms) => waits.push(ms) });
  assert.equal(result, "accepted");
  assert.equal(calls, 8);
  assert.deepEqual(waits, [2, 4, 8, 16, 32, 50, 50]);
});

Deno.test("concurrent transactions: any other error is thrown at once, without a retry", async () => {
  let calls = 0;
  await assert.rejects(
    retryConcurrentTransactions(() => {
      calls++;
      return Promise.reject(brokerError("INVALID_PRODUCER_EPOCH"));
    }),
    /INVALID_PRODUCER_EPOCH/,
  );
  assert.equal(calls, 1);
});

Deno.test("concurrent transactions: past its deadline the error goes to kafkajs", async () => {
  let calls = 0;
  await assert.rejects(
    retryConcurrentTransactions(() => {
      calls++;
      return Promise.reject(brokerError("CONCURRENT_TRANSACTIONS"));
    }, { maxRetryMs: 100 }),
    /CONCURRENT_TRANSACTIONS/,
  );
  // Waits of 2, 4, 8, 16 and 32 ms fit in 100 ms, the next 50 does not: six
  // calls, or fewer when the timers ran late.
  assert.ok(calls >= 4 && calls <= 6, `retried until the deadline (calls: ${calls})`);
});

Deno.test("concurrent transactions: while one request of a transactional id retries, its others wait instead of being refused too", async () => {
  let sent = 0;
  const refused: string[] = [];
  // The broker refuses the first two requests (the previous transaction is
  // still completing), then accepts.
  const broker = (what: string) => () => {
    sent++;
    if (sent <= 2) {
      refused.push(what);
      return Promise.reject(brokerError("CONCURRENT_TRANSACTIONS"));
    }
    return Promise.resolve(what);
  };
  const first = transactionRequest("txn-a", broker("partition 0"));
  await new Promise((r) => setTimeout(r, 5)); // refused once: it is retrying now
  const others = [
    transactionRequest("txn-a", broker("partition 1")),
    transactionRequest("txn-a", broker("partition 2")),
  ];
  assert.deepEqual(await Promise.all([first, ...others]), [
    "partition 0",
    "partition 1",
    "partition 2",
  ]);
  assert.deepEqual(refused, ["partition 0", "partition 0"], "only the first was refused");
  assert.equal(sent, 5, "the first three times, each of the others once");
});

Deno.test({
  name:
    "concurrent transactions: back-to-back transactions retry quietly, log no warning, and commit every record once",
  ...kafkaTest,
  fn: async () => {
    const topic = await freshTopic(TOPICS.aggregates, "concurrent_txn");
    const { lines, logger } = captureLogs("concurrent-txn-test", "debug");
    const kafka = createKafka({
      principal: "admin",
      clientId: "txpipe-test-txn",
      brokers: BROKERS,
      logger,
    });
    const producer = kafka.producer({
      transactionalId: `test-concurrent-txn-${crypto.randomUUID().slice(0, 8)}`,
      idempotent: true,
      maxInFlightRequests: 1,
      retry: PRODUCER_RETRY,
      createPartitioner: PARTITIONER,
    });
    const before = { ...concurrentTransactionRetries };
    const transactions = 40;
    await producer.connect();
    try {
      // Each transaction begins the moment the previous commit returns, while
      // its markers are still being written: the case a stream job meets
      // after every batch.
      for (let t = 0; t < transactions; t++) {
        const txn = await producer.transaction();
        await txn.send({
          topic,
          acks: -1,
          messages: [{ key: `k${t % 3}`, value: `t${t}`, partition: t % 3 }],
        });
        await txn.commit();
      }
    } finally {
      await producer.disconnect();
    }
    await new Promise((r) => setTimeout(r, 50)); // the last lines reach the capture
    const retried = concurrentTransactionRetries.addPartitionsToTxn - before.addPartitionsToTxn;
    assert.ok(
      retried > 0,
      "the transactions met CONCURRENT_TRANSACTIONS (else this proves nothing)",
    );
    const loud = lines.filter((l) => l["log.level"] !== "debug" && l["log.level"] !== "info");
    assert.deepEqual(loud.map((l) => l.message), [], "no warnings or errors");

    const records = await readTopic(topic, { expected: transactions, timeoutMs: 30_000 });
    const values = records.map((r) => new TextDecoder().decode(r.value!)).sort();
    const expected = Array.from({ length: transactions }, (_, t) => `t${t}`).sort();
    assert.deepEqual(values, expected, "every transaction's record, once");
  },
});
