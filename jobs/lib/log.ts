/**
 * ECS JSON logging for every txpipe process: pino with
 * @elastic/ecs-pino-format, one JSON object per line on stdout, ready for
 * Logstash. kafkajs's own log lines are routed into the same logger.
 *
 * @module
 */
import pino from "pino";
import { ecsFormat } from "@elastic/ecs-pino-format";
import { logLevel as KafkaLogLevel } from "kafkajs";
import type { logCreator } from "kafkajs";

/** The logger type used across txpipe. */
export type Logger = pino.Logger;

/** Options for {@link createLogger}. */
export interface LoggerOptions {
  /** pino level; default from TXPIPE_LOG_LEVEL or "info". */
  level?: string;
  /** Where lines go; default stdout (fd 1). Tests pass a stream to capture them. */
  destination?: pino.DestinationStream;
}

/** Creates the ECS JSON logger of a job, e.g. `createLogger("produce")`. */
export function createLogger(job: string, options: LoggerOptions = {}): Logger {
  const level = options.level ?? Deno.env.get("TXPIPE_LOG_LEVEL") ?? "info";
  const config = {
    ...ecsFormat({ convertErr: true }),
    level,
    base: { "service.name": `txpipe-${job}`, "event.dataset": `txpipe.${job}` },
  };
  return options.destination ? pino(config, options.destination) : pino(config);
}

/** A kafkajs `logCreator` that writes kafkajs's log entries through `logger`. */
export function kafkaLogCreator(logger: Logger): logCreator {
  return () => ({ namespace, level, log }) => {
    const { message, ...extra } = log;
    const fields = { "log.logger": namespace ? `kafkajs.${namespace}` : "kafkajs", kafka: extra };
    // kafkajs logs every error response of a request ("Response Heartbeat(...)")
    // as an error, even those it retries or we handle (a rebalance, a
    // transaction still completing, a topic another instance just created):
    // warnings; what is not handled surfaces as an error of ours.
    const handled = /^Response \w+\(key: \d+, version: \d+\)$/.test(message) ||
      message.startsWith("Failed to send messages: "); // retried by kafkajs
    if (level === KafkaLogLevel.ERROR && !handled) logger.error(fields, message);
    else if (level === KafkaLogLevel.ERROR) logger.warn(fields, message);
    else if (level === KafkaLogLevel.WARN) logger.warn(fields, message);
    else if (level === KafkaLogLevel.INFO) logger.info(fields, message);
    else logger.debug(fields, message);
  };
}
