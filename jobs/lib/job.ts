/**
 * The shell every job shares (producer, stream jobs, evaluator): the common
 * flags, the logger (ECS JSON, or readable lines on a terminal), the /metrics
 * endpoint, connecting to Kafka with retries, creating the topics it needs,
 * and stopping cleanly on SIGINT/SIGTERM.
 *
 * @module
 */
import type { Kafka } from "kafkajs";
import {
  APP_IDS,
  bootstrapServers,
  type JobSpec,
  topicAs,
  TOPICS,
  type TopicSpec,
  topology,
} from "../../stacks/topology.ts";
import {
  type CommandSpec,
  defineFlags,
  flagKey,
  flagSource,
  type FlagSpecs,
  type FlagValues,
  parseArgs,
} from "./cli.ts";
import {
  createLogger,
  LOG_FORMATS,
  type LogFormatChoice,
  type Logger,
  resolveLogFormat,
} from "./log.ts";
import { serveMetrics } from "./metrics.ts";
import { clashMessage, portHolder } from "./ports.ts";
import {
  connectWithRetry,
  createKafka,
  ensureTopics,
  KafkaConnectError,
  KafkaUnreachableError,
  missingCredentialsHint,
  probeKafka,
} from "./kafka.ts";
import { CredentialsError, SECURITY_PROTOCOLS } from "./credentials.ts";
import { KAFKA_USERS } from "../../stacks/security.ts";
import { type RunOptions, runStream, STREAM_DEFAULTS, type StreamProcessor } from "./stream.ts";
import { runThreads } from "./threads.ts";

/**
 * The flags of every command that reaches Kafka (the jobs and `deno task
 * consume`): where Kafka is and how long to keep trying it.
 */
export function connectionFlags() {
  return defineFlags({
    brokers: {
      kind: "list",
      default: bootstrapServers(topology()),
      help: "Kafka bootstrap servers, comma-separated",
      placeholder: "HOST:PORT,...",
    },
    "connect-attempts": {
      kind: "int",
      min: 1,
      default: 4,
      help: "connection attempts (with backoff) before giving up on an unreachable Kafka",
      placeholder: "N",
    },
    ...securityFlags(),
  });
}

/**
 * How a job reaches a secured Kafka (docs/security.md): each flag is read
 * as its TXPIPE_* variable is, by jobs/lib/credentials.ts's
 * `kafkaConnection`, which {@link exportSecurityFlags} hands them to. There is
 * no password flag: a command line is visible to every local user (`ps`).
 */
export function securityFlags() {
  return defineFlags({
    "kafka-security-protocol": {
      kind: "string",
      choices: SECURITY_PROTOCOLS,
      help: "how to connect: PLAINTEXT, SASL_PLAINTEXT, SASL_SSL or SSL (default: SASL when " +
        "credentials are found, TLS when a CA file is given)",
      placeholder: "PROTOCOL",
    },
    "kafka-sasl-mechanism": {
      kind: "string",
      choices: ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"],
      help: "SASL mechanism (default SCRAM-SHA-512)",
      placeholder: "MECHANISM",
    },
    "kafka-ca-file": {
      kind: "string",
      help: "PEM CA bundle the brokers' certificates must chain to (default: the system's CAs)",
      placeholder: "FILE",
    },
    "kafka-user": {
      kind: "string",
      help: "SASL user to connect as (default: the job's own); its password in " +
        "TXPIPE_KAFKA_PASSWORD or --kafka-password-file",
      placeholder: "USER",
    },
    "kafka-password-file": {
      kind: "string",
      help: "file holding only the --kafka-user's password",
      placeholder: "FILE",
    },
    "kafka-config": {
      kind: "string",
      help: "Java-style client properties file (security.protocol, sasl.mechanism, " +
        "sasl.jaas.config, ssl.ca.location), what a managed cluster hands out; the flags above win",
      placeholder: "FILE",
    },
  });
}

/** The values of {@link securityFlags}, as parsed. */
export interface SecurityValues {
  kafkaSecurityProtocol?: string;
  kafkaSaslMechanism?: string;
  kafkaCaFile?: string;
  kafkaUser?: string;
  kafkaPasswordFile?: string;
  kafkaConfig?: string;
}

/**
 * Hands the security flags given to the credentials' rules, as the
 * TXPIPE_* variables of the same names (the process's own Kafka clients
 * and those of the jobs it starts read them).
 */
