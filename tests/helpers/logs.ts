/**
 * A job logger whose ECS lines the test can read back.
 *
 * @module
 */
import { Writable } from "node:stream";
import { createLogger, type Logger } from "../../jobs/lib/log.ts";

/** A logger for `job` and the JSON lines it has written so far. */
export function captureLogs(
  job: string,
  level = "info",
): { logger: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      for (const l of String(chunk).split("\n").filter(Boolean)) lines.push(JSON.parse(l));
      done();
    },
  });
  return { lines, logger: createLogger(job, { destination: sink, level, format: "ecs" }) };
}
