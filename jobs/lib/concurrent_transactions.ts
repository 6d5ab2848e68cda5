/**
 * CONCURRENT_TRANSACTIONS retried quietly, as the Java client does, with
 * kafkajs 2.2.4 ({@link installConcurrentTransactionRetries}, called by
 * patchKafkajs in kafkajs_patches.ts, which createKafka calls: every txpipe
 * client has it).
 *
 * When a transaction commits, the coordinator answers EndTxn once the
 * commit is decided, then writes the commit markers to every partition of
 * the transaction. Until they are written it refuses any change to the
 * next transaction of the same transactional id with CONCURRENT_TRANSACTIONS
 * (the request is not applied). A stream job begins its next transaction
 * right after a commit, so its first AddPartitionsToTxn meets this error
 * routinely. The Java client retries it in place, logging nothing, after
 * 20 ms (`ADD_PARTITIONS_RETRY_BACKOFF_MS` in its TransactionManager); it
 * retries AddOffsetsToTxn and EndTxn on it as well.
 *
 * kafkajs instead fails the whole send: it logs "Failed to send messages:
 * The producer attempted to update a transaction while another concurrent
 * operation on the same transaction was ongoing" and the connection logs
 * "Response AddPartitionsToTxn" as errors, refreshes all metadata, and
 * retries the send after the producer's retry delay. Seen here: 3 550 such
 * pairs of lines in five minutes of the aggregation at 200 records/s. It
 * does not retry AddOffsetsToTxn or EndTxn on it at all (the batch fails).
 *
 * So the three transaction-coordinator requests of a transaction are retried
 * here, on this error only, with the same arguments (same producer id and
 * epoch: the broker did not apply the refused request, and the retry is
 * what kafkajs and Java do anyway), after 2 ms, doubling up to 50 ms
 * ({@link RETRY_SCHEDULE}), for at most {@link MAX_RETRY_MS}; after that the
 * error goes to kafkajs as before. While one request of a transactional id
 * retries, its others wait for it rather than be refused as well. The
 * connection's log line for the refused response is demoted to debug by
 * kafkaLogCreator (jobs/lib/log.ts).
 *
 * Why so soon, measured on the local 3+3 cluster (Kafka 4.4.0, 2026-12-07):
 * a transaction begun 100 ms or 300 ms after a commit was still refused, one
 * begun 1 s after was not, yet a retry 20 ms after the refusal went through.
 * The coordinator's last step of a commit, appending the completed state to
 * `__transaction_state`, is made by its marker thread, not a request thread,
 * and what lets the followers fetch that append waits in the broker's queue
 * of delayed actions, which request threads run at the end of each request
 * they handle (KafkaApis). So on a quiet coordinator the commit completes at
 * its next request from anyone, or when the followers' fetch expires
 * (`replica.fetch.wait.max.ms`, 500 ms). Checked: with an ApiVersions request
 * sent to the coordinator 200 ms after each commit, 0 of 40 transactions
 * begun 250 ms after a commit were refused, against 37 of 40 without it. The
 * refused request is such a request itself, so the first retry comes 2 ms
 * later rather than the Java client's 20 ms (`ADD_PARTITIONS_RETRY_BACKOFF_MS`
 * in its TransactionManager). tests/bench/transactions.ts: back to back, a
 * transaction took 13 ms at the median instead of 69 ms, with about two
 * refusals each; begun 100 ms after a commit, 9 ms instead of 28 ms. A
 * refused request costs the coordinator about a millisecond.
 *
 * @module
 */
// kafkajs's own Broker class: the one every kafkajs client instantiates, so
// wrapping its methods here changes the requests of every producer.
import Broker from "kafkajs/src/broker/index.js";

/** The broker error this module retries. */
export const CONCURRENT_TRANSACTIONS = "CONCURRENT_TRANSACTIONS";

/** The waits between retries: the first, doubling up to the longest. */
export interface RetrySchedule {
  /** First wait before a retry, ms. */
  firstMs: number;
  /** Longest wait between two retries, ms. */
  maxMs: number;
}

/**
 * The retry schedule every patched request uses (see the module
 * documentation for why the first wait is 2 ms). Mutable for
 * tests/bench/transactions.ts, which measures it against the Java client's
 * 20 ms; nothing else changes it.
 */
export const RETRY_SCHEDULE: RetrySchedule = { firstMs: 2, maxMs: 50 };
/** How long a request is retried here before its error goes to kafkajs. */
export const MAX_RETRY_MS = 30_000;

