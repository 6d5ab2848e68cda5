/**
 * The producer's kafkajs patches for speed (jobs/lib/record_batch.ts: produce
 * requests encoded by txpipe; jobs/lib/group_by_partition.ts: kafkajs's
 * grouping in linear time): byte for byte what kafkajs 2.2.4 would send, and
 * records read back from the real cluster as sent, in order.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import type { Message } from "kafkajs";
import Long from "kafkajs/src/utils/long.js";
import crc32C from "kafkajs/src/protocol/recordBatch/crc32C/index.js";
import produceV3 from "kafkajs/src/protocol/requests/produce/v3/request.js";
import kafkajsGrouping from "kafkajs/src/producer/groupMessagesPerPartition.js";
import { groupMessagesPerPartition } from "../jobs/lib/group_by_partition.ts";
import {
  crc32c,
  encodeProduce,
  encodeRecords,
  fastRequests,
  type ProduceArgs,
} from "../jobs/lib/record_batch.ts";
import { Delivery } from "../jobs/lib/delivery.ts";
import { createLogger } from "../jobs/lib/log.ts";
import { createKafka, PARTITIONER, PartitionRouter, PRODUCER_RETRY } from "../jobs/lib/kafka.ts";
import { TOPICS } from "../stacks/topology.ts";
import { BROKERS, freshTopic, readTopic } from "./helpers/cluster.ts";

const kafkaTest = { sanitizeOps: false, sanitizeResources: false };

/** Messages like the producer's, and the odd ones kafkajs also takes. */
function sampleMessages(n: number): Message[] {
  const out: Message[] = [];
  for (let i = 0; i < n; i++) {
    const m: Message = {
      key: i % 7 === 0
        ? null
        : i % 5 === 0
        ? Buffer.from(`bytes-${i}`)
        : i % 2 === 0
        ? `user-${i}-é`
        : `user-${i}`,
      value: i % 11 === 0
        ? `{"i":${i},"s":"ünïcode"}`.repeat(1 + i % 9) // UTF-8, short and long
        : i % 4 === 1
        ? `{"i":${i}}`.repeat(1 + i % 90) // ASCII strings, short and long
        : Buffer.from(`{"i":${i}}`.repeat(1 + i % 90)),
    };
    if (i % 3 === 0) {
      m.headers = { "txpipe-fraud-pattern": "velocity_burst", h2: Buffer.from([i % 256]) };
    }
    if (i % 13 === 0) m.headers = { multi: ["a", "b"] };
    out.push(m);
  }
  return out;
}

Deno.test("record batch: CRC32C equals kafkajs's for every length and offset", () => {
  const buf = new Uint8Array(600).map((_, i) => (i * 131 + 7) & 0xff);
  for (let len = 0; len < 70; len++) {
    for (const from of [0, 1, 3]) {
      const part = buf.subarray(from, from + len);
      assert.equal(crc32c(part), crc32C(Buffer.from(part)), `length ${len} from ${from}`);
    }
  }
  assert.equal(crc32c(buf), crc32C(Buffer.from(buf)));
  assert.equal(crc32c(new TextEncoder().encode("123456789")), 0xe3069283); // the check value
});

Deno.test("record batch: a produce request is byte for byte kafkajs's (v3 body, records, headers, sequence, CRC)", async () => {
  const now = Date.now;
  Date.now = () => 1_750_000_000_123;
  try {
    const a = sampleMessages(300);
    const b = sampleMessages(40).slice(5);
    const args: ProduceArgs = {
      acks: -1,
      timeout: 30_000,
      transactionalId: null,
      producerId: Long.fromValue(123456789012),
      producerEpoch: 3,
      topicData: [{
        topic: "financial_transactions",
        partitions: [
          { partition: 2, firstSequence: 1000, messages: a },
          { partition: 4, firstSequence: 7, messages: b },
        ],
      }],
    };
    const theirs = await produceV3({ ...args, compression: 0 }).encode();
    const ours = encodeProduce(args, [[encodeRecords(a), encodeRecords(b)]]);
    assert.deepEqual(Buffer.from(ours), theirs.buffer);
  } finally {
    Date.now = now;
  }
});

Deno.test("record batch: messages with a timestamp are left to kafkajs", () => {
  assert.throws(() => encodeRecords([{ value: "x", timestamp: "1" }]), /timestamp/);
});

