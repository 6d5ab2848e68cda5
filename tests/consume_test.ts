/**
 * The topic reader (jobs/consume.ts): its record views and end tracking on
 * their own, then the command against the real 3+3 KRaft cluster: exactly the
 * committed records of interleaved, aborted and open transactions, --limit,
 * --follow, dead letters, and how it fails.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import type { Message, Producer } from "kafkajs";
import { TOPICS } from "../stacks/topology.ts";
import { createKafka } from "../jobs/lib/kafka.ts";
import { DLQ_HEADERS } from "../jobs/lib/stream.ts";
import {
  EndOffsets,
  formatJsonLine,
  formatPretty,
  type RecordView,
  recordView,
} from "../jobs/consume.ts";
import { BROKERS, freshTopic, groupIds, type RunResult, runScript } from "./helpers/cluster.ts";

const kafkaTest = { sanitizeOps: false, sanitizeResources: false };
const ROOT = new URL("../", import.meta.url);

/**
 * Runs the reader on the test cluster with `TOPIC ...args`, stdout piped (so
 * NDJSON by default), and fails if it has not stopped by itself within 60 s.
 */
async function consume(topic: string, ...args: string[]): Promise<RunResult> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "jobs/consume.ts", topic, "--brokers", BROKERS.join(","), ...args],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let hung = false;
  const timer = setTimeout(() => {
    hung = true;
    child.kill("SIGKILL");
  }, 60_000);
  const out = await child.output();
  clearTimeout(timer);
  const decoder = new TextDecoder();
  const run = {
    code: out.code,
    stdout: decoder.decode(out.stdout),
    stderr: decoder.decode(out.stderr),
  };
  assert.ok(!hung, `the reader had not stopped by itself after 60 s; stderr:\n${run.stderr}`);
  return run;
}

/** Every stdout line parsed as JSON; fails on a line that is not one JSON object. */
function ndjson(stdout: string): RecordView[] {
  return stdout.split("\n").filter((l) => l !== "").map((line) => {
    const v = JSON.parse(line);
    assert.equal(typeof v, "object", `one JSON object per line: ${line}`);
    return v as RecordView;
  });
}

/** The `id` field of each record's JSON value, by partition, in the order read. */
function idsByPartition(views: RecordView[]): Record<number, string[]> {
  const out: Record<number, string[]> = {};
  for (const v of views) (out[v.partition] ??= []).push((v.value as { id: string }).id);
  return out;
}

/** Consumer groups the reader may have left (it must leave none). */
async function readerGroups(): Promise<Set<string>> {
  return new Set((await groupIds()).filter((g) => g.startsWith("txpipe-consume-")));
}

function transactionalProducer(label: string): Producer {
  return createKafka({ principal: "admin", clientId: "txpipe-test-consume", brokers: BROKERS })
    .producer({
      transactionalId: `test-consume-${label}-${crypto.randomUUID().slice(0, 8)}`,
      idempotent: true,
      maxInFlightRequests: 1,
    });
}

function plainProducer(): Producer {
  return createKafka({ principal: "admin", clientId: "txpipe-test-consume", brokers: BROKERS })
    .producer({
      idempotent: true,
      maxInFlightRequests: 1,
    });
}

const json = (id: string, partition: number): Message => ({
  key: `k-${id}`,
  value: Buffer.from(JSON.stringify({ id })),
  partition,
});

/** A started `--follow` reader whose stdout lines can be awaited. */
class FollowingReader {
  readonly child: Deno.ChildProcess;
  readonly lines: string[] = [];
  readonly stderr: Promise<string>;
  readonly #done: Promise<void>;

