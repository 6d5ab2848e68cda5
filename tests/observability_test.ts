/**
 * Observability, proved against real components (docs/design.md: "Metrics are a
 * contract"): the real 3+3 cluster with its JMX exporters, the four jobs on
 * their spec metrics ports, and Debian's Prometheus started by
 * jobs/lib/prometheus_local.ts with the scrape config and alert rules
 * rendered from the topology spec. After a short run every dashboard query
 * and every alert expression must return data, every stream job must report
 * its consumer lag, and every job's log line must carry the ECS fields.
 */
import { copyToFile } from "../jobs/lib/log_file.ts";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { join } from "node:path";
import { alertRules } from "../stacks/render/prometheus.ts";
import { APP_IDS, internalTopicNames, TOPICS, topicSpec, topology } from "../stacks/topology.ts";
import {
  findPrometheus,
  type LocalPrometheus,
  startPrometheus,
  stopPrometheus,
} from "../jobs/lib/prometheus_local.ts";
import { BROKERS, ensureCluster, freshTopic } from "./helpers/cluster.ts";
import { generate, poisonRecords, produceMessages, toMessage } from "./helpers/jobs.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

const ROOT = new URL("../", import.meta.url);
const TOPO = topology("cluster");
const kafkaTest = { sanitizeOps: false, sanitizeResources: false };

/**
 * Prometheus's scrape interval (and timeout) in this test: short, so rates
 * have samples within seconds. A JMX exporter answers in milliseconds because
 * stacks/config/kafka_jmx_exporter.yml reads only the MBeans the dashboards
 * and alerts use; reading them all took a broker 0.3-0.5 s of CPU, more than
 * this timeout on a busy two-core machine.
 */
const SCRAPE_INTERVAL = "4s";

/**
 * Grafana's built-in interval variables, as Grafana would expand them for
 * this run: `$__rate_interval` is at least four scrape intervals.
 */
const GRAFANA_INTERVALS: Record<string, string> = {
  __rate_interval: "20s",
  __interval: "10s",
  __range: "1m",
};

// ---------------------------------------------------------------- PromQL helpers (pure)

/**
 * Splits a PromQL expression at its top-level set operators (`and`, `or`,
 * `unless`): parentheses, braces, brackets and quoted strings are skipped.
 */
function topLevelOperands(expr: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let quote: string | undefined;
  let start = 0;
  for (let i = 0; i < expr.length; i++) {
    const c = expr[i];
    if (quote) {
      if (c === "\\") i++;
      else if (c === quote) quote = undefined;
      continue;
    }
    if (c === '"' || c === "'" || c === "`") quote = c;
    else if ("({[".includes(c)) depth++;
    else if (")}]".includes(c)) depth--;
    else if (depth === 0) {
      const m = /^\s(and|or|unless)\s/.exec(expr.slice(i));
      if (m) {
        parts.push(expr.slice(start, i).trim());
        i += m[0].length - 1;
        start = i + 1;
      }
    }
  }
  parts.push(expr.slice(start).trim());
  return parts;
}

/**
 * The part of one alert operand that must return data in a healthy system:
 * without its final threshold comparison (`… > 0`), and the argument of
 * `absent(…)` (absent returns a series only when its argument has none).
 */
function signalOf(operand: string): string {
  const absent = /^absent\((.*)\)$/s.exec(operand);
  if (absent) return absent[1].trim();
  return operand.replace(/\s*(==|!=|>=|<=|>|<)\s*(bool\s+)?-?[0-9.]+(e[+-]?\d+)?\s*$/, "").trim();
}

/** Replaces Grafana's interval variables and the dashboard's template variables (all: `.*`). */
function expandVariables(expr: string, templateVariables: readonly string[]): string {
  let out = expr;
  for (const [name, value] of Object.entries(GRAFANA_INTERVALS)) {
    out = out.replaceAll(`\${${name}}`, value).replaceAll(`$${name}`, value);
  }
  // Longest names first, so `$instance` is not half-replaced by a `$inst` variable.
  for (const name of [...templateVariables].sort((a, b) => b.length - a.length)) {
    out = out.replaceAll(`\${${name}}`, ".*").replaceAll(`$${name}`, ".*");
  }
  return out;
}

