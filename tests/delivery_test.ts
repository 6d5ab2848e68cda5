/**
 * The producer's delivery through outages (jobs/lib/delivery.ts) with
 * scripted producers, without Kafka. tests/produce_timeout_test.ts tests the
 * kafkajs patch it relies on; tests/produce_outage_test.ts proves both
 * against the real cluster.
 */
import assert from "node:assert/strict";
import type { Admin, Message, ProducerBatch, RecordMetadata } from "kafkajs";
import kafkaErrors from "kafkajs/src/errors.js";
import { createLogger } from "../jobs/lib/log.ts";
import { PartitionRouter } from "../jobs/lib/kafka.ts";
import {
  classifySendError,
  Delivery,
  type DeliveryOptions,
  type DeliveryProducer,
  DeliveryStoppedError,
  DeliveryTimeoutError,
} from "../jobs/lib/delivery.ts";
import { isRevoked, markSent, REVOKED_MESSAGE } from "../jobs/lib/produce_timeout.ts";

const TOPIC = "t";

/** A router over a topic of `partitions` partitions, without Kafka. */
function router(partitions = 1): PartitionRouter {
  const admin = {
    fetchTopicMetadata: () =>
      Promise.resolve({
        topics: [{
          name: TOPIC,
          partitions: Array.from({ length: partitions }, (_, i) => ({ partitionId: i })),
        }],
      }),
  };
  return new PartitionRouter(admin as unknown as Admin);
}

/** What one scripted send does: succeed, fail with an error, never answer, or answer later. */
type Step = "ok" | "hang" | Error | Promise<void>;

/** Scripted producers: each send takes the next step (the last one repeats). */
class Script {
  readonly created: FakeProducer[] = [];
  constructor(readonly steps: Step[]) {}
  create = (): DeliveryProducer => {
    const p = new FakeProducer(this, this.created.length + 1);
    this.created.push(p);
    return p;
  };
  next(): Step {
    return this.steps.length > 1 ? this.steps.shift()! : this.steps[0];
  }
  get sends(): number {
    return this.created.reduce((n, p) => n + p.sends.length, 0);
  }
}

class FakeProducer implements DeliveryProducer {
  readonly sends: Message[][] = [];
  disconnected = false;
  constructor(readonly script: Script, readonly id: number) {}
  connect(): Promise<void> {
    return Promise.resolve();
  }
  disconnect(): Promise<void> {
    this.disconnected = true;
    return Promise.resolve();
  }
  sendBatch(batch: ProducerBatch): Promise<RecordMetadata[]> {
    const messages = batch.topicMessages![0].messages;
    this.sends.push(messages);
    markSent(messages); // as the patched Broker.produce does when a request goes out
    const step = this.script.next();
    if (step === "hang") return new Promise(() => {});
    if (step instanceof Error) return Promise.reject(step);
    if (step instanceof Promise) return step.then(() => []);
    return Promise.resolve([]);
  }
}

/** A log that keeps its lines, parsed. */
function captureLog() {
  const lines: Array<Record<string, unknown>> = [];
  const log = createLogger("produce", {
    format: "ecs",
    level: "info",
    destination: { write: (l: string) => lines.push(JSON.parse(l)) },
  });
  const actions = () => lines.map((l) => `${l["log.level"]}:${l["event.action"]}`);
  return { log, lines, actions };
}

function delivery(script: Script, options: Partial<DeliveryOptions> = {}) {
  const { log, actions, lines } = captureLog();
  const d = new Delivery({
    createProducer: script.create,
    router: router(1),
    topic: TOPIC,
    log,
    deliveryTimeoutMs: 0,
    initialBackoffMs: 5,
    maxBackoffMs: 20,
    stallMs: 60_000,
    ...options,
  });
  return { d, actions, lines };
}

function records(n: number): Message[] {
  return Array.from({ length: n }, (_, i) => ({ key: `k${i}`, value: `value ${i}` }));
}

/** kafkajs's error when its cluster cannot be reached ("Connection error: connect ECONNREFUSED"). */
function refused(): Error {
  const cause = new kafkaErrors.KafkaJSConnectionError(
    "Connection error: connect ECONNREFUSED 127.0.0.1:9094",
  );
  return new kafkaErrors.KafkaJSNonRetriableError(cause, { cause });
}

