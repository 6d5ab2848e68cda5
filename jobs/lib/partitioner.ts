/**
 * Kafka's default partitioner, as kafkajs 2.2.4's `DefaultPartitioner` and
 * the Java client place a keyed record: `murmur2(key) & 0x7fffffff` modulo
 * the partition count. The same partitions, computed in 32-bit integer
 * arithmetic (`Math.imul`) as Java computes them, where kafkajs emulates it
 * with its BigInt-based `Long`: a dozen BigInt operations per 4 bytes of
 * key. Profiled over the aggregation's catch-up, kafkajs's murmur2 and the
 * `Long` work under it took about 2 % of the busy time (docs/benchmarks.md).
 * String keys made of ASCII are hashed without encoding them first.
 *
 * The unit test compares {@link murmur2} with kafkajs's on random keys and
 * with values from Kafka's own tests.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import type { ICustomPartitioner, PartitionMetadata } from "kafkajs";

const SEED = 0x9747b28c;
const M = 0x5bd1e995;

const utf8 = new TextEncoder();

/** One 4-byte word `k` mixed into the hash `h`. */
function mixWord(h: number, k: number): number {
  k = Math.imul(k, M);
  k ^= k >>> 24;
  k = Math.imul(k, M);
  return Math.imul(h, M) ^ k;
}

/** The last `length & 3` bytes (b0, b1, b2) mixed in, and the final avalanche. */
function finish(h: number, length: number, b0: number, b1: number, b2: number): number {
  const rest = length & 3;
  if (rest === 3) h ^= b2 << 16;
  if (rest >= 2) h ^= b1 << 8;
  if (rest >= 1) h = Math.imul(h ^ b0, M);
  h ^= h >>> 13;
  h = Math.imul(h, M);
  h ^= h >>> 15;
  return h | 0;
}

/** Kafka's murmur2 (Utils.murmur2 in the Java client) of `data`, a signed 32-bit integer. */
export function murmur2(data: Uint8Array): number {
  const length = data.length;
  const words = length & ~3;
  let h = SEED ^ length;
  for (let i = 0; i < words; i += 4) {
    h = mixWord(h, data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24));
  }
  return finish(h, length, data[words], data[words + 1], data[words + 2]);
}

/** {@link murmur2} of a string's UTF-8, without encoding it when it is ASCII. */
export function murmur2String(s: string): number {
  const length = s.length;
  for (let i = 0; i < length; i++) {
    if (s.charCodeAt(i) > 0x7f) return murmur2(utf8.encode(s));
  }
  const words = length & ~3;
  let h = SEED ^ length;
  for (let i = 0; i < words; i += 4) {
    h = mixWord(
      h,
      s.charCodeAt(i) | (s.charCodeAt(i + 1) << 8) | (s.charCodeAt(i + 2) << 16) |
        (s.charCodeAt(i + 3) << 24),
    );
  }
  return finish(h, length, s.charCodeAt(words), s.charCodeAt(words + 1), s.charCodeAt(words + 2));
}

/**
 * The murmur2 of a record key as kafkajs hashes it: a Buffer's bytes as they
 * are, anything else (a plain Uint8Array too) as the UTF-8 of String(key).
 */
export function keyHash(key: unknown): number {
  if (Buffer.isBuffer(key)) return murmur2(key);
  return murmur2String(String(key));
}

/** The partition of a keyed record among `partitions`, as Kafka's default partitioner picks it. */
export function partitionOf(key: unknown, partitions: number): number {
  return (keyHash(key) & 0x7fffffff) % partitions;
}

/**
 * kafkajs's `DefaultPartitioner` (legacy/partitioner.js with the
 * Java-compatible murmur2), with {@link partitionOf} for keyed records: a
 * record's own partition if it has one; by its key's hash if it has a key;
 * otherwise round robin over the partitions with a leader, from a random
 * start.
 */
export const JavaCompatiblePartitioner: ICustomPartitioner = () => {
  const counters = new Map<string, number>();
  return ({ topic, partitionMetadata, message }) => {
    if (message.partition !== null && message.partition !== undefined) return message.partition;
    const numPartitions = partitionMetadata.length;
    if (message.key !== null && message.key !== undefined) {
      return partitionOf(message.key, numPartitions);
    }
    let counter = counters.get(topic) ?? crypto.getRandomValues(new Uint32Array(1))[0];
    counters.set(topic, ++counter);
    const available = partitionMetadata.filter((p: PartitionMetadata) => p.leader >= 0);
    if (available.length > 0) {
      return available[(counter & 0x7fffffff) % available.length].partitionId;
    }
    return (counter & 0x7fffffff) % numPartitions;
  };
};