Deno.test("promql helpers: alert operands lose their threshold, absent() its wrapper, variables expand", () => {
  assert.deepEqual(
    topLevelOperands(
      'sum by (job) (x{a="b or c"}) > 5 and sum by (job) (deriv(x[5m])) > 0 or absent(up{job="p"})',
    ),
    ['sum by (job) (x{a="b or c"}) > 5', "sum by (job) (deriv(x[5m])) > 0", 'absent(up{job="p"})'],
  );
  assert.equal(signalOf("sum(a) != 1"), "sum(a)");
  assert.equal(signalOf('up{job=~"a|b"} == 0'), 'up{job=~"a|b"}');
  assert.equal(
    signalOf("histogram_quantile(0.99, sum by (le) (rate(h[5m]))) > 0.1"),
    "histogram_quantile(0.99, sum by (le) (rate(h[5m])))",
  );
  assert.equal(signalOf('absent(up{job="detect"})'), 'up{job="detect"}');
  assert.equal(
    expandVariables('rate(x{job=~"$job", instance=~"${instance}"}[$__rate_interval])', [
      "job",
      "instance",
    ]),
    'rate(x{job=~".*", instance=~".*"}[20s])',
  );
});

Deno.test("dashboards: every txpipe_ metric a panel reads is defined in jobs/lib/metrics.ts", async () => {
  const metricsModule = await Deno.readTextFile(new URL("jobs/lib/metrics.ts", ROOT));
  // prom-client's default metrics, registered with the txpipe_ prefix by collectDefaultMetrics
  assert.ok(
    metricsModule.includes('collectDefaultMetrics({ register: registry, prefix: "txpipe_" })'),
  );
  const defaults = /^txpipe_(process|nodejs)_/;
  const used = new Set<string>();
  for (const check of await dashboardChecks()) {
    for (const name of check.expr.match(/txpipe_[a-z0-9_]+/g) ?? []) used.add(name);
  }
  assert.ok(used.size >= 15, `${[...used]}`);
  for (const name of used) {
    if (defaults.test(name)) continue;
    const defined = name.replace(/_(bucket|sum|count)$/, "");
    assert.ok(metricsModule.includes(`name: "${defined}"`), `${name}: ${defined} is not defined`);
  }
});

Deno.test("prometheus_local: a missing binary is reported as not installed, nothing started", async () => {
  assert.equal(findPrometheus("txpipe-no-such-prometheus"), undefined);
  const result = await startPrometheus({ binary: "txpipe-no-such-prometheus" });
  assert.equal(result.status, "not-installed");
  assert.match(
    (result as { message: string }).message,
    /not installed: no "txpipe-no-such-prometheus" on PATH/,
  );
});

// ---------------------------------------------------------------- the live run

/** One PromQL check: a name for the report and the expression. */
interface Check {
  name: string;
  expr: string;
  /** Returns what is wrong with the result, or undefined when it is fine. */
  verify?: (result: Json[]) => string | undefined;
}

/** Every query of every committed dashboard: panel targets and variable queries. */
async function dashboardChecks(): Promise<Check[]> {
  const checks: Check[] = [];
  const dir = new URL("dashboards/", ROOT);
  const files = [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.endsWith(".json"))
    .sort();
  assert.ok(files.includes("pipeline.json") && files.includes("kafka.json"), `${files}`);
  for (const file of files) {
    const dashboard: Json = JSON.parse(await Deno.readTextFile(new URL(file, dir)));
    const variables: Json[] = dashboard.templating?.list ?? [];
    const names = variables.map((v) => v.name as string);
    for (const v of variables) {
      const query: string = typeof v.query === "string" ? v.query : v.query?.query;
      const m = /^label_values\((.+),\s*([a-zA-Z_]\w*)\)$/s.exec(query ?? "");
      assert.ok(m, `${file}: variable ${v.name} is a label_values(metric, label) query: ${query}`);
      const label = m[2];
      checks.push({
        name: `${file} variable $${v.name}`,
        expr: expandVariables(m[1], names),
        verify: (r) =>
          r.some((s) => s.metric[label] !== undefined) ? undefined : `no series has label ${label}`,
      });
    }
    const panels: Json[] = (dashboard.panels ?? []).flatMap((p: Json) => [p, ...(p.panels ?? [])]);
    for (const panel of panels) {
      for (const target of panel.targets ?? []) {
        const expr = expandVariables(target.expr, names);
        assert.ok(!expr.includes("$"), `${file} "${panel.title}": unexpanded variable in ${expr}`);
        checks.push({ name: `${file} "${panel.title}" ${target.refId}`, expr });
      }
    }
  }
  return checks;
}

