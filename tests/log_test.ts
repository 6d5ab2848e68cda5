/**
 * txpipe's logs: kafkajs's own lines in the ECS logger, the readable format
 * for a terminal and how a format is chosen, log lines reaching their file
 * while a job runs, and what an unreachable Kafka prints in either format.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { logLevel } from "kafkajs";
import { formatPretty, kafkaLogCreator, resolveLogFormat } from "../jobs/lib/log.ts";
import { copyToFile } from "../jobs/lib/log_file.ts";
import { captureLogs } from "./helpers/logs.ts";
import { BROKERS, ensureCluster, runScript } from "./helpers/cluster.ts";

const ROOT = new URL("../", import.meta.url);
const CONCURRENT =
  "The producer attempted to update a transaction while another concurrent operation on the same transaction was ongoing";

Deno.test("log: kafkajs error responses it retries or we handle are warnings; other kafkajs errors stay errors", async () => {
  const { lines, logger } = captureLogs("test", "debug");
  const log = kafkaLogCreator(logger)(logLevel.ERROR);
  const entry = (message: string, error = "The group is rebalancing") => ({
    namespace: "Connection",
    level: logLevel.ERROR,
    label: "ERROR",
    log: { timestamp: "", logger: "kafkajs", message, error },
  });
  log(entry("Response Heartbeat(key: 12, version: 3)"));
  log(entry("Failed to send messages: This server does not host this topic-partition"));
  log(entry("Crash: KafkaJSNumberOfRetriesExceeded"));
  log(entry(
    "Crash: KafkaJSProtocolError: The coordinator is loading and hence can't process requests for this group",
  ));
  log(entry("Restarting the consumer in 300ms"));
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(lines.map((l) => [l["log.level"], l.message]), [
    ["warn", "Response Heartbeat(key: 12, version: 3)"],
    ["warn", "Failed to send messages: This server does not host this topic-partition"],
    ["error", "Crash: KafkaJSNumberOfRetriesExceeded"],
    [
      "warn",
      "Crash: KafkaJSProtocolError: The coordinator is loading and hence can't process requests for this group",
    ],
    ["warn", "Restarting the consumer in 300ms"],
  ]);
  assert.equal(lines[0]["log.logger"], "kafkajs.Connection");
  assert.deepEqual((lines[0].kafka as Record<string, unknown>).error, "The group is rebalancing");
});

Deno.test("log: a transaction request refused while the previous commit completes is debug, not a warning", async () => {
  const { lines, logger } = captureLogs("test", "debug");
  const log = kafkaLogCreator(logger)(logLevel.ERROR);
  for (
    const request of [
      "AddPartitionsToTxn(key: 24, version: 1)",
      "InitProducerId(key: 22, version: 1)",
    ]
  ) {
    log({
      namespace: "Connection",
      level: logLevel.ERROR,
      label: "ERROR",
      log: { timestamp: "", logger: "kafkajs", message: `Response ${request}`, error: CONCURRENT },
    });
  }
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(lines.map((l) => l["log.level"]), ["debug", "debug"]);
});

Deno.test("log: a transaction's request to a coordinator that loads or moved is debug; the consumer's heartbeat to it stays a warning", async () => {
  const { lines, logger } = captureLogs("test", "debug");
  const log = kafkaLogCreator(logger)(logLevel.ERROR);
  const loading = "The coordinator is loading and hence can't process requests for this group";
  const moved = "This is not the correct coordinator for this group";
  const unavailable = "The group coordinator is not available";
  const cases: Array<[string, string]> = [
    ["EndTxn(key: 26, version: 1)", moved],
    ["AddPartitionsToTxn(key: 24, version: 1)", loading],
    ["AddOffsetsToTxn(key: 25, version: 1)", moved],
    ["TxnOffsetCommit(key: 28, version: 1)", unavailable],
    ["InitProducerId(key: 22, version: 1)", loading],
    ["Heartbeat(key: 12, version: 3)", moved],
    [
      "EndTxn(key: 26, version: 1)",
      "The producer attempted to use a producer id which is not currently assigned to its transactional id",
    ],
  ];
  for (const [request, error] of cases) {
    log({
      namespace: "Connection",
      level: logLevel.ERROR,
      label: "ERROR",
      log: { timestamp: "", logger: "kafkajs", message: `Response ${request}`, error },
    });
  }
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(lines.map((l) => l["log.level"]), [
    "debug",
    "debug",
    "debug",
    "debug",
    "debug",
    "warn",
    "warn",
  ]);
});

Deno.test("log: a readable line has time, level, message and the entry's own fields, no stack trace", () => {
  const entry = {
    "log.level": "warn",
    "@timestamp": "2026-11-30T01:45:14.746Z",
    "service.name": "txpipe-detect",
    "event.dataset": "txpipe.detect",
    "ecs.version": "8.10.0",
    "event.action": "kafka-connect-retry",
    "txpipe.processor": "txpipe-detect",
    partition: 2,
    error: {
      type: "KafkaJSProtocolError",
      message: "boom: it broke",
      stack_trace: "Error\n  at x",
    },
    message: "batch failed; state dropped",
  };
  const line = formatPretty(entry);
  const t = new Date(entry["@timestamp"]);
  const two = (n: number) => String(n).padStart(2, "0");
  const clock = `${two(t.getHours())}:${two(t.getMinutes())}:${two(t.getSeconds())}.746`;
  assert.equal(
    line,
    `${clock} WARN  batch failed; state dropped  txpipe.processor=txpipe-detect partition=2 ` +
      `error="boom: it broke"`,
  );
});

Deno.test("log: kafkajs's lines read as its component, the message and its own fields", () => {
  const line = formatPretty({
    "log.level": "info",
    "@timestamp": "2026-11-30T01:45:14.000Z",
    "log.logger": "kafkajs.Consumer",
    kafka: { timestamp: "x", logger: "kafkajs", groupId: "g1", clientId: "c" },
    message: "Starting",
  });
  assert.match(
    line,
    /^\d\d:\d\d:\d\d\.\d{3} INFO {2}kafkajs\.Consumer: Starting {2}kafka\.groupId=g1$/,
  );
});

Deno.test("log: the format is the one asked for, else TXPIPE_LOG_FORMAT, else pretty on a terminal and ECS JSON elsewhere", () => {
  const env = (value?: string) => (name: string) =>
    name === "TXPIPE_LOG_FORMAT" ? value : undefined;
  assert.equal(resolveLogFormat(undefined, true, env()), "pretty");
  assert.equal(resolveLogFormat(undefined, false, env()), "ecs");
  assert.equal(resolveLogFormat("auto", false, env()), "ecs");
  assert.equal(resolveLogFormat("auto", false, env("pretty")), "pretty");
  assert.equal(resolveLogFormat(undefined, true, env("ecs")), "ecs");
  assert.equal(resolveLogFormat("ecs", true, env("pretty")), "ecs");
  assert.equal(resolveLogFormat("pretty", false, env()), "pretty");
  assert.throws(
    () => resolveLogFormat(undefined, false, env("json")),
    /expected one of auto, ecs, pretty, got "json"/,
  );
});

Deno.test("log: copyToFile writes each chunk of a running process's output to the file at once", async () => {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "child.log");
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "console.log('first line'); await new Promise((r) => setTimeout(r, 60_000));"],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const copied = copyToFile(child.stdout, await Deno.open(path, { create: true, append: true }));
  try {
    const text = await waitForText(path, "first line", child);
    assert.equal(text, "first line\n");
  } finally {
    child.kill("SIGKILL");
    await child.status;
    await copied;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "log: a job's first lines reach its log file while it runs, not when it stops",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await ensureCluster();
    const dir = await Deno.makeTempDir();
    const path = join(dir, "produce.log");
    const topic = `test_log_tail_${crypto.randomUUID().slice(0, 8)}`;
    // As `deno task start` runs a job: stdout piped, copied to its log file.
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "jobs/produce.ts",
        ...["--brokers", BROKERS.join(","), "--topic", topic, "--rate", "5"],
        ...["--metrics-port", "0"],
      ],
      cwd: ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const copied = copyToFile(child.stdout, await Deno.open(path, { create: true, append: true }));
    try {
      const text = await waitForText(path, "produce running", child);
      const running = text.split("\n").filter(Boolean).map((l) => JSON.parse(l))
        .find((l) => l.message === "produce running");
      assert.equal(running["event.action"], "started");
    } finally {
      child.kill("SIGTERM");
      await child.status;
      await copied;
    }
    const all = await Deno.readTextFile(path);
    assert.match(all, /"message":"produce stopped"/, "and the rest arrives by the end");
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test("log: unreachable Kafka in pretty format: waiting lines with attempt counts, then one clear sentence; no JSON, no stack trace", async () => {
  const r = await runScript(
    "jobs/produce.ts",
    ["--brokers", "127.0.0.1:1", "--connect-attempts", "3", "--metrics-port", "0"],
    { env: { TXPIPE_LOG_FORMAT: "pretty" } },
  );
  assert.equal(r.code, 1, r.stderr);
  const lines = r.stdout.split("\n").filter(Boolean);
  const stamp = String.raw`\d\d:\d\d:\d\d\.\d{3}`;
  const waiting = lines.filter((l) => l.includes("waiting for Kafka at"));
  assert.equal(waiting.length, 2, r.stdout);
  assert.match(
    waiting[0],
    new RegExp(
      `^${stamp} WARN  waiting for Kafka at 127\\.0\\.0\\.1:1 \\(attempt 1/3 failed, next in 1 s\\)`,
    ),
  );
  assert.match(waiting[1], /\(attempt 2\/3 failed, next in 2 s\)/);
  assert.match(
    lines.at(-1)!,
    new RegExp(
      `^${stamp} ERROR cannot reach Kafka at 127\\.0\\.0\\.1:1 after 3 attempts .*Is the cluster up\\?`,
    ),
  );
  for (const l of lines) {
    assert.match(l, new RegExp(`^${stamp} (INFO |WARN |ERROR) `), `a readable line: ${l}`);
    assert.doesNotMatch(l, /^\s*\{|\n\s+at |kafkajs/, `no JSON, stack trace or kafkajs line: ${l}`);
  }
  assert.ok(
    lines.length <= 4,
    `the metrics line, the waiting lines and the sentence:\n${r.stdout}`,
  );
});

Deno.test("log: unreachable Kafka on a pipe: ECS JSON lines, the waiting ones and the final error among them", async () => {
  const r = await runScript(
    "jobs/produce.ts",
    ["--brokers", "127.0.0.1:1", "--connect-attempts", "2", "--metrics-port", "0"],
    { env: { TXPIPE_LOG_FORMAT: "" } },
  );
  assert.equal(r.code, 1, r.stderr);
  const lines = r.stdout.split("\n").filter(Boolean).map((l) => JSON.parse(l));
  for (const l of lines) {
    assert.equal(l["service.name"], "txpipe-produce");
    assert.equal(l["event.dataset"], "txpipe.produce");
    assert.equal(typeof l["ecs.version"], "string");
    assert.ok(!Number.isNaN(Date.parse(l["@timestamp"])), "an @timestamp");
    assert.match(l["log.level"], /^(info|warn|error)$/);
  }
  const waiting = lines.filter((l) => l["event.action"] === "kafka-connect-retry");
  assert.deepEqual(waiting.map((l) => l.message), [
    "waiting for Kafka at 127.0.0.1:1 (attempt 1/2 failed, next in 1 s)",
  ]);
  assert.match(waiting[0]["error.message"], /ECONNREFUSED/);
  const last = lines.at(-1);
  assert.equal(last["event.action"], "kafka-unreachable");
  assert.match(last.message, /^cannot reach Kafka at 127\.0\.0\.1:1 after 2 attempts/);
  assert.match(r.stderr, /deno task produce: cannot reach Kafka at 127\.0\.0\.1:1/);
});

/**
 * The text of the file at `path` once it contains `text`, checked while
 * `child` still runs: fails when the child exits first or after 90 s.
 */
async function waitForText(path: string, text: string, child: Deno.ChildProcess): Promise<string> {
  let exited = false;
  child.status.then(() => exited = true);
  const deadline = Date.now() + 90_000;
  while (Date.now() < deadline) {
    const content = await Deno.readTextFile(path);
    if (content.includes(text)) {
      assert.ok(!exited, "the line arrived while the process was still running");
      return content;
    }
    assert.ok(!exited, `the process exited before "${text}" reached ${path}:\n${content}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`"${text}" did not reach ${path} within 90 s`);
}
