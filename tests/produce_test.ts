/**
 * The producer job against the real 3+3 KRaft cluster: what it writes, what
 * survives restarts and a broker outage, and how it fails.
 */
import assert from "node:assert/strict";
import { clusterDown, clusterUp } from "../stacks/local/cluster.ts";
import { TOPICS } from "../stacks/topology.ts";
import { validateTransaction } from "../jobs/lib/transaction.ts";
import { FRAUD_PATTERN_HEADER, TransactionGenerator, usersForRate } from "../jobs/lib/generator.ts";
import { PARTITIONER } from "../jobs/lib/kafka.ts";
import {
  BROKERS,
  ensureCluster,
  freshTopic,
  type ReadRecord,
  readTopic,
  runScript,
} from "./helpers/cluster.ts";

const kafkaTest = { sanitizeOps: false, sanitizeResources: false };
const decoder = new TextDecoder();

/** The producer's flags for `topic` on the test cluster, plus `args`. */
function produceArgs(topic: string, ...args: string[]): string[] {
  return ["--brokers", BROKERS.join(","), "--topic", topic, "--metrics-port", "0", ...args];
}

function produce(topic: string, ...args: string[]) {
  return runScript("jobs/produce.ts", produceArgs(topic, ...args));
}

function checkRecords(records: ReadRecord[]): Set<string> {
  const ids = new Set<string>();
  for (const r of records) {
    assert.ok(r.value, `record at ${r.partition}/${r.offset} has no value`);
    const parsed = validateTransaction(JSON.parse(decoder.decode(r.value)));
    assert.ok(parsed.ok, `invalid record at ${r.partition}/${r.offset}: ${JSON.stringify(parsed)}`);
    assert.equal(r.key, parsed.tx.userId, "the record key is the userId");
    ids.add(parsed.tx.transactionId);
  }
  return ids;
}

/**
 * Asserts that each partition holds, in offset order, exactly the records an
 * unthrottled run of `seed` from `startTime` sends there, in the generator's
 * order: nothing missing, nothing twice, nothing reordered.
 */
function assertPartitionOrder(
  records: ReadRecord[],
  o: { seed: string; startTime: number; count: number; partitions: number },
): void {
  // The producer's generator for an unthrottled run (jobs/produce.ts's defaults).
  const gen = new TransactionGenerator({
    seed: o.seed,
    startTime: o.startTime,
    fraudRate: 0.01,
    users: usersForRate(0),
    merchants: 2_000,
  });
  const partitioner = PARTITIONER();
  const partitionMetadata = Array.from({ length: o.partitions }, (_, i) => ({
    partitionId: i,
    leader: 0,
    partitionErrorCode: 0,
    replicas: [],
    isr: [],
  }));
  const expected = new Map<number, string[]>();
  for (const r of gen.take(o.count)) {
    const p = partitioner({ topic: "t", partitionMetadata, message: { key: r.key, value: null } });
    (expected.get(p) ?? expected.set(p, []).get(p)!).push(r.tx.transactionId);
  }
  const actual = new Map<number, Array<[bigint, string]>>();
  for (const r of records) {
    const id = JSON.parse(decoder.decode(r.value!)).transactionId as string;
    (actual.get(r.partition) ?? actual.set(r.partition, []).get(r.partition)!)
      .push([BigInt(r.offset), id]);
  }
  for (const [p, ids] of expected) {
    const got = (actual.get(p) ?? []).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
      .map(([, id]) => id);
    assert.equal(
      got.length,
      ids.length,
      `partition ${p}: ${got.length} records, expected ${ids.length}`,
    );
    const first = got.findIndex((id, i) => id !== ids[i]);
    assert.equal(
      first,
      -1,
      `partition ${p}: offset order differs from the generator's at #${first}`,
    );
  }
}

let bulkTopic = "";

Deno.test(
  "produce: 100 000 records read back through a consumer group are exact, unique, valid, keyed by userId, on every partition",
  kafkaTest,
  async () => {
    bulkTopic = await freshTopic(TOPICS.transactions);
    const run = await produce(bulkTopic, "--count", "100000", "--seed", "bulk-1");
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /produced 100,000 records/);

    const records = await readTopic(bulkTopic, { expected: 100_000 });
    assert.equal(records.length, 100_000, "exactly the produced count, no duplicates");
    const ids = checkRecords(records);
    assert.equal(ids.size, 100_000, "every transactionId is unique");
    assert.deepEqual(
      [...new Set(records.map((r) => r.partition))].sort(),
      [0, 1, 2, 3, 4],
      "all five partitions are used",
    );
    const labelled = records.filter((r) => r.headers[FRAUD_PATTERN_HEADER]).length;
    assert.ok(labelled > 0, "the default fraud rate injects labelled records");
    for (const r of records) {
      assert.ok(!decoder.decode(r.value!).includes("fraud"), "the label never enters the value");
    }
  },
);

