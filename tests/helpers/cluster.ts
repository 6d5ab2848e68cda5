/**
 * Test helpers for the real cluster: bring it up once per test process,
 * make uniquely named topics with a spec topic's settings, read topics back
 * through a real consumer group, and run job scripts as subprocesses.
 *
 * @module
 */
import type { Admin, KafkaMessage } from "kafkajs";
import { clusterUp, COORDINATOR_TOPICS, leadersSettled } from "../../stacks/local/cluster.ts";
import { bootstrapServers, topicAs, topology } from "../../stacks/topology.ts";
import { createKafka, ensureTopics, FETCH_MAX_WAIT_MS } from "../../jobs/lib/kafka.ts";
import { applyAcls } from "../../jobs/lib/acl.ts";
import { whileCoordinatorMoves } from "../../jobs/lib/coordinators.ts";
import { scratchAcls } from "../../stacks/security.ts";
import { dropWhenFileEnds } from "./topic_cleanup.ts";

/** The shared 3+3 topology the integration tests run against. */
export const TOPO = topology("cluster");
/** Its bootstrap servers. */
export const BROKERS = bootstrapServers(TOPO);

let ready: Promise<unknown> | undefined;

/**
 * Ensures the shared cluster is up and healthy (a no-op when `deno task test`
 * started it), and that the jobs' principals may use the suite's scratch
 * names (see {@link grantScratch}).
 */
export function ensureCluster(): Promise<unknown> {
  ready ??= clusterUp({ mode: "cluster", say: () => {} }).then(grantScratch);
  return ready;
}

/**
 * Grants each job's principal its role's rights on the names the suite and
 * the bench make up (`test_…`, `test-…`, `bench_…`): stacks/security.ts's
 * scratch grants, applied as the admin. Idempotent.
 */
export async function grantScratch(): Promise<void> {
  await withAdmin((admin) => applyAcls(admin, [...scratchAcls("test"), ...scratchAcls("bench")]));
}

/** Runs `fn` with a connected admin client. */
export async function withAdmin<T>(fn: (admin: Admin) => Promise<T>): Promise<T> {
  const admin = createKafka({ principal: "admin", clientId: "txpipe-test", brokers: BROKERS })
    .admin();
  await admin.connect();
  try {
    return await fn(admin);
  } finally {
    await admin.disconnect();
  }
}

/** Whether `topic` is one the suite names (`test_…`, `test-…`), which nothing keeps. */
export function isTestTopic(topic: string): boolean {
  return topic.startsWith("test_") || topic.startsWith("test-");
}

/** Deletes every topic `match` accepts, 100 per request; returns how many it deleted. */
export async function deleteTopicsWhere(match: (topic: string) => boolean): Promise<number> {
  return await withAdmin(async (admin) => {
    const topics = (await admin.listTopics()).filter(match);
    for (let i = 0; i < topics.length; i += 100) {
      await admin.deleteTopics({ topics: topics.slice(i, i + 100), timeout: 60_000 });
    }
    return topics.length;
  });
}

/** The ids of the cluster's consumer groups (waited for while a coordinator loads or moves). */
export async function groupIds(): Promise<string[]> {
  const { groups } = await withAdmin((admin) => whileCoordinatorMoves(() => admin.listGroups()));
  return groups.map((g) => g.groupId);
}

/**
 * Creates a fresh topic named `<base>_<random>` with the settings of the spec
 * topic `like` (partitions, replication, configs) and returns its name.
 */
export async function freshTopic(like: string, base = like): Promise<string> {
  await ensureCluster();
  const name = `test_${base}_${crypto.randomUUID().slice(0, 8)}`;
  dropWhenFileEnds({ topics: [name] });
  await withAdmin((admin) => ensureTopics(admin, [topicAs(TOPO, like, name)]));
  return name;
}

/** One record read back: where it was and what it held. */
export interface ReadRecord {
  partition: number;
  offset: string;
  key: string | null;
  value: Uint8Array | null;
  headers: Record<string, string>;
}

/**
 * Reads `topic` from the beginning through a fresh consumer group
 * (read_committed) until at least `expected` records arrived and the reader
 * has passed the end every partition had when the read began, or (when the
 * end is not reached: a transaction still open) the topic stays quiet for
 * `settleMs`, or `timeoutMs` passes. Returns every record read.
 */
