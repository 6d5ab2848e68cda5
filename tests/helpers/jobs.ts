/**
 * Test helpers for the stream jobs on the real cluster: seeded input topics
 * (with poison records), running job instances as processes, waiting until
 * their consumer groups have caught up, and reading their outputs.
 *
 * @module
 */
import { copyToFile } from "../../jobs/lib/log_file.ts";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { join } from "node:path";
import type { Message } from "kafkajs";
import { denoRunArgs, internalTopicNames, jobSpec, TOPICS } from "../../stacks/topology.ts";
import { homeDir } from "../../stacks/local/cluster.ts";
import { createKafka } from "../../jobs/lib/kafka.ts";
import {
  encodeTransaction,
  type GeneratedRecord,
  labelHeaders,
  TransactionGenerator,
} from "../../jobs/lib/generator.ts";
import { ENVELOPE_CONFIG_FILE, RULE_ENVELOPE } from "./traffic.ts";
import { BROKERS, freshTopic, type ReadRecord, readTopic, withAdmin } from "./cluster.ts";
import { dropWhenFileEnds } from "./topic_cleanup.ts";

const ROOT = new URL("../../", import.meta.url);
const decoder = new TextDecoder();

/** A seeded dataset: the generated records (in order) and the topic holding them. */
export interface Dataset {
  topic: string;
  records: GeneratedRecord[];
}

/**
 * Generates `count` records with `seed` and the generator's fixed start time,
 * inside the default rules' envelope (tests/helpers/traffic.ts): the jobs'
 * tests hold the rules to their recall and precision on it.
 */
export function generate(count: number, seed: string, fraudRate = 0.01): GeneratedRecord[] {
  const gen = new TransactionGenerator({ ...RULE_ENVELOPE, seed, fraudRate });
  const records = gen.take(count);
  records.push(...gen.flush());
  return records;
}

/** Writes `messages` to `topic` with an idempotent producer, acks=all. */
export async function produceMessages(topic: string, messages: Message[]): Promise<void> {
  const producer = createKafka({
    principal: "admin",
    clientId: "txpipe-test-writer",
    brokers: BROKERS,
  }).producer({
    idempotent: true,
    maxInFlightRequests: 1,
  });
  await producer.connect();
  try {
    for (let i = 0; i < messages.length; i += 4000) {
      await producer.send({ topic, acks: -1, messages: messages.slice(i, i + 4000) });
    }
  } finally {
    await producer.disconnect();
  }
}

/** The Kafka message of a generated record, with or without its label headers. */
export function toMessage(r: GeneratedRecord, withLabels = true): Message {
  const m: Message = { key: r.key, value: Buffer.from(encodeTransaction(r.tx)) };
  if (withLabels && (r.label || r.hardNegative)) m.headers = labelHeaders(r.label, r.hardNegative);
  return m;
}

/** A fresh input topic (financial_transactions' settings) holding `messages`. */
export async function inputTopic(base: string, messages: Message[]): Promise<string> {
  const topic = await freshTopic(TOPICS.transactions, base);
  await produceMessages(topic, messages);
  return topic;
}

/** The topics of one job run, all fresh, so that runs never see each other's data. */
export interface JobTopics {
  input: string;
  output: string;
  deadLetters: string;
  appId: string;
}

/** Fresh output and dead-letter topic names and app id for a run over `input`. */
export function runTopics(input: string, label: string): JobTopics {
  const id = crypto.randomUUID().slice(0, 8);
  const t = {
    input,
    output: `test_${label}_out_${id}`,
    deadLetters: `test_${label}_dlq_${id}`,
    appId: `test-${label}-${id}`,
  };
  // With the job's internal topics, named after its app id.
  dropWhenFileEnds({ topics: [t.output, t.deadLetters], prefix: `${t.appId}-` });
  return t;
}

/** A running job instance. */
export interface Instance {
  child: Deno.ChildProcess;
  stderr: Promise<string>;
  /** File holding the instance's ECS log (its stdout), kept for diagnosis. */
  logFile: string;
  /** Resolves when the whole log is written. */
  logged: Promise<void>;
}

const LOG_DIR = join(homeDir(), "test-logs");
let instanceCount = 0;

