/**
 * Topics usable everywhere once created (jobs/lib/leaders.ts, used by
 * ensureTopics in jobs/lib/kafka.ts): what counts as missing, without Kafka;
 * then, on the real cluster, topics created concurrently are known to every
 * broker when ensureTopics returns, and 20 first starts of the aggregation on
 * fresh topic names in a row all start (the issue: 4 of 12 exited 1).
 */
import assert from "node:assert/strict";
import type { Admin } from "kafkajs";
import { type BrokerView, missingLeaders, waitForLeaders } from "../jobs/lib/leaders.ts";
import { createKafka, ensureTopics } from "../jobs/lib/kafka.ts";
import { rememberSecurity, securityOf } from "../jobs/lib/credentials.ts";
import { topicAs, TOPICS, type TopicSpec } from "../stacks/topology.ts";
import { BROKERS, ensureCluster, TOPO, withAdmin } from "./helpers/cluster.ts";

const kafkaTest = { sanitizeOps: false, sanitizeResources: false };

/** A broker's view in which every named topic has `partitions` partitions, each led by `leader`. */
function knowing(nodeId: number, topics: string[], partitions = 2, leader = 4): BrokerView {
  return {
    nodeId,
    address: `127.0.0.1:${9088 + nodeId}`,
    topics: topics.map((topic) => ({
      topic,
      topicErrorCode: 0,
      partitionMetadata: Array.from({ length: partitions }, (_, partitionId) => ({
        partitionId,
        partitionErrorCode: 0,
        leader,
      })),
    })),
  };
}

Deno.test("leaders: nothing is missing when every broker knows a leader for every partition", () => {
  const views = [4, 5, 6].map((id) => knowing(id, ["a", "b"]));
  assert.deepEqual(missingLeaders(["a", "b"], views), []);
});

Deno.test("leaders: what a broker does not know yet is named with the broker and the reason", () => {
  const lagging = knowing(5, ["a", "b"]);
  lagging.topics[1] = { topic: "b", topicErrorCode: 3, partitionMetadata: [] };
  const leaderless = knowing(6, ["a", "b"]);
  leaderless.topics[0].partitionMetadata[1] = { partitionId: 1, partitionErrorCode: 5, leader: -1 };
  leaderless.topics[1].partitionMetadata[0].leader = -1;
  const silent: BrokerView = {
    nodeId: 7,
    address: "127.0.0.1:9095",
    topics: [],
    error: "Connection timeout",
  };
  const absent = knowing(8, ["a"]);
  assert.deepEqual(
    missingLeaders(["a", "b"], [knowing(4, ["a", "b"]), lagging, leaderless, silent, absent]),
    [
      "broker 5 (127.0.0.1:9093): b (UNKNOWN_TOPIC_OR_PARTITION)",
      "broker 6 (127.0.0.1:9094): a/1 (LEADER_NOT_AVAILABLE), b/0 (no leader)",
      "broker 7 (127.0.0.1:9095): no answer (Connection timeout)",
      "broker 8 (127.0.0.1:9096): b (unknown)",
    ],
  );
});

Deno.test("leaders: a cluster listing no broker is not ready", () => {
  assert.deepEqual(missingLeaders(["a"], []), ["no broker is listed in the cluster's metadata"]);
});

Deno.test("leaders: a broker that never answers fails the wait at its deadline, naming it", async () => {
  // A port nothing listens on: each connection is refused at once.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const admin = {
    describeCluster: () =>
      Promise.resolve({ brokers: [{ nodeId: 9, host: "127.0.0.1", port }], controller: 9 }),
  } as unknown as Admin;
  const waits: string[][] = [];
  const started = Date.now();
  await assert.rejects(
    waitForLeaders(admin, ["t1", "t2"], { timeoutMs: 700, onWait: (m) => waits.push(m) }),
    (err: Error) => {
      assert.match(err.message, /^topics t1, t2 not ready after 0\.7 s: every broker must know/);
      assert.match(
        err.message,
        new RegExp(`still missing on broker 9 \\(127\\.0\\.0\\.1:${port}\\)`),
      );
      return true;
    },
  );
  assert.ok(waits.length >= 1, "asked again before giving up");
  assert.ok(Date.now() - started < 10_000, "gave up at about its deadline");
});

