/**
 * read_committed that holds with kafkajs 2.2.4 ({@link installReadCommitted},
 * called by patchKafkajs in kafkajs_patches.ts, which createKafka calls: every
 * txpipe client has it).
 *
 * With each fetched partition the broker sends the transactions aborted in
 * the range, and the client must skip their records. kafkajs gets this
 * wrong: it takes the list to be in offset order (the broker lists them in
 * the order they were aborted) and starts skipping at most one aborted
 * transaction per record it passes. When several transactions are aborted
 * close together, as every crash of a stream job does, records of aborted
 * transactions get through, and a producer's later committed records can be
 * skipped. Seen here: after kill -9 of the aggregation, a kafkajs
 * read_committed consumer of the repartition topic read 81 456 records where
 * Kafka's own console consumer read 80 316, and 1 140 transactions were
 * counted twice in the windows.
 *
 * So each Fetch response is filtered here, before kafkajs sees it, as the
 * Java client does: aborted transactions ordered by first offset, every one
 * that starts at or before a record active from that record on, until its
 * producer's ABORT marker. Their records are flagged as control records
 * (kafkajs skips those but still moves past them), and kafkajs gets an empty
 * list and nothing left to skip.
 *
 * @module
 */
// kafkajs's own Fetch response decoders: the same module instances kafkajs
// uses, so replacing `decode` here changes what every consumer receives.
import fetchV4 from "kafkajs/src/protocol/requests/fetch/v4/response.js";
import fetchV5 from "kafkajs/src/protocol/requests/fetch/v5/response.js";
import fetchV6 from "kafkajs/src/protocol/requests/fetch/v6/response.js";
import fetchV7 from "kafkajs/src/protocol/requests/fetch/v7/response.js";
import fetchV8 from "kafkajs/src/protocol/requests/fetch/v8/response.js";
import fetchV9 from "kafkajs/src/protocol/requests/fetch/v9/response.js";
import fetchV10 from "kafkajs/src/protocol/requests/fetch/v10/response.js";
import fetchV11 from "kafkajs/src/protocol/requests/fetch/v11/response.js";

/** A transaction the broker reports as aborted in a fetched range. */
export interface AbortedTransaction {
  producerId: string;
  firstOffset: string;
}

/** A fetched record as kafkajs decodes it (the fields used here). */
export interface FetchedRecord {
  offset: string;
  key: Uint8Array | null;
  isControlRecord?: boolean;
  batchContext?: { producerId?: string; inTransaction?: boolean };
}

/** A control record's type is its key's second int16: 0 = ABORT, 1 = COMMIT. */
function isAbortMarker(r: FetchedRecord): boolean {
  const key = r.key;
  return !!r.isControlRecord && key !== null && key.length >= 4 && key[2] === 0 && key[3] === 0;
}

/**
 * The records of one fetched partition without those of `aborted`
 * transactions. Control records stay: kafkajs needs them to move past a
 * transaction's end.
 */
export function dropAborted<R extends FetchedRecord>(
  records: readonly R[],
  aborted: readonly AbortedTransaction[],
): R[] {
  if (aborted.length === 0) return [...records];
  const queue = [...aborted].sort((a, b) => {
    const d = BigInt(a.firstOffset) - BigInt(b.firstOffset);
    return d < 0n ? -1 : d > 0n ? 1 : 0;
  });
  const skipping = new Set<string>();
  let next = 0;
  return records.filter((r) => {
    const offset = BigInt(r.offset);
    while (next < queue.length && BigInt(queue[next].firstOffset) <= offset) {
      skipping.add(queue[next++].producerId);
    }
    const producerId = r.batchContext?.producerId ?? "";
    if (r.isControlRecord) {
      if (isAbortMarker(r)) skipping.delete(producerId);
      return true;
    }
    return !(r.batchContext?.inTransaction && skipping.has(producerId));
  });
}

/**
 * Flags the records of `aborted` transactions among `records` as control
 * records, in place, and returns how many it flagged. kafkajs never delivers
 * a control record but moves its position past every record it fetched, so
 * the aborted ones are skipped. Removing them instead would stall a reader: a
 * fetch holding only aborted records (a transaction larger than the fetch
 * size) would leave kafkajs nothing to move past, and it would fetch the same
 * offset forever.
 */
export function hideAborted<R extends FetchedRecord>(
  records: R[],
  aborted: readonly AbortedTransaction[],
): number {
  const kept = new Set<R>(dropAborted(records, aborted));
  let hidden = 0;
  for (const r of records) {
    if (!kept.has(r)) {
      r.isControlRecord = true;
      hidden++;
    }
  }
  return hidden;
}

interface FetchPartition {
  abortedTransactions?: AbortedTransaction[] | null;
  lastStableOffset?: string;
  messages: FetchedRecord[];
}

/** The last stable offset fetched with each partition's records, by their list. */
const stableOffsets = new WeakMap<object, number>();

/**
 * The last stable offset the broker sent with a fetched partition, looked up
 * by the list of records kafkajs decoded from it (a kafkajs batch's
 * `rawMessages`): a read_committed reader has read all there is to read for
 * now once its position reaches it. Undefined for a list no Fetch response
 * (v4 or later) decoded.
 */
export function lastStableOffset(records: unknown): number | undefined {
  return typeof records === "object" && records !== null ? stableOffsets.get(records) : undefined;
}
interface FetchResponse {
  responses?: Array<{ partitions?: FetchPartition[] }>;
}
interface FetchDecoder {
  decode: (raw: unknown) => Promise<FetchResponse>;
}

const PATCHED = Symbol.for("txpipe.readCommitted");

/**
 * Replaces kafkajs's Fetch response decoders (v4 to v11) with ones that
 * filter aborted transactions as described above and remember each
 * partition's last stable offset ({@link lastStableOffset}). Idempotent. Called by
 * patchKafkajs (kafkajs_patches.ts), which createKafka calls.
 */
export function installReadCommitted(): void {
  for (const mod of [fetchV4, fetchV5, fetchV6, fetchV7, fetchV8, fetchV9, fetchV10, fetchV11]) {
    const decoder = mod as unknown as FetchDecoder & { [PATCHED]?: true };
    if (typeof decoder?.decode !== "function") {
      throw new Error("kafkajs Fetch decoder not found: txpipe needs kafkajs 2.2.4 (deno.json)");
    }
    if (decoder[PATCHED]) continue;
    const decode = decoder.decode;
    decoder.decode = async (raw) => {
      const response = await decode(raw);
      for (const topic of response.responses ?? []) {
        for (const p of topic.partitions ?? []) {
          const lso = Number(p.lastStableOffset);
          if (Array.isArray(p.messages) && lso >= 0) stableOffsets.set(p.messages, lso);
          if (p.abortedTransactions && p.abortedTransactions.length > 0) {
            hideAborted(p.messages, p.abortedTransactions);
            p.abortedTransactions = [];
          }
        }
      }
      return response;
    };
    decoder[PATCHED] = true;
  }
}