/** A broker's error response, as kafkajs reports it. */
function protocolError(type: string): Error {
  const e = new kafkaErrors.KafkaJSProtocolError(`broker says ${type}`, { retriable: false });
  (e as unknown as { type: string }).type = type;
  return e;
}

Deno.test("delivery: sends refused while Kafka is down go again by the same producer until acknowledged; the outage is logged once when it starts and once when it ends", async () => {
  const script = new Script([refused(), refused(), refused(), "ok"]);
  const { d, actions } = delivery(script);
  const result = await d.send(records(10));
  await d.close();
  assert.deepEqual(result, { acknowledged: 10, acknowledgedBytes: 70, unacknowledged: 0 });
  assert.equal(script.created.length, 1, "the same producer (producer id) throughout");
  assert.equal(script.sends, 4);
  const status = d.status();
  assert.equal(status.connected, true);
  assert.equal(status.outages, 1);
  assert.equal(status.resent, 0);
  assert.deepEqual(actions(), ["warn:kafka-outage", "info:kafka-recovered"]);
});

Deno.test("delivery: a batch unacknowledged longer than the stall time is an outage, reported once, ended by its acknowledgement", async () => {
  let answer!: () => void;
  const script = new Script([new Promise<void>((r) => answer = r)]);
  const { d, actions } = delivery(script, { stallMs: 1000 });
  const sending = d.send(records(3));
  await new Promise((r) => setTimeout(r, 2500));
  assert.equal(d.status().connected, false, "stalled for over a second");
  answer();
  const result = await sending;
  await d.close();
  assert.equal(result.acknowledged, 3);
  assert.equal(d.status().connected, true);
  assert.deepEqual(actions(), ["warn:kafka-outage", "info:kafka-recovered"]);
});

Deno.test("delivery: OUT_OF_ORDER_SEQUENCE_NUMBER replaces the producer and the records go again under the new one, counted as resent", async () => {
  const script = new Script([protocolError("OUT_OF_ORDER_SEQUENCE_NUMBER"), "ok"]);
  const { d, actions } = delivery(script);
  const result = await d.send(records(5));
  await d.close();
  assert.equal(result.acknowledged, 5);
  assert.equal(script.created.length, 2, "a new producer (new producer id)");
  assert.equal(script.created[0].sends.length, 1);
  assert.equal(script.created[1].sends.length, 1);
  assert.equal(script.created[0].disconnected, true, "the old producer is disconnected");
  assert.equal(d.status().resent, 5, "its first attempt went out: it may be written twice");
  assert.deepEqual(actions(), [
    "warn:kafka-outage",
    "warn:producer-replaced",
    "info:kafka-recovered",
  ]);
});

Deno.test("delivery: a send without an answer within the attempt timeout is revoked and sent by a new producer", async () => {
  const script = new Script(["hang", "ok"]);
  const { d } = delivery(script, { attemptTimeoutMs: 100, revokeGraceMs: 100 });
  const result = await d.send(records(4));
  await d.close();
  assert.equal(result.acknowledged, 4);
  assert.equal(script.created.length, 2);
  const abandoned = script.created[0].sends[0];
  assert.ok(abandoned.every((m) => isRevoked(m)), "kafkajs may never send the first attempt again");
  assert.ok(!script.created[1].sends[0].some((m) => isRevoked(m)), "the resend is not revoked");
  assert.equal(d.status().resent, 4);
});

/** A send answered `ms` from now: acknowledged, or failed with `error`. */
function answeredIn(ms: number, error?: Error): Promise<void> {
  return new Promise((resolve, reject) => setTimeout(() => error ? reject(error) : resolve(), ms));
}

Deno.test("delivery: a revoked send answered within the grace period counts as acknowledged: no resend, no new producer", async () => {
  const script = new Script([answeredIn(300)]);
  const { d } = delivery(script, { attemptTimeoutMs: 100, revokeGraceMs: 5000 });
  const result = await d.send(records(3));
  await d.close();
  assert.equal(result.acknowledged, 3);
  assert.equal(script.sends, 1);
  assert.equal(script.created.length, 1);
  assert.equal(d.status().resent, 0);
});

