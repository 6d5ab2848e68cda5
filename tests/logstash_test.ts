/**
 * The Logstash pipeline (logstash/pipeline/txpipe.conf) without Logstash:
 * its structure (input, routing by the gelf tag, data streams) and its grok
 * expression for Kafka's log4j lines, expanded with the definitions of the
 * standard grok patterns it uses and matched against real-shaped broker lines.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { repoRoot } from "../stacks/repo_files.ts";

const conf = readFileSync(`${repoRoot()}/logstash/pipeline/txpipe.conf`, "utf8");

/**
 * The standard grok patterns the Kafka expression uses, as Logstash's
 * pattern files define them (atomic groups written as plain groups for
 * JavaScript's regex engine).
 */
const GROK: Record<string, string> = {
  YEAR: String.raw`(?:\d\d){1,2}`,
  MONTHNUM: String.raw`(?:0?[1-9]|1[0-2])`,
  MONTHDAY: String.raw`(?:(?:0[1-9])|(?:[12][0-9])|(?:3[01])|[1-9])`,
  HOUR: String.raw`(?:2[0123]|[01]?[0-9])`,
  MINUTE: String.raw`(?:[0-5][0-9])`,
  SECOND: String.raw`(?:(?:[0-5]?[0-9]|60)(?:[:.,][0-9]+)?)`,
  ISO8601_TIMEZONE: String.raw`(?:Z|[+-]%{HOUR}(?::?%{MINUTE}))`,
  TIMESTAMP_ISO8601: String
    .raw`%{YEAR}-%{MONTHNUM}-%{MONTHDAY}[T ]%{HOUR}:?%{MINUTE}(?::?%{SECOND})?%{ISO8601_TIMEZONE}?`,
  LOGLEVEL: String.raw`(?:[Tt]race|TRACE|[Dd]ebug|DEBUG|[Ii]nfo?(?:rmation)?|INFO?(?:RMATION)?|` +
    String.raw`[Ww]arn?(?:ing)?|WARN?(?:ING)?|[Ee]rr?(?:or)?|ERR?(?:OR)?|[Ff]atal|FATAL)`,
  JAVACLASS: String.raw`(?:[a-zA-Z$_][a-zA-Z$_0-9]*\.)*[a-zA-Z$_][a-zA-Z$_0-9]*`,
  GREEDYDATA: ".*",
};

/** A grok expression as a JavaScript regex; `%{NAME:[a][b]}` becomes a group named `a_b`. */
function grokToRegExp(expression: string): RegExp {
  const expand = (text: string): string =>
    text.replace(/%\{(\w+)(?::([^}]+))?\}/g, (_, name: string, field?: string) => {
      const body = GROK[name];
      if (body === undefined) throw new Error(`expected a known grok pattern, got ${name}`);
      const inner = expand(body);
      if (!field) return `(?:${inner})`;
      const group = field.replace(/^\[|\]$/g, "").replace(/\]\[/g, "_").replace(/@/g, "");
      return `(?<${group}>${inner})`;
    });
  return new RegExp(expand(expression));
}

function kafkaGrok(): RegExp {
  const match = conf.match(/"message" => "(\^.*\$)"/);
  assert.ok(match, "the pipeline has a grok match on message");
  return grokToRegExp(match[1]);
}

Deno.test("logstash: the Kafka grok splits a log4j line into time, level, message and logger", () => {
  const line = "[2026-01-31 12:00:00,123] INFO [RaftManager id=1] Completed transition to " +
    "Leader(localId=1, epoch=3) from Candidate (org.apache.kafka.raft.QuorumState)";
  assert.deepEqual({ ...kafkaGrok().exec(line)?.groups }, {
    metadata_log_time: "2026-01-31 12:00:00,123",
    log_level: "INFO",
    metadata_text:
      "[RaftManager id=1] Completed transition to Leader(localId=1, epoch=3) from Candidate",
    log_logger: "org.apache.kafka.raft.QuorumState",
  });
});