export function exportSecurityFlags(v: SecurityValues): void {
  const pairs: Array<[string, string | undefined]> = [
    ["TXPIPE_KAFKA_SECURITY_PROTOCOL", v.kafkaSecurityProtocol],
    ["TXPIPE_KAFKA_SASL_MECHANISM", v.kafkaSaslMechanism],
    ["TXPIPE_KAFKA_CA_FILE", v.kafkaCaFile],
    ["TXPIPE_KAFKA_USER", v.kafkaUser],
    ["TXPIPE_KAFKA_PASSWORD_FILE", v.kafkaPasswordFile],
    ["TXPIPE_KAFKA_CONFIG", v.kafkaConfig],
  ];
  for (const [name, value] of pairs) if (value !== undefined) Deno.env.set(name, value);
}

/**
 * Flags every txpipe job takes: where Kafka is, where /metrics is served, how
 * long to keep trying an unreachable Kafka, and the format of its logs.
 */
export function commonFlags(job: JobSpec["name"]) {
  const spec = topology().jobs.find((j) => j.name === job)!;
  const connection = connectionFlags();
  return defineFlags({
    brokers: connection.brokers,
    "metrics-port": {
      kind: "int",
      min: 0,
      max: 65535,
      default: spec.metricsPort,
      help: "port of the Prometheus /metrics endpoint; 0 = any free port",
      placeholder: "PORT",
    },
    "metrics-host": {
      kind: "string",
      default: "127.0.0.1",
      help: "address the /metrics endpoint binds to (0.0.0.0 in containers)",
    },
    "connect-attempts": connection["connect-attempts"],
    ...securityFlags(),
    "log-format": {
      kind: "string",
      choices: LOG_FORMATS,
      default: "auto",
      help: "ecs: ECS JSON lines (for files, Docker, Logstash); pretty: readable lines; " +
        "auto: pretty on a terminal, else ecs",
      placeholder: "FORMAT",
    },
  });
}

/** Flags every stream job takes, besides its own (its --output among them). */
export function streamFlags(job: "aggregate" | "detect") {
  return defineFlags({
    ...commonFlags(job),
    input: { kind: "string", default: TOPICS.transactions, help: "topic of transactions" },
    "dead-letters": { kind: "string", default: TOPICS.deadLetters, help: "dead-letter topic" },
    "app-id": {
      kind: "string",
      default: APP_IDS[job],
      help: "consumer group and internal topic prefix; instances with one app id share the work",
    },
    "session-timeout": {
      kind: "duration",
      min: 6000,
      max: 300_000,
      default: STREAM_DEFAULTS.sessionTimeoutMs,
      help: "consumer group session timeout: how soon a crashed instance's partitions move",
    },
    "batch-timeout": {
      kind: "duration",
      min: 10_000,
      max: 3_600_000,
      default: STREAM_DEFAULTS.batchTimeoutMs,
      help: "a batch running longer is abandoned and its partition taken over again",
    },
    "max-batch-bytes": {
      kind: "bytes",
      min: 1024,
      max: 64 * 1024 * 1024,
      default: STREAM_DEFAULTS.maxBatchBytes,
      help: "most record bytes per partition in one batch, that is one Kafka transaction, " +
        "gathered over one or more fetches",
      placeholder: "SIZE",
    },
    "fetch-bytes": {
      kind: "bytes",
      min: 1024,
      max: 64 * 1024 * 1024,
      default: STREAM_DEFAULTS.fetchBytes,
      help: "most bytes fetched per partition per request (at most --max-batch-bytes); a " +
        "fetch's records are let go once processed, so this bounds the memory they take",
      placeholder: "SIZE",
    },
    "max-batch-time": {
      kind: "duration",
      min: 1,
      max: 60_000,
      default: STREAM_DEFAULTS.maxBatchTimeMs,
      help: "longest a batch stays open while its partition has more to read; a batch that " +
        "has read all there is commits at once",
    },
    threads: {
      kind: "int",
      min: 1,
      max: 64,
      default: 1,
      help: "stream threads in this instance, each a member of the job's groups with partitions " +
        "of its own (as Kafka Streams' num.stream.threads): more than one uses more cores",
      placeholder: "N",
    },
  });
}

/** The values of the common flags, as parsed (see {@link commonFlags}). */
export type CommonValues = FlagValues<ReturnType<typeof commonFlags>>;

/** The values of the stream flags, as parsed (see {@link streamFlags}). */
export type StreamValues = FlagValues<ReturnType<typeof streamFlags>>;