/**
 * Every alert rule, as the signal it watches. An alert expression with its
 * threshold comparison is, rightly, empty while the system is healthy (no
 * under-replicated partition, no job down), so "returns data" is checked on
 * the expression without the final comparison: the selector or aggregation
 * that a misspelt metric or label would leave empty. For `absent(x)`, which
 * returns a series only when x has none, x itself must return data. The full
 * expressions are also sent to Prometheus, which must accept them.
 */
function alertChecks(): { signals: Check[]; full: Check[] } {
  const rules: Json[] = (alertRules(TOPO) as Json).groups.flatMap((g: Json) => g.rules);
  const signals: Check[] = [];
  const full: Check[] = [];
  for (const rule of rules) {
    const name = `alert ${rule.alert}${rule.labels.job ? ` (${rule.labels.job})` : ""}`;
    full.push({ name, expr: rule.expr, verify: () => undefined });
    topLevelOperands(rule.expr).forEach((operand, i) => {
      signals.push({ name: `${name} operand ${i + 1}`, expr: signalOf(operand) });
    });
  }
  return { signals, full };
}

async function query(prometheus: LocalPrometheus, expr: string): Promise<Json[]> {
  const res = await fetch(`${prometheus.url}/api/v1/query`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ query: expr }),
  });
  const body: Json = await res.json();
  if (body.status !== "success") {
    throw new Error(`Prometheus rejected ${expr}: ${body.errorType}: ${body.error}`);
  }
  return body.data.resultType === "vector" ? body.data.result : [body.data.result];
}

/** The checks still failing, each with the reason. */
async function failing(prometheus: LocalPrometheus, checks: Check[]): Promise<string[]> {
  const out: string[] = [];
  for (const c of checks) {
    const result = await query(prometheus, c.expr);
    const problem = c.verify ? c.verify(result) : result.length === 0 ? "no series" : undefined;
    if (problem) out.push(`${c.name}: ${problem}\n    ${c.expr}`);
  }
  return out;
}

/** Polls until every check passes; fails listing the checks still failing at the deadline. */
async function eventually(
  prometheus: LocalPrometheus,
  checks: Check[],
  deadline: number,
  what: string,
): Promise<void> {
  let last: string[] = [];
  while (true) {
    last = await failing(prometheus, checks);
    if (last.length === 0) return;
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 2000));
  }
  assert.fail(
    `${what}: ${last.length} of ${checks.length} return nothing:\n  ${last.join("\n  ")}`,
  );
}

/** One scrape target as Prometheus's /api/v1/targets reports it. */
interface TargetState {
  /** `job/instance`. */
  name: string;
  health: string;
  lastError: string;
  lastScrapeDuration: number;
}

async function activeTargets(prometheus: LocalPrometheus): Promise<TargetState[]> {
  const res = await fetch(`${prometheus.url}/api/v1/targets?state=active`);
  const body: Json = await res.json();
  return (body.data?.activeTargets ?? []).map((t: Json) => ({
    name: `${t.labels.job}/${t.labels.instance}`,
    health: t.health,
    lastError: t.lastError,
    lastScrapeDuration: t.lastScrapeDuration,
  }));
}

/**
 * Polls until every one of `expected` scrape targets has answered a scrape at
 * least once. Each target counts once it was seen up in any poll, not all of
 * them in the same poll: on a loaded machine one slow scrape must not hide that
 * the others answered. Fails naming each target that never answered, with
 * Prometheus's last error and scrape duration for it.
 */
async function everyTargetAnswers(
  prometheus: LocalPrometheus,
  expected: number,
  deadline: number,
): Promise<void> {
  const answered = new Set<string>();
  let last: TargetState[] = [];
  while (true) {
    last = await activeTargets(prometheus);
    for (const t of last) if (t.health === "up") answered.add(t.name);
    if (last.length === expected && last.every((t) => answered.has(t.name))) return;
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 1000));
  }
  const silent = last.filter((t) => !answered.has(t.name)).map((t) =>
    `${t.name}: ${t.health}, last scrape ${t.lastScrapeDuration.toFixed(2)}s, ` +
    `error: ${t.lastError || "(none yet)"}`
  );
  assert.fail(
    `expected ${expected} scrape targets each to answer once, ${last.length} configured, ` +
      `${answered.size} answered; never answered:\n  ${silent.join("\n  ")}`,
  );
}

/** A job process with stdout (its ECS log) going to a file. */
interface JobProcess {
  name: string;
  child: Deno.ChildProcess;
  logFile: string;
  logClosed: Promise<void>;
  stderr: Promise<string>;
}

