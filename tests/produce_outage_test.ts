/**
 * The paced producer through Kafka outages on the real 3+3 cluster: every
 * broker stopped for 35 s, and one broker frozen with SIGSTOP (its
 * connections hang without a reset, as in a network cut) until the producer
 * has produced without it for 5 s (at most 150 s). The producer must
 * keep running, resume by itself, report the outage, and every record it
 * acknowledged must be in the topic exactly once.
 *
 * Long (about 1.5 minutes each) and disruptive for anything else using the
 * cluster meanwhile; every outage is undone in a `finally`.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { clusterDown, clusterUp, homeDir, runningPid } from "../stacks/local/cluster.ts";
import { TOPICS } from "../stacks/topology.ts";
import { copyToFile } from "../jobs/lib/log_file.ts";
import { scrape, sum } from "../jobs/lib/scrape.ts";
import { validateTransaction } from "../jobs/lib/transaction.ts";
import { BROKERS, freshTopic, readTopic, TOPO, withAdmin } from "./helpers/cluster.ts";

const kafkaTest = { sanitizeOps: false, sanitizeResources: false };
const BROKER_NODES = TOPO.nodes.filter((n) => n.role === "broker");
const LOG_DIR = join(homeDir(), "test-logs");
const decoder = new TextDecoder();
const quiet = { mode: "cluster" as const, say: () => {} };
/** How long every broker stays down. */
const OUTAGE_MS = 35_000;

/** A producer process writing its ECS log to a file. */
interface Run {
  child: Deno.ChildProcess;
  stderr: Promise<string>;
  logFile: string;
  logged: Promise<void>;
  exited: boolean;
}

function startProducer(topic: string, seed: string): Run {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "jobs/produce.ts",
      "--brokers",
      BROKERS.join(","),
      "--topic",
      topic,
      "--metrics-port",
      "0",
      "--rate",
      "200",
      "--seed",
      seed,
    ],
    cwd: new URL("../", import.meta.url),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  Deno.mkdirSync(LOG_DIR, { recursive: true });
  const logFile = join(LOG_DIR, `${topic}-produce.log`);
  const logged = Deno.open(logFile, { write: true, create: true, truncate: true })
    .then((f) => copyToFile(child.stdout, f));
  const run: Run = {
    child,
    stderr: new Response(child.stderr).text(),
    logFile,
    logged,
    exited: false,
  };
  child.status.then(() => run.exited = true);
  return run;
}

async function logLines(run: Run): Promise<Array<Record<string, unknown>>> {
  const text = await Deno.readTextFile(run.logFile).catch(() => "");
  return text.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
}