/**
 * Asserts that every broker, asked by a kafkajs client bootstrapped on it
 * alone (its first metadata request goes to that broker, as a job's may),
 * knows a leader for every partition of `specs`; then that each broker,
 * asked itself once (jobs/lib/leaders.ts), lacks nothing.
 */
async function assertEveryBrokerKnows(specs: readonly TopicSpec[]): Promise<void> {
  const topics = specs.map((s) => s.name);
  await Promise.all(BROKERS.map(async (broker) => {
    const admin = createKafka({
      principal: "admin",
      clientId: "txpipe-test-leaders",
      brokers: [broker],
      retry: { retries: 0 },
    }).admin();
    await admin.connect();
    try {
      const meta = await admin.fetchTopicMetadata({ topics });
      for (const spec of specs) {
        const t = meta.topics.find((m) => m.name === spec.name);
        assert.ok(t, `${broker} knows ${spec.name}`);
        assert.equal(t.partitions.length, spec.partitions, `${broker}: ${spec.name}'s partitions`);
        for (const p of t.partitions) {
          assert.ok(p.leader >= 0, `${broker} knows the leader of ${spec.name}/${p.partitionId}`);
        }
      }
    } finally {
      await admin.disconnect();
    }
  }));
  await withAdmin((admin) => waitForLeaders(admin, topics, { timeoutMs: 0 }));
}

/** Deletes `topics`, reporting (not throwing) a failure: the suite's cleanup deletes test_… too. */
async function deleteTopics(topics: string[]): Promise<void> {
  if (topics.length === 0) return;
  await withAdmin((admin) => admin.deleteTopics({ topics, timeout: 30_000 })).catch((err) =>
    console.error(`could not delete ${topics.length} test topics: ${err.message}`)
  );
}

Deno.test(
  "leaders: four topics created at once (like freshTopic x4) are known to every broker, with a leader for every partition, when ensureTopics returns",
  kafkaTest,
  async () => {
    await ensureCluster();
    const rounds = 3;
    const created: string[] = [];
    let waited = 0;
    try {
      for (let round = 0; round < rounds; round++) {
        const like = [TOPICS.transactions, TOPICS.aggregates, TOPICS.anomalies, TOPICS.deadLetters];
        const specs = like.map((spec) =>
          topicAs(TOPO, spec, `test_leaders_${spec}_${crypto.randomUUID().slice(0, 8)}`)
        );
        created.push(...specs.map((s) => s.name));
        // Four clients, each creating one topic at the same time, and each
        // checking every broker as soon as its ensureTopics returns.
        const actions = await Promise.all(specs.map((spec) =>
          withAdmin(async (admin) => {
            let waits = 0;
            const [r] = await ensureTopics(admin, [spec], { onWait: () => waits++ });
            await assertEveryBrokerKnows([spec]);
            if (waits > 0) waited++;
            return r.action;
          })
        ));
        assert.deepEqual(actions, ["created", "created", "created", "created"]);
      }
      console.log(`    ${waited} of ${rounds * 4} concurrent creations waited for a broker`);
    } finally {
      await deleteTopics(created);
    }
  },
);

Deno.test(
  "leaders: a topic another process created a moment before is fine (TOPIC_ALREADY_EXISTS), and known everywhere when ensureTopics returns",
  kafkaTest,
  async () => {
    await ensureCluster();
    const spec = topicAs(
      TOPO,
      TOPICS.aggregates,
      `test_leaders_race_${crypto.randomUUID().slice(0, 8)}`,
    );
    try {
      const first = await withAdmin((admin) => ensureTopics(admin, [spec]));
      // The second listed the topics just before the first created it: its
      // createTopics meets TOPIC_ALREADY_EXISTS.
      let answer: boolean | undefined;
      const second = await withAdmin((admin) => {
        const late: Admin = {
          ...admin,
          listTopics: () => Promise.resolve([]),
          createTopics: (req) => admin.createTopics(req).then((created) => answer = created),
        };
        rememberSecurity(late, securityOf(admin)); // its own connections to each broker authenticate too
        return ensureTopics(late, [spec]);
      });
      assert.deepEqual([first[0].action, second[0].action], ["created", "created"]);
      assert.equal(answer, false, "kafkajs's createTopics met TOPIC_ALREADY_EXISTS");
      await assertEveryBrokerKnows([spec]);
    } finally {
      await deleteTopics([spec.name]);
    }
  },
);

