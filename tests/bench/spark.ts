/**
 * The Spark Structured Streaming contender of `deno task bench`: the same
 * windowed aggregation as txpipe's `jobs/aggregate.ts`, written in PySpark
 * (tests/bench/spark/aggregate.py), over the same backlog.
 *
 * The install is large (pyspark is a ~450 MB download, ~520 MB installed),
 * so it lives behind the bench's flag and in the git-ignored cache:
 * `.cache/bench/spark/venv` (pyspark from PyPI, requirements.txt) and
 * `.cache/bench/spark/jars` (the Kafka connector from Maven Central,
 * pom.xml), made once and kept while those two files are unchanged.
 *
 * A run is timed from the spawn of the Python driver to the end of the
 * micro-batch that evicts the windows the last record made final (see
 * {@link runSpark}); memory and CPU cover the driver and its JVM.
 *
 * On a secured cluster the Kafka source and sink connect as the admin: the
 * script reads its credentials from a temporary 0600 properties file
 * (`--client-config`, tests/bench/client_config.ts), never from its command
 * line, and the file is deleted after the run.
 *
 * @module
 */
import { join } from "node:path";
import { checkJava, homeDir, ROOT } from "../../stacks/local/cluster.ts";
import { topicAs, TOPICS } from "../../stacks/topology.ts";
import { createKafka, ensureTopics } from "../../jobs/lib/kafka.ts";
import { CURRENCIES } from "../../jobs/lib/currency.ts";
import { BROKERS, TOPO } from "../helpers/cluster.ts";
import { type AggregateSettings, type CatchUpRun, perSecond, type WindowTotals } from "./types.ts";
import { processTree, ProcessWatch } from "./proc.ts";
import { windowTotals } from "./results.ts";
import { startReader } from "./reader.ts";
import { type ClientConfig, writeClientConfig } from "../helpers/client_config.ts";

const SOURCE = join(ROOT, "tests/bench/spark");
const REQUIREMENTS = join(SOURCE, "requirements.txt");
const POM = join(SOURCE, "pom.xml");
const SCRIPT = join(SOURCE, "aggregate.py");
/** The connector's jar, whose presence says the jar folder is complete. */
const CONNECTOR_JAR = /^spark-sql-kafka-0-10_2\.13-[\d.]+\.jar$/;

/** A ready Spark install. */
export interface SparkInstall {
  /** The venv's python, with pyspark. */
  python: string;
  /** Folder of the Kafka connector's jars. */
  jars: string;
  /** The aggregation script. */
  script: string;
}

/** A failed install or run: one line saying what failed (details in a log file). */
export class SparkError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SparkError";
  }
}

/** `.cache/bench/spark` (under TXPIPE_HOME when set). */
export function sparkDir(): string {
  return join(homeDir(), "bench", "spark");
}

function install(): SparkInstall {
  const dir = sparkDir();
  return { python: join(dir, "venv/bin/python"), jars: join(dir, "jars"), script: SCRIPT };
}

/** SHA-256 of requirements.txt and pom.xml, hex: the cache holds exactly their install. */
async function digest(): Promise<string> {
  const text = (await Deno.readTextFile(REQUIREMENTS)) + "\0" + (await Deno.readTextFile(POM));
  const bytes = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
}

function stampFile(): string {
  return join(sparkDir(), "install.sha256");
}

/** The install, if `ensureSpark` finished one for the committed files; never installs. */
export async function sparkInstalled(): Promise<SparkInstall | undefined> {
  const cached = await Deno.readTextFile(stampFile()).catch(() => "");
  return cached.trim() === await digest() ? install() : undefined;
}

/** Runs one install step, its output appended to `log`; throws a one-line SparkError on failure. */
async function step(what: string, cmd: string, args: string[], log: string): Promise<void> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  } catch (err) {
    throw new SparkError(`${what}: cannot run ${cmd} (${(err as Error).message})`);
  }
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  await Deno.writeTextFile(log, `$ ${cmd} ${args.join(" ")}\n${text}\n`, { append: true });
  if (!out.success) {
    // The tool's own last word: its last line naming an error, else its last line.
    const lines = text.trim().split("\n").map((l) => l.trim()).filter((l) => l);
    const last = lines.filter((l) => /error/i.test(l)).pop() ?? lines.pop() ?? "no output";
    throw new SparkError(`${what} failed (exit ${out.code}; see ${log}): ${last.slice(0, 300)}`);
  }
}

async function duBytes(path: string): Promise<number> {
  const out = await new Deno.Command("du", { args: ["-sb", path], stdout: "piped" }).output();
  return Number(new TextDecoder().decode(out.stdout).split("\t")[0]) || 0;
}

/**
 * Makes the Spark install unless the cache holds the one of the committed
 * requirements.txt and pom.xml: a venv with pyspark, and the Kafka connector's
 * jars. A changed file reinstalls from scratch (two pysparks or two connector
 * versions must never mix). Throws a {@link SparkError} of one line on failure.
 */
