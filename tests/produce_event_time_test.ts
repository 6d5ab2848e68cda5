/**
 * A paced producer's event time follows the wall clock, proved on the real
 * cluster: `deno task produce --rate R --duration 20s` (default users) into a
 * fresh topic whose timestamps are the brokers' append times
 * (`message.timestamp.type=LogAppendTime`), then every record's
 * transactionTime is compared with the time the broker appended it. Before
 * the fix, 20 000 users at 5 000 records/s made event time run 4.85 times
 * faster than the clock (transactionTime − broker time grew from +26 s to
 * +694 s in 3 minutes). At 20 000 records/s the producer may not keep up on a
 * small machine: event time must then follow the rate it reaches. The
 * population grows with --rate unless --users is given, and a --users too
 * small for --rate is refused.
 */
import assert from "node:assert/strict";
import { ConfigResourceTypes } from "kafkajs";
import { createKafka, ensureTopics } from "../jobs/lib/kafka.ts";
import { simulatedUsers } from "../jobs/produce.ts";
import { topicAs, TOPICS } from "../stacks/topology.ts";
import { BROKERS, ensureCluster, runScript, TOPO, withAdmin } from "./helpers/cluster.ts";

const kafkaTest = { sanitizeOps: false, sanitizeResources: false };

/** A fresh topic like financial_transactions whose record timestamps are the brokers' append times. */
async function appendTimeTopic(base: string): Promise<string> {
  await ensureCluster();
  const name = `test_${base}_${crypto.randomUUID().slice(0, 8)}`;
  const spec = topicAs(TOPO, TOPICS.transactions, name);
  await withAdmin(async (admin) => {
    await ensureTopics(admin, [{
      ...spec,
      config: { ...spec.config, "message.timestamp.type": "LogAppendTime" },
    }]);
    const described = await admin.describeConfigs({
      resources: [{
        type: ConfigResourceTypes.TOPIC,
        name,
        configNames: ["message.timestamp.type"],
      }],
      includeSynonyms: false,
    });
    assert.equal(described.resources[0].configEntries[0].configValue, "LogAppendTime");
  });
  return name;
}

/** One record read back: the broker's append time and the record's event time, epoch ms. */
interface Stamp {
  appended: number;
  eventTime: number;
}

/** Reads every record of `topic` (read_committed) until `expected` arrived or the time is up. */
async function readStamps(topic: string, expected: number): Promise<Stamp[]> {
  const consumer = createKafka({
    principal: "admin",
    clientId: "txpipe-test-event-time",
    brokers: BROKERS,
  }).consumer({
    groupId: `test-event-time-${crypto.randomUUID()}`,
    maxBytes: 50 * 1024 * 1024,
  });
  const stamps: Stamp[] = [];
  const decoder = new TextDecoder();
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      // deno-lint-ignore require-await
      eachBatch: async ({ batch }) => {
        for (const m of batch.messages) {
          const tx = JSON.parse(decoder.decode(m.value!));
          stamps.push({ appended: Number(m.timestamp), eventTime: tx.transactionTime });
        }
      },
    });
    const deadline = Date.now() + 180_000;
    while (stamps.length < expected && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
    }
  } finally {
    await consumer.disconnect();
  }
  return stamps;
}

/** Median, min and max of transactionTime − append time (ms) over `stamps`. */
function drift(stamps: Stamp[]): { median: number; min: number; max: number; n: number } {
  const d = stamps.map((s) => s.eventTime - s.appended).sort((a, b) => a - b);
  return { median: d[d.length >> 1], min: d[0], max: d[d.length - 1], n: d.length };
}

