/** The ECS logger's handling of kafkajs's own log lines. */
import assert from "node:assert/strict";
import { logLevel } from "kafkajs";
import { kafkaLogCreator } from "../jobs/lib/log.ts";
import { captureLogs } from "./helpers/logs.ts";

Deno.test("log: kafkajs error responses it retries or we handle are warnings; other kafkajs errors stay errors", async () => {
  const { lines, logger } = captureLogs("test", "debug");
  const log = kafkaLogCreator(logger)(logLevel.ERROR);
  const entry = (message: string) => ({
    namespace: "Connection",
    level: logLevel.ERROR,
    label: "ERROR",
    log: { timestamp: "", logger: "kafkajs", message, error: "The group is rebalancing" },
  });
  log(entry("Response Heartbeat(key: 12, version: 3)"));
  log(entry("Failed to send messages: The producer attempted to update a transaction while"));
  log(entry("Crash: KafkaJSNumberOfRetriesExceeded"));
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(lines.map((l) => [l["log.level"], l.message]), [
    ["warn", "Response Heartbeat(key: 12, version: 3)"],
    ["warn", "Failed to send messages: The producer attempted to update a transaction while"],
    ["error", "Crash: KafkaJSNumberOfRetriesExceeded"],
  ]);
  assert.equal(lines[0]["log.logger"], "kafkajs.Connection");
  assert.deepEqual((lines[0].kafka as Record<string, unknown>).error, "The group is rebalancing");
});
