/**
 * `txpipe_consumer_lag` agrees with Kafka's own ConsumerGroupCommand
 * (`kafka-consumer-groups --describe`), per partition, for every stream
 * stage: aggregate stage 1 on the input, stage 2 on its repartition topic,
 * and detect on the input; under load, while a second instance takes
 * partitions over, and idle.
 *
 * The two cannot be sampled at the same instant (the tool is a JVM that
 * takes seconds), so each comparison brackets a scrape between two runs of
 * the tool (one run describes every stage's group): committed offsets and
 * log end offsets only grow, and the scrape serves values computed after the
 * first run returned (see LAG_FRESH_MS),
 * so the exported lag must lie between `end₁ − committed₂` and
 * `end₂ − committed₁`: the tool's LAG widened by exactly the records
 * produced and processed between the two runs, as measured by the tool.
 * Idle, nothing moves and the two must be equal.
 */
import assert from "node:assert/strict";
import type { Message } from "kafkajs";
import { LAG_FRESH_MS, partitionLag } from "../jobs/lib/lag.ts";
import { createKafka } from "../jobs/lib/kafka.ts";
import { APP_IDS, internalTopicNames, TOPICS, topicSpec } from "../stacks/topology.ts";
import { BROKERS, ensureCluster, freshTopic, TOPO, withAdmin } from "./helpers/cluster.ts";
import {
  diagnosis,
  generate,
  type Instance,
  produceMessages,
  runTopics,
  startInstance,
  stopAll,
  toMessage,
} from "./helpers/jobs.ts";
import {
  describeGroups,
  type GroupRow,
  parseDescribe,
  parseLag,
  scrapeLag,
} from "./helpers/lag.ts";

const kafkaTest = { sanitizeOps: false, sanitizeResources: false };
/** Records written before the jobs start. */
const BACKLOG = 60_000;
/** Records fed while the jobs run, {@link FEED_PER_TICK} every 100 ms until the idle phase. */
const FEED = 100_000;
const FEED_PER_TICK = 20;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("lag: a partition's lag is log end minus committed, from the log start when never committed, never negative", () => {
  assert.equal(partitionLag({ end: 1500, committed: 1200, start: 0 }), 300);
  assert.equal(partitionLag({ end: 1500, committed: 1500, start: 0 }), 0);
  assert.equal(partitionLag({ end: 1500, committed: -1, start: 400 }), 1100);
  assert.equal(partitionLag({ end: 1500, committed: 0, start: 400 }), 1500);
  assert.equal(partitionLag({ end: 10, committed: 12, start: 0 }), 0);
});

Deno.test("lag: ConsumerGroupCommand's table and a /metrics text are read by partition", () => {
  const describe = [
    "",
    "Consumer group 'g' has no active members.",
    "",
    "GROUP TOPIC PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG  CONSUMER-ID HOST CLIENT-ID",
    "g     t     1          -               40              -    -           -    -",
    "g     t     0          90              100             10   c-1         /127.0.0.1 txpipe",
    "",
    "GROUP     TOPIC PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG  CONSUMER-ID HOST CLIENT-ID",
    "a-rekey   t     0          100             100             0    c-2         /127.0.0.1 txpipe",
  ].join("\n");
  assert.deepEqual(parseDescribe(describe), {
    rows: [
      { group: "a-rekey", topic: "t", partition: 0, committed: 100, end: 100, lag: 0 },
      { group: "g", topic: "t", partition: 0, committed: 90, end: 100, lag: 10 },
      { group: "g", topic: "t", partition: 1, committed: null, end: 40, lag: null },
    ],
    notes: ["Consumer group 'g' has no active members."],
  });
  const metrics = [
    "# TYPE txpipe_consumer_lag gauge",
    'txpipe_consumer_lag{processor="a-rekey",topic="t",partition="0"} 12',
    'txpipe_consumer_lag{processor="a-windows",topic="r",partition="0"} 3',
    'txpipe_consumer_lag{processor="a-rekey",topic="t",partition="7"} 0',
  ].join("\n");
  assert.deepEqual([...parseLag(metrics, "a-rekey")], [[0, 12], [7, 0]]);
});

/** A stream stage: its consumer group and source topic, and the instances that run it. */
interface Stage {
  name: string;
  group: string;
  topic: string;
  partitions: number;
}