/** Where {@link startInstance} connects: other brokers, and variables added to its environment. */
export interface InstanceOptions {
  /** Bootstrap servers (default: the shared cluster's CLIENT listeners). */
  brokers?: readonly string[];
  /** Added to the inherited environment, e.g. TXPIPE_KAFKA_SECURITY_PROTOCOL. */
  env?: Record<string, string>;
  /**
   * Another checkout of txpipe (an earlier commit, for `deno task bench
   * reference`): its job runs as its own `deno task <job>` ran it (its
   * deno.json, its V8 flags), without the envelope's detect config.
   */
  root?: string;
}

/**
 * The arguments of `deno` in the `deno task <job>` of the checkout at
 * `root`, e.g. `run -A --v8-flags=… jobs/detect.ts`, run from `root`.
 */
export function taskArgs(root: string, job: "aggregate" | "detect"): string[] {
  const tasks = JSON.parse(Deno.readTextFileSync(join(root, "deno.json"))).tasks ?? {};
  const words = String(tasks[job] ?? "").trim().split(/\s+/);
  if (words[0] !== "deno" || words[1] !== "run") {
    throw new Error(
      `${root}/deno.json: expected a "deno run …" task "${job}", got "${tasks[job]}"`,
    );
  }
  return words.slice(1);
}

/** Starts one instance of `job` ("aggregate" or "detect") on `topics`. */
export function startInstance(
  job: "aggregate" | "detect",
  topics: JobTopics,
  extra: string[] = [],
  options: InstanceOptions = {},
): Instance {
  const root = options.root;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      ...(root ? taskArgs(root, job) : denoRunArgs(jobSpec(job))),
      "--brokers",
      (options.brokers ?? BROKERS).join(","),
      "--input",
      topics.input,
      "--output",
      topics.output,
      "--dead-letters",
      topics.deadLetters,
      "--app-id",
      topics.appId,
      "--metrics-port",
      "0",
      "--session-timeout",
      "6s",
      // Detect assumes the envelope's compressed pace (tests/helpers/traffic.ts).
      ...(job === "detect" && !root && !extra.includes("--config")
        ? ["--config", ENVELOPE_CONFIG_FILE]
        : []),
      ...extra,
    ],
    cwd: root ?? ROOT,
    env: options.env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  Deno.mkdirSync(LOG_DIR, { recursive: true });
  const logFile = join(LOG_DIR, `${topics.appId}-${job}-${++instanceCount}.log`);
  const logged = Deno.open(logFile, { write: true, create: true, truncate: true })
    .then((f) => copyToFile(child.stdout, f));
  return { child, stderr, logFile, logged };
}

/**
 * What an instance left behind, for a failure message: its stderr and the
 * warnings and errors of its log.
 */
export async function diagnosis(i: Instance): Promise<string> {
  await i.logged.catch(() => {});
  const stderr = (await i.stderr).slice(-3000);
  const problems = (await Deno.readTextFile(i.logFile).catch(() => ""))
    .split("\n")
    .filter((l) => /"log\.level":"(warn|error|fatal)"/.test(l))
    .slice(-15)
    .map((l) => l.slice(0, 800));
  return `stderr:\n${stderr}\nlast warnings/errors of ${i.logFile}:\n${problems.join("\n")}`;
}

/** Stops an instance with SIGTERM and throws, with its diagnosis, unless it exits 0. */
export async function stopCleanly(i: Instance, what: string): Promise<void> {
  const code = await stopInstance(i);
  if (code !== 0) throw new Error(`${what} exited ${code}\n${await diagnosis(i)}`);
}

/**
 * Stops every instance (all of them, whatever happens), then throws the
 * error of `failure` if any, else the first unclean exit with its diagnosis.
 */
export async function stopAll(instances: Instance[], failure?: unknown): Promise<void> {
  const stops = await Promise.allSettled(
    instances.map((i, n) => stopCleanly(i, `instance ${n + 1} of ${instances.length}`)),
  );
  const unclean = stops.flatMap((s) => s.status === "rejected" ? [s.reason as Error] : []);
  if (failure) {
    if (unclean.length > 0 && failure instanceof Error) {
      failure.message += `\n(also: ${unclean.map((e) => e.message).join("\n")})`;
    }
    throw failure;
  }
  if (unclean.length > 0) throw unclean[0];
}