Deno.test("logstash: the Kafka grok takes the logger from the last parentheses when the message has its own", () => {
  const line = "[2026-01-31 12:00:01,456] WARN [RaftManager id=1] Connection to node 2 " +
    "(kafka-controller-2/172.18.0.3:9194) could not be established. (org.apache.kafka.clients.NetworkClient)";
  const groups = kafkaGrok().exec(line)?.groups;
  assert.equal(groups?.log_level, "WARN");
  assert.equal(groups?.log_logger, "org.apache.kafka.clients.NetworkClient");
  assert.equal(
    groups?.metadata_text,
    "[RaftManager id=1] Connection to node 2 (kafka-controller-2/172.18.0.3:9194) could not be established.",
  );
});

Deno.test("logstash: stack-trace continuation lines do not match the Kafka grok (kept raw, tagged)", () => {
  for (
    const line of [
      "\tat org.apache.kafka.raft.KafkaRaftClient.poll(KafkaRaftClient.java:2345)",
      "java.lang.IllegalStateException: boom",
      "",
    ]
  ) {
    assert.equal(kafkaGrok().exec(line), null, JSON.stringify(line));
  }
  assert.ok(conf.includes('tag_on_failure => ["kafka_line_unparsed"]'));
  assert.ok(conf.includes('match => ["[@metadata][log_time]", "yyyy-MM-dd HH:mm:ss,SSS"]'));
});

Deno.test("logstash: job lines are parsed as ECS JSON into logs-txpipe.jobs-default, Kafka lines into logs-kafka.broker-default", () => {
  const jobs = conf.slice(conf.indexOf('if [@metadata][source] == "txpipe-job"'));
  const kafka = conf.slice(conf.indexOf('else if [@metadata][source] == "kafka"'));
  assert.ok(jobs.indexOf("json {") < jobs.indexOf("else if"), "job branch parses JSON");
  assert.ok(jobs.indexOf('"[data_stream][dataset]" => "txpipe.jobs"') < jobs.indexOf("else if"));
  // Job lines already carry event.dataset (jobs/lib/log.ts): add_field would make it an array.
  assert.ok(
    jobs.indexOf('replace => { "[event][dataset]" => "txpipe.jobs" }') < jobs.indexOf("else if"),
    "the job branch replaces event.dataset",
  );
  assert.ok(!/add_field => \{[^}]*"\[event\]\[dataset\]"[^}]*"txpipe\.jobs"/.test(jobs));
  assert.ok(kafka.indexOf("grok {") < kafka.indexOf("} else {"), "kafka branch uses grok");
  assert.ok(
    kafka.indexOf('"[data_stream][dataset]" => "kafka.broker"') < kafka.indexOf("} else {"),
  );
  const output = conf.slice(conf.indexOf("output {"));
  assert.ok(output.includes('data_stream => "true"'));
  assert.ok(output.includes('data_stream_type => "logs"'));
  assert.ok(output.includes('data_stream_namespace => "default"'));
  assert.ok(conf.includes('port => "${TXPIPE_GELF_PORT}"'));
  assert.ok(conf.includes("use_udp => true"));
});

Deno.test("logstash: the output authenticates with the user and password from the environment, never a literal", () => {
  const output = conf.slice(conf.indexOf("output {"));
  assert.ok(output.includes('user => "${TXPIPE_ELASTICSEARCH_USER}"'));
  assert.ok(output.includes('password => "${TXPIPE_ELASTICSEARCH_PASSWORD}"'));
  for (const m of conf.matchAll(/^\s*(user|password|api_key)\s*=>\s*"([^"]*)"/gm)) {
    assert.match(m[2], /^\$\{TXPIPE_[A-Z_]+\}$/, `${m[1]} comes from the environment`);
  }
  assert.doesNotMatch(conf, /ssl_verification_mode\s*=>\s*"none"/);
});
