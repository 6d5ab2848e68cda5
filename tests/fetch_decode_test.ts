/**
 * txpipe's Fetch v11 decoder (jobs/lib/fetch_decode.ts) returns what
 * kafkajs's own decoder returns, field by field: on Fetch responses built
 * here with kafkajs's record batch encoder (the corners: headers, nulls,
 * compression, control batches, offsets past 2^53, a truncated last batch,
 * a legacy message set), and on every Fetch response a consumer received
 * from the real cluster over transactional, aborted, compressed and plain
 * records.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import Encoder from "kafkajs/src/protocol/encoder.js";
import recordBatchModule from "kafkajs/src/protocol/recordBatch/v0/index.js";
import Record from "kafkajs/src/protocol/recordBatch/record/v0/index.js";
import MessageSet from "kafkajs/src/protocol/messageSet/index.js";
import fetchV11 from "kafkajs/src/protocol/requests/fetch/v11/response.js";
import { CompressionTypes } from "kafkajs";
import { fetchV11Decoder, kafkajsFetchV11Decode } from "../jobs/lib/fetch_decode.ts";
import { createKafka } from "../jobs/lib/kafka.ts";
import { TOPICS } from "../stacks/topology.ts";
import { BROKERS, freshTopic } from "./helpers/cluster.ts";

// deno-lint-ignore no-explicit-any
type Any = any;
const kafkaTest = { sanitizeOps: false, sanitizeResources: false };

/** txpipe's decoder, with kafkajs's as its fallback (as installed). */
const fast = fetchV11Decoder(kafkajsFetchV11Decode);
/** How often the fallback ran. */
let fellBack = 0;
const counted = fetchV11Decoder((raw) => {
  fellBack++;
  return kafkajsFetchV11Decode(raw);
});

interface RecordSpec {
  offsetDelta: number;
  timestampDelta?: number | string;
  key: Buffer | null;
  value: Buffer | null;
  headers?: Record<string, Buffer | null | Array<Buffer | null>>;
}

/** A record batch's bytes, as kafkajs encodes one; `attributes` ORed in after (CRC is not checked). */
async function batch(
  first: string | number,
  records: RecordSpec[],
  opts: {
    compression?: number;
    transactional?: boolean;
    orAttributes?: number;
    producerId?: number;
  } = {},
): Promise<Buffer> {
  const encoded = await (recordBatchModule as Any).RecordBatch({
    compression: opts.compression ?? CompressionTypes.None,
    firstOffset: first,
    firstTimestamp: 1_764_000_000_000,
    maxTimestamp: 1_764_000_009_999,
    partitionLeaderEpoch: 7,
    lastOffsetDelta: records.length - 1,
    transactional: opts.transactional ?? false,
    producerId: opts.producerId ?? 4242,
    producerEpoch: 3,
    firstSequence: 11,
    records: records.map((r) => Record(r as Any)),
  } as Any);
  const bytes = Buffer.from(encoded.buffer);
  if (opts.orAttributes) {
    const at = 8 + 4 + 4 + 1 + 4; // offset, length, leader epoch, magic, CRC
    bytes.writeInt16BE(bytes.readInt16BE(at) | opts.orAttributes, at);
  }
  return bytes;
}

interface PartitionSpec {
  partition: number;
  aborted?: Array<{ producerId: number; firstOffset: number }> | null;
  records: Buffer | null;
}

/** A Fetch v11 response's bytes. */
function response(topics: Array<{ name: string; partitions: PartitionSpec[] }>): Buffer {
  const e = new Encoder().writeInt32(0).writeInt16(0).writeInt32(99).writeInt32(topics.length);
  for (const t of topics) {
    e.writeString(t.name).writeInt32(t.partitions.length);
    for (const p of t.partitions) {
      e.writeInt32(p.partition).writeInt16(0).writeInt64(1000).writeInt64(990).writeInt64(0);
      if (p.aborted === null) e.writeInt32(-1);
      else {
        e.writeInt32(p.aborted?.length ?? 0);
        for (const a of p.aborted ?? []) e.writeInt64(a.producerId).writeInt64(a.firstOffset);
      }
      e.writeInt32(-1); // preferred read replica
      e.writeBytes(p.records);
    }
  }
  return Buffer.from(e.buffer);
}