Deno.test("delivery: a revoked send that kafkajs then gives up goes again by the same producer (same producer id, nothing written twice)", async () => {
  const refusedByRevocation = new kafkaErrors.KafkaJSNonRetriableError(REVOKED_MESSAGE);
  const script = new Script([answeredIn(300, refusedByRevocation), "ok"]);
  const { d } = delivery(script, { attemptTimeoutMs: 100, revokeGraceMs: 5000 });
  const result = await d.send(records(3));
  await d.close();
  assert.equal(result.acknowledged, 3);
  assert.equal(script.sends, 2);
  assert.equal(script.created.length, 1, "no new producer");
  assert.equal(d.status().resent, 0);
});

Deno.test("delivery: the delivery timeout ends a batch Kafka never acknowledges; its records are reported unacknowledged", async () => {
  const script = new Script([refused()]);
  const { d } = delivery(script, { deliveryTimeoutMs: 200 });
  const result = await d.send(records(6));
  await d.close();
  assert.equal(result.acknowledged, 0);
  assert.equal(result.unacknowledged, 6);
  assert.ok(result.error instanceof DeliveryTimeoutError, String(result.error));
  assert.match(result.error!.message, /delivery timeout of 0.2 s.*ECONNREFUSED/);
  assert.ok(script.sends > 1, "retried until then");
});

Deno.test("delivery: a stop while Kafka does not answer ends the pending batch after the grace period", async () => {
  const script = new Script(["hang"]);
  const { d } = delivery(script, { stopGraceMs: 100 });
  const sending = d.send(records(2));
  await new Promise((r) => setTimeout(r, 50));
  const stopped = Date.now();
  d.stop();
  const result = await sending;
  await d.close();
  assert.ok(result.error instanceof DeliveryStoppedError, String(result.error));
  assert.equal(result.unacknowledged, 2);
  assert.ok(Date.now() - stopped < 2000, "promptly after the grace period");
  assert.ok(isRevoked(script.created[0].sends[0][0]), "the pending send is revoked");
});

Deno.test("delivery: an error no retry can fix ends the batch at the first attempt", async () => {
  const script = new Script([protocolError("MESSAGE_TOO_LARGE")]);
  const { d } = delivery(script);
  const result = await d.send(records(1));
  await d.close();
  assert.equal(script.sends, 1);
  assert.match(result.error!.message, /MESSAGE_TOO_LARGE/);
});

Deno.test("delivery: a batch over several partitions, one partition's send retried: every record acknowledged once", async () => {
  const script = new Script([refused(), "ok"]);
  const { d } = delivery(script, { router: router(3) });
  const batch = records(30);
  const result = await d.send(batch);
  await d.close();
  assert.equal(result.acknowledged, 30);
  const sent = script.created[0].sends.flat().map((m) => m.key);
  assert.equal(new Set(sent).size, 30, "every record acknowledged once");
});

Deno.test("delivery: failed sends are classified: give up, new producer, already written, or again", () => {
  const cases: Array<[unknown, string]> = [
    [refused(), "retry"],
    [
      new kafkaErrors.KafkaJSNumberOfRetriesExceeded(refused(), { retryCount: 5, retryTime: 3000 }),
      "retry",
    ],
    [
      new kafkaErrors.KafkaJSRequestTimeoutError("Request Produce(key: 0, version: 7) timed out"),
      "retry",
    ],
    [protocolError("NOT_LEADER_OR_FOLLOWER"), "retry"],
    [protocolError("OUT_OF_ORDER_SEQUENCE_NUMBER"), "reset"],
    [protocolError("UNKNOWN_PRODUCER_ID"), "reset"],
    [protocolError("INVALID_PRODUCER_EPOCH"), "reset"],
    [
      new kafkaErrors.KafkaJSNonRetriableError(new TypeError("x of undefined"), {
        cause: new TypeError("x of undefined"),
      }),
      "reset",
    ],
    [new kafkaErrors.KafkaJSError("The producer is disconnected"), "reset"],
    [protocolError("DUPLICATE_SEQUENCE_NUMBER"), "written"],
    [new kafkaErrors.KafkaJSNonRetriableError(REVOKED_MESSAGE), "retry"],
    [protocolError("MESSAGE_TOO_LARGE"), "fatal"],
    [protocolError("TOPIC_AUTHORIZATION_FAILED"), "fatal"],
    [new kafkaErrors.KafkaJSNonRetriableError("Invalid topic"), "fatal"],
  ];
  for (const [err, kind] of cases) {
    assert.equal(classifySendError(err), kind, (err as Error).message);
  }
});