export async function readTopic(
  topic: string,
  options: { expected: number; timeoutMs?: number; settleMs?: number },
): Promise<ReadRecord[]> {
  const kafka = createKafka({
    principal: "admin",
    clientId: "txpipe-test-reader",
    brokers: BROKERS,
  });
  const consumer = kafka.consumer({
    groupId: `test-reader-${crypto.randomUUID()}`,
    readUncommitted: false,
    maxBytes: 50 * 1024 * 1024,
    maxWaitTimeInMs: FETCH_MAX_WAIT_MS,
  });
  const records: ReadRecord[] = [];
  // Partition → its end offset when the read began, until the reader has
  // passed it (a batch's last offset counts the control records it skips).
  const unread = await withAdmin((admin) => admin.fetchTopicOffsets(topic)).then(
    (ends) =>
      new Map(
        ends.filter((e) => Number(e.high) > Number(e.low)).map((e) => [
          e.partition,
          Number(e.high),
        ]),
      ),
    () => undefined, // no end to wait for: the quiet time decides
  );
  consumer.on(consumer.events.END_BATCH_PROCESS, ({ payload }) => {
    const end = unread?.get(payload.partition);
    if (end !== undefined && Number(payload.lastOffset) + 1 >= end) {
      unread!.delete(payload.partition);
    }
  });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  let lastArrival = Date.now();
  const decode = (m: KafkaMessage): Record<string, string> => {
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(m.headers ?? {})) {
      if (v !== undefined) out[k] = String(v);
    }
    return out;
  };
  await consumer.run({
    // deno-lint-ignore require-await
    eachBatch: async ({ batch }) => {
      for (const m of batch.messages) {
        records.push({
          partition: batch.partition,
          offset: m.offset,
          key: m.key ? m.key.toString() : null,
          value: m.value ? new Uint8Array(m.value) : null,
          headers: decode(m),
        });
      }
      lastArrival = Date.now();
    },
  });
  const deadline = Date.now() + (options.timeoutMs ?? 120_000);
  const settle = options.settleMs ?? 1500;
  while (Date.now() < deadline) {
    if (
      records.length >= options.expected &&
      (unread?.size === 0 || Date.now() - lastArrival >= settle)
    ) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  await consumer.disconnect();
  return records;
}

/** What a finished subprocess printed and returned. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a Deno script of the repo (e.g. "jobs/produce.ts") with `args` to completion. */
export async function runScript(
  script: string,
  args: string[],
  options: { env?: Record<string, string> } = {},
): Promise<RunResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, ...args],
    cwd: new URL("../../", import.meta.url),
    env: options.env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Each internal partition's replicas as first seen, so that {@link moveCoordinators} can restore them. */
let coordinatorReplicas: Promise<Array<{ topic: string; replicas: number[][] }>> | undefined;

/**
 * Moves every transaction and group coordinator of the shared cluster: each
 * partition of `__transaction_state` and `__consumer_offsets` gets its
 * replicas in the order first seen, rotated by `rotation` (0 restores it), a
 * reassignment that moves no data; the controllers then elect each
 * partition's new preferred replica within seconds
 * (`leader.imbalance.check.interval.seconds`, stacks/local/cluster.ts).
 * Returns when every leader is on its preferred replica, with how many
 * partitions changed leader.
 */
export async function moveCoordinators(rotation: number): Promise<{ moved: number }> {
  coordinatorReplicas ??= withAdmin(async (admin) =>
    (await admin.fetchTopicMetadata({ topics: [...COORDINATOR_TOPICS] })).topics.map((t) => ({
      topic: t.name,
      replicas: [...t.partitions].sort((a, b) => a.partitionId - b.partitionId)
        .map((p) => p.replicas),
    }))
  );
  const original = await coordinatorReplicas;
  return await withAdmin(async (admin) => {
    const leaders = async () =>
      new Map(
        (await admin.fetchTopicMetadata({ topics: [...COORDINATOR_TOPICS] })).topics.flatMap((t) =>
          t.partitions.map((p) => [`${t.name}/${p.partitionId}`, p.leader] as const)
        ),
      );
    const before = await leaders();
    const wanted = original.map(({ topic, replicas }) => ({
      topic,
      partitionAssignment: replicas.map((r, partition) => {
        const k = rotation % r.length;
        return { partition, replicas: [...r.slice(k), ...r.slice(0, k)] };
      }),
    }));
    await admin.alterPartitionReassignments({ topics: wanted });
    // The metadata shows the new order a moment later; only then is a leader off its preferred replica.
    const want = new Map(
      wanted.flatMap((t) =>
        t.partitionAssignment.map((a) => [`${t.topic}/${a.partition}`, a.replicas.join()] as const)
      ),
    );
    for (let tries = 0;; tries++) {
      const meta = await admin.fetchTopicMetadata({ topics: [...COORDINATOR_TOPICS] });
      const stale = meta.topics.flatMap((t) =>
        t.partitions.filter((p) => want.get(`${t.name}/${p.partitionId}`) !== p.replicas.join())
      );
      if (stale.length === 0) break;
      if (tries > 100) {
        throw new Error(`reassignment not in the metadata after 20 s (${stale.length} partitions)`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    const misled = await leadersSettled(admin, TOPO, { timeoutMs: 60_000 });
    if (misled.length > 0) {
      throw new Error(`leaders not on their preferred replicas after 60 s: ${misled.join(", ")}`);
    }
    const after = await leaders();
    return { moved: [...after].filter(([p, leader]) => before.get(p) !== leader).length };
  });
}