/** One partition compared: our lag (by each instance exporting it) against the tool's, twice. */
interface Compared {
  partition: number;
  /** txpipe_consumer_lag of each instance that exports the partition. */
  ours: number[];
  /** Which instances (1-based, in the order of the ports) export it. */
  by: number[];
  before?: GroupRow;
  after?: GroupRow;
  /** What the exported value may be: end₁ − committed₂ … end₂ − committed₁ (at least 0). */
  low: number;
  high: number;
}

/** What is wrong with one comparison, or undefined. */
function problem(c: Compared, idle: boolean): string | undefined {
  if (c.ours.length !== 1) return `exported by ${c.ours.length} instances (expected 1)`;
  if (c.before?.committed == null || c.after?.committed == null) {
    return "the tool shows no committed offset";
  }
  if (idle && c.before.lag !== c.after.lag) return "not idle: the tool's LAG moved";
  if (c.ours[0] < c.low || c.ours[0] > c.high) {
    return `ours ${c.ours[0]} outside [${c.low}, ${c.high}]`;
  }
  return undefined;
}

/**
 * Runs the tool on every stage's group, lets a fresh lag computation start,
 * scrapes every instance, runs the tool again; retried (a rebalance may be
 * settling) until every partition of every stage compares cleanly or the
 * attempts run out.
 */
async function compareStages(
  stages: ReadonlyArray<{ stage: Stage; ports: number[] }>,
  idle: boolean,
): Promise<Compared[][]> {
  let all: Compared[][] = [];
  const groups = stages.map(({ stage }) => stage.group);
  for (let attempt = 1; attempt <= 6; attempt++) {
    const before = await describeGroups(groups);
    await sleep(LAG_FRESH_MS + 500);
    const scraped = await Promise.all(
      stages.map(({ stage, ports }) => Promise.all(ports.map((p) => scrapeLag(p, stage.group)))),
    );
    const after = await describeGroups(groups);
    all = stages.map(({ stage }, s) => {
      const row = (d: typeof before, partition: number) =>
        d.rows.find((r) =>
          r.group === stage.group && r.partition === partition && r.topic === stage.topic
        );
      return [...Array(stage.partitions).keys()].map((partition) => {
        const b = row(before, partition);
        const a = row(after, partition);
        return {
          partition,
          ours: scraped[s].flatMap((m) => m.has(partition) ? [m.get(partition)!] : []),
          by: scraped[s].flatMap((m, i) => m.has(partition) ? [i + 1] : []),
          before: b,
          after: a,
          low: Math.max(0, (b?.end ?? 0) - (a?.committed ?? 0)),
          high: Math.max(0, (a?.end ?? 0) - (b?.committed ?? 0)),
        };
      });
    });
    if (all.every((rows) => rows.every((c) => problem(c, idle) === undefined))) break;
    const notes = [...new Set([...before.notes, ...after.notes])].join(" ");
    for (const [s, rows] of all.entries()) {
      const wrong = describeProblems(rows, idle);
      if (wrong === "") continue;
      console.log(
        `    ${stages[s].stage.name}: attempt ${attempt}: ${wrong}` +
          (notes ? ` (the tool said: ${notes})` : ""),
      );
    }
    await sleep(2000);
  }
  return all;
}

function describeProblems(rows: Compared[], idle: boolean): string {
  return rows.flatMap((c) => {
    const p = problem(c, idle);
    return p ? [`partition ${c.partition}: ${p}`] : [];
  }).join("; ");
}

/** The side-by-side table of one stage and phase, for the log. */
function table(stage: Stage, phase: string, rows: Compared[]): string {
  const lines = [
    `  ${stage.name} (${stage.group} on ${stage.topic}), ${phase}:`,
    "    partition  txpipe_consumer_lag (instance)  ConsumerGroupCommand LAG (before → after)  allowed",
  ];
  for (const c of rows) {
    const ours = c.ours.map((v, i) => `${v} (${c.by[i]})`).join(" + ") || "-";
    lines.push(
      `    ${String(c.partition).padStart(9)}  ${ours.padStart(30)}  ` +
        `${`${c.before?.lag ?? "-"} → ${c.after?.lag ?? "-"}`.padStart(41)}  ${c.low}…${c.high}`,
    );
  }
  const sum = (f: (c: Compared) => number) => rows.reduce((s, c) => s + f(c), 0);
  lines.push(
    `    ${"total".padStart(9)}  ${String(sum((c) => c.ours[0] ?? 0)).padStart(30)}  ` +
      `${`${sum((c) => c.before?.lag ?? 0)} → ${sum((c) => c.after?.lag ?? 0)}`.padStart(41)}`,
  );
  return lines.join("\n");
}