const b = (s: string) => Buffer.from(s);

async function assertSame(raw: Buffer, what: string): Promise<Any> {
  const ours = await counted(raw);
  const theirs = await kafkajsFetchV11Decode(raw);
  assert.deepStrictEqual(ours, theirs, what);
  return ours;
}

Deno.test("fetch decoding: txpipe's Fetch v11 decoder returns kafkajs's objects, for every corner of the record format", async () => {
  const plain = await batch(100, [
    { offsetDelta: 0, timestampDelta: 0, key: b("k1"), value: b('{"a":1}') },
    { offsetDelta: 1, timestampDelta: 5, key: null, value: b("v") },
    { offsetDelta: 2, timestampDelta: -3, key: b(""), value: null },
    {
      offsetDelta: 3,
      timestampDelta: 1234567,
      key: b("k"),
      value: b("with headers"),
      headers: { one: b("1"), twice: [b("a"), b("b")], "": b("empty name") },
    },
    { offsetDelta: 4, timestampDelta: 0, key: b("ü€"), value: b("ünïcode ✓") },
  ]);
  const gzip = await batch(105, [
    { offsetDelta: 0, key: b("g1"), value: b("compressed one") },
    { offsetDelta: 1, key: b("g2"), value: b("compressed two"), headers: { h: b("x") } },
  ], { compression: CompressionTypes.GZIP });
  const transactional = await batch(107, [
    { offsetDelta: 0, key: b("t"), value: b("in a transaction") },
  ], { transactional: true, producerId: 77 });
  const control = await batch(108, [
    { offsetDelta: 0, key: Buffer.from([0, 0, 0, 0]), value: Buffer.from([0, 0, 0, 0, 0, 0]) },
  ], { transactional: true, producerId: 77, orAttributes: 0x20 });
  const appendTime = await batch(109, [
    { offsetDelta: 0, timestampDelta: 3, key: b("l"), value: b("log append time") },
  ], { orAttributes: 0x8 });
  // Past 2^53: offsets and a timestamp delta only BigInt holds.
  const huge = await batch("9007199254740990", [
    { offsetDelta: 0, key: b("h"), value: b("0") },
    { offsetDelta: 5, timestampDelta: "1125899906842624", key: b("h"), value: b("1") },
  ]);
  const set = Buffer.concat([plain, gzip, transactional, control, appendTime]);
  const decoded = await assertSame(
    response([
      {
        name: "t1",
        partitions: [
          { partition: 0, aborted: [{ producerId: 77, firstOffset: 107 }], records: set },
          { partition: 1, aborted: null, records: huge },
          { partition: 2, records: null },
          { partition: 3, records: Buffer.alloc(0) },
        ],
      },
      { name: "t2", partitions: [{ partition: 0, records: plain }] },
    ]),
    "a response of every kind of batch",
  );
  const p0 = decoded.responses[0].partitions[0];
  assert.deepEqual(p0.messages.map((m: Any) => m.offset), [
    "100",
    "101",
    "102",
    "103",
    "104",
    "105",
    "106",
    "107",
    "108",
    "109",
  ]);
  assert.equal(p0.messages[3].timestamp, String(1_764_000_000_000 + 1234567));
  assert.equal(p0.messages[9].timestamp, "1764000009999", "log append time: the batch's max");
  assert.equal(p0.messages[8].isControlRecord, true);
  assert.deepEqual(
    decoded.responses[0].partitions[1].messages.map((m: Any) => [m.offset, m.timestamp]),
    [["9007199254740990", "1764000000000"], [
      "9007199254740995",
      String(1_764_000_000_000n + 1125899906842624n),
    ]],
  );
  assert.equal(fellBack, 0, "none of these needed kafkajs's decoder");

  // A truncated last batch (maxBytes cut it): dropped, as kafkajs drops it.
  const cut = Buffer.concat([plain, gzip.subarray(0, gzip.length - 10)]);
  const truncated = await assertSame(
    response([{ name: "t", partitions: [{ partition: 0, records: cut }] }]),
    "a truncated last batch",
  );
  assert.equal(truncated.responses[0].partitions[0].messages.length, 5);
  assert.equal(fellBack, 0);

  // A legacy message set (magic 0): kafkajs's decoder does it.
  const legacy = MessageSet({ entries: [{ key: "k", value: "v", offset: "0" }] } as Any);
  await assertSame(
    response([{ name: "t", partitions: [{ partition: 0, records: Buffer.from(legacy.buffer) }] }]),
    "a legacy message set",
  );
  assert.equal(fellBack, 1, "the legacy message set went to kafkajs");

  // Bytes neither can read: kafkajs's error, not another.
  const garbled = response([{ name: "t", partitions: [{ partition: 0, records: plain }] }]);
  const broken = garbled.subarray(0, garbled.length - plain.length + 20);
  broken.writeInt32BE(plain.length, broken.length - 24); // a record set longer than what follows
  await assertSame(broken, "a record set cut short is an empty one");
});

