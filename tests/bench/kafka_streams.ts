/**
 * The Kafka Streams contender of `deno task bench`: txpipe's aggregation job
 * written as a Kafka Streams application (tests/bench/streams, Java), built
 * with Maven into the cache and run as one JVM (default JVM settings) over the
 * same backlog.
 *
 * A run is over when the application's consumer group (its application.id)
 * has committed offsets at the end of the input topic and of its repartition
 * topic, seen twice a second apart: then every input record has been through
 * both sub-topologies and every window it closed is in the output (exactly
 * once: offsets, state and output commit in one transaction). The JVM is then
 * stopped with SIGTERM, which closes it cleanly and leaves the group.
 *
 * Kafka Streams' grace is measured against stream time per repartition
 * partition, which mixes all input partitions: on a backlog, whose partitions
 * are fetched and processed unevenly, records are dropped as late unless the
 * grace covers that skew (minutes of event time on 200 000 records, not the
 * seconds of txpipe's per-input-partition allowed lateness). The run reports
 * how many it dropped. See tests/bench/streams/.../AggregateApp.java.
 *
 * On a secured cluster the app connects as the admin: its credentials reach
 * it in a temporary 0600 properties file (`--client-config`,
 * tests/bench/client_config.ts), deleted after the run.
 *
 * @module
 */
import { join } from "node:path";
import { homeDir, ROOT } from "../../stacks/local/cluster.ts";
import { topicAs, TOPICS } from "../../stacks/topology.ts";
import { CURRENCIES } from "../../jobs/lib/currency.ts";
import { ensureTopics } from "../../jobs/lib/kafka.ts";
import { BROKERS, TOPO, withAdmin } from "../helpers/cluster.ts";
import { groupProgress, type GroupSource } from "../helpers/jobs.ts";
import { ProcessWatch, stopGracefully } from "./proc.ts";
import { windowTotals } from "./results.ts";
import { type OutputReader, startReader } from "./reader.ts";
import { type ClientConfig, writeClientConfig } from "../helpers/client_config.ts";
import { type AggregateSettings, type CatchUpRun, perSecond, type WindowTotals } from "./types.ts";

const PROJECT = join(ROOT, "tests/bench/streams");
const MAIN_CLASS = "dev.txpipe.bench.AggregateApp";
const CONTENDER = "Kafka Streams aggregate";
const decoder = new TextDecoder();

/** The cache of the build and of the runs' state stores (git-ignored). */
function streamsDir(): string {
  return join(homeDir(), "bench", "streams");
}

/** The pom and every source file, sorted, for the build's cache key. */
async function buildInputs(): Promise<string[]> {
  const files = [join(PROJECT, "pom.xml")];
  const walk = async (dir: string) => {
    for await (const e of Deno.readDir(dir)) {
      const path = join(dir, e.name);
      if (e.isDirectory) await walk(path);
      else if (e.isFile) files.push(path);
    }
  };
  await walk(join(PROJECT, "src"));
  return files.sort();
}