Deno.test("group by partition: the same grouping as kafkajs's, in linear time", () => {
  const partitionMetadata = Array.from({ length: 5 }, (_, i) => ({
    partitionId: i,
    leader: 0,
    partitionErrorCode: 0,
    replicas: [],
    isr: [],
  }));
  // (Keyless messages would go to a random partition: every message has a key or a partition.)
  const messages: Message[] = Array.from({ length: 2000 }, (_, i) => ({
    key: `user-${i % 300}`,
    value: `${i}`,
    ...(i % 4 === 0 ? { partition: 1 } : {}),
  }));
  const args = { topic: "t", partitionMetadata, messages };
  const ours = groupMessagesPerPartition({ ...args, partitioner: PARTITIONER() });
  const theirs = kafkajsGrouping({ ...args, partitioner: PARTITIONER() });
  assert.deepEqual(Object.keys(ours), Object.keys(theirs));
  for (const p of Object.keys(theirs)) {
    assert.ok(ours[Number(p)].every((m, i) => m === theirs[p][i]), `partition ${p}`);
  }
  const partitioner = PARTITIONER();
  assert.deepEqual(
    groupMessagesPerPartition({ ...args, partitioner, partitionMetadata: [] }),
    {},
  );
  const big = {
    ...args,
    partitioner,
    messages: Array.from({ length: 200_000 }, (_, i) => ({ value: "v", partition: i % 5 })),
  };
  const started = performance.now();
  groupMessagesPerPartition(big);
  assert.ok(performance.now() - started < 1000, "200,000 messages grouped within a second");
});

Deno.test(
  "record batch: records sent through the delivery, encoded by txpipe, read back from the cluster as sent, in order per partition",
  kafkaTest,
  async () => {
    const topic = await freshTopic(TOPICS.transactions, "record_batch");
    const kafka = createKafka({ principal: "admin", clientId: "txpipe-test", brokers: BROKERS });
    const admin = kafka.admin();
    await admin.connect();
    const log = createLogger("test", { level: "warn" } as never);
    const delivery = new Delivery({
      createProducer: (logCreator) =>
        createKafka({ principal: "admin", clientId: "txpipe-test", brokers: BROKERS, logCreator })
          .producer({
            retry: PRODUCER_RETRY,
            createPartitioner: PARTITIONER,
            idempotent: true,
            maxInFlightRequests: 1,
            allowAutoTopicCreation: false,
          }),
      router: new PartitionRouter(admin),
      topic,
      log,
      deliveryTimeoutMs: 60_000,
    });
    const before = fastRequests.count;
    const sent = sampleMessages(6000).map((m, i) => ({
      ...m,
      key: `k${i % 50}`,
      value: `${i}|${m.value}`,
    }));
    try {
      for (let i = 0; i < sent.length; i += 2000) {
        const result = await delivery.send(sent.slice(i, i + 2000));
        assert.equal(result.error, undefined);
        assert.equal(result.acknowledged, 2000);
      }
    } finally {
      await delivery.close();
      await admin.disconnect();
    }
    assert.ok(fastRequests.count > before, "the requests were encoded by record_batch.ts");
    const read = await readTopic(topic, { expected: sent.length });
    assert.equal(read.length, sent.length);
    const byKey = new Map<string, number>();
    for (
      const r of read.sort((a, b) =>
        a.partition - b.partition || Number(a.offset) - Number(b.offset)
      )
    ) {
      const value = new TextDecoder().decode(r.value!);
      const i = Number(value.split("|")[0]);
      assert.equal(value, String(sent[i].value), `record ${i}: value`);
      assert.equal(r.key, sent[i].key);
      const want: Record<string, string> = {};
      for (const [k, v] of Object.entries(sent[i].headers ?? {})) {
        if (v !== undefined) want[k] = String(Array.isArray(v) ? v[v.length - 1] : v);
      }
      if (!Array.isArray(sent[i].headers?.multi)) {
        assert.deepEqual(r.headers, want, `record ${i}: headers`);
      }
      // One key stays in one partition: its records in the order sent.
      const last = byKey.get(r.key!) ?? -1;
      assert.ok(i > last, `key ${r.key}: record ${i} after ${last}`);
      byKey.set(r.key!, i);
    }
  },
);
