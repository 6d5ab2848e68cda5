/**
 * txpipe's partitioner (jobs/lib/partitioner.ts) places every record where
 * kafkajs's DefaultPartitioner (and so the Java client) places it.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { Partitioners } from "kafkajs";
import kafkajsMurmur2 from "kafkajs/src/producer/partitioners/default/murmur2.js";
import {
  JavaCompatiblePartitioner,
  murmur2,
  murmur2String,
  partitionOf,
} from "../jobs/lib/partitioner.ts";

const theirs = kafkajsMurmur2 as unknown as (key: unknown) => number;

function randomString(n: number): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-_:ü€😀";
  let s = "";
  for (let i = 0; i < n; i++) s += alphabet[Math.floor(Math.random() * alphabet.length)];
  return s;
}

Deno.test("partitioner: murmur2 is kafkajs's (and Java's) on random bytes and strings of every length 0-64", () => {
  for (let length = 0; length <= 64; length++) {
    for (let i = 0; i < 30; i++) {
      const bytes = Buffer.from(crypto.getRandomValues(new Uint8Array(length)));
      assert.equal(murmur2(bytes), theirs(bytes), `bytes of length ${length}`);
      const s = randomString(length);
      assert.equal(murmur2String(s), theirs(s), `string ${JSON.stringify(s)}`);
      const ascii = [...s].map((c) => (c.charCodeAt(0) < 0x80 ? c : "a")).join("");
      assert.equal(murmur2String(ascii), theirs(ascii), `ASCII string ${JSON.stringify(ascii)}`);
    }
  }
  // Kafka's own expectations (UtilsTest.testMurmur2 in the Java client).
  const cases: Array<[string, number]> = [
    ["21", -973932308],
    ["foobar", -790332482],
    ["a-little-bit-long-string", -985981536],
    ["a-little-bit-longer-string", -1486304829],
    ["lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971],
    ["abc", 479470107],
  ];
  for (const [s, want] of cases) assert.equal(murmur2(Buffer.from(s)), want, s);
});

Deno.test("partitioner: every kind of record goes where kafkajs's DefaultPartitioner sends it", () => {
  const ours = JavaCompatiblePartitioner();
  const kafkajs = Partitioners.DefaultPartitioner();
  for (const n of [1, 3, 6, 7, 12]) {
    const partitionMetadata = Array.from({ length: n }, (_, i) => ({
      partitionErrorCode: 0,
      partitionId: i,
      leader: 1,
      replicas: [1],
      isr: [1],
    }));
    for (let i = 0; i < 500; i++) {
      const key = i % 3 === 0
        ? Buffer.from(randomString(i % 40))
        : `merchant-${i}-${randomString(5)}`;
      const message = { key, value: "v" };
      const want = kafkajs({ topic: "t", partitionMetadata, message });
      assert.equal(ours({ topic: "t", partitionMetadata, message }), want, `key ${String(key)}`);
      assert.equal(partitionOf(key, n), want);
    }
    const own = { key: "k", value: "v", partition: n - 1 };
    assert.equal(ours({ topic: "t", partitionMetadata, message: own }), n - 1, "its own partition");
    // A plain Uint8Array key is hashed as kafkajs hashes it: as String(key).
    const plain = { key: new Uint8Array([1, 2, 3]) as unknown as Buffer, value: "v" };
    assert.equal(
      ours({ topic: "t", partitionMetadata, message: plain }),
      kafkajs({ topic: "t", partitionMetadata, message: plain }),
    );
  }
  // No key: round robin over the partitions with a leader.
  const partitionMetadata = [0, 1, 2, 3].map((i) => ({
    partitionErrorCode: 0,
    partitionId: i,
    leader: i === 2 ? -1 : 1,
    replicas: [1],
    isr: [1],
  }));
  const picked = Array.from(
    { length: 6 },
    () => ours({ topic: "u", partitionMetadata, message: { value: "v" } }),
  );
  assert.ok(picked.every((p) => p !== 2), "never the partition without a leader");
  assert.deepEqual(new Set(picked), new Set([0, 1, 3]), "every other in turn");
});