/** Stops an instance with SIGTERM and returns its exit code. */
export async function stopInstance(i: Instance): Promise<number> {
  try {
    i.child.kill("SIGTERM");
  } catch { /* already gone */ }
  const status = await i.child.status;
  return status.code;
}

/** Kills an instance with SIGKILL (no chance to commit or clean up). */
export async function killInstance(i: Instance): Promise<void> {
  try {
    i.child.kill("SIGKILL");
  } catch { /* already gone */ }
  await i.child.status;
}

/** A consumer group and the topic it consumes. */
export interface GroupSource {
  group: string;
  topic: string;
  /** The topic is written in transactions (it ends with a commit marker). */
  transactional: boolean;
}

/** The consumer groups and source topics of a job run. */
export function groupsOf(job: "aggregate" | "detect", t: JobTopics): GroupSource[] {
  if (job === "detect") return [{ group: t.appId, topic: t.input, transactional: false }];
  return [
    { group: `${t.appId}-rekey`, topic: t.input, transactional: false },
    {
      group: `${t.appId}-windows`,
      topic: internalTopicNames(t.appId).repartition,
      transactional: true,
    },
  ];
}

/** How far the run's consumer groups are: committed records and records left, summed. */
export function progress(
  job: "aggregate" | "detect",
  t: JobTopics,
): Promise<{ committed: number; behind: number; detail: string }> {
  return groupProgress(groupsOf(job, t));
}

/** How far `groups` are: committed records and records left, summed. */
export async function groupProgress(
  groups: readonly GroupSource[],
): Promise<{ committed: number; behind: number; detail: string }> {
  let committed = 0;
  let behind = 0;
  const detail: string[] = [];
  await withAdmin(async (admin) => {
    for (const g of groups) {
      const ends = await admin.fetchTopicOffsets(g.topic);
      const offsets = await admin.fetchOffsets({ groupId: g.group, topics: [g.topic] });
      for (const e of ends) {
        const c = offsets[0]?.partitions.find((p) => p.partition === e.partition);
        const done = Math.max(Number(c?.offset ?? -1), 0);
        const end = Number(e.high);
        // A transactional topic ends with a commit marker the consumer never sees.
        const left = Math.max(0, end - done - (g.transactional && end > 0 ? 1 : 0));
        committed += done;
        behind += left;
        if (left > 0) detail.push(`${g.group}/${e.partition}:${left}`);
      }
    }
  });
  return { committed, behind, detail: detail.join(" ") };
}

/**
 * Waits until every consumer group of the run has committed everything in
 * its source topic, twice in a row a second apart.
 */
export function waitCaughtUp(
  job: "aggregate" | "detect",
  t: JobTopics,
  timeoutMs = 240_000,
): Promise<void> {
  return waitGroupsCaughtUp(groupsOf(job, t), `job ${job}`, timeoutMs);
}

/** Waits until `groups` have committed everything in their topics, twice in a row a second apart. */
export async function waitGroupsCaughtUp(
  groups: readonly GroupSource[],
  what: string,
  timeoutMs = 240_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let streak = 0;
  let last = "";
  while (Date.now() < deadline) {
    // Leaders move (e.g. after another test restarted a broker): retried on the next round.
    const p = await groupProgress(groups).catch((err) => ({
      behind: -1,
      detail: `(offsets unavailable: ${err.message})`,
    }));
    last = p.detail;
    streak = p.behind === 0 ? streak + 1 : 0;
    if (streak >= 2) return;
    await new Promise((r) => setTimeout(r, 1000));
  }
  throw new Error(`${what} did not catch up within ${timeoutMs}ms; lagging: ${last}`);
}

/**
 * Runs `kills` instances of `job` one after another and kills each with
 * SIGKILL at a random moment after it has committed new progress and while
 * records are still left. Returns how many records were left at each kill.
 */
