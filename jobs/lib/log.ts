/**
 * Logging for every txpipe process: pino with @elastic/ecs-pino-format.
 *
 * Two formats of the same lines:
 *
 * - `ecs`: one ECS JSON object per line on stdout, ready for Logstash; the
 *   default when stdout is a file or a pipe (Docker, `deno task start`'s log
 *   files).
 * - `pretty`: one readable line per entry (time, level, message, the few
 *   useful fields, no stack traces), for a person; the default when stdout
 *   is a terminal.
 *
 * `--log-format` (or TXPIPE_LOG_FORMAT) `ecs` or `pretty` forces either.
 * Lines are written synchronously: each is in its file when the call
 * returns, so a log can be tailed and nothing is lost when a job exits.
 * kafkajs's own log lines are routed into the same logger.
 *
 * @module
 */
// First: the first module of every job to load kafkajs is this one, and kafkajs takes its
// grouping function when it loads (group_by_partition.ts replaces it with a linear one).
import "./group_by_partition.ts";
import pino from "pino";
import { ecsFormat } from "@elastic/ecs-pino-format";
import { logLevel as KafkaLogLevel } from "kafkajs";
import type { logCreator } from "kafkajs";
import { errorCodes } from "kafkajs/src/protocol/error.js";
import { COORDINATOR_REQUESTS_LOGGED, coordinatorError } from "./coordinators.ts";

/** The logger type used across txpipe. */
export type Logger = pino.Logger;

/** The formats a log can take; "auto" picks one (see {@link resolveLogFormat}). */
export const LOG_FORMATS = ["auto", "ecs", "pretty"] as const;

/** A log format as asked for: a concrete one, or "auto". */
export type LogFormatChoice = (typeof LOG_FORMATS)[number];

/** A concrete log format. */
export type LogFormat = Exclude<LogFormatChoice, "auto">;

/** Options for {@link createLogger}. */
export interface LoggerOptions {
  /** pino level; default from TXPIPE_LOG_LEVEL or "info". */
  level?: string;
  /** Where lines go; default stdout (fd 1). Tests pass a stream to capture them. */
  destination?: pino.DestinationStream;
  /**
   * "ecs", "pretty" or "auto" (the default): TXPIPE_LOG_FORMAT, else pretty
   * when lines go to stdout and it is a terminal, else ECS JSON.
   */
  format?: LogFormatChoice;
}

/**
 * The concrete format of `choice`: itself when "ecs" or "pretty"; for "auto"
 * or undefined, TXPIPE_LOG_FORMAT when set, else "pretty" when `terminal`.
 */
export function resolveLogFormat(
  choice: string | undefined,
  terminal: boolean,
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
): LogFormat {
  const chosen = choice && choice !== "auto" ? choice : env("TXPIPE_LOG_FORMAT") || "auto";
  if (chosen === "ecs" || chosen === "pretty") return chosen;
  if (chosen === "auto") return terminal ? "pretty" : "ecs";
  throw new Error(`log format: expected one of ${LOG_FORMATS.join(", ")}, got "${chosen}"`);
}

/**
 * Creates the logger of a job, e.g. `createLogger("produce")`: ECS JSON or
 * readable lines (see {@link LoggerOptions.format}).
 */
export function createLogger(job: string, options: LoggerOptions = {}): Logger {
  const level = options.level ?? Deno.env.get("TXPIPE_LOG_LEVEL") ?? "info";
  const config = {
    ...ecsFormat({ convertErr: true }),
    level,
    base: { "service.name": `txpipe-${job}`, "event.dataset": `txpipe.${job}` },
  };
  const toStdout = !options.destination;
  const terminal = toStdout && Deno.stdout.isTerminal();
  // Synchronous: pino's default asynchronous stdout holds lines in memory
  // while a write is pending and drops them at Deno.exit (20 000 lines
  // logged before an exit left 1 in the file).
  const out = options.destination ?? pino.destination({ dest: 1, sync: true });
  const format = resolveLogFormat(options.format, terminal);
  const color = terminal && !Deno.noColor;
  return pino(config, format === "pretty" ? prettyStream(out, { color, terminal }) : out);
}

/** Fields every line has that a person does not need to read. */
const PRETTY_HIDDEN = new Set([
  "@timestamp",
  "log.level",
  "log.logger",
  "message",
  "ecs.version",
  "service.name",
  "event.dataset",
  "event.action",
  "process.pid",
  "host.hostname",
  "error.type",
  "error.stack_trace",
  "kafka.timestamp",
  "kafka.logger",
  "kafka.clientId",
  "kafka.correlationId",
  "kafka.size",
  "kafka.stack",
]);

const LEVEL_COLORS: Record<string, string> = {
  trace: "\x1b[90m",
  debug: "\x1b[90m",
  info: "\x1b[32m",
  warn: "\x1b[33m",
  error: "\x1b[31m",
  fatal: "\x1b[1;31m",
};

/** Options of {@link formatPretty}. */
export interface PrettyOptions {
  /** Colour the level (ANSI). */
  color?: boolean;
}

/**
 * One ECS log entry as a readable line: local time, level, message, then
 * the entry's own fields as `key=value` (an error by its message only; no
 * stack traces, no fields every line has).
 */
