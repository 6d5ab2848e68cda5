/**
 * kafkajs 2.2.4 groups a send's messages by partition in quadratic time: it
 * copies a partition's list for every message it adds
 * (`[...current, message]`), so a request of 1,800 records makes 1.6 million
 * copies (profiled: 15 % of the producer's busy time). This module replaces
 * that function (src/producer/groupMessagesPerPartition.js) with a linear one
 * returning the same grouping: the same partitioner calls, the same lists in
 * the same order, under the same keys.
 *
 * kafkajs takes the function when it loads (`require` in sendMessages.js),
 * so the replacement must be in Node's module cache before then: import this
 * module before anything that imports kafkajs (jobs/produce.ts imports it
 * first). {@link groupingPatched} says whether it came in time; when it did
 * not, kafkajs's own grouping stays, slower and otherwise the same.
 *
 * @module
 */
import { createRequire } from "node:module";
import type { Message, PartitionerArgs } from "kafkajs";

/** kafkajs's grouping, in linear time. */
export function groupMessagesPerPartition(
  { topic, partitionMetadata, messages, partitioner }: {
    topic: string;
    partitionMetadata: PartitionerArgs["partitionMetadata"];
    messages: Message[];
    partitioner: (args: PartitionerArgs) => number;
  },
): Record<number, Message[]> {
  const out: Record<number, Message[]> = {};
  if (partitionMetadata.length === 0) return out;
  for (const message of messages) {
    const partition = partitioner({ topic, partitionMetadata, message });
    (out[partition] ??= []).push(message);
  }
  return out;
}

const require = createRequire(import.meta.url);
const GROUPING = "kafkajs/src/producer/groupMessagesPerPartition.js";
const path = require.resolve(GROUPING);
const dir = path.slice(0, path.lastIndexOf("/") + 1);

/** Whether kafkajs uses {@link groupMessagesPerPartition} (it was not loaded before this module). */
export const groupingPatched: boolean = !(`${dir}sendMessages.js` in require.cache);

if (groupingPatched) {
  const original = require(GROUPING);
  if (typeof original !== "function") {
    throw new Error(`${GROUPING} is not a function: expected kafkajs 2.2.4`);
  }
  require.cache[path]!.exports = groupMessagesPerPartition;
}
