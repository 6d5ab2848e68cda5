/**
 * Every change txpipe makes to kafkajs 2.2.4, installed by one explicit call:
 * {@link patchKafkajs}. `createKafka` (kafka.ts) calls it, so every txpipe
 * client has them; a kafkajs client of your own calls it once before it
 * connects. Importing a patch module changes nothing by itself.
 *
 * The patches (each module documents its defect, how it was seen, and the
 * fix; docs/design.md lists them):
 * - fetch_decode.ts: Fetch v11 responses decoded by txpipe (kafkajs's own
 *   objects, without its BigInt arithmetic and allocations per record).
 *   Installed before read_committed.ts, whose filter wraps it;
 * - read_committed.ts: aborted transactions skipped as the Java client
 *   skips them (kafkajs lets aborted records through when several
 *   transactions abort together);
 * - concurrent_transactions.ts: CONCURRENT_TRANSACTIONS retried in place,
 *   quietly (kafkajs fails the send, or the whole batch);
 * - coordinators.ts: a transaction's coordinators followed when they load
 *   or move (kafkajs fails the commit), and the transaction coordinator
 *   looked up once instead of before every request. Installed after
 *   concurrent_transactions.ts, whose retries it wraps;
 * - record_batch.ts: prepared produce requests encoded once by txpipe (the
 *   bytes kafkajs writes, without its per-record allocations);
 * - produce_timeout.ts: a produce request that times out closes its
 *   connection, and an abandoned send is never sent again. Installed after
 *   record_batch.ts, whose requests it wraps;
 * - handshake_timeout.ts: a new connection's ApiVersions, SaslHandshake and
 *   SaslAuthenticate wait at most 10 s (kafkajs waits 30 s, also on a
 *   broker that accepts connections but is frozen);
 * - group_by_partition.ts: a linear grouping of a send by partition. The
 *   one exception: kafkajs takes that function when it loads, so the module
 *   acts when imported, before kafkajs (this module imports it first, and
 *   kafka.ts imports this module first). {@link KafkajsPatches.linearGrouping}
 *   says whether it came in time.
 *
 * @module
 */
import { groupingPatched } from "./group_by_partition.ts";
import { installFetchDecoding } from "./fetch_decode.ts";
import { installReadCommitted } from "./read_committed.ts";
import { installConcurrentTransactionRetries } from "./concurrent_transactions.ts";
import { installCoordinatorHandling } from "./coordinators.ts";
import { installRecordBatchEncoding } from "./record_batch.ts";
import { installProduceTimeouts } from "./produce_timeout.ts";
import { installHandshakeTimeout } from "./handshake_timeout.ts";

/** What {@link patchKafkajs} installed. */
export interface KafkajsPatches {
  fetchDecoding: true;
  readCommitted: true;
  concurrentTransactions: true;
  coordinators: true;
  recordBatch: true;
  produceTimeout: true;
  handshakeTimeout: true;
  /** Whether kafkajs groups sends by partition in linear time (it loaded after group_by_partition.ts). */
  linearGrouping: boolean;
}

/**
 * Installs every patch, in the order they must wrap each other. Idempotent:
 * a second call changes nothing. Throws if kafkajs is not the 2.2.4 the
 * patches were written for (a function they replace is missing).
 */
export function patchKafkajs(): KafkajsPatches {
  installFetchDecoding(); // before read_committed: its filter wraps this decoder
  installReadCommitted();
  installConcurrentTransactionRetries();
  installCoordinatorHandling(); // after: it wraps those retries
  installRecordBatchEncoding(); // before produce timeouts: that wrapper must see these requests
  installProduceTimeouts();
  installHandshakeTimeout();
  return {
    fetchDecoding: true,
    readCommitted: true,
    concurrentTransactions: true,
    coordinators: true,
    recordBatch: true,
    produceTimeout: true,
    handshakeTimeout: true,
    linearGrouping: groupingPatched,
  };
}