/** Records of `partition` (explicit: the router keeps it), with values naming them. */
function partitionRecords(partition: number, n: number, tag: string): Message[] {
  return Array.from({ length: n }, (_, i) => ({ value: `${tag}-${i}`, partition }));
}

/** A step answered when the test says so. */
function gate(): { step: Promise<void>; open: () => void; fail: (e: Error) => void } {
  let open!: () => void;
  let fail!: (e: Error) => void;
  const step = new Promise<void>((resolve, reject) => [open, fail] = [resolve, reject]);
  return { step, open, fail };
}

const tick = () => new Promise((r) => setTimeout(r, 20));

Deno.test("delivery: batches in flight together: a partition's next request waits for its previous one only, not for the other partitions", async () => {
  const slow = gate();
  // Batch 1: partition 0 (waits for the gate), partition 1; batch 2: partition 1, then 0.
  const script = new Script([slow.step, "ok"]);
  const { d } = delivery(script, { router: router(2) });
  const first = d.send([...partitionRecords(0, 3, "a"), ...partitionRecords(1, 3, "a")]);
  const second = d.send([...partitionRecords(0, 2, "b"), ...partitionRecords(1, 2, "b")]);
  await tick();
  const sent = script.created[0].sends;
  assert.equal(sent.length, 3, "batch 2's partition 1 went while batch 1's partition 0 waits");
  assert.deepEqual(sent.map((s) => s[0].partition), [0, 1, 1]);
  slow.open();
  const results = await Promise.all([first, second]);
  await d.close();
  assert.deepEqual(results.map((r) => r.acknowledged), [6, 4]);
  assert.deepEqual(sent.map((s) => `${s[0].partition}:${s[0].value}`), [
    "0:a-0",
    "1:a-0",
    "1:b-0",
    "0:b-0", // after batch 1's partition 0 only
  ]);
});

Deno.test("delivery: when a partition's request fails for good, the later batches' requests of that partition fail with the same error, unsent; other partitions go on", async () => {
  const slow = gate();
  const script = new Script([slow.step, "ok"]);
  const { d } = delivery(script, { router: router(2) });
  const first = d.send([...partitionRecords(0, 3, "a"), ...partitionRecords(1, 3, "a")]);
  const second = d.send([...partitionRecords(0, 2, "b"), ...partitionRecords(1, 2, "b")]);
  await tick();
  const tooLarge = protocolError("MESSAGE_TOO_LARGE");
  slow.fail(tooLarge);
  const [r1, r2] = await Promise.all([first, second]);
  await d.close();
  assert.equal(r1.error, tooLarge);
  assert.equal(r1.acknowledged, 3, "partition 1 of batch 1");
  assert.equal(r2.error, tooLarge, "the same error: batch 2's partition 0 never went");
  assert.equal(r2.acknowledged, 2, "partition 1 of batch 2");
  const sent = script.created[0].sends.map((s) => `${s[0].partition}:${s[0].value}`);
  assert.deepEqual(sent, ["0:a-0", "1:a-0", "1:b-0"], "nothing of partition 0 after the gap");
});

Deno.test("delivery: a partition whose request failed for good takes no records of a later send either", async () => {
  const script = new Script([protocolError("MESSAGE_TOO_LARGE"), "ok"]);
  const { d } = delivery(script, { router: router(2) });
  const first = await d.send(partitionRecords(0, 3, "a"));
  const later = await d.send([...partitionRecords(0, 2, "b"), ...partitionRecords(1, 2, "b")]);
  await d.close();
  assert.equal(first.error, later.error, "the same error");
  assert.equal(later.acknowledged, 2, "partition 1");
  const sent = script.created[0].sends.map((s) => `${s[0].partition}:${s[0].value}`);
  assert.deepEqual(sent, ["0:a-0", "1:b-0"]);
});