Deno.test(
  "produce: SIGTERM flushes what is in flight, prints the summary and exits 0; every acknowledged record is in the topic",
  kafkaTest,
  async () => {
    const topic = await freshTopic(TOPICS.transactions);
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "jobs/produce.ts", ...produceArgs(topic, "--seed", "sigterm")],
      cwd: new URL("../", import.meta.url),
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    await new Promise((r) => setTimeout(r, 6000));
    child.kill("SIGTERM");
    const out = await child.output();
    const stderr = decoder.decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    const m = /produced ([\d,]+) records/.exec(stderr);
    assert.ok(m, `summary printed: ${stderr}`);
    const acknowledged = Number(m[1].replaceAll(",", ""));
    assert.ok(acknowledged > 0, "it produced something before the signal");
    assert.match(stderr, /errors 0/);

    const records = await readTopic(topic, { expected: acknowledged });
    assert.equal(records.length, acknowledged, "the topic holds exactly the acknowledged records");
    assert.equal(checkRecords(records).size, acknowledged);
  },
);

Deno.test(
  "produce: nothing acknowledged is lost while one broker of three is down",
  kafkaTest,
  async () => {
    const topic = await freshTopic(TOPICS.transactions);
    await clusterDown({ mode: "cluster", node: "kafka-broker-2", say: () => {} });
    try {
      const startTime = 1_700_000_000_000;
      const run = await produce(
        topic,
        ...["--count", "20000", "--seed", "outage", "--start-time", String(startTime)],
      );
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stderr, /produced 20,000 records/);
      const records = await readTopic(topic, { expected: 20_000 });
      assert.equal(records.length, 20_000);
      assert.equal(checkRecords(records).size, 20_000);
      assertPartitionOrder(records, { seed: "outage", startTime, count: 20_000, partitions: 5 });
    } finally {
      await clusterUp({ mode: "cluster", say: () => {} });
    }
  },
);

Deno.test(
  "cluster: down then up keeps every record",
  kafkaTest,
  async () => {
    await ensureCluster();
    if (!bulkTopic) {
      bulkTopic = await freshTopic(TOPICS.transactions);
      const run = await produce(bulkTopic, "--count", "100000", "--seed", "bulk-1");
      assert.equal(run.code, 0, run.stderr);
    }
    await clusterDown({ mode: "cluster", say: () => {} });
    await clusterUp({ mode: "cluster", say: () => {} });
    const records = await readTopic(bulkTopic, { expected: 100_000 });
    assert.equal(records.length, 100_000);
    assert.equal(checkRecords(records).size, 100_000);
  },
);

Deno.test("produce: bad flags exit 2 with a message naming the flag, expected and given", async () => {
  const cases: Array<[string[], RegExp]> = [
    [["--rate", "fast"], /--rate: expected a number, got "fast"/],
    [["--rate", "-5"], /--rate: expected a value >= 0, got "-5"/],
    [["--count", "1.5"], /--count: expected an integer, got "1.5"/],
    [["--fraud-rate", "2"], /--fraud-rate: expected a value <= 0.5, got "2"/],
    [["--duration", "soon"], /--duration: expected a duration such as 500ms, 30s, 5m or 1h/],
    [["--metrics-port", "70000"], /--metrics-port: expected a value <= 65535, got "70000"/],
    [["--colour", "red"], /unknown flag --colour/],
    [["--count"], /--count: expected a value/],
  ];
  for (const [args, message] of cases) {
    const run = await runScript("jobs/produce.ts", args);
    assert.equal(run.code, 2, `${args.join(" ")} exits 2`);
    assert.match(run.stderr, message);
    assert.doesNotMatch(run.stderr, /\n\s+at /, "no stack trace");
  }
  const env = await runScript("jobs/produce.ts", [], { env: { TXPIPE_RATE: "lots" } });
  assert.equal(env.code, 2);
  assert.match(env.stderr, /TXPIPE_RATE \(for --rate\): expected a number, got "lots"/);
});

Deno.test("produce: --help lists every flag and exits 0", async () => {
  const run = await runScript("jobs/produce.ts", ["--help"]);
  assert.equal(run.code, 0);
  for (
    const flag of [
      "--rate",
      "--count",
      "--duration",
      "--seed",
      "--fraud-rate",
      "--brokers",
      "--metrics-port",
    ]
  ) {
    assert.ok(run.stdout.includes(flag), `--help mentions ${flag}`);
  }
});

Deno.test(
  "produce: an unreachable Kafka gives a clear message after retrying and exits 1 without a stack trace",
  kafkaTest,
  async () => {
    const run = await runScript("jobs/produce.ts", [
      "--brokers",
      "127.0.0.1:1",
      "--connect-attempts",
      "2",
      "--metrics-port",
      "0",
    ]);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /cannot reach Kafka at 127\.0\.0\.1:1 after 2 attempts/);
    assert.match(run.stderr, /deno task cluster up/);
    assert.doesNotMatch(run.stderr, /\n\s+at /, "no stack trace");
    assert.match(run.stdout, /"event.action":"kafka-connect-retry"/, "the retry is logged");
  },
);
