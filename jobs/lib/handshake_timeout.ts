/**
 * A new connection's handshake requests wait at most the authentication
 * timeout, not the request timeout (installed by patchKafkajs in
 * kafkajs_patches.ts).
 *
 * **The defect.** Before a connection is authenticated kafkajs 2.2.4 sends
 * ApiVersions, SaslHandshake and SaslAuthenticate. It documents
 * `authenticationTimeout` (default 10 s) as the timeout of authentication
 * requests but only sizes a lock with it, and the ApiVersions it sends with
 * the connection timeout (3 s) waits 30 s all the same: its request queue
 * takes the larger of a request's own timeout and the request timeout
 * (`createSocketRequest`: "Math.max(defaultRequestTimeout,
 * customRequestTimeout)"). A broker cut off without a reset (a frozen
 * process, a network cut) still accepts TCP connections into its listen
 * backlog, so a reconnect to it passes the connection timeout and then waits
 * 30 s for its handshake. Seen in `tests/produce_outage_test.ts` ("one
 * broker frozen (SIGSTOP) …", with `TXPIPE_LOG_LEVEL=debug`): after its
 * produce request to the frozen broker timed out (30 s), the producer
 * connected to that broker again, and "Request SaslHandshake(key: 17,
 * version: 1) timed out" 30 s later; it acknowledged nothing for 62–72 s
 * instead of about 32 s.
 *
 * **The fix.** Those three requests time out after {@link HANDSHAKE_TIMEOUT}
 * (kafkajs's default `authenticationTimeout`, which txpipe does not change),
 * or the request timeout if that is shorter. A timeout fails the connection
 * as before, and its caller retries.
 *
 * @module
 */
import RequestQueue from "kafkajs/src/network/requestQueue/index.js";

/** kafkajs's API keys of the requests sent before a connection is authenticated. */
const HANDSHAKE_KEYS = new Set([
  18, /* ApiVersions */
  17, /* SaslHandshake */
  36, /* SaslAuthenticate */
]);

/** How long a handshake request may wait: kafkajs's default `authenticationTimeout` (tests lower it). */
export const HANDSHAKE_TIMEOUT = { ms: 10_000 };

/** Handshake requests whose timeout this patch shortened, for tests and diagnosis. */
export const handshakeRequests = { count: 0 };

const INSTALLED = Symbol.for("txpipe.handshakeTimeout");

/** Wraps kafkajs's RequestQueue.createSocketRequest (see the module documentation). Idempotent. */
export function installHandshakeTimeout(): void {
  // deno-lint-ignore no-explicit-any
  const proto = RequestQueue.prototype as Record<string | symbol, any>;
  if (proto[INSTALLED]) return;
  const original = proto.createSocketRequest;
  if (typeof original !== "function") {
    throw new Error("kafkajs RequestQueue.createSocketRequest not found: expected kafkajs 2.2.4");
  }
  proto.createSocketRequest = function (
    this: { requestTimeout: number },
    pushed: { entry?: { apiKey?: number }; requestTimeout?: number | null },
  ) {
    if (!HANDSHAKE_KEYS.has(pushed?.entry?.apiKey as number)) return original.call(this, pushed);
    handshakeRequests.count++;
    // The queue takes the larger of the two timeouts: lower its own for this one request.
    const requestTimeout = this.requestTimeout;
    this.requestTimeout = Math.min(requestTimeout, HANDSHAKE_TIMEOUT.ms);
    try {
      return original.call(this, { ...pushed, requestTimeout: null });
    } finally {
      this.requestTimeout = requestTimeout;
    }
  };
  proto[INSTALLED] = true;
}