/** SHA-256 over the paths and contents of the build's inputs, hex. */
async function buildDigest(): Promise<string> {
  const parts: Uint8Array<ArrayBuffer>[] = [];
  for (const path of await buildInputs()) {
    // Each file as "relative path NUL content NUL": renaming a file changes the key too.
    parts.push(new TextEncoder().encode(`${path.slice(PROJECT.length)}\0`));
    parts.push(await Deno.readFile(path), new Uint8Array([0]));
  }
  const bytes = new Uint8Array(await new Blob(parts).arrayBuffer());
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The build's classes and its dependency jars, as a java classpath. */
async function classpath(dir: string): Promise<string> {
  const jars: string[] = [];
  for await (const e of Deno.readDir(join(dir, "lib"))) {
    if (e.name.endsWith(".jar")) jars.push(join(dir, "lib", e.name));
  }
  return [join(dir, "build", "classes"), ...jars.sort()].join(":");
}

/**
 * Compiles the Kafka Streams app and copies its dependencies from Maven
 * Central into the cache, unless the cache holds the build of exactly this
 * pom and these sources; returns the java classpath.
 */
export async function buildKafkaStreams(say: (line: string) => void = () => {}): Promise<string> {
  const dir = streamsDir();
  const stamp = join(dir, "build.sha256");
  const digest = await buildDigest();
  if ((await Deno.readTextFile(stamp).catch(() => "")).trim() === digest) {
    return await classpath(dir);
  }
  say(`building the Kafka Streams app (tests/bench/streams) with Maven into ${dir} ...`);
  // A changed pom may drop a dependency: stale jars must not stay on the classpath.
  for (const sub of ["build", "lib", "build.sha256"]) {
    await Deno.remove(join(dir, sub), { recursive: true }).catch(() => {});
  }
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("mvn", {
      args: [
        "-q",
        "-B",
        "-Dstyle.color=never",
        "-f",
        join(PROJECT, "pom.xml"),
        `-Dtxpipe.build.dir=${join(dir, "build")}`,
        "compile",
        "dependency:copy-dependencies",
        `-DoutputDirectory=${join(dir, "lib")}`,
        "-DincludeScope=runtime",
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (err) {
    throw new Error(
      `mvn could not be started (${
        (err as Error).message
      }): install Maven (e.g. apt-get install maven)`,
    );
  }
  if (!out.success) {
    throw new Error(
      `mvn could not build the Kafka Streams app (tests/bench/streams): ${
        firstError(out) ?? `exit ${out.code}`
      }`,
    );
  }
  await Deno.writeTextFile(stamp, digest + "\n");
  return await classpath(dir);
}

/** ANSI colour codes, which Debian's Maven prints even in batch mode. */
const ANSI = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, "g");

/** Maven's first telling [ERROR] line: a compile error's place, or the failed goal's cause. */
function firstError(out: Deno.CommandOutput): string | undefined {
  const text = (decoder.decode(out.stdout) + decoder.decode(out.stderr)).replace(ANSI, "");
  const errors = text.split("\n").filter((l) => l.startsWith("[ERROR]"))
    .map((l) => l.slice("[ERROR]".length).trim())
    .filter((l) => l !== "" && l !== "COMPILATION ERROR :");
  return errors[0];
}

/** `CODE=exponent` pairs of the configured currencies (jobs/lib/currency.ts). */
function currencyDecimals(): string {
  return Object.values(CURRENCIES).map((c) => `${c.code}=${c.exponent}`).join(",");
}

/** The application's internal topics (repartition, changelogs), by name prefix. */
async function internalTopics(appId: string): Promise<string[]> {
  const topics = await withAdmin((admin) => admin.listTopics());
  return topics.filter((t) =>
    t.startsWith(`${appId}-`) && (t.endsWith("-repartition") || t.endsWith("-changelog"))
  );
}

/** The group and topics whose committed offsets say the run is done. */
async function completionSources(appId: string, input: string): Promise<GroupSource[]> {
  const repartitions = (await internalTopics(appId)).filter((t) => t.endsWith("-repartition"));
  return [
    { group: appId, topic: input, transactional: false },
    // Written by the app's transactions: each ends with a commit marker never consumed.
    ...repartitions.map((topic) => ({ group: appId, topic, transactional: true })),
  ];
}

/**
 * Waits until the app's group has committed the end of the input and of the
 * repartition topic, twice in a row a second apart; returns when it first did.
 */
async function waitDone(
  appId: string,
  input: string,
  o: { timeoutMs: number; exited: () => boolean; stderr: () => string },
): Promise<number> {
  const deadline = Date.now() + o.timeoutMs;
  let since: number | undefined;
  let last = "";
  while (Date.now() < deadline) {
    if (o.exited()) {
      throw new Error(`Kafka Streams app exited before the end of ${input}:\n${o.stderr()}`);
    }
    const checkedAt = Date.now();
    const sources = await completionSources(appId, input).catch(() => []);
    // Before the app created its repartition topic it cannot be done.
    const p = sources.length < 2
      ? { behind: -1, detail: "(no repartition topic yet)" }
      : await groupProgress(sources).catch((err) => ({
        behind: -1,
        detail: `(offsets unavailable: ${err.message})`,
      }));
    last = p.detail;
    if (p.behind !== 0) since = undefined;
    else if (since === undefined) since = checkedAt;
    else if (checkedAt - since >= 1000) return since;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(
    `Kafka Streams app did not catch up with ${input} within ${o.timeoutMs}ms; lagging: ${last}`,
  );
}

/** Deletes the app's internal topics and its consumer group (the output topic stays). */
async function cleanUp(appId: string): Promise<void> {
  const topics = await internalTopics(appId).catch(() => []);
  await withAdmin(async (admin) => {
    if (topics.length > 0) await admin.deleteTopics({ topics }).catch(() => {});
    // The app left the group on close; a member that has not is gone after a retry or two.
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        await admin.deleteGroups([appId]);
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }).catch(() => {});
}

/** What the app reported when it stopped: records skipped as invalid or late. */
export interface StreamsSkipped {
  invalid: number;
  /** Dropped because their window had closed (Kafka Streams' dropped-records). */
  late: number;
}

/**
 * Runs the Kafka Streams app over the backlog in `input` (`records`
 * records) until it has processed and committed all of it, then stops it.
 * Returns the measured run and the windows it emitted (read back by the
 * independent read_committed reader); also what it skipped.
 */
export async function runKafkaStreams(o: {
  input: string;
  output: string;
  records: number;
  settings: AggregateSettings;
  timeoutMs?: number;
  threads?: number;
}): Promise<{ run: CatchUpRun; windows: WindowTotals[]; skipped: StreamsSkipped }> {
  const cp = await buildKafkaStreams();
  const appId = `bench-streams-${crypto.randomUUID().slice(0, 8)}`;
  const stateDir = join(streamsDir(), "state", appId);
  await withAdmin((admin) => ensureTopics(admin, [topicAs(TOPO, TOPICS.aggregates, o.output)]) // sink topics must exist
  );
  const reader = await startReader(o.output);
  let clientConfig: ClientConfig | undefined;
  try {
    // The admin's credentials, if the cluster has any: a 0600 file the app reads at start-up.
    clientConfig = await writeClientConfig();
    const startedAt = Date.now();
    const child = new Deno.Command("java", {
      args: [
        "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
        "-cp",
        cp,
        MAIN_CLASS,
        ...["--bootstrap", BROKERS.join(","), "--input", o.input, "--output", o.output],
        ...["--application-id", appId, "--state-dir", stateDir],
        ...["--window-ms", String(o.settings.windowMs)],
        ...["--grace-ms", String(o.settings.allowedLatenessMs)],
        ...["--currency-decimals", currencyDecimals(), "--threads", String(o.threads ?? 1)],
        ...clientConfig.args("--client-config"),
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const watch = new ProcessWatch(child.pid);
    let exited = false;
    child.status.then(() => exited = true);
    const stdout = new Response(child.stdout).text();
    let stderr = "";
    const stderrDone = child.stderr.pipeThrough(new TextDecoderStream()).pipeTo(
      new WritableStream({ write: (s) => void (stderr = (stderr + s).slice(-8000)) }),
    ).catch(() => {});
    let doneAt: number;
    try {
      doneAt = await waitDone(appId, o.input, {
        timeoutMs: o.timeoutMs ?? 600_000,
        exited: () => exited,
        stderr: () => stderr.slice(-3000),
      });
    } catch (err) {
      watch.stop();
      await stopGracefully(child, 10_000);
      throw err;
    }
    watch.sample();
    const usage = watch.stop();
    const status = await stopGracefully(child, 60_000);
    await stderrDone;
    // The JVM exits 143 (128 + SIGTERM) after its shutdown hook closed Kafka Streams.
    const summary = /"summary":(\{[^}]*\})/.exec(await stdout);
    if (!summary || (status.code !== 0 && status.code !== 143)) {
      throw new Error(
        `Kafka Streams app did not stop cleanly (exit ${status.code}):\n${stderr.slice(-3000)}`,
      );
    }
    await waitForOutputs(o.output, reader);
    const firstOutputAt = reader.firstAt;
    const run: CatchUpRun = {
      contender: CONTENDER,
      records: o.records,
      startedAt,
      firstOutputAt,
      doneAt,
      recordsPerSecond: perSecond(o.records, startedAt, doneAt),
      recordsPerSecondFromFirstOutput: firstOutputAt === undefined
        ? undefined
        : perSecond(o.records, firstOutputAt, doneAt),
      peakRssBytes: usage.peakRssBytes,
      cpuSeconds: usage.cpuSeconds,
      outputs: reader.records.length,
    };
    return {
      run,
      windows: windowTotals(reader.records.map((r) => r.value)),
      skipped: JSON.parse(summary[1]) as StreamsSkipped,
    };
  } finally {
    await clientConfig?.remove();
    await reader.stop();
    await cleanUp(appId);
    await Deno.remove(stateDir, { recursive: true }).catch(() => {});
  }
}

/**
 * Waits until the reader holds every committed output: in each partition the
 * last record sits just before the final commit marker. Gives up after 5 s
 * without a new record (an aborted transaction at the end leaves a gap).
 */
async function waitForOutputs(
  topic: string,
  reader: OutputReader,
): Promise<void> {
  const ends = await withAdmin((admin) => admin.fetchTopicOffsets(topic));
  const complete = () => {
    const last = new Map<number, number>();
    for (const r of reader.records) {
      last.set(r.partition, Math.max(last.get(r.partition) ?? -1, Number(r.offset)));
    }
    return ends.every((e) =>
      Number(e.high) === 0 || (last.get(e.partition) ?? -1) >= Number(e.high) - 2
    );
  };
  let seen = reader.records.length;
  let quietSince = Date.now();
  while (!complete() && Date.now() - quietSince < 5000) {
    await new Promise((r) => setTimeout(r, 100));
    if (reader.records.length !== seen) [seen, quietSince] = [reader.records.length, Date.now()];
  }
}