export async function ensureSpark(
  say: (line: string) => void = console.log,
): Promise<SparkInstall> {
  const ready = await sparkInstalled();
  if (ready) return ready;
  const started = performance.now();
  const dir = sparkDir();
  const paths = install();
  await checkJava().catch((err) => {
    throw new SparkError(`Spark 4 needs Java 17 or later: ${err.message}`);
  });
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  await Deno.mkdir(dir, { recursive: true });
  const log = join(dir, "install.log");
  const venv = join(dir, "venv");
  say(`installing Spark for the benchmark (once) into ${dir}; the log is ${log}`);
  say("  creating a Python venv ...");
  await step("creating the venv", "python3", ["-m", "venv", venv], log);
  say("  pip install -r tests/bench/spark/requirements.txt (pyspark: ~450 MB) ...");
  await step(
    "pip install",
    join(venv, "bin/pip"),
    ["install", "--disable-pip-version-check", "-q", "-r", REQUIREMENTS],
    log,
  );
  say("  resolving the Kafka connector from Maven Central (tests/bench/spark/pom.xml) ...");
  await step(
    "mvn dependency:copy-dependencies",
    "mvn",
    ["-q", "-B", "-f", POM, "dependency:copy-dependencies", `-DoutputDirectory=${paths.jars}`],
    log,
  );
  const jars = [...Deno.readDirSync(paths.jars)].map((e) => e.name);
  if (!jars.some((n) => CONNECTOR_JAR.test(n))) {
    throw new SparkError(`mvn left no spark-sql-kafka jar in ${paths.jars} (see ${log})`);
  }
  await step("checking pyspark", paths.python, ["-c", "import pyspark"], log);
  await Deno.writeTextFile(stampFile(), (await digest()) + "\n");
  const mb = (await duBytes(dir)) / 1e6;
  const secs = (performance.now() - started) / 1000;
  say(`Spark installed in ${secs.toFixed(0)}s (${mb.toFixed(0)} MB in ${dir})`);
  return paths;
}

/** One progress line of aggregate.py: an executed micro-batch. */
export interface BatchProgress {
  batchId: number;
  numInputRows: number;
  cumulativeInputRows: number;
  endOffsets: Record<string, Record<string, number>> | null;
  watermark?: string;
  /** Epoch ms, Spark's clock (this machine's). */
  batchStartedAt: number;
  batchEndedAt: number;
  outputRows: number | null;
  stateRows: number | null;
  droppedByWatermark: number | null;
}

/** Decimals per currency code, from txpipe's CURRENCIES. */
function currencyDecimals(): string {
  return JSON.stringify(
    Object.fromEntries(Object.values(CURRENCIES).map((c) => [c.code, c.exponent])),
  );
}

async function createOutputTopic(output: string): Promise<void> {
  const admin = createKafka({
    principal: "admin",
    clientId: "txpipe-bench-spark",
    brokers: BROKERS,
  }).admin();
  await admin.connect();
  try {
    await ensureTopics(admin, [topicAs(TOPO, TOPICS.aggregates, output)]);
  } finally {
    await admin.disconnect();
  }
}

/** Keeps the last `max` characters of a stream (Spark's stderr, for an error message). */
function tail(stream: ReadableStream<Uint8Array>, max = 8000): { text: () => string } {
  let text = "";
  (async () => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      text = (text + chunk).slice(-max);
    }
  })().catch(() => {});
  return { text: () => text };
}

/** Calls `onLine` with each parsed JSON line of `stream`; other lines are ignored. */
async function readLines(
  stream: ReadableStream<Uint8Array>,
  onLine: (v: Record<string, unknown>) => void,
): Promise<void> {
  let buffered = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buffered += chunk;
    const lines = buffered.split("\n");
    buffered = lines.pop()!;
    for (const line of lines) {
      try {
        onLine(JSON.parse(line));
      } catch { /* not a progress line */ }
    }
  }
}