export function formatPretty(entry: Record<string, unknown>, options: PrettyOptions = {}): string {
  const time = new Date(String(entry["@timestamp"] ?? Date.now()));
  const hh = (n: number, w = 2) => String(n).padStart(w, "0");
  const clock = `${hh(time.getHours())}:${hh(time.getMinutes())}:${hh(time.getSeconds())}.${
    hh(time.getMilliseconds(), 3)
  }`;
  const level = String(entry["log.level"] ?? "info");
  const label = level.toUpperCase().padEnd(5);
  const shown = options.color ? `${LEVEL_COLORS[level] ?? ""}${label}\x1b[0m` : label;
  const logger = entry["log.logger"] ? `${entry["log.logger"]}: ` : "";
  const fields: string[] = [];
  for (const [key, value] of flatten(entry)) {
    if (PRETTY_HIDDEN.has(key) || value === undefined) continue;
    fields.push(`${key === "error.message" ? "error" : key}=${prettyValue(value)}`);
  }
  const rest = fields.length > 0 ? `  ${fields.join(" ")}` : "";
  return `${clock} ${shown} ${logger}${entry.message ?? ""}${rest}`;
}

/** An entry's fields with nested objects as dotted keys ("kafka.broker"). */
function flatten(entry: Record<string, unknown>, prefix = ""): Array<[string, unknown]> {
  const out: Array<[string, unknown]> = [];
  for (const [k, v] of Object.entries(entry)) {
    const key = prefix + k;
    if (v !== null && typeof v === "object" && !Array.isArray(v)) {
      out.push(...flatten(v as Record<string, unknown>, `${key}.`));
    } else out.push([key, v]);
  }
  return out;
}

/** A value as `key=value` shows it: bare when it is a simple word or number. */
function prettyValue(value: unknown): string {
  if (typeof value === "string") {
    const oneLine = value.replace(/\s*\n\s*/g, " ");
    return /^[\w.:/@+-]+$/.test(oneLine) ? oneLine : JSON.stringify(oneLine);
  }
  return JSON.stringify(value);
}

/**
 * A pino destination that writes each ECS line pino gives it to `out` as a
 * {@link formatPretty} line. On a terminal each line first clears the
 * current one (a progress line redrawn on stderr would run into it).
 */
function prettyStream(
  out: pino.DestinationStream,
  options: { color: boolean; terminal: boolean },
): pino.DestinationStream {
  const clear = options.terminal ? "\r\x1b[2K" : "";
  return {
    write(chunk: string) {
      for (const line of chunk.split("\n")) {
        if (line === "") continue;
        let entry: Record<string, unknown>;
        try {
          entry = JSON.parse(line);
        } catch {
          out.write(`${clear}${line}\n`);
          continue;
        }
        out.write(`${clear}${formatPretty(entry, { color: options.color })}\n`);
      }
    },
  };
}

/** kafkajs's text for CONCURRENT_TRANSACTIONS, as its connection logs it. */
const CONCURRENT_TRANSACTIONS_MESSAGE = errorCodes.find(
  (e: { type: string }) => e.type === "CONCURRENT_TRANSACTIONS",
)?.message;

/** kafkajs's texts for a coordinator that loads or moved, as its connection logs them. */
const COORDINATOR_MESSAGES = new Set(
  errorCodes.filter((e: { type: string }) => coordinatorError(e) !== undefined).map((
    e: { message: string },
  ) => e.message),
);

/** The response lines of the requests coordinators.ts retries when their coordinator loads or moved. */
const COORDINATOR_REQUEST = new RegExp(
  `^Response (${COORDINATOR_REQUESTS_LOGGED.join("|")})\\(key: \\d+, version: \\d+\\)$`,
);

/** A kafkajs consumer crash it restarts from: its group coordinator loads, moves or rebalances. */
const COORDINATOR_CRASH =
  /^Crash: KafkaJSProtocolError: (The coordinator is (loading|not available)|This is not the correct coordinator|The group is rebalancing)/;

/** A kafkajs `logCreator` that writes kafkajs's log entries through `logger`. */
export function kafkaLogCreator(logger: Logger): logCreator {
  return () => ({ namespace, level, log }) => {
    const { message, ...extra } = log;
    const fields = { "log.logger": namespace ? `kafkajs.${namespace}` : "kafkajs", kafka: extra };
    const response = /^Response \w+\(key: \d+, version: \d+\)$/.test(message);
    // A transaction request refused while the previous transaction's commit
    // markers are written is retried at once and quietly (see
    // concurrent_transactions.ts; kafkajs retries InitProducerId itself):
    // routine, like the Java client, which does not log it either.
    if (response && extra.error === CONCURRENT_TRANSACTIONS_MESSAGE) {
      logger.debug(fields, message);
      return;
    }
    // So is a transaction's request to a coordinator that is loading or moved
    // (coordinators.ts retries it, every few ms while the new one loads): the
    // consumer's own heartbeats still warn of the move, once or twice.
    if (COORDINATOR_REQUEST.test(message) && COORDINATOR_MESSAGES.has(extra.error as string)) {
      logger.debug(fields, message);
      return;
    }
    // kafkajs logs every error response of a request ("Response Heartbeat(...)")
    // as an error, even those it retries or we handle (a rebalance, a
    // topic another instance just created), and so its consumer's restarts
    // on a coordinator that is loading or moving (after the cluster
    // restarted, say): warnings. What is not handled surfaces as an error of
    // ours.
    const handled = response ||
      message.startsWith("Failed to send messages: ") || // retried by kafkajs
      COORDINATOR_CRASH.test(message) || message.startsWith("Restarting the consumer in ");
    if (level === KafkaLogLevel.ERROR && !handled) logger.error(fields, message);
    else if (level === KafkaLogLevel.ERROR) logger.warn(fields, message);
    else if (level === KafkaLogLevel.WARN) logger.warn(fields, message);
    else if (level === KafkaLogLevel.INFO) logger.info(fields, message);
    else logger.debug(fields, message);
  };
}