/** The Broker methods whose requests go to the transaction coordinator. */
const PATCHED = ["addPartitionsToTxn", "addOffsetsToTxn", "endTxn"] as const;

/** How many requests were retried on CONCURRENT_TRANSACTIONS, per request; for tests. */
export const concurrentTransactionRetries: Record<(typeof PATCHED)[number], number> = {
  addPartitionsToTxn: 0,
  addOffsetsToTxn: 0,
  endTxn: 0,
};

/** Whether `err` is the broker's CONCURRENT_TRANSACTIONS. */
export function isConcurrentTransactions(err: unknown): boolean {
  return (err as { type?: string } | null)?.type === CONCURRENT_TRANSACTIONS;
}

/** Options of {@link retryConcurrentTransactions}. */
export interface ConcurrentRetryOptions {
  /** Called before each retry with the wait in ms. */
  onRetry?: (delayMs: number) => void;
  /** Gives up after this long (default {@link MAX_RETRY_MS}). */
  maxRetryMs?: number;
}

/**
 * Runs `request`, again after 2 ms, 4 ms, ... (at most 50 ms apart:
 * {@link RETRY_SCHEDULE}) while `retriable` says so of its error, for at
 * most `maxRetryMs`; any other error, or one past the deadline, is thrown as
 * is. The one retry loop of txpipe's kafkajs patches (coordinators.ts uses
 * it too).
 */
export async function retryWhile<T>(
  request: () => Promise<T>,
  retriable: (err: unknown) => boolean,
  options: ConcurrentRetryOptions = {},
): Promise<T> {
  const deadline = Date.now() + (options.maxRetryMs ?? MAX_RETRY_MS);
  const { firstMs, maxMs } = RETRY_SCHEDULE;
  let delay = firstMs;
  for (;;) {
    try {
      return await request();
    } catch (err) {
      if (!retriable(err) || Date.now() + delay > deadline) throw err;
      options.onRetry?.(delay);
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, maxMs);
    }
  }
}

/**
 * Runs `request` again while it fails with CONCURRENT_TRANSACTIONS
 * ({@link retryWhile}'s schedule and deadline).
 */
export function retryConcurrentTransactions<T>(
  request: () => Promise<T>,
  options: ConcurrentRetryOptions = {},
): Promise<T> {
  return retryWhile(request, isConcurrentTransactions, options);
}

/**
 * Per transactional id, the request now retrying on CONCURRENT_TRANSACTIONS.
 * A transaction's sends run concurrently (one per partition, see
 * sendByPartition), and each would add its partitions and be refused in
 * turn; while one request finds the previous transaction still completing,
 * the others of that id wait for it instead of being refused too.
 */
const completing = new Map<string, Promise<unknown>>();

/**
 * Sends the transaction-coordinator request `request` of transactional id
 * `id`: after any request of that id still retrying on
 * CONCURRENT_TRANSACTIONS, itself retried on it (see
 * {@link retryConcurrentTransactions}).
 */
export async function transactionRequest<T>(
  id: string,
  request: () => Promise<T>,
  options: ConcurrentRetryOptions = {},
): Promise<T> {
  const ahead = completing.get(id);
  if (ahead) await ahead.catch(() => {});
  const mine: Promise<T> = retryConcurrentTransactions(request, {
    ...options,
    onRetry: (ms) => {
      if (!completing.has(id)) completing.set(id, mine);
      options.onRetry?.(ms);
    },
  });
  try {
    return await mine;
  } finally {
    if (completing.get(id) === mine) completing.delete(id);
  }
}

const INSTALLED = Symbol.for("txpipe.concurrentTransactions");

/**
 * Wraps kafkajs's Broker methods of the transaction coordinator's requests
 * so that CONCURRENT_TRANSACTIONS is retried in place (see the module
 * documentation). Idempotent. Called by patchKafkajs (kafkajs_patches.ts).
 */
export function installConcurrentTransactionRetries(): void {
  // deno-lint-ignore no-explicit-any
  const proto = Broker.prototype as Record<string | symbol, any>;
  if (proto[INSTALLED]) return;
  for (const name of PATCHED) {
    const original = proto[name];
    if (typeof original !== "function") {
      throw new Error(`kafkajs Broker.${name} not found: expected kafkajs 2.2.4`);
    }
    proto[name] = function (this: unknown, request: { transactionalId?: string }) {
      return transactionRequest(
        request?.transactionalId ?? "",
        () => original.call(this, request),
        {
          onRetry: () => concurrentTransactionRetries[name]++,
        },
      );
    };
  }
  proto[INSTALLED] = true;
}