/** The common flag values {@link shellOptions} reads. */
export type ShellValues =
  & Pick<
    CommonValues,
    "brokers" | "metricsPort" | "metricsHost" | "connectAttempts" | "logFormat"
  >
  & SecurityValues;

/** The stream flag values {@link streamOptions} reads. */
export type StreamRunValues = Pick<
  StreamValues,
  | "deadLetters"
  | "sessionTimeout"
  | "maxBatchBytes"
  | "fetchBytes"
  | "maxBatchTime"
  | "batchTimeout"
  | "threads"
>;

/** The {@link runJob} options the common flags set (see {@link commonFlags}). */
export function shellOptions(
  name: JobSpec["name"],
  t: ShellValues,
): Pick<
  RunJobOptions,
  | "name"
  | "brokers"
  | "metricsPort"
  | "metricsPortGiven"
  | "metricsHost"
  | "connectAttempts"
  | "logFormat"
> {
  exportSecurityFlags(t);
  return {
    name,
    brokers: t.brokers,
    metricsPort: t.metricsPort,
    metricsPortGiven: flagSource("metrics-port") !== "default",
    metricsHost: t.metricsHost,
    connectAttempts: t.connectAttempts,
    logFormat: t.logFormat,
  };
}

/** The runStream options the stream flags set (see {@link streamFlags}), in a job's context. */
export function streamOptions(t: StreamRunValues, ctx: JobContext): RunOptions {
  return {
    kafka: ctx.kafka,
    logger: ctx.log,
    deadLetterTopic: t.deadLetters,
    sessionTimeoutMs: t.sessionTimeout,
    maxBatchBytes: t.maxBatchBytes,
    fetchBytes: t.fetchBytes,
    maxBatchTimeMs: t.maxBatchTime,
    batchTimeoutMs: t.batchTimeout,
    stopSignal: ctx.stopSignal,
  };
}

/** What {@link streamTopics} reads of a processor: the topic it reads and the one it keeps state in. */
export type ProcessorTopics = Pick<StreamProcessor<unknown, unknown>, "source" | "changelog">;

/**
 * The topics a stream job reads and writes, each taken from the one place
 * that declares it, with the settings of the spec topic it stands for:
 * - each topic flag of `command`: a string flag whose default is a topic of
 *   the spec (--input, --output, --dead-letters). Its value is a topic the
 *   job uses, with its default's settings;
 * - each processor's `source` and `changelog`. A topic named after the
 *   --app-id value (`<app-id>-repartition`, `-changelog`, ...) takes the
 *   settings of the same topic of the default app id.
 * Throws naming the spec's topics when a topic stands for none of them.
 */
export function streamTopics<F extends FlagSpecs>(
  command: CommandSpec<F>,
  v: FlagValues<F>,
  processors: readonly ProcessorTopics[],
  topo = topology(),
): TopicSpec[] {
  const specTopics = new Set(topo.topics.map((t) => t.name));
  const values: Readonly<Record<string, unknown>> = v;
  const flags: FlagSpecs = command.flags;
  /** Topic name → the spec topic whose settings it takes. */
  const like = new Map<string, string>();
  for (const [flag, spec] of Object.entries(flags)) {
    const value = values[flagKey(flag)];
    if (
      spec.kind === "string" && typeof spec.default === "string" &&
      specTopics.has(spec.default) && typeof value === "string"
    ) like.set(value, spec.default);
  }
  const appId = values.appId;
  const defaultAppId = flags["app-id"]?.default;
  const likeOf = (name: string) => {
    const flagged = like.get(name);
    if (flagged !== undefined) return flagged;
    if (
      typeof appId === "string" && typeof defaultAppId === "string" &&
      name.startsWith(`${appId}-`)
    ) return defaultAppId + name.slice(appId.length);
    return name;
  };
  const names = new Set([
    ...like.keys(),
    ...processors.flatMap((p) => p.changelog === undefined ? [p.source] : [p.source, p.changelog]),
  ]);
  return [...names].map((name) => topicAs(topo, likeOf(name), name));
}

/**
 * A stream job as its module declares it, once: its command and how its
 * processors are made from the flags' values. The module exports it as
 * `STREAM_JOB`, which is how a stream thread (threads.ts) finds it.
 */
export interface StreamJob<F extends FlagSpecs> {
  readonly job: "aggregate" | "detect";
  readonly command: CommandSpec<F>;
  /** The `import.meta.url` of the module that exports it as `STREAM_JOB`. */
  readonly module: string;
  /** The job's processors, side by side (either failing stops the other). */
  // deno-lint-ignore no-explicit-any
  processors(v: FlagValues<F>): Promise<readonly StreamProcessor<any, any>[]>;
}