async function waitFor<T>(
  what: string,
  timeoutMs: number,
  probe: () => Promise<T | undefined>,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = await probe().catch(() => undefined);
    if (found !== undefined) return found;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs / 1000} s`);
    await sleep(500);
  }
}

/** The producer's /metrics address, from its log. */
function metricsUrl(run: Run): Promise<string> {
  return waitFor("the producer's metrics address", 60_000, async () => {
    const line = (await logLines(run)).find((l) => l.message === "metrics");
    return line?.["url.full"] as string | undefined;
  });
}

/** What the producer's /metrics says now. */
async function figures(url: string) {
  const s = await scrape(url);
  return {
    acknowledged: sum(s, "txpipe_produced_records_total"),
    connected: sum(s, "txpipe_producer_connected"),
    outages: sum(s, "txpipe_produce_outages_total"),
    outageSeconds: sum(s, "txpipe_produce_outage_seconds_total"),
    resent: sum(s, "txpipe_produce_resent_records_total"),
    errors: sum(s, "txpipe_produce_errors_total"),
  };
}

/** Waits until the producer has acknowledged more than `n` records; returns the count. */
function acknowledgedOver(url: string, n: number, timeoutMs: number): Promise<number> {
  return waitFor(`over ${n} records acknowledged`, timeoutMs, async () => {
    const { acknowledged } = await figures(url);
    return acknowledged > n ? acknowledged : undefined;
  });
}

/** SIGTERM, then the exit code and the acknowledged count of the summary. */
async function stopProducer(
  run: Run,
): Promise<{ code: number; acknowledged: number; stderr: string }> {
  try {
    run.child.kill("SIGTERM");
  } catch { /* gone */ }
  const { code } = await run.child.status;
  await run.logged.catch(() => {});
  const stderr = await run.stderr;
  const m = /produced ([\d,]+) records/.exec(stderr);
  return { code, acknowledged: m ? Number(m[1].replaceAll(",", "")) : -1, stderr };
}

/**
 * Reads `topic` back: its records (by position: a consumer reading right
 * after a cluster restart may be handed a position twice, which is not a
 * second record), distinct transactionIds, and ids found at more than one
 * position.
 */
async function readBack(topic: string, expected: number) {
  const read = await readTopic(topic, { expected, timeoutMs: 180_000, settleMs: 3000 });
  const byPosition = new Map<string, string>();
  const eventTimes = new Map<number, Map<bigint, number>>(); // partition → offset → event time
  for (const r of read) {
    const parsed = validateTransaction(JSON.parse(decoder.decode(r.value!)));
    assert.ok(parsed.ok, `invalid record at ${r.partition}/${r.offset}`);
    byPosition.set(`${r.partition}/${r.offset}`, parsed.tx.transactionId);
    const times = eventTimes.get(r.partition) ??
      eventTimes.set(r.partition, new Map()).get(r.partition)!;
    times.set(BigInt(r.offset), parsed.tx.transactionTime);
  }
  const seen = new Map<string, number>();
  for (const id of byPosition.values()) seen.set(id, (seen.get(id) ?? 0) + 1);
  const duplicated = [...seen.values()].filter((n) => n > 1).length;
  return {
    records: byPosition.size,
    distinct: seen.size,
    duplicated,
    readTwice: read.length - byPosition.size,
    reordered: reorderings(eventTimes),
  };
}

/**
 * Records whose event time is earlier than that of the record before them in
 * their partition. The generator's event time never decreases and a paced
 * run sends its records in that order, so any is a batch written out of order.
 */
function reorderings(eventTimes: Map<number, Map<bigint, number>>): string[] {
  const out: string[] = [];
  for (const [partition, times] of eventTimes) {
    const offsets = [...times.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    for (let i = 1; i < offsets.length; i++) {
      if (times.get(offsets[i])! < times.get(offsets[i - 1])!) {
        out.push(`${partition}/${offsets[i]}`);
      }
    }
  }
  return out;
}

/** The producer's warnings and errors, and its outage lines. */
async function logSummary(run: Run) {
  const lines = await logLines(run);
  const level = (l: Record<string, unknown>) => l["log.level"] as string;
  const action = (l: Record<string, unknown>) => l["event.action"];
  return {
    warnings: lines.filter((l) => level(l) === "warn").length,
    errors: lines.filter((l) => level(l) === "error").length,
    outageLines: lines.filter((l) => action(l) === "kafka-outage").length,
    recoveredLines: lines.filter((l) => action(l) === "kafka-recovered").length,
    replaced: lines.filter((l) => action(l) === "producer-replaced").length,
    problems: lines.filter((l) => ["warn", "error"].includes(level(l)))
      .map((l) => `${level(l)} ${l.message}`).slice(0, 10),
  };
}

/**
 * Brings every node up and waits until the cluster is healthy, again when a
 * first try fails (another process may be starting the same nodes).
 */
async function bringBack(): Promise<void> {
  for (let attempt = 1;; attempt++) {
    try {
      await clusterUp(quiet);
      return;
    } catch (err) {
      if (attempt >= 3) throw err;
      console.log(`  cluster up failed (${(err as Error).message.split("\n")[0]}); again`);
      await sleep(5000);
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, Math.max(0, ms)));
}

const t = (since: number) => `${((Date.now() - since) / 1000).toFixed(1)}s`;

Deno.test(
  "produce: every broker stopped for 35 s: the paced producer keeps running, resumes by itself and reports the outage; every acknowledged record is in the topic exactly once",
  kafkaTest,
  async () => {
    const topic = await freshTopic(TOPICS.transactions, "outage_all");
    const run = startProducer(topic, "outage-all");
    let stopped: Awaited<ReturnType<typeof stopProducer>> | undefined;
    try {
      const url = await metricsUrl(run);
      await acknowledgedOver(url, 500, 60_000);
      const t0 = Date.now();
      let allDown = 0;
      try {
        await Promise.all(BROKER_NODES.map((n) => clusterDown({ ...quiet, node: n.name })));
        allDown = Date.now();
        console.log(`  all brokers down after ${t(t0)}`);
        // Another process's clusterUp (any test run on this cluster) restarts
        // stopped brokers: then the outage is shorter, which is said here.
        let restartedBy = "";
        // Longer than a request's timeout (30 s): requests in flight time out.
        while (Date.now() - allDown < OUTAGE_MS) {
          await sleep(Math.min(5000, allDown + OUTAGE_MS - Date.now()));
          const running = await Promise.all(BROKER_NODES.map((n) => runningPid("cluster", n)));
          if (!restartedBy && running.some((pid) => pid !== undefined)) {
            restartedBy = `a broker was started by another process ${t(allDown)} into the outage`;
            console.log(`  ${restartedBy}`);
          }
        }
        const during = await figures(url);
        console.log(`  after ${OUTAGE_MS / 1000} s: ${JSON.stringify(during)}`);
        assert.ok(!run.exited, "the producer runs through the outage");
        assert.ok(during.outages >= 1, "txpipe_produce_outages_total counts the outage");
        if (!restartedBy) {
          assert.equal(during.connected, 0, "txpipe_producer_connected reports the outage");
        }
      } finally {
        console.log(`  bringing the brokers back ${t(allDown)} after the last stopped`);
        await bringBack();
      }
      console.log(`  cluster healthy ${t(allDown)} after the last broker stopped`);
      const before = (await figures(url)).acknowledged;
      await waitFor("txpipe_producer_connected back at 1", 180_000, async () => {
        return (await figures(url)).connected === 1 ? true : undefined;
      });
      console.log(`  acknowledging again ${t(allDown)} after the last broker stopped`);
      await acknowledgedOver(url, before + 400, 120_000);
      const end = await figures(url);
      console.log(`  before the stop: ${JSON.stringify(end)}`);
      assert.ok(!run.exited, "still running");
      assert.ok(end.outageSeconds > 5, `outage time counted: ${end.outageSeconds}`);
      assert.equal(end.errors, 0);
    } finally {
      console.log("  stopping the producer (SIGTERM)");
      stopped = await stopProducer(run);
    }
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.match(stopped.stderr, /errors 0; Kafka outages \d+/);
    const logs = await logSummary(run);
    console.log(`  log: ${JSON.stringify(logs)}`);
    assert.ok(logs.outageLines >= 1 && logs.outageLines <= 3, "one warning per outage, no flood");
    assert.equal(logs.recoveredLines, logs.outageLines, "each outage's end is logged");
    assert.equal(logs.errors, 0, logs.problems.join("\n"));

    const back = await readBack(topic, stopped.acknowledged);
    console.log(`  acknowledged ${stopped.acknowledged}; in the topic ${JSON.stringify(back)}`);
    assert.equal(back.duplicated, 0, "no record twice");
    assert.deepEqual(back.reordered, [], "each partition in event-time order");
    assert.equal(back.records, stopped.acknowledged, "exactly the acknowledged records");
    assert.equal(back.distinct, stopped.acknowledged);
  },
);

Deno.test(
  "produce: one broker frozen (SIGSTOP) until the producer has produced 5 s without it: the producer moves to the new leaders and keeps producing; every acknowledged record is in the topic exactly once",
  kafkaTest,
  async () => {
    const topic = await freshTopic(TOPICS.transactions, "outage_one");
    const run = startProducer(topic, "outage-one");
    let stopped: Awaited<ReturnType<typeof stopProducer>> | undefined;
    try {
      const url = await metricsUrl(run);
      await acknowledgedOver(url, 500, 60_000);
      // The leader of partition 0: the producer is writing to it.
      const leader = await withAdmin(async (admin) => {
        const meta = await admin.fetchTopicMetadata({ topics: [topic] });
        return meta.topics[0].partitions.find((p) => p.partitionId === 0)!.leader;
      });
      const node = BROKER_NODES.find((n) => n.id === leader)!;
      const pid = await runningPid("cluster", node);
      assert.ok(pid, `${node.name} runs`);
      const t0 = Date.now();
      let frozenAt = 0;
      let resumedAt = 0;
      try {
        Deno.kill(pid, "SIGSTOP");
        const atCut = (await figures(url)).acknowledged;
        console.log(`  ${node.name} (pid ${pid}) frozen; ${atCut} acknowledged`);
        // Frozen until it has produced 5 s without the broker (resumed 32-50 s
        // after the cut in past runs), 150 s at most.
        for (let i = 0; i < 75 && !(resumedAt && Date.now() - resumedAt >= 5_000); i++) {
          await sleep(t0 + (i + 1) * 2_000 - Date.now());
          const f = await figures(url);
          if (!resumedAt && f.acknowledged > atCut + 200 && f.connected === 1) {
            resumedAt = Date.now();
          }
          if (i % 5 === 4) console.log(`  +${t(t0)} ${JSON.stringify(f)}`);
        }
        frozenAt = Date.now() - t0;
        assert.ok(resumedAt > 0, "it resumed while the broker was still frozen");
      } finally {
        Deno.kill(pid, "SIGCONT");
        await bringBack();
      }
      console.log(
        `  frozen for ${(frozenAt / 1000).toFixed(1)} s; producing again ${
          ((resumedAt - t0) / 1000).toFixed(1)
        } s after the cut (±2 s); cluster healthy ${t(t0)} after the cut`,
      );
      const after = (await figures(url)).acknowledged;
      await acknowledgedOver(url, after + 400, 120_000);
      assert.ok(!run.exited, "still running");
    } finally {
      stopped = await stopProducer(run);
    }
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.match(stopped.stderr, /errors 0/);
    const logs = await logSummary(run);
    console.log(`  log: ${JSON.stringify(logs)}`);
    assert.equal(logs.errors, 0, logs.problems.join("\n"));
    assert.ok(logs.outageLines <= 3, "no flood of outage warnings");

    const back = await readBack(topic, stopped.acknowledged);
    console.log(`  acknowledged ${stopped.acknowledged}; in the topic ${JSON.stringify(back)}`);
    assert.equal(back.duplicated, 0, "no record twice");
    assert.deepEqual(back.reordered, [], "each partition in event-time order");
    assert.equal(back.records, stopped.acknowledged, "exactly the acknowledged records");
    assert.equal(back.distinct, stopped.acknowledged);
  },
);