function cmdline(pid: number): string {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/cmdline`);
  } catch {
    return "";
  }
}

/**
 * SIGTERM to the driver, then after its exit (or `graceMs`) SIGKILL to what is
 * left of its process tree: the JVM normally exits by itself when the driver
 * closes its stdin. A pid is killed only while it still runs the command it
 * ran at the start, never a process that reused the number.
 */
async function stopTree(child: Deno.ChildProcess, graceMs: number): Promise<void> {
  const tree = processTree(child.pid).map((pid) => ({ pid, cmd: cmdline(pid) }));
  try {
    child.kill("SIGTERM");
  } catch { /* already gone */ }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const grace = new Promise((r) => timer = setTimeout(r, graceMs));
  await Promise.race([child.status, grace]);
  clearTimeout(timer);
  await new Promise((r) => setTimeout(r, 2000));
  for (const { pid, cmd } of tree) {
    if (cmd && cmdline(pid) === cmd) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
  }
  await child.status;
}

/** How long, after the batch that read the last record, to wait for the evicting batch. */
const EVICTION_WAIT_MS = 10_000;

/**
 * Runs Spark over the backlog of `input` (`records` records) writing to
 * `output` (created if missing, with transaction_aggregates' settings), and
 * returns the run and the windows it emitted.
 *
 * Completion: Spark reads the backlog in micro-batches; the batch that brings
 * the cumulative input rows to `records` only moves the watermark, and Spark
 * then runs one more, input-less batch that evicts (emits) every window the
 * new watermark has closed: `doneAt` is the end of that batch (or of the
 * last reading batch when none follows within 10 s, i.e. the watermark did
 * not move). Then Spark is stopped and the independent reader given time to
 * receive every row the sink reported.
 */
export async function runSpark(o: {
  input: string;
  output: string;
  records: number;
  settings: AggregateSettings;
  timeoutMs?: number;
  /** Sees each micro-batch's progress line (e.g. to print progress). */
  onBatch?: (b: BatchProgress) => void;
}): Promise<{ run: CatchUpRun; windows: WindowTotals[] }> {
  const spark = await ensureSpark(() => {});
  await createOutputTopic(o.output);
  const reader = await startReader(o.output);
  const workDir = await Deno.makeTempDir({ prefix: "txpipe-bench-spark-" });
  let clientConfig: ClientConfig | undefined;
  try {
    // The admin's credentials, if the cluster has any (a 0600 file in the 0700 work dir).
    clientConfig = await writeClientConfig({ dir: workDir });
    const startedAt = Date.now();
    const child = new Deno.Command(spark.python, {
      args: [
        spark.script,
        "--bootstrap",
        BROKERS.join(","),
        "--input",
        o.input,
        "--output",
        o.output,
        "--window-ms",
        String(o.settings.windowMs),
        "--allowed-lateness-ms",
        String(o.settings.allowedLatenessMs),
        "--currencies",
        currencyDecimals(),
        "--work-dir",
        workDir,
        "--jars",
        spark.jars,
        ...clientConfig.args("--client-config"),
      ],
      // Spark would otherwise pick the host's first interface (and warn about it).
      env: { PYTHONUNBUFFERED: "1", SPARK_LOCAL_IP: "127.0.0.1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const watch = new ProcessWatch(child.pid);
    const stderr = tail(child.stderr);
    try {
      const batches = await awaitBacklog(
        child,
        o.records,
        o.timeoutMs ?? 1_800_000,
        stderr,
        o.onBatch,
      );
      watch.sample();
      const usage = watch.usage;
      const done = batches[batches.length - 1];
      // numOutputRows is -1 where a sink does not report it.
      const expected = batches.reduce((n, b) => n + Math.max(b.outputRows ?? 0, 0), 0);
      await reader.waitFor(expected, 30_000);
      const firstOutputAt = reader.firstAt;
      const run: CatchUpRun = {
        contender: "Spark aggregate",
        records: o.records,
        startedAt,
        firstOutputAt,
        doneAt: done.batchEndedAt,
        recordsPerSecond: perSecond(o.records, startedAt, done.batchEndedAt),
        recordsPerSecondFromFirstOutput: firstOutputAt === undefined
          ? undefined
          : perSecond(o.records, firstOutputAt, done.batchEndedAt),
        peakRssBytes: usage.peakRssBytes,
        cpuSeconds: usage.cpuSeconds,
        outputs: reader.records.length,
      };
      return { run, windows: windowTotals(reader.records.map((r) => r.value)) };
    } finally {
      watch.stop();
      await stopTree(child, 20_000);
    }
  } finally {
    await clientConfig?.remove();
    await reader.stop();
    await Deno.remove(workDir, { recursive: true }).catch(() => {});
  }
}

/**
 * Follows aggregate.py's progress lines until the backlog is read and the
 * evicting batch after it (if any) ended; returns the batches seen.
 */
function awaitBacklog(
  child: Deno.ChildProcess,
  records: number,
  timeoutMs: number,
  stderr: { text: () => string },
  onBatch: (b: BatchProgress) => void = () => {},
): Promise<BatchProgress[]> {
  return new Promise((resolve, reject) => {
    const batches: BatchProgress[] = [];
    let lastReading: BatchProgress | undefined;
    let evictionTimer: ReturnType<typeof setTimeout> | undefined;
    const timer = setTimeout(
      () => finish(new SparkError(`Spark did not process ${records} records in ${timeoutMs}ms`)),
      timeoutMs,
    );
    const finish = (err?: Error) => {
      clearTimeout(timer);
      clearTimeout(evictionTimer);
      if (err) reject(err);
      else resolve(batches);
    };
    readLines(child.stdout, (line) => {
      if (typeof line.batchId !== "number") return;
      const b = line as unknown as BatchProgress;
      batches.push(b);
      onBatch(b);
      if (lastReading) return finish(); // the batch after the last reading one
      if (b.cumulativeInputRows >= records) {
        lastReading = b;
        evictionTimer = setTimeout(() => finish(), EVICTION_WAIT_MS);
      }
    }).catch(() => {});
    child.status.then((s) => {
      const why = `Spark exited (code ${s.code}) before processing ${records} records`;
      finish(new SparkError(`${why}; its stderr ends:\n${stderr.text().slice(-3000)}`));
    });
  });
}