/** `job`, its types kept (see {@link StreamJob}). */
export function defineStreamJob<F extends FlagSpecs>(job: StreamJob<F>): StreamJob<F> {
  return job;
}

/**
 * Runs a stream job: its processors side by side in the shared shell
 * ({@link runJob}), with the topics {@link streamTopics} derives from its
 * flags and processors; with `--threads N` above 1, in N stream threads
 * (threads.ts), each running them all. Either processor (or thread) failing
 * stops the others, and the job exits non-zero.
 */
export async function runStreamJob<F extends FlagSpecs>(
  job: StreamJob<F>,
  v: FlagValues<F> & ShellValues & StreamRunValues,
): Promise<number> {
  const processors = await job.processors(v);
  return await runJob({
    ...shellOptions(job.job, v),
    topics: streamTopics(job.command, v, processors),
  }, async (ctx) => {
    if (v.threads === 1) return await runProcessors(processors, streamOptions(v, ctx));
    // Thread 0 here, threads 1 to N-1 in workers.
    const log = ctx.log.child({ "txpipe.thread": 0 });
    await untilOneFails(ctx.stopSignal, [
      (stopSignal) => runProcessors(processors, streamOptions(v, { ...ctx, log, stopSignal })),
      (stopSignal) =>
        runThreads({ module: job.module, count: v.threads - 1, log: ctx.log, stopSignal }),
    ]);
  });
}

/**
 * One stream thread of `job` (threads.ts): its processors, made from the
 * process's command line, run as in an instance until `stopSignal`, with
 * Kafka clients of their own. The process has checked the flags, reached
 * Kafka and created the topics already.
 */
export async function runThread<F extends FlagSpecs>(
  job: StreamJob<F>,
  thread: number,
  stopSignal: Promise<void>,
): Promise<void> {
  const v = parseArgs(job.command, Deno.args).values as
    & FlagValues<F>
    & ShellValues
    & StreamRunValues;
  const log = createLogger(job.job, { format: v.logFormat }).child({ "txpipe.thread": thread });
  const kafka = createKafka({
    principal: job.job,
    clientId: `txpipe-${job.job}`,
    brokers: v.brokers,
    logger: log,
  });
  await runProcessors(await job.processors(v), streamOptions(v, { kafka, log, stopSignal }));
}

/** Runs `processors` side by side until `run.stopSignal`; the first to fail stops the others. */
function runProcessors(
  // deno-lint-ignore no-explicit-any
  processors: readonly StreamProcessor<any, any>[],
  run: RunOptions,
): Promise<void> {
  return untilOneFails(
    run.stopSignal,
    processors.map((p) => (stopSignal) => runStream(p, { ...run, stopSignal })),
  );
}

/**
 * Runs `tasks` side by side, each until the stop signal it is given:
 * `stopSignal`, or the first of them failing. Throws that first failure once
 * all have ended.
 */
async function untilOneFails(
  stopSignal: Promise<void>,
  tasks: ReadonlyArray<(stopSignal: Promise<void>) => Promise<void>>,
): Promise<void> {
  let failed!: () => void;
  const failure = new Promise<void>((r) => failed = r);
  const stop = Promise.race([stopSignal, failure]);
  const results = await Promise.allSettled(
    tasks.map((task) => task(stop).catch((err) => (failed(), Promise.reject(err)))),
  );
  for (const r of results) if (r.status === "rejected") throw r.reason;
}

/** What a job's body gets from {@link runJob}. */
export interface JobContext {
  kafka: Kafka;
  log: Logger;
  /** Resolves on SIGINT or SIGTERM. */
  stopSignal: Promise<void>;
}

/** Options of {@link runJob}. */
export interface RunJobOptions {
  name: JobSpec["name"];
  brokers: string[];
  /** Serve /metrics on this port (0 = any free port); undefined = no endpoint. */
  metricsPort?: number;
  /** The user chose metricsPort (--metrics-port or TXPIPE_METRICS_PORT): taken, it exits 2. */
  metricsPortGiven?: boolean;
  metricsHost: string;
  connectAttempts: number;
  /**
   * Topics the job reads and writes; created from their specs when missing.
   * A stream job gets them from {@link streamTopics} (see {@link runStreamJob}).
   */
  topics: TopicSpec[];
  /** Log level; default TXPIPE_LOG_LEVEL or "info". */
  logLevel?: string;
  /** "ecs", "pretty" or "auto" (default: pretty on a terminal, else ECS JSON). */
  logFormat?: LogFormatChoice;
}

