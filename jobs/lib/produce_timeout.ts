/**
 * Two changes to kafkajs 2.2.4's produce requests, for the producer job's
 * idempotent producer ({@link installProduceTimeouts}, called by
 * patchKafkajs in kafkajs_patches.ts; transactional producers keep kafkajs's
 * behaviour).
 *
 * **A produce request that times out ends its connection.** kafkajs keeps the
 * connection and retries the request on it, to the leader of its cached
 * metadata, which it refreshes only every 5 minutes (`metadataMaxAge`) or on
 * a connection error. When a broker is cut off without a reset (a frozen
 * process, a network cut), its connections stay open, every retry waits the
 * full request timeout (30 s) on the same dead broker, and the partition's
 * new leader is never asked: the producer stalled for the whole cut (seen
 * here: a broker stopped with SIGSTOP for 128 s held a batch until the
 * producer's 120 s send timeout). The Java client closes a connection whose
 * request timed out and refreshes its metadata (NetworkClient, "Disconnecting
 * from node … due to request timeout"). Here the timeout is rethrown as
 * kafkajs's own "connection closed" error, on which kafkajs drops that broker
 * from its pool, refreshes its metadata from another broker and retries, with
 * the same producer id and sequence number (kafkajs rolls the sequence back
 * when a request fails), so a batch the broker did write is recognised as a
 * duplicate, not written twice. The connection is closed as well.
 *
 * **A send its caller abandoned is never sent again.** An idempotent kafkajs
 * producer retries a failed send without bound, in the background, even
 * after `disconnect()` (it reconnects its cluster for the retry). A caller
 * that gives up on a send and sends the records again with a new producer
 * (see delivery.ts) must be sure the old one cannot write them later under
 * its old producer id, where idempotence cannot recognise them. So
 * {@link revoke} marks the message objects of an abandoned send, and a
 * produce request carrying them is refused before it is sent (kafkajs then
 * gives the send up: the error is not retriable). A request already on the
 * wire cannot be recalled: {@link wasSent} says whether that may have
 * happened. Both look at the first message of each partition of a request
 * only (a send's records travel together, its first one leading them, and
 * {@link revoke} marks them all): per message, the marking took 3 % of the
 * producer's busy time.
 *
 * @module
 */
// kafkajs's own Broker class and errors: the ones every kafkajs client uses,
// so wrapping Broker.produce here changes the requests of every producer.
import Broker from "kafkajs/src/broker/index.js";
import kafkaErrors from "kafkajs/src/errors.js";

/** The message of the error a revoked send ends with. */
export const REVOKED_MESSAGE = "send abandoned by txpipe; not sent again";

/** Produce requests that timed out and ended their connection, for tests and diagnosis. */
export const produceTimeouts = { count: 0 };

const revoked = new WeakSet<object>();
const sent = new WeakSet<object>();

/** Marks `messages` (the objects handed to kafkajs) so that no produce request carries them again. */
export function revoke(messages: readonly object[]): void {
  for (const m of messages) revoked.add(m);
}

/** Whether `message` is revoked (see {@link revoke}). */
export function isRevoked(message: object): boolean {
  return revoked.has(message);
}

/**
 * Records that a produce request carrying `messages` (one partition's, or the
 * first of each partition's) goes to a broker (see {@link wasSent}).
 */
export function markSent(messages: readonly object[]): void {
  for (const m of messages) sent.add(m);
}

/**
 * Whether a produce request carrying `messages` has been handed to a
 * connection: if so, a broker may have written them even though the send
 * did not succeed.
 */
export function wasSent(messages: readonly object[]): boolean {
  return messages.some((m) => sent.has(m));
}

interface ProduceRequest {
  transactionalId?: string;
  topicData?: Array<{ partitions?: Array<{ messages?: object[] }> }>;
}

/** The first message of each partition of a request: the one that stands for its send. */
function leadersOf(request: ProduceRequest): object[] {
  const out: object[] = [];
  for (const t of request?.topicData ?? []) {
    for (const p of t.partitions ?? []) if (p.messages?.length) out.push(p.messages[0]);
  }
  return out;
}

const INSTALLED = Symbol.for("txpipe.produceTimeout");

/**
 * Wraps kafkajs's Broker.produce with both changes (see the module
 * documentation). Idempotent. Called by patchKafkajs (kafkajs_patches.ts),
 * after record_batch.ts's wrapper, so that its requests are checked too.
 */
export function installProduceTimeouts(): void {
  // deno-lint-ignore no-explicit-any
  const proto = Broker.prototype as Record<string | symbol, any>;
  if (proto[INSTALLED]) return;
  const original = proto.produce;
  if (typeof original !== "function") {
    throw new Error("kafkajs Broker.produce not found: expected kafkajs 2.2.4");
  }
  proto.produce = async function (
    this: { connectionPool: { host: string; port: number }; disconnect(): Promise<void> },
    request: ProduceRequest,
  ) {
    const leaders = leadersOf(request);
    if (leaders.some((m) => revoked.has(m))) {
      throw new kafkaErrors.KafkaJSNonRetriableError(REVOKED_MESSAGE);
    }
    markSent(leaders);
    try {
      return await original.call(this, request);
    } catch (err) {
      const timedOut = (err as Error)?.name === "KafkaJSRequestTimeoutError";
      if (!timedOut || request?.transactionalId) throw err;
      produceTimeouts.count++;
      const { host, port } = this.connectionPool;
      // Closes the socket once nothing else waits on it; kafkajs forgets this broker.
      this.disconnect().catch(() => {});
      throw new kafkaErrors.KafkaJSConnectionClosedError(
        `${(err as Error).message}; connection to ${host}:${port} closed`,
        { host, port },
      );
    }
  };
  proto[INSTALLED] = true;
}