  constructor(topic: string) {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "jobs/consume.ts", topic, "--brokers", BROKERS.join(","), "--follow"],
      cwd: ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.child = child;
    this.stderr = new Response(child.stderr).text();
    this.#done = (async () => {
      let rest = "";
      for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
        const parts = (rest + chunk).split("\n");
        rest = parts.pop()!;
        this.lines.push(...parts);
      }
    })();
  }

  /** Waits until `n` lines have arrived; fails with the reader's stderr after `timeoutMs`. */
  async waitForLines(n: number, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.lines.length < n) {
      if (Date.now() > deadline) {
        this.child.kill("SIGKILL");
        throw new Error(`${this.lines.length} of ${n} lines; stderr: ${await this.stderr}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Sends SIGTERM and returns the exit code once stdout is drained. */
  async stop(): Promise<number> {
    this.child.kill("SIGTERM");
    const { code } = await this.child.status;
    await this.#done;
    return code;
  }
}

Deno.test("consume: a record's view decodes headers as UTF-8, parses a JSON value, keeps other text, and base64-encodes bytes that are not UTF-8", () => {
  const view = recordView("t", 2, {
    offset: "41",
    timestamp: "1700000000000",
    key: Buffer.from("user-1"),
    value: Buffer.from('{"amount": 12.5, "currency": "EUR"}'),
    headers: { h: Buffer.from("é"), many: [Buffer.from("a"), Buffer.from("b")] },
  });
  assert.deepEqual(view, {
    topic: "t",
    partition: 2,
    offset: 41,
    timestamp: 1700000000000,
    key: "user-1",
    headers: { h: "é", many: ["a", "b"] },
    value: { amount: 12.5, currency: "EUR" },
  });
  assert.equal(
    formatJsonLine(view),
    '{"topic":"t","partition":2,"offset":41,"timestamp":1700000000000,"key":"user-1",' +
      '"headers":{"h":"é","many":["a","b"]},"value":{"amount":12.5,"currency":"EUR"}}',
  );

  const text = recordView("t", 0, {
    offset: "0",
    timestamp: "0",
    key: null,
    value: Buffer.from("not json at all"),
  });
  assert.equal(text.value, "not json at all");
  assert.equal(text.key, null);

  const binary = recordView("t", 0, {
    offset: "1",
    timestamp: "0",
    key: Buffer.from([0xff, 0x00]),
    value: Buffer.from([0xc3, 0x28]),
  });
  assert.equal(binary.key, "/wA=");
  assert.equal(binary.keyEncoding, "base64");
  assert.equal(binary.value, "wyg=");
  assert.equal(binary.valueEncoding, "base64");

  const tombstone = recordView("t", 0, { offset: "2", timestamp: "0", key: null, value: null });
  assert.equal(tombstone.value, null);
});

Deno.test("consume: a dead letter's view and pretty output lead with its reason, source and job", () => {
  const view = recordView("transaction_dead_letters", 1, {
    offset: "7",
    timestamp: String(Date.UTC(2025, 0, 2, 3, 4, 5)),
    key: Buffer.from("user-9"),
    value: Buffer.from('{"transactionId": "abc", "amount": '),
    headers: {
      [DLQ_HEADERS.reason]: Buffer.from("malformed_json"),
      [DLQ_HEADERS.message]: Buffer.from("Unexpected end of JSON input"),
      [DLQ_HEADERS.topic]: Buffer.from("financial_transactions"),
      [DLQ_HEADERS.partition]: Buffer.from("3"),
      [DLQ_HEADERS.offset]: Buffer.from("1234"),
      [DLQ_HEADERS.job]: Buffer.from("detect"),
    },
  });
  assert.deepEqual(view.deadLetter, {
    reason: "malformed_json",
    message: "Unexpected end of JSON input",
    source: "financial_transactions/3@1234",
    job: "detect",
  });
  assert.deepEqual(
    Object.keys(view),
    ["topic", "partition", "offset", "timestamp", "key", "deadLetter", "headers", "value"],
    "the reason comes before the headers and value",
  );
  const pretty = formatPretty(view).split("\n");
  assert.equal(
    pretty[0],
    "DEAD LETTER  malformed_json: Unexpected end of JSON input  " +
      "(from financial_transactions/3@1234, job detect)",
  );
  const body = JSON.parse(pretty.slice(1).join("\n"));
  assert.equal(body.timestamp, "2025-01-02T03:04:05.000Z", "pretty timestamps are ISO");
  assert.equal(body.headers[DLQ_HEADERS.reason], "malformed_json");
  assert.equal(body.value, '{"transactionId": "abc", "amount": ');
  assert.ok(pretty.length > 10, "pretty output spans several lines");
});

Deno.test("consume: the end is judged by position, so a partition ending in transaction markers or aborted records is still read to its end", () => {
  const ends = new EndOffsets([
    { partition: 0, low: "0", high: "4" }, // records 0-2, commit marker at 3
    { partition: 1, low: "5", high: "5" }, // empty (after retention)
    { partition: 2, low: "0", high: "3" }, // aborted records 0-1, abort marker at 2
  ]);
  assert.equal(ends.atEnd(1), true, "an empty partition is at its end from the start");
  assert.equal(ends.reachedEnd, false);
  assert.equal(ends.contains(0, "2"), true);
  assert.equal(ends.contains(0, "4"), false, "a record written after the start is past the end");
  ends.advance(0, "2"); // the last data record printed; the marker is not yet fetched
  assert.equal(ends.atEnd(0), false, "three records printed, but the marker's offset remains");
  ends.advance(0, "3"); // a batch of only the commit marker
  assert.equal(ends.atEnd(0), true);
  ends.advance(2, "2"); // a batch of aborted records and their marker: nothing printed
  assert.equal(ends.reachedEnd, true);
  ends.advance(0, "1"); // an older batch reported late does not move the position back
  assert.equal(ends.atEnd(0), true);
});

Deno.test(
  "consume: prints exactly the committed records of interleaved committed, aborted and non-transactional writes across partitions, in partition order, stops at an open transaction, and leaves no consumer group",
  kafkaTest,
  async () => {
    const topic = await freshTopic(TOPICS.transactions, "consume_exact"); // 5 partitions
    const groupsBefore = await readerGroups();
    const a = transactionalProducer("a");
    const b = transactionalProducer("b");
    const c = transactionalProducer("c");
    const plain = plainProducer();
    await Promise.all([a.connect(), b.connect(), c.connect(), plain.connect()]);
    // Every write in offset order per partition; `committed` says whether it must be read.
    const writes: Array<{ id: string; partition: number; committed: boolean }> = [];
    type Txn = Awaited<ReturnType<Producer["transaction"]>>;
    const send = async (
      to: Txn | Producer,
      committed: boolean,
      id: string,
      partitions: number[],
    ) => {
      await to.send({ topic, acks: -1, messages: partitions.map((p) => json(`${id}-p${p}`, p)) });
      for (const p of partitions) writes.push({ id: `${id}-p${p}`, partition: p, committed });
    };
    let open: Txn | undefined;
    let run: RunResult | undefined;
    try {
      const a1 = await a.transaction();
      await send(a1, true, "a1", [0, 1, 2]);
      const b1 = await b.transaction();
      await send(b1, false, "b1", [0, 1, 3]);
      await send(plain, true, "n1", [0, 4]);
      await send(a1, true, "a1-more", [0, 2]);
      await b1.abort(); // aborted before a1, though it started after it
      await a1.commit();
      const a2 = await a.transaction();
      await send(a2, false, "a2", [2, 4]);
      await a2.abort();
      const b2 = await b.transaction();
      await send(b2, true, "b2", [0, 4]);
      await b2.commit();
      const b3 = await b.transaction();
      // Partition 3 holds only aborted records and their markers: kafkajs never hands the reader
      // a batch of it, yet the reader must see it reach its end.
      await send(b3, false, "b3", [3]);
      await b3.abort();
      // On partition 1, a3 starts first and b4 second, but b4 aborts first: the broker lists
      // them in abort order, which kafkajs's own filter takes for offset order (a3 got through).
      const a3 = await a.transaction();
      await send(a3, false, "a3", [1]);
      const b4 = await b.transaction();
      await send(b4, false, "b4", [1]);
      await b4.abort();
      await a3.abort();
      await send(plain, true, "n2", [1, 2]);
      // Still open when the reader starts: partition 4's last stable offset is its first record,
      // so neither it nor the committed record written after it are read.
      open = await c.transaction();
      await send(open, false, "open", [4]);
      await send(plain, false, "after-open", [4]);

      run = await consume(topic);
    } finally {
      await open?.abort().catch(() => {});
      await Promise.all([a, b, c, plain].map((p) => p.disconnect()));
    }

    assert.ok(run);
    assert.equal(run.code, 0, run.stderr);
    const views = ndjson(run.stdout);
    const expected: Record<number, string[]> = {};
    for (const w of writes) if (w.committed) (expected[w.partition] ??= []).push(w.id);
    assert.deepEqual(idsByPartition(views), expected, "exactly the committed records, in order");
    assert.equal(views.length, writes.filter((w) => w.committed).length);
    for (const v of views) {
      assert.deepEqual(
        Object.keys(v),
        ["topic", "partition", "offset", "timestamp", "key", "headers", "value"],
      );
      assert.equal(v.topic, topic);
      assert.equal(v.key, `k-${(v.value as { id: string }).id}`);
    }
    for (let p = 0; p < 5; p++) {
      const offsets = views.filter((v) => v.partition === p).map((v) => v.offset);
      assert.deepEqual(offsets, [...offsets].sort((x, y) => x - y), `partition ${p} in order`);
      assert.equal(new Set(offsets).size, offsets.length, `no duplicates in partition ${p}`);
    }
    assert.match(run.stderr, new RegExp(`read ${views.length} records from ${topic}`));
    // (A subset, not equal: a group an older version left behind may expire meanwhile.)
    const joined = [...await readerGroups()].filter((g) => !groupsBefore.has(g));
    assert.deepEqual(joined, [], "no txpipe-consume-* group joined or left behind");
  },
);

Deno.test(
  "consume: --limit 3 prints the first 3 records of a partition and exits 0",
  kafkaTest,
  async () => {
    const topic = await freshTopic(TOPICS.deadLetters, "consume_limit");
    const plain = plainProducer();
    await plain.connect();
    try {
      const messages = Array.from({ length: 10 }, (_, i) => json(`r${i}`, 1));
      await plain.send({ topic, acks: -1, messages });
    } finally {
      await plain.disconnect();
    }
    const run = await consume(topic, "--limit", "3");
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(idsByPartition(ndjson(run.stdout)), { 1: ["r0", "r1", "r2"] });
  },
);

Deno.test(
  "consume: --follow prints records committed after it started, and SIGTERM ends it with exit 0",
  kafkaTest,
  async () => {
    const topic = await freshTopic(TOPICS.aggregates, "consume_follow");
    const plain = plainProducer();
    const txn = transactionalProducer("follow");
    await Promise.all([plain.connect(), txn.connect()]);
    let reader: FollowingReader | undefined;
    try {
      await plain.send({ topic, acks: -1, messages: [json("before", 0), json("before", 2)] });
      reader = new FollowingReader(topic);
      await reader.waitForLines(2);
      await plain.send({ topic, acks: -1, messages: [json("after", 1)] });
      const t = await txn.transaction();
      await t.send({ topic, acks: -1, messages: [json("after-txn", 0), json("after-txn", 2)] });
      await t.commit();
      const aborted = await txn.transaction();
      await aborted.send({ topic, acks: -1, messages: [json("aborted", 1)] });
      await aborted.abort();
      // A later write to the aborted record's partition proves it was passed over, not pending.
      await plain.send({ topic, acks: -1, messages: [json("last", 1)] });
      await reader.waitForLines(6);
    } finally {
      await Promise.all([plain.disconnect(), txn.disconnect()]);
    }
    assert.ok(reader);
    const code = await reader.stop();
    assert.equal(code, 0, await reader.stderr);
    const ids = reader.lines.map((l) => {
      const v = JSON.parse(l) as RecordView;
      return `${(v.value as { id: string }).id}-p${v.partition}`;
    }).sort();
    assert.deepEqual(ids, [
      "after-p1",
      "after-txn-p0",
      "after-txn-p2",
      "before-p0",
      "before-p2",
      "last-p1",
    ]);
    assert.match(await reader.stderr, /read 6 records/);
  },
);

Deno.test(
  "consume: a dead letter shows its reason headers as text: a DEAD LETTER line in pretty output, a deadLetter field in NDJSON",
  kafkaTest,
  async () => {
    const topic = await freshTopic(TOPICS.deadLetters, "consume_dlq");
    const plain = plainProducer();
    await plain.connect();
    try {
      await plain.send({
        topic,
        acks: -1,
        messages: [{
          key: "user-9",
          value: Buffer.from("not json at all"),
          partition: 0,
          headers: {
            [DLQ_HEADERS.reason]: "malformed_json",
            [DLQ_HEADERS.message]: "Unexpected token 'o'",
            [DLQ_HEADERS.topic]: "financial_transactions",
            [DLQ_HEADERS.partition]: "4",
            [DLQ_HEADERS.offset]: "99",
            [DLQ_HEADERS.job]: "detect",
          },
        }],
      });
    } finally {
      await plain.disconnect();
    }
    const [pretty, piped] = await Promise.all([
      consume(topic, "--format", "pretty"),
      consume(topic),
    ]);
    assert.equal(pretty.code, 0, pretty.stderr);
    assert.ok(
      pretty.stdout.startsWith(
        "DEAD LETTER  malformed_json: Unexpected token 'o'  " +
          "(from financial_transactions/4@99, job detect)\n{\n",
      ),
      pretty.stdout,
    );
    assert.match(pretty.stdout, /"txpipe-dlq-reason": "malformed_json"/);
    assert.ok(!pretty.stdout.includes("\x1b["), "no colours when stdout is not a terminal");

    assert.equal(piped.code, 0, piped.stderr);
    const [view] = ndjson(piped.stdout);
    assert.equal(piped.stdout.trim().split("\n").length, 1, "one line: NDJSON when piped");
    assert.equal(view.deadLetter?.reason, "malformed_json");
    assert.equal(view.headers[DLQ_HEADERS.reason], "malformed_json");
    assert.equal(view.headers[DLQ_HEADERS.offset], "99");
    assert.equal(view.value, "not json at all");
  },
);

// The read_committed filter (jobs/lib/read_committed.ts) once removed aborted records from the
// fetched records, so a fetch holding only aborted records (their marker beyond the 1 MiB a
// partition gets per fetch) left kafkajs nothing to move past, and it fetched the same offset
// forever. It now flags them as control records, which kafkajs skips but moves past.
Deno.test({
  name:
    "consume: a partition whose fetch holds only aborted records (an aborted transaction over 1 MiB) is read past to the committed record after it",
  ...kafkaTest,
  fn: async () => {
    const topic = await freshTopic(TOPICS.aggregates, "consume_big_abort");
    const producer = transactionalProducer("big-abort");
    await producer.connect();
    try {
      const big = await producer.transaction();
      for (let i = 0; i < 4; i++) { // 4 sends of 400 kB: each under the brokers' 1 MB batch limit
        const messages = Array.from({ length: 40 }, (_, j) => ({
          key: `aborted-${i}-${j}`,
          value: Buffer.alloc(10_000, "a"),
          partition: 0,
        }));
        await big.send({ topic, acks: -1, messages });
      }
      await big.abort();
      const t = await producer.transaction();
      await t.send({ topic, acks: -1, messages: [json("committed", 0)] });
      await t.commit();
    } finally {
      await producer.disconnect();
    }
    const run = await consume(topic);
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(idsByPartition(ndjson(run.stdout)), { 0: ["committed"] });
  },
});

Deno.test("consume: bad flags and a missing TOPIC exit 2 with a message naming the flag, what was expected and what was given", async () => {
  const cases: Array<[string[], RegExp]> = [
    [["t", "--limit", "many"], /--limit: expected an integer, got "many"/],
    [["t", "--limit", "-1"], /--limit: expected a value >= 0, got "-1"/],
    [["t", "--format", "yaml"], /--format: expected one of auto, json, pretty, got "yaml"/],
    [["t", "--connect-attempts", "0"], /--connect-attempts: expected a value >= 1, got "0"/],
    [["t", "--colour", "red"], /unknown flag --colour/],
    [["t", "--limit"], /--limit: expected a value/],
    [[], /expected a TOPIC argument, got none/],
    [["t", "u"], /expected one TOPIC argument, got 2: t u/],
  ];
  const runs = await Promise.all(cases.map(([args]) => runScript("jobs/consume.ts", args)));
  cases.forEach(([args, message], i) => {
    assert.equal(runs[i].code, 2, `${args.join(" ")} exits 2`);
    assert.match(runs[i].stderr, message);
    assert.doesNotMatch(runs[i].stderr, /\n\s+at /, "no stack trace");
    assert.equal(runs[i].stdout, "", "nothing on stdout");
  });
});

Deno.test("consume: --help lists every flag and exits 0", async () => {
  const run = await runScript("jobs/consume.ts", ["--help"]);
  assert.equal(run.code, 0);
  for (const flag of ["--follow", "--limit", "--format", "--brokers", "--connect-attempts"]) {
    assert.ok(run.stdout.includes(flag), `--help mentions ${flag}`);
  }
  assert.ok(!run.stdout.includes("--metrics-port"), "the reader serves no /metrics");
});

Deno.test(
  "consume: an unknown topic prints one line naming it and exits 1 without a stack trace",
  kafkaTest,
  async () => {
    const run = await consume("no_such_topic_for_consume");
    assert.equal(run.code, 1);
    assert.equal(
      run.stderr.trim(),
      `deno task consume: topic "no_such_topic_for_consume" does not exist on ${BROKERS.join(",")}`,
    );
    assert.equal(run.stdout, "");
  },
);

Deno.test(
  "consume: an unreachable Kafka prints one clear line and exits 1 without a stack trace",
  kafkaTest,
  async () => {
    const run = await runScript("jobs/consume.ts", [
      "t",
      "--brokers",
      "127.0.0.1:1",
      "--connect-attempts",
      "1",
    ]);
    assert.equal(run.code, 1);
    assert.equal(run.stderr.trim().split("\n").length, 1, run.stderr);
    assert.match(run.stderr, /cannot reach Kafka at 127\.0\.0\.1:1 after 1 attempts/);
    assert.match(run.stderr, /deno task cluster up/);
    assert.doesNotMatch(run.stderr, /\n\s+at /, "no stack trace");
    assert.equal(run.stdout, "");
  },
);