/** Compares every stage, logs the tables, and asserts each partition agrees. */
async function compareAll(
  stages: Array<{ stage: Stage; ports: number[] }>,
  phase: string,
  idle: boolean,
): Promise<Map<string, Compared[]>> {
  const out = new Map<string, Compared[]>();
  const compared = await compareStages(stages, idle);
  for (const [s, { stage }] of stages.entries()) {
    console.log(table(stage, phase, compared[s]));
    out.set(stage.name, compared[s]);
  }
  for (const [name, rows] of out) {
    const wrong = describeProblems(rows, idle);
    assert.equal(
      wrong,
      "",
      `${name}, ${phase}: txpipe_consumer_lag disagrees with Kafka: ${wrong}`,
    );
    if (idle) {
      for (const c of rows) {
        assert.equal(c.ours[0], c.after!.lag, `${name}, idle, partition ${c.partition}`);
      }
    }
  }
  return out;
}

/** Writes `records` to `topic` in the background, `perTick` every `tickMs`, until stopped. */
function startFeed(topic: string, records: Message[], perTick: number, tickMs: number) {
  let stopped = false;
  let sent = 0;
  const done = (async () => {
    const producer = createKafka({
      principal: "admin",
      clientId: "txpipe-test-feed",
      brokers: BROKERS,
    }).producer({
      idempotent: true,
      maxInFlightRequests: 1,
    });
    await producer.connect();
    try {
      while (!stopped && sent < records.length) {
        const started = Date.now();
        await producer.send({ topic, acks: -1, messages: records.slice(sent, sent + perTick) });
        sent = Math.min(records.length, sent + perTick);
        await sleep(Math.max(0, tickMs - (Date.now() - started)));
      }
    } finally {
      await producer.disconnect();
    }
  })();
  return {
    stop: async () => {
      stopped = true;
      await done;
      return sent;
    },
  };
}

/** Committed offsets and end offsets of `stages`, as one comparable text. */
async function snapshot(stages: Stage[]): Promise<{ text: string; behind: number }> {
  return await withAdmin(async (admin) => {
    const parts: string[] = [];
    let behind = 0;
    for (const s of stages) {
      const ends = await admin.fetchTopicOffsets(s.topic);
      const [offsets] = await admin.fetchOffsets({ groupId: s.group, topics: [s.topic] });
      for (const e of ends) {
        const c = Number(offsets?.partitions.find((p) => p.partition === e.partition)?.offset);
        parts.push(`${s.group}/${e.partition}:${c}/${e.high}`);
        behind += Math.max(0, Number(e.high) - Math.max(c, 0));
      }
    }
    return { text: parts.join(" "), behind };
  });
}

/**
 * Waits until no stage's committed or end offsets move for 6 s in a row and
 * each stage has committed (nearly) everything: idle.
 */
async function waitIdle(stages: Stage[], timeoutMs = 600_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  let same = 0;
  let behind = -1;
  while (Date.now() < deadline) {
    const s = await snapshot(stages).catch(() => ({ text: "", behind: -1 }));
    same = s.text !== "" && s.text === last ? same + 1 : 0;
    last = s.text;
    behind = s.behind;
    // Behind: at most the commit markers a transactional source ends with.
    if (same >= 6 && behind <= 4 * stages.reduce((n, st) => n + st.partitions, 0)) return;
    await sleep(1000);
  }
  throw new Error(`the stages did not go idle within ${timeoutMs} ms (${behind} behind): ${last}`);
}

/** A port free right now. */
function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/**
 * Waits until the job on `port` exports lag of `processor` (it has joined the
 * group) and returns when and which partitions.
 */
async function waitExports(
  port: number,
  processor: string,
  i: Instance,
): Promise<{ at: number; partitions: number[] }> {
  const deadline = Date.now() + 90_000;
  while (Date.now() < deadline) {
    const lag = await scrapeLag(port, processor).catch(() => new Map<number, number>());
    if (lag.size > 0) return { at: Date.now(), partitions: [...lag.keys()].sort((a, b) => a - b) };
    await sleep(200);
  }
  throw new Error(`the job on :${port} never exported lag of ${processor}\n${await diagnosis(i)}`);
}

/**
 * When an instance first exported lag of partitions of `processor`, against
 * when its log says it finished taking each over (state restored): the lag
 * was reported during the takeover when the first is earlier.
 */