Deno.test("fetch decoding: keys and values are views of the fetched bytes, as kafkajs's are (no copy)", async () => {
  const set = await batch(0, [{ offsetDelta: 0, key: b("key"), value: b("value") }]);
  const raw = response([{ name: "t", partitions: [{ partition: 0, records: set }] }]);
  const m = (await fast(raw)).responses[0].partitions[0].messages[0];
  assert.ok(Buffer.isBuffer(m.value));
  assert.equal(m.value!.buffer, raw.buffer, "a view of the response");
});

Deno.test(
  "fetch decoding: on every Fetch response from the real cluster (transactions committed and aborted, gzip, headers) both decoders agree",
  kafkaTest,
  async () => {
    const topic = await freshTopic(TOPICS.aggregates, "fetch_decode");
    const kafka = createKafka({
      principal: "admin",
      clientId: "txpipe-test-fetch",
      brokers: BROKERS,
    });
    const producer = kafka.producer({
      transactionalId: `test-fetch-${crypto.randomUUID().slice(0, 8)}`,
      idempotent: true,
      maxInFlightRequests: 1,
    });
    await producer.connect();
    const sent: string[] = [];
    try {
      for (let i = 0; i < 6; i++) {
        const t = await producer.transaction();
        const messages = Array.from({ length: 50 }, (_, j) => ({
          key: `k${j % 7}`,
          value: `{"i":${i},"j":${j},"note":"ü"}`,
          headers: j % 2 ? { kind: "odd", tags: ["a", "b"] } : undefined,
          partition: j % 3,
        }));
        await t.send({
          topic,
          acks: -1,
          compression: i === 2 ? CompressionTypes.GZIP : CompressionTypes.None,
          messages,
        });
        if (i === 3) await t.abort();
        else {
          await t.commit();
          sent.push(...messages.map((m) => m.value));
        }
      }
    } finally {
      await producer.disconnect();
    }
    // Every response the consumer gets, captured before decoding.
    const mod = fetchV11 as unknown as { decode: (raw: Buffer) => Promise<Any> };
    const installed = mod.decode;
    const raws: Buffer[] = [];
    mod.decode = (raw) => {
      raws.push(Buffer.from(raw));
      return installed(raw);
    };
    const got: string[] = [];
    const consumer = kafka.consumer({
      groupId: `test-fetch-${crypto.randomUUID().slice(0, 8)}`,
      readUncommitted: false,
      maxBytesPerPartition: 2048, // several fetches, some ending in a truncated batch
    });
    try {
      await consumer.connect();
      await consumer.subscribe({ topic, fromBeginning: true });
      await consumer.run({
        eachMessage: ({ message }) => {
          got.push(String(message.value));
          return Promise.resolve();
        },
      });
      const deadline = Date.now() + 30_000;
      while (got.length < sent.length && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 200));
      }
    } finally {
      mod.decode = installed;
      await consumer.disconnect();
    }
    assert.deepEqual([...got].sort(), [...sent].sort(), "exactly the committed records");
    const before = fellBack;
    let records = 0;
    for (const raw of raws) {
      const ours = await assertSame(raw, "a response from the cluster");
      for (const t of ours.responses) for (const p of t.partitions) records += p.messages.length;
    }
    assert.equal(fellBack, before, "no response from the cluster needed kafkajs's decoder");
    assert.ok(
      records >= 300,
      `the responses held every record, aborted and markers too (${records})`,
    );
  },
);