async function startJob(name: string, logDir: string, args: string[]): Promise<JobProcess> {
  const spec = TOPO.jobs.find((j) => j.name === name)!;
  const logFile = join(logDir, `${name}.log`);
  const file = await Deno.open(logFile, { create: true, write: true, truncate: true });
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", spec.script, "--metrics-port", String(spec.metricsPort), ...args],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  return {
    name,
    child,
    logFile,
    logClosed: copyToFile(child.stdout, file).catch(() => {}),
    stderr: new Response(child.stderr).text(),
  };
}

async function stopJob(j: JobProcess): Promise<number> {
  try {
    j.child.kill("SIGTERM");
  } catch { /* already exited */ }
  const timer = setTimeout(() => {
    try {
      j.child.kill("SIGKILL");
    } catch { /* exited */ }
  }, 30_000);
  const { code } = await j.child.status;
  clearTimeout(timer);
  await j.logClosed;
  return code;
}

/** Fails early, naming the process, when a spec metrics port is taken (e.g. by `deno task start`). */
function assertPortsFree(): void {
  for (const job of TOPO.jobs) {
    try {
      Deno.listen({ hostname: "127.0.0.1", port: job.metricsPort }).close();
    } catch {
      assert.fail(
        `expected port ${job.metricsPort} (${job.name}'s metrics port in the spec) to be free: ` +
          "the rendered scrape config finds the jobs there. Stop `deno task start` first.",
      );
    }
  }
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** A field of an ECS document, dotted at the top level (as ecs-pino-format writes) or nested. */
function ecsField(doc: Json, path: string): unknown {
  if (doc[path] !== undefined) return doc[path];
  return path.split(".").reduce((v: Json, k) => v?.[k], doc);
}

const ECS_FIELDS = ["@timestamp", "log.level", "message", "ecs.version", "service.name"];

Deno.test(
  {
    name:
      "observability: with the cluster, the four jobs and Prometheus running, every dashboard query and alert signal returns data, lag is reported per partition and every log line is ECS",
    ...kafkaTest,
  },
  async () => {
    await ensureCluster();
    assertPortsFree();
    const started = Date.now();
    const [input, aggregates, anomalies, deadLetters] = await Promise.all([
      freshTopic(TOPICS.transactions, "obs_input"),
      freshTopic(TOPICS.aggregates, "obs_aggregates"),
      freshTopic(TOPICS.anomalies, "obs_anomalies"),
      freshTopic(TOPICS.deadLetters, "obs_dead_letters"),
    ]);
    const id = crypto.randomUUID().slice(0, 8);
    const aggApp = `test-obs-agg-${id}`;
    const detApp = `test-obs-det-${id}`;
    const work = await Deno.makeTempDir({ prefix: "txpipe-observability-" });
    const stream = (output: string, appId: string) => [
      "--brokers",
      BROKERS.join(","),
      "--input",
      input,
      "--output",
      output,
      "--dead-letters",
      deadLetters,
      "--app-id",
      appId,
      "--session-timeout",
      "8s",
    ];

    const jobs: JobProcess[] = [];
    let prometheus: LocalPrometheus | undefined;
    const codes = new Map<string, number>();
    try {
      const result = await startPrometheus({
        dir: join(work, "prometheus"),
        port: freePort(),
        scrapeInterval: SCRAPE_INTERVAL,
      });
      if (result.status !== "started") assert.fail(`${result.message} (.ci/run installs it)`);
      prometheus = result.prometheus;

      jobs.push(
        await startJob("aggregate", work, [
          ...stream(aggregates, aggApp),
          "--window",
          "5s",
          "--allowed-lateness",
          "1s",
        ]),
        await startJob("detect", work, stream(anomalies, detApp)),
        await startJob("evaluate", work, [
          "--brokers",
          BROKERS.join(","),
          "--transactions",
          input,
          "--anomalies",
          anomalies,
          "--follow",
          "--interval",
          "3s",
          // Recall counts only instances whose last record is this old (default 5 min).
          "--settle",
          "5s",
        ]),
        await startJob("produce", work, [
          "--brokers",
          BROKERS.join(","),
          "--topic",
          input,
          "--rate",
          "300",
          "--fraud-rate",
          "0.02",
        ]),
      );

      // Every scrape target of the rendered config answers: Kafka nodes, jobs, Prometheus.
      await everyTargetAnswers(
        prometheus,
        1 + TOPO.nodes.length + TOPO.jobs.length,
        Date.now() + 45_000,
      );

      // Poison and late records once every input partition has a watermark, so the late
      // records (an hour behind) are late wherever their key puts them.
      const partitions = topicSpec(TOPO, TOPICS.transactions).partitions;
      await eventually(
        prometheus,
        [{
          // (Not the lag: it is exported from the assignment on, before any record.)
          name: "rekey has a watermark on every input partition",
          expr: `txpipe_watermark_seconds{processor="${aggApp}-rekey"}`,
          verify: (r) => r.length === partitions ? undefined : `${r.length} partitions`,
        }],
        Date.now() + 45_000,
        "aggregate input",
      );
      const template = generate(1, "observability-poison")[0];
      const late = generate(6, "observability-late").map((r) => ({
        ...r,
        tx: { ...r.tx, transactionTime: Date.now() - 3_600_000 },
      }));
      await produceMessages(input, [
        ...poisonRecords(template).map((p) => p.message),
        ...late.map((r) => toMessage(r)),
        { key: template.key, value: Buffer.from("{ not json") },
      ]);

      // Lag per partition of each stream processor's source, from the job that owns it.
      const repartition = internalTopicNames(aggApp).repartition;
      const repartitionPartitions =
        topicSpec(TOPO, internalTopicNames(APP_IDS.aggregate).repartition).partitions;
      const lagChecks: Check[] = [
        [`${aggApp}-rekey`, "aggregate", input, partitions],
        [`${aggApp}-windows`, "aggregate", repartition, repartitionPartitions],
        [detApp, "detect", input, partitions],
      ].map(([processor, job, topic, n]) => ({
        name: `consumer lag of ${processor}`,
        expr: `txpipe_consumer_lag{job="${job}", processor="${processor}", topic="${topic}"}`,
        verify: (r: Json[]) => {
          const seen = r.map((s) => Number(s.metric.partition)).sort((a, b) => a - b);
          const all = [...Array(n as number).keys()];
          return JSON.stringify(seen) === JSON.stringify(all)
            ? undefined
            : `partitions ${seen}, expected ${all}`;
        },
      }));

      // The poison records are counted by both jobs that read the input.
      const poisonCheck: Check = {
        name: "dead letters of the poison records",
        expr: 'count by (job) (txpipe_dead_letters_total{reason="malformed_json"})',
        verify: (r) =>
          r.map((s) => s.metric.job).sort().join(",") === "aggregate,detect"
            ? undefined
            : `counted by ${r.map((s) => s.metric.job)}`,
      };

      const { signals, full } = alertChecks();
      const checks = [...(await dashboardChecks()), ...signals, ...lagChecks, poisonCheck];
      await eventually(
        prometheus,
        checks,
        started + 100_000,
        "dashboard queries and alert signals",
      );
      // Prometheus accepts every full alert expression (empty or not).
      await failing(prometheus, full);
      // And the check itself can fail: a misspelt metric returns nothing.
      assert.equal(
        (await failing(prometheus, [{ name: "misspelt", expr: "txpipe_produced_record_total" }]))
          .length,
        1,
      );
      const [slowest] = await query(
        prometheus,
        'max(max_over_time(scrape_duration_seconds{job="kafka"}[10m]))',
      );
      console.log(
        `    ${checks.length} queries returned data after ${
          ((Date.now() - started) / 1000).toFixed(0)
        }s; slowest JMX exporter scrape ${Number(slowest?.value[1]).toFixed(3)}s`,
      );
    } finally {
      // Producer first, so the stream jobs stop on a quiet topic; Prometheus last.
      for (const j of [...jobs].reverse()) codes.set(j.name, await stopJob(j));
      if (prometheus) await stopPrometheus(prometheus);
    }

    for (const j of jobs) {
      assert.equal(
        codes.get(j.name),
        0,
        `${j.name} exits 0 on SIGTERM:\n${(await j.stderr).slice(-2000)}`,
      );
      const lines = (await Deno.readTextFile(j.logFile)).split("\n").filter((l) => l !== "");
      assert.ok(lines.length >= 2, `${j.name} logged ${lines.length} lines`);
      for (const line of lines) {
        let doc: Json;
        try {
          doc = JSON.parse(line);
        } catch {
          assert.fail(`${j.name}: expected every stdout line to be ECS JSON, got: ${line}`);
        }
        for (const field of ECS_FIELDS) {
          assert.ok(ecsField(doc, field) !== undefined, `${j.name}: no ${field} in ${line}`);
        }
        assert.equal(ecsField(doc, "service.name"), `txpipe-${j.name}`, line);
      }
    }
    await Deno.remove(work, { recursive: true });
  },
);