async function takeoverTimes(
  i: Instance,
  processor: string,
  seen: { at: number; partitions: number[] },
): Promise<string> {
  const restored = new Map<number, number>();
  for (const line of (await Deno.readTextFile(i.logFile)).split("\n")) {
    if (!line.includes("state restored from changelog") || !line.includes(processor)) continue;
    const doc = JSON.parse(line);
    if (doc["txpipe.processor"] !== processor || restored.has(doc.partition)) continue;
    restored.set(doc.partition, Date.parse(doc["@timestamp"]));
  }
  const each = seen.partitions.map((p) => {
    const t = restored.get(p);
    return `${p}: ${
      t === undefined ? "not restored yet" : `restored ${(t - seen.at) / 1000} s later`
    }`;
  });
  return `    instance 2 first exported ${processor} partitions ${seen.partitions} at ` +
    `${new Date(seen.at).toISOString()} (${each.join(", ")})`;
}

Deno.test(
  {
    name:
      "lag: txpipe_consumer_lag of aggregate stage 1, stage 2 and detect agrees per partition with ConsumerGroupCommand's LAG, under load, while a second instance takes partitions over, and idle",
    ...kafkaTest,
  },
  async () => {
    await ensureCluster();
    const input = await freshTopic(TOPICS.transactions, "lag_input");
    const inputPartitions = topicSpec(TOPO, TOPICS.transactions).partitions;
    const repartitionPartitions =
      topicSpec(TOPO, internalTopicNames(APP_IDS.aggregate).repartition).partitions;
    const agg = runTopics(input, "lag_agg");
    const det = runTopics(input, "lag_det");
    const rekey: Stage = {
      name: "aggregate stage 1",
      group: `${agg.appId}-rekey`,
      topic: input,
      partitions: inputPartitions,
    };
    const windows: Stage = {
      name: "aggregate stage 2",
      group: `${agg.appId}-windows`,
      topic: internalTopicNames(agg.appId).repartition,
      partitions: repartitionPartitions,
    };
    const detect: Stage = {
      name: "detect",
      group: det.appId,
      topic: input,
      partitions: inputPartitions,
    };

    // A backlog, then a steady feed on top: the jobs (small batches, so many
    // transactions) lag behind for minutes.
    const records = generate(BACKLOG + FEED, "lag-test").map((r) => toMessage(r));
    await produceMessages(input, records.slice(0, BACKLOG));
    const feed = startFeed(input, records.slice(BACKLOG), FEED_PER_TICK, 100);
    const small = ["--max-batch-bytes", "65536"];
    const [aggPort, aggPort2, detPort] = [freePort(), freePort(), freePort()];
    const instances: Instance[] = [
      startInstance("aggregate", agg, [...small, "--metrics-port", String(aggPort)]),
      startInstance("detect", det, [...small, "--metrics-port", String(detPort)]),
    ];
    let failure: unknown;
    try {
      await waitExports(aggPort, rekey.group, instances[0]);
      await waitExports(aggPort, windows.group, instances[0]);
      await waitExports(detPort, detect.group, instances[1]);

      const load = await compareAll(
        [
          { stage: rekey, ports: [aggPort] },
          { stage: windows, ports: [aggPort] },
          { stage: detect, ports: [detPort] },
        ],
        "under load",
        false,
      );
      for (const [name, rows] of load) {
        const lag = rows.reduce((s, c) => s + (c.before?.lag ?? 0), 0);
        assert.ok(lag > 0, `${name} lagged while compared under load (the tool's LAG: ${lag})`);
      }

      // A second aggregate instance: partitions move to it; from its
      // assignment on (while it fences and restores) it reports them, the
      // first instance no longer does.
      instances.push(
        startInstance("aggregate", agg, [...small, "--metrics-port", String(aggPort2)]),
      );
      const seen = await waitExports(aggPort2, rekey.group, instances[2]);
      await compareAll(
        [
          { stage: rekey, ports: [aggPort, aggPort2] },
          { stage: windows, ports: [aggPort, aggPort2] },
        ],
        "a second instance taking partitions over",
        false,
      );
      console.log(await takeoverTimes(instances[2], rekey.group, seen));

      console.log(`    fed ${await feed.stop()} records on top of the backlog of ${BACKLOG}`);
      await waitIdle([rekey, windows, detect]);
      await compareAll(
        [
          { stage: rekey, ports: [aggPort, aggPort2] },
          { stage: windows, ports: [aggPort, aggPort2] },
          { stage: detect, ports: [detPort] },
        ],
        "idle",
        true,
      );
    } catch (err) {
      failure = err;
    }
    await feed.stop().catch(() => {});
    await stopAll(instances, failure);
  },
);