/**
 * Runs a job's `body` inside the shared shell (logger, /metrics, signals,
 * Kafka reached with retries, its topics created) and returns the exit code:
 * the body's own code, 0 when it returns nothing, 1 when Kafka is unreachable
 * or the body threw. A taken metrics port ends it before Kafka is contacted,
 * with a message naming the port and its holder: exit 2 when the user chose
 * the port, else 1.
 */
export async function runJob(
  options: RunJobOptions,
  body: (ctx: JobContext) => Promise<number | void>,
): Promise<number> {
  const log = createLogger(options.name, { level: options.logLevel, format: options.logFormat });
  let metrics: Deno.HttpServer<Deno.NetAddr> | undefined;
  try {
    metrics = options.metricsPort === undefined ? undefined : serveMetrics({
      port: options.metricsPort,
      hostname: options.metricsHost,
      onListen: (a) =>
        log.info({ "url.full": `http://${a.hostname}:${a.port}/metrics` }, "metrics"),
    });
  } catch (err) {
    if (!(err instanceof Deno.errors.AddrInUse)) throw err;
    const message = clashMessage({
      port: options.metricsPort!,
      what: `${options.name}'s /metrics`,
      holder: await portHolder(options.metricsPort!),
      advice: "choose another with --metrics-port PORT or TXPIPE_METRICS_PORT " +
        "(0 = any free port), or stop that process",
    });
    log.error({ "event.action": "metrics-port-in-use" }, message);
    console.error(`deno task ${options.name}: ${message}`);
    return options.metricsPortGiven ? 2 : 1;
  }
  let resolveStop!: () => void;
  const stopSignal = new Promise<void>((r) => resolveStop = r);
  const onSignal = () => {
    log.info({ "event.action": "stop-requested" }, "stopping after the batch in progress");
    resolveStop();
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  const kafkaClientId = `txpipe-${options.name}`;
  let code = 0;
  try {
    const kafka = createKafka({
      principal: options.name,
      clientId: kafkaClientId,
      brokers: options.brokers,
      logger: log,
    });
    // Each attempt is a silent probe trying every broker once: one line of
    // ours per failed attempt, not kafkajs's per broker and retry.
    await connectWithRetry(
      options.brokers,
      () => probeKafka(options.brokers, kafkaClientId, options.name),
      {
        attempts: options.connectAttempts,
        hint: missingCredentialsHint(options.name),
        who: KAFKA_USERS[options.name],
        onRetry: (attempt, delay, err) =>
          log.warn(
            { "event.action": "kafka-connect-retry", "error.message": (err as Error)?.message },
            `waiting for Kafka at ${options.brokers.join(",")} ` +
              `(attempt ${attempt}/${options.connectAttempts} failed, next in ${delay / 1000} s)`,
          ),
      },
    );
    const admin = kafka.admin();
    await admin.connect();
    try {
      await ensureTopics(admin, options.topics, {
        // Routine just after a topic is created (jobs/lib/leaders.ts): debug only.
        onWait: (missing) =>
          log.debug(
            { "event.action": "topic-leaders-wait" },
            `waiting until every broker knows the topics' leaders: ${missing.join("; ")}`,
          ),
      });
    } finally {
      await admin.disconnect();
    }
    log.info({ "event.action": "started" }, `${options.name} running`);
    code = (await body({ kafka, log, stopSignal })) ?? 0;
    log.info({ "event.action": "stopped", "process.exit_code": code }, `${options.name} stopped`);
  } catch (err) {
    code = 1;
    // The sentence goes to stderr too, unless the person reads this log already.
    const shown = Deno.stdout.isTerminal() &&
      resolveLogFormat(options.logFormat, true) === "pretty";
    if (err instanceof KafkaConnectError || err instanceof CredentialsError) {
      const action = err instanceof KafkaUnreachableError ? "kafka-unreachable" : "kafka-auth";
      log.error({ "event.action": action }, err.message);
      if (!shown) console.error(`deno task ${options.name}: ${err.message}`);
    } else {
      log.error({ err, "event.action": "failed" }, `${options.name} failed`);
      if (!shown) {
        console.error(`deno task ${options.name}: failed: ${(err as Error)?.message ?? err}`);
      }
    }
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    await metrics?.shutdown();
  }
  return code;
}