/** How one first start went. */
interface FirstStart {
  id: string;
  /** Seconds from spawning it to its "running" line; undefined if it never logged one. */
  toRunning?: number;
  /** Rounds in which some broker did not know its new topics yet. */
  leaderWaits: number;
  code: number;
  stderr: string;
}

/**
 * Starts the aggregation on fresh topic names (all six of its topics are
 * created by this start) and sends it SIGTERM once it logs that it runs.
 * `running` resolves then (false if it ended first); `done` when it exited.
 */
function firstStart(id: string): { running: Promise<boolean>; done: Promise<FirstStart> } {
  const spawned = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "jobs/aggregate.ts",
      "--brokers",
      BROKERS.join(","),
      "--input",
      `test_first_start_in_${id}`,
      "--output",
      `test_first_start_out_${id}`,
      "--dead-letters",
      `test_first_start_dlq_${id}`,
      "--app-id",
      `test-first-start-${id}`,
      "--metrics-port",
      "0",
      "--log-format",
      "ecs",
    ],
    cwd: new URL("../", import.meta.url),
    env: { TXPIPE_LOG_LEVEL: "debug" }, // the leader waits are logged at debug
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let reportRunning!: (running: boolean) => void;
  const running = new Promise<boolean>((r) => reportRunning = r);
  const done = (async (): Promise<FirstStart> => {
    const stderr = new Response(child.stderr).text();
    const timer = setTimeout(() => child.kill("SIGKILL"), 90_000);
    const start: FirstStart = { id, leaderWaits: 0, code: -1, stderr: "" };
    let pending = "";
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      const lines = (pending + chunk).split("\n");
      pending = lines.pop()!;
      for (const line of lines) {
        if (line.includes('"event.action":"topic-leaders-wait"')) start.leaderWaits++;
        if (start.toRunning === undefined && line.includes('"event.action":"started"')) {
          start.toRunning = (performance.now() - spawned) / 1000;
          child.kill("SIGTERM");
          reportRunning(true);
        }
      }
    }
    reportRunning(false);
    start.code = (await child.status).code;
    clearTimeout(timer);
    start.stderr = await stderr;
    return start;
  })();
  return { running, done };
}

/** The six topics of a first start with `id` (see {@link firstStart}). */
function firstStartTopics(id: string): string[] {
  const app = `test-first-start-${id}`;
  return [
    `test_first_start_in_${id}`,
    `test_first_start_out_${id}`,
    `test_first_start_dlq_${id}`,
    `${app}-repartition`,
    `${app}-rekey-changelog`,
    `${app}-changelog`,
  ];
}

Deno.test(
  "leaders: 20 first starts of the aggregation in a row, each creating its six topics, all reach running and exit 0 on SIGTERM",
  kafkaTest,
  async () => {
    await ensureCluster();
    const ids: string[] = [];
    const exits: Array<Promise<FirstStart>> = [];
    const began = performance.now();
    try {
      // One start at a time, up to "running"; each stops (a few seconds, its
      // consumers leaving their groups) while the next one starts.
      for (let i = 0; i < 20; i++) {
        const id = crypto.randomUUID().slice(0, 8);
        ids.push(id);
        const { running, done } = firstStart(id);
        exits.push(done);
        if (!(await running)) {
          const s = await done;
          assert.fail(
            `start ${i + 1} of 20 (id ${id}) exited ${s.code} before running\n${s.stderr}`,
          );
        }
      }
    } finally {
      const starts = await Promise.all(exits);
      const seconds = ((performance.now() - began) / 1000).toFixed(0);
      console.log(
        `    ${starts.length} first starts in ${seconds} s: ` +
          `${starts.filter((s) => s.toRunning !== undefined).length} reached running, ` +
          `${starts.filter((s) => s.code === 0).length} exited 0, ` +
          `${starts.filter((s) => s.leaderWaits > 0).length} waited for a broker ` +
          `(rounds per start: ${starts.map((s) => s.leaderWaits).join(",")}); ` +
          `seconds to running: ${starts.map((s) => s.toRunning?.toFixed(1) ?? "-").join(" ")}`,
      );
      await deleteTopics(ids.flatMap(firstStartTopics));
      for (const s of starts) {
        assert.equal(s.code, 0, `start ${s.id} exited ${s.code}\n${s.stderr}`);
      }
    }
  },
);
