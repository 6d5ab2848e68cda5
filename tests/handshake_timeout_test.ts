/**
 * jobs/lib/handshake_timeout.ts: a new connection's ApiVersions,
 * SaslHandshake and SaslAuthenticate wait at most HANDSHAKE_TIMEOUT, every
 * other request the request timeout. The frozen broker it was written for
 * is reproduced against the real cluster by tests/produce_outage_test.ts;
 * here a stand-in broker answers ApiVersions, then nothing, as a frozen
 * broker's listen backlog does.
 */
import assert from "node:assert/strict";
import { Kafka, logLevel } from "kafkajs";
import RequestQueue from "kafkajs/src/network/requestQueue/index.js";
import { patchKafkajs } from "../jobs/lib/kafkajs_patches.ts";
import { HANDSHAKE_TIMEOUT, handshakeRequests } from "../jobs/lib/handshake_timeout.ts";

patchKafkajs();

const quiet = { sanitizeOps: false, sanitizeResources: false };
const silentLogger = () => () => {};

Deno.test("handshake timeout: only ApiVersions, SaslHandshake and SaslAuthenticate get the shorter timeout; the queue's own is kept", () => {
  const queue = new RequestQueue({
    maxInFlightRequests: 1,
    requestTimeout: 30_000,
    enforceRequestTimeout: true,
    clientId: "t",
    broker: "stand-in:0",
    logger: { debug() {}, info() {}, warn() {}, error() {} },
  });
  const timeoutOf = (apiKey: number, requestTimeout: number | null = null) =>
    queue.createSocketRequest({
      entry: { apiKey, apiName: "x", apiVersion: 0, correlationId: apiKey },
      expectResponse: true,
      requestTimeout,
      sendRequest: () => {},
    }).requestTimeout;
  for (const key of [18, 17, 36]) assert.equal(timeoutOf(key), HANDSHAKE_TIMEOUT.ms, `key ${key}`);
  assert.equal(timeoutOf(18, 3000), HANDSHAKE_TIMEOUT.ms, "ApiVersions with kafkajs's 3 s");
  assert.equal(timeoutOf(0), 30_000, "Produce keeps the request timeout");
  assert.equal(timeoutOf(3), 30_000, "Metadata keeps the request timeout");
  assert.equal(timeoutOf(1, 40_000), 40_000, "a longer timeout of a request's own stays");
  assert.equal(queue.requestTimeout, 30_000, "the queue's timeout is restored");
  queue.destroy();
});

/** ApiVersions v2 response: the SASL requests, then silence, like a frozen broker. */
function apiVersionsResponse(correlationId: number): Uint8Array {
  const apis = [[17, 0, 1], [36, 0, 2], [18, 0, 2]];
  const body = 4 + 2 + 4 + apis.length * 6 + 4;
  const out = new DataView(new ArrayBuffer(4 + body));
  let at = 0;
  const i32 = (v: number) => (out.setInt32(at, v), at += 4);
  const i16 = (v: number) => (out.setInt16(at, v), at += 2);
  i32(body);
  i32(correlationId);
  i16(0);
  i32(apis.length);
  for (const [key, min, max] of apis) i16(key), i16(min), i16(max);
  i32(0);
  return new Uint8Array(out.buffer);
}

/** A stand-in broker: answers each connection's first request (ApiVersions), then nothing. */
function frozenAfterApiVersions() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const received: number[] = []; // api keys of the requests seen
  (async () => {
    for await (const conn of listener) {
      conns.push(conn);
      (async () => {
        const buf = new Uint8Array(65536);
        let answered = false;
        while (true) {
          const n = await conn.read(buf).catch(() => null);
          if (n === null) return;
          const view = new DataView(buf.buffer, 0, n);
          if (n >= 12) received.push(view.getInt16(4));
          if (!answered) {
            answered = true;
            await conn.write(apiVersionsResponse(view.getInt32(8))).catch(() => {});
          }
        }
      })();
    }
  })().catch(() => {});
  return {
    address: `127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    received,
    close() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
    },
  };
}

Deno.test(
  "handshake timeout: a broker that answers ApiVersions and then nothing fails the connection at the handshake timeout, not the 30 s request timeout",
  quiet,
  async () => {
    const broker = frozenAfterApiVersions();
    const saved = HANDSHAKE_TIMEOUT.ms;
    HANDSHAKE_TIMEOUT.ms = 500;
    const before = handshakeRequests.count;
    const admin = new Kafka({
      clientId: "handshake-test",
      brokers: [broker.address],
      sasl: { mechanism: "scram-sha-512", username: "u", password: "p" },
      connectionTimeout: 1000,
      requestTimeout: 30_000,
      retry: { retries: 0 },
      logLevel: logLevel.NOTHING,
      logCreator: silentLogger,
    }).admin();
    const started = performance.now();
    try {
      await assert.rejects(admin.connect(), /SaslHandshake.*timed out/);
      const seconds = (performance.now() - started) / 1000;
      assert.ok(
        seconds < 10,
        `failed after ${seconds.toFixed(1)} s, far below the 30 s request timeout`,
      );
      assert.deepEqual(broker.received.slice(0, 2), [18, 17], "ApiVersions, then SaslHandshake");
      assert.ok(handshakeRequests.count >= before + 2);
    } finally {
      HANDSHAKE_TIMEOUT.ms = saved;
      await admin.disconnect().catch(() => {});
      broker.close();
    }
  },
);