export async function killDuringRun(
  job: "aggregate" | "detect",
  t: JobTopics,
  kills: number,
  extra: string[] = [],
): Promise<number[]> {
  const leftAtKill: number[] = [];
  for (let k = 0; k < kills; k++) {
    const before = await progress(job, t).catch(() => ({ committed: 0, behind: 1 }));
    const instance = startInstance(job, t, extra);
    const deadline = Date.now() + 60_000;
    let now = before;
    while (Date.now() < deadline) {
      now = await progress(job, t).catch(() => before);
      if (now.committed > before.committed) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    await new Promise((r) => setTimeout(r, Math.random() * 1500));
    const atKill = await progress(job, t).catch(() => now);
    await killInstance(instance);
    leftAtKill.push(atKill.behind);
  }
  return leftAtKill;
}

/**
 * Runs `job` as two members of each of its consumer groups until caught up:
 * two instances, or one instance with `--threads 2`. Asserts that each group
 * has both as members, runs `whileRunning` (more checks while they run), then
 * stops them cleanly (exit 0).
 */
export async function runSharingTwo(
  job: "aggregate" | "detect",
  t: JobTopics,
  how: "instances" | "threads",
  extra: string[] = [],
  whileRunning: (first: Instance) => Promise<void> = async () => {},
): Promise<void> {
  const instances = how === "instances"
    ? [startInstance(job, t, extra), startInstance(job, t, extra)]
    : [startInstance(job, t, [...extra, "--threads", "2"])];
  let failure: unknown;
  try {
    await waitCaughtUp(job, t);
    for (const { group } of groupsOf(job, t)) {
      const { groups } = await withAdmin((admin) => admin.describeGroups([group]));
      assert.equal(groups[0].members.length, 2, `${group} has both ${how} as members`);
    }
    await whileRunning(instances[0]);
  } catch (err) {
    failure = err;
  }
  await stopAll(instances, failure);
}

/**
 * Kills three instances of `job` with SIGKILL mid-run, one after another
 * (asserting each kill left records to do), then runs one to completion.
 * Small batches make many transactions, so every kill lands mid-run.
 */
export async function killThriceThenFinish(
  job: "aggregate" | "detect",
  t: JobTopics,
  extra: string[] = [],
): Promise<void> {
  const left = await killDuringRun(job, t, 3, [...extra, "--max-batch-bytes", "65536"]);
  for (const n of left) assert.ok(n > 0, `each kill came mid-run (records left: ${left})`);
  await runToCompletion(job, t, extra);
}

/** Reads a topic fully (read_committed) and returns the records' JSON values. */
export async function readJson<T>(topic: string): Promise<Array<{ record: ReadRecord; value: T }>> {
  const records = await readTopic(topic, { expected: 1, timeoutMs: 20_000, settleMs: 2500 });
  return records.map((record) => ({
    record,
    value: JSON.parse(decoder.decode(record.value!)) as T,
  }));
}

/** Runs one instance of `job` over `t` to completion and returns when it stopped cleanly. */
export async function runToCompletion(
  job: "aggregate" | "detect",
  t: JobTopics,
  extra: string[] = [],
): Promise<void> {
  const i = startInstance(job, t, extra);
  let caughtUp: unknown;
  try {
    await waitCaughtUp(job, t);
  } catch (err) {
    caughtUp = err;
  }
  await stopCleanly(i, job);
  if (caughtUp) throw caughtUp;
}

/** A record that must end in the dead-letter topic, and the reason it must carry. */
export interface Poison {
  message: Message;
  reason: string;
}

/** The poison records every job must dead-letter, one per kind of bad input. */
export function poisonRecords(template: GeneratedRecord): Poison[] {
  const good = { ...template.tx };
  const json = (v: unknown) => Buffer.from(JSON.stringify(v));
  const without = (field: string) => {
    const copy: Record<string, unknown> = { ...good };
    delete copy[field];
    return copy;
  };
  const bad = (value: Buffer | string | null, reason: string): Poison => ({
    message: { key: template.key, value },
    reason,
  });
  return [
    bad(Buffer.from('{"transactionId": "abc", "amount": '), "malformed_json"),
    bad(Buffer.from("not json at all"), "malformed_json"),
    bad(Buffer.from('{"amount": NaN}'), "malformed_json"),
    bad(null, "empty_value"),
    bad(json([1, 2, 3]), "not_object"),
    bad(json(without("merchantId")), "missing_field"),
    bad(json(without("amount")), "missing_field"),
    bad(json({ ...good, amount: "12.50" }), "wrong_type"),
    bad(json({ ...good, transactionTime: "yesterday" }), "wrong_type"),
    bad(json({ ...good, isInternational: "no" }), "wrong_type"),
    bad(json({ ...good, amount: -5 }), "invalid_amount"),
    bad(json({ ...good, amount: 0 }), "invalid_amount"),
    bad(json({ ...good, amount: 1.234 }), "invalid_amount"),
    bad(json({ ...good, currency: "XYZ" }), "unknown_currency"),
    bad(json({ ...good, transactionId: "not-a-uuid" }), "invalid_uuid"),
  ];
}

/** The dead letters of a run, as [reason, count] sorted by reason. */
export async function deadLetterReasons(topic: string): Promise<Array<[string, number]>> {
  const records = await readTopic(topic, { expected: 1, timeoutMs: 15_000, settleMs: 2500 });
  const counts = new Map<string, number>();
  for (const r of records) {
    const reason = r.headers["txpipe-dlq-reason"] ?? "(none)";
    counts.set(reason, (counts.get(reason) ?? 0) + 1);
  }
  return [...counts].sort(([a], [b]) => a.localeCompare(b));
}

/** Expected [reason, count] pairs of a list of reasons, sorted by reason. */
export function countReasons(reasons: string[]): Array<[string, number]> {
  const counts = new Map<string, number>();
  for (const r of reasons) counts.set(r, (counts.get(r) ?? 0) + 1);
  return [...counts].sort(([a], [b]) => a.localeCompare(b));
}

/** The shared input of the stream job tests: seeded transactions, then poison and late records. */
export interface SharedInput {
  topic: string;
  /** Valid, on-time transactions in production order. */
  records: GeneratedRecord[];
  poison: Poison[];
  /** Valid transactions far behind every watermark (dead-lettered by the aggregation only). */
  late: GeneratedRecord[];
  /** Partition of each transactionId, as read back from Kafka. */
  partitionOf: Map<string, number>;
}

let shared: Promise<SharedInput> | undefined;

/** Builds (once per test process) the input topic the stream job tests share. */
export function sharedInput(): Promise<SharedInput> {
  shared ??= (async () => {
    const records = generate(80_000, "stream-tests", 0.03);
    const poison = poisonRecords(records[0]);
    const late = generate(6, "late-records").map((r) => ({
      ...r,
      tx: { ...r.tx, transactionTime: records[0].tx.transactionTime - 3_600_000 },
    }));
    const messages = [
      ...records.map((r) => toMessage(r)),
      ...poison.map((p) => p.message),
      ...late.map((r) => toMessage(r)),
    ];
    const topic = await inputTopic("stream_input", messages);
    const back = await readTopic(topic, { expected: messages.length });
    const partitionOf = new Map<string, number>();
    for (const r of back) {
      try {
        const v = JSON.parse(decoder.decode(r.value!));
        if (typeof v?.transactionId === "string") partitionOf.set(v.transactionId, r.partition);
      } catch { /* poison */ }
    }
    return { topic, records, poison, late, partitionOf };
  })();
  return shared;
}

/** Output values as sorted JSON texts, to compare two runs exactly. */
export function canonical(values: readonly unknown[]): string[] {
  return values.map((v) => JSON.stringify(v)).sort();
}

/** A finished run: its topics and the output values it committed (read_committed). */
export interface CompletedRun<T> {
  topics: JobTopics;
  outputs: T[];
}

/** The output values of a run, read back read_committed. */
export async function outputsOf<T>(topics: JobTopics): Promise<T[]> {
  return (await readJson<T>(topics.output)).map((x) => x.value);
}

/**
 * A memoised uninterrupted single-instance run of `job` over the shared
 * input: the baseline that crash and scale-out runs are compared with.
 */
export function baselineRun<T>(
  job: "aggregate" | "detect",
  label: string,
  flags: string[] = [],
): () => Promise<CompletedRun<T>> {
  let run: Promise<CompletedRun<T>> | undefined;
  return () =>
    run ??= (async () => {
      const topics = runTopics((await sharedInput()).topic, label);
      await runToCompletion(job, topics, flags);
      return { topics, outputs: await outputsOf<T>(topics) };
    })();
}