for (const rate of [5_000, 20_000]) {
  Deno.test({
    name:
      `produce: paced at ${rate}/s for 12 s with default flags, transactionTime stays within a few seconds of the broker's append time and does not drift`,
    ...kafkaTest,
  }, async () => {
    const topic = await appendTimeTopic(`event_time_${rate}`);
    const run = await runScript("jobs/produce.ts", [
      "--brokers",
      BROKERS.join(","),
      "--topic",
      topic,
      "--metrics-port",
      "0",
      "--rate",
      String(rate),
      "--duration",
      "12s",
    ]);
    assert.equal(run.code, 0, run.stderr.slice(-3000));
    const m = /produced ([\d,]+) records/.exec(run.stderr);
    assert.ok(m, run.stderr.slice(-2000));
    const acknowledged = Number(m[1].replaceAll(",", ""));

    const stamps = await readStamps(topic, acknowledged);
    assert.equal(stamps.length, acknowledged, "every acknowledged record read back");
    stamps.sort((a, b) => a.appended - b.appended);
    const first = stamps[0].appended;
    const last = stamps[stamps.length - 1].appended;
    const seconds = (last - first) / 1000;
    const start = drift(stamps.filter((s) => s.appended < first + 3_000));
    const end = drift(stamps.filter((s) => s.appended > last - 3_000));
    const all = drift(stamps);
    const fmt = (d: ReturnType<typeof drift>) =>
      `median ${d.median} ms, min ${d.min} ms, max ${d.max} ms (${d.n} records)`;
    console.log(
      `    ${rate}/s asked: ${acknowledged} records appended over ${seconds.toFixed(1)} s = ` +
        `${(acknowledged / seconds).toFixed(0)} records/s\n` +
        `    transactionTime − append time, first 3 s: ${fmt(start)}\n` +
        `    transactionTime − append time, last 3 s:  ${fmt(end)}\n` +
        `    transactionTime − append time, all:       ${fmt(all)}`,
    );

    // Nothing happens before it is made: the event time is never ahead of
    // the append time (one host, one clock; 100 ms for timer granularity).
    assert.ok(all.max <= 100, `event time ahead of the broker by ${all.max} ms`);
    // Behind by a few seconds at most: a batch's records spread over the time
    // since the previous batch was made, then wait for the one in flight (about
    // two batch round trips; 1-3 s measured on a loaded two-core machine), at
    // the start and at the end alike. Before the fix the lead grew by 3.85 s
    // per second at 5 000/s; a producer reaching half its rate on the old
    // simulated clock would fall 6 s behind in these 12 s.
    assert.ok(start.median >= -5_000 && end.median >= -5_000, `${fmt(start)}; ${fmt(end)}`);
    assert.ok(all.min >= -15_000, `a record ${-all.min} ms older than its append`);
    assert.ok(
      Math.abs(end.median - start.median) <= 3_000,
      `drift went from ${start.median} to ${end.median} ms`,
    );
    // A paced run of 12 s spans about 12 s of event time, whatever rate it reached.
    const eventTimes = stamps.map((s) => s.eventTime);
    const eventSpan = (eventTimes.reduce((a, b) => Math.max(a, b)) -
      eventTimes.reduce((a, b) => Math.min(a, b))) / 1000;
    assert.ok(Math.abs(eventSpan - seconds) <= 4, `${eventSpan} s of event time in ${seconds} s`);
  });
}

Deno.test("produce: the population follows --rate unless --users is given; a --users too small for --rate exits 2 naming it", async () => {
  assert.equal(simulatedUsers(0, undefined), 20_000);
  assert.equal(simulatedUsers(200, undefined), 20_000);
  assert.equal(simulatedUsers(5_000, undefined), 200_000);
  assert.equal(simulatedUsers(20_000, undefined), 800_000);
  assert.equal(simulatedUsers(5_000, 125_000), 125_000, "25 users per record/s suffice");
  assert.equal(simulatedUsers(0, 3), 3, "an unpaced run simulates its own time: any population");

  // Refused before Kafka is contacted (nothing listens on 127.0.0.1:1).
  const flag = await runScript("jobs/produce.ts", [
    "--brokers",
    "127.0.0.1:1",
    "--rate",
    "5000",
    "--users",
    "20000",
  ]);
  assert.equal(flag.code, 2, flag.stderr);
  assert.match(
    flag.stderr,
    /--users: expected at least 125000 users for --rate 5000 \(each user rests 20 s between transactions, so fewer cannot make 5000 records\/s; leave --users out for 200000\), got "20000"/,
  );
  const variable = await runScript(
    "jobs/produce.ts",
    ["--brokers", "127.0.0.1:1", "--rate", "200"],
    {
      env: { TXPIPE_USERS: "1000" },
    },
  );
  assert.equal(variable.code, 2, variable.stderr);
  assert.match(
    variable.stderr,
    /TXPIPE_USERS \(for --users\): expected at least 5000 users for --rate 200/,
  );
});
