/**
 * Flag parsing: precedence, kinds, bounds and messages that name the flag;
 * values typed from the spec (checked by `deno check`); a stream job's topics
 * derived from its flags and processors.
 */
import assert from "node:assert/strict";
import {
  type AnyFlagValue,
  type CommandSpec,
  defineCommand,
  defineFlags,
  type FlagKey,
  flagKey,
  flagSource,
  helpText,
  parseArgs,
  parseBytes,
  parseDuration,
  UsageError,
} from "../jobs/lib/cli.ts";
import {
  commonFlags,
  type CommonValues,
  connectionFlags,
  shellOptions,
  streamFlags,
  streamOptions,
  streamTopics,
  type StreamValues,
} from "../jobs/lib/job.ts";
import type { PRODUCE_COMMAND } from "../jobs/produce.ts";
import type { CONSUME_COMMAND } from "../jobs/consume.ts";
import type { EVALUATE_COMMAND } from "../jobs/evaluate.ts";
import { AGGREGATE_COMMAND, aggregateProcessors } from "../jobs/aggregate.ts";
import { DETECT_COMMAND, detectProcessor } from "../jobs/detect.ts";
import { DEFAULT_DETECT_CONFIG } from "../jobs/lib/rules.ts";
import { APP_IDS, internalTopicNames, topicAs, TOPICS, topology } from "../stacks/topology.ts";

const SPEC: CommandSpec = {
  name: "t",
  summary: "test",
  flags: {
    rate: { kind: "number", min: 0, default: 5, help: "rate" },
    count: { kind: "int", min: 1, help: "count" },
    mode: { kind: "string", choices: ["a", "b"], default: "a", help: "mode" },
    wait: { kind: "duration", default: 1000, help: "wait" },
    follow: { kind: "boolean", default: false, help: "follow" },
    brokers: { kind: "list", help: "brokers" },
    size: { kind: "bytes", min: 1024, max: 64 * 1024 * 1024, default: 8388608, help: "size" },
  },
};
const noEnv = () => undefined;

Deno.test("cli: flags, then TXPIPE_* variables, then defaults", () => {
  const env = (n: string) => ({ TXPIPE_RATE: "7", TXPIPE_COUNT: "3" } as Record<string, string>)[n];
  const p = parseArgs(SPEC, ["--count", "9"], env);
  assert.equal(p.values.count, 9, "the flag wins over the variable");
  assert.equal(p.values.rate, 7, "the variable wins over the default");
  assert.equal(p.values.mode, "a", "the default");
});

Deno.test("cli: each kind converts its text", () => {
  const p = parseArgs(SPEC, ["--wait=2m", "--follow", "--brokers", "a:1, b:2", "x"], noEnv);
  assert.equal(p.values.wait, 120_000);
  assert.equal(p.values.follow, true);
  assert.deepEqual(p.values.brokers, ["a:1", "b:2"]);
  assert.deepEqual(p.positional, ["x"]);
  assert.equal(parseDuration("250ms"), 250);
  assert.equal(parseDuration("1.5s"), 1500);
  assert.equal(parseDuration("soon"), undefined);
  assert.equal(parseArgs(SPEC, ["--size", "512KiB"], noEnv).values.size, 524_288);
  assert.equal(parseArgs(SPEC, ["--size", "2MB"], noEnv).values.size, 2_000_000);
  assert.equal(parseArgs(SPEC, ["--size", "1048576"], noEnv).values.size, 1_048_576);
  assert.equal(parseBytes("1.5 MiB"), 1_572_864);
  assert.equal(parseBytes("8mib"), 8_388_608);
  assert.equal(parseBytes("0.3B"), undefined, "not a whole number of bytes");
  assert.equal(parseBytes("lots"), undefined);
});

Deno.test("cli: bad values name the flag, what was expected and what was given", () => {
  const cases: Array<[string[], string]> = [
    [["--rate", "x"], '--rate: expected a number, got "x"'],
    [["--rate", "-1"], '--rate: expected a value >= 0, got "-1"'],
    [["--count", "2.5"], '--count: expected an integer, got "2.5"'],
    [["--mode", "c"], '--mode: expected one of a, b, got "c"'],
    [["--wait", "later"], "--wait: expected a duration such as 500ms, 30s, 5m or 1h"],
    [["--size", "big"], '--size: expected a size such as 1048576, 512KiB or 8MiB, got "big"'],
    [["--size", "1KB"], '--size: expected at least 1024 (1 KiB), got "1KB"'],
    [["--size", "1GiB"], '--size: expected at most 67108864 (64 MiB), got "1GiB"'],
    [["--nope"], "unknown flag --nope"],
  ];
  for (const [args, message] of cases) {
    assert.throws(() => parseArgs(SPEC, args, noEnv), (err: Error) => {
      assert.ok(err instanceof UsageError);
      assert.ok(err.message.includes(message), `${err.message} includes ${message}`);
      return true;
    });
  }
  assert.throws(
    () => parseArgs(SPEC, [], (n) => (n === "TXPIPE_RATE" ? "lots" : undefined)),
    /TXPIPE_RATE \(for --rate\): expected a number, got "lots"/,
  );
});

Deno.test("cli: --help lists every flag with its default and variable", () => {
  const text = helpText(SPEC);
  for (const flag of Object.keys(SPEC.flags)) assert.ok(text.includes(`--${flag}`), flag);
  assert.ok(text.includes("(default: 5) [env TXPIPE_RATE]"));
  assert.ok(text.includes("(default: 8 MiB) [env TXPIPE_SIZE]"));
});

Deno.test("cli: flagSource tells a value the user gave (flag or variable) from the default", () => {
  const env = (n: string) => (n === "TXPIPE_PROMETHEUS_PORT" ? "19090" : undefined);
  assert.equal(flagSource("metrics-port", ["--metrics-port", "1"], env), "flag");
  assert.equal(flagSource("metrics-port", ["--metrics-port=1"], env), "flag");
  assert.equal(flagSource("metrics-port", ["--metrics-portx", "1"], env), "default");
  assert.equal(flagSource("prometheus-port", [], env), "variable");
  assert.equal(
    flagSource("prometheus-port", [], () => ""),
    "default",
    "an empty variable is unset",
  );
});

// ---------------------------------------------------------------------------
// Values typed from the spec: these checks run in `deno check`.

/** Compiles only when `A` and `B` are the same type. */
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true
  : false;
/** Compiles only when given `true`. */
function typeCheck<_T extends true>(): void {}

const TYPED = defineCommand({
  name: "t",
  summary: "typed",
  flags: {
    rate: { kind: "number", min: 0, default: 5, help: "rate" },
    count: { kind: "int", min: 1, help: "count" },
    mode: { kind: "string", choices: ["a", "b"], default: "a", help: "mode" },
    name: { kind: "string", help: "name" },
    "wait-for": { kind: "duration", default: 1000, help: "wait" },
    follow: { kind: "boolean", default: false, help: "follow" },
    brokers: { kind: "list", default: ["x:1"], help: "brokers" },
    "dead-letter-topic": { kind: "string", default: "dlq", help: "dead letters" },
  },
});
type TypedValues = ReturnType<typeof parseArgs<typeof TYPED.flags>>["values"];

Deno.test("cli: parsed values are typed from the spec (deno check)", () => {
  typeCheck<Equal<TypedValues["rate"], number>>();
  typeCheck<Equal<TypedValues["count"], number | undefined>>(); // no default
  typeCheck<Equal<TypedValues["mode"], "a" | "b">>(); // the choices
  typeCheck<Equal<TypedValues["name"], string | undefined>>();
  typeCheck<Equal<TypedValues["waitFor"], number>>(); // camelCased, ms
  typeCheck<Equal<TypedValues["follow"], boolean>>();
  typeCheck<Equal<TypedValues["brokers"], string[]>>();
  typeCheck<Equal<TypedValues["deadLetterTopic"], string>>();
  typeCheck<Equal<TypedValues["help"], boolean | undefined>>();
  typeCheck<Equal<FlagKey<"a-b-c">, "aBC">>();
  typeCheck<Equal<FlagKey<"x-1-y--z">, "x-1Y-Z">>(); // as the parser: a dash before a-z only
  // Not a flag of the spec, and a value of the wrong type: compile errors.
  // @ts-expect-error: "wait-for" is "waitFor"
  TYPED_VALUES.wait;
  // @ts-expect-error: count may be undefined (it has no default)
  const _count: number = TYPED_VALUES.count;
  // @ts-expect-error: not one of the choices
  const _mode: "a" = TYPED_VALUES.mode;

  const v = parseArgs(TYPED, ["--count", "2", "--mode=b", "--wait-for", "2s", "--follow"], noEnv)
    .values;
  // Used as their types without a cast.
  const total: number = v.rate * (v.count ?? 1);
  const mode: "a" | "b" = v.mode;
  const first: string = v.brokers[0];
  assert.deepEqual([total, mode, v.waitFor, v.follow, first, v.name], [
    10,
    "b",
    2000,
    true,
    "x:1",
    undefined,
  ]);
  assert.equal(v.deadLetterTopic, "dlq");
});
const TYPED_VALUES = {} as TypedValues;

Deno.test("cli: a spec declared `as const` or `: CommandSpec` parses as before", () => {
  const asConst = {
    name: "c",
    summary: "as const",
    flags: { "max-bytes": { kind: "int", default: 3, help: "n" } },
  } as const;
  const n: number = parseArgs(asConst, [], noEnv).values.maxBytes;
  assert.equal(n, 3);
  // A wide CommandSpec (not as const) gives every key, each any flag value or undefined.
  const wide = parseArgs(SPEC, [], noEnv).values;
  typeCheck<Equal<typeof wide.anything, AnyFlagValue | undefined>>();
  assert.equal(wide.rate, 5);
});

Deno.test("cli: a list default is copied, never the spec's own array", () => {
  const a = parseArgs(TYPED, [], noEnv).values.brokers;
  a.push("y:2");
  assert.deepEqual(parseArgs(TYPED, [], noEnv).values.brokers, ["x:1"]);
  assert.deepEqual(TYPED.flags.brokers.default, ["x:1"]);
});

Deno.test("cli: flagKey camelCases as the type FlagKey says", () => {
  const key: "deadLetterTopic" = flagKey("dead-letter-topic");
  assert.equal(key, "deadLetterTopic");
  assert.equal(flagKey("x-1-y--z"), "x-1Y-Z");
});

Deno.test("cli: the shared flag groups keep their types when spread", () => {
  const spec = defineCommand({
    name: "s",
    summary: "spread",
    flags: { ...streamFlags("detect"), extra: { kind: "int", default: 1, help: "x" } },
  });
  const v = parseArgs(spec, [], noEnv).values;
  typeCheck<Equal<typeof v.brokers, string[]>>();
  typeCheck<Equal<typeof v.metricsPort, number>>();
  typeCheck<Equal<typeof v.logFormat, "auto" | "ecs" | "pretty">>();
  typeCheck<Equal<typeof v.sessionTimeout, number>>();
  typeCheck<Equal<typeof v.deadLetters, string>>();
  typeCheck<Equal<typeof v.extra, number>>();
  typeCheck<Equal<StreamValues["appId"], string>>();
  typeCheck<Equal<CommonValues["connectAttempts"], number>>();
  const c =
    parseArgs(defineCommand({ name: "c", summary: "c", flags: connectionFlags() }), [], noEnv)
      .values;
  typeCheck<Equal<typeof c.connectAttempts, number>>();
  const common = parseArgs({ name: "p", summary: "p", flags: commonFlags("produce") }, [], noEnv);
  typeCheck<Equal<typeof common.values.metricsHost, string>>();
  // shellOptions takes typed values without a cast, and refuses values lacking a flag it reads.
  assert.equal(shellOptions("detect", v).metricsHost, "127.0.0.1");
  const { brokers: _b, ...noBrokers } = v;
  // @ts-expect-error: no brokers
  shellOptions("detect", noBrokers);
  // @ts-expect-error: no dead letters
  streamOptions({ ...v, deadLetters: undefined }, {} as Parameters<typeof streamOptions>[1]);
  assert.equal(v.deadLetters, TOPICS.deadLetters);
});

Deno.test("cli: every command's values are typed (deno check)", () => {
  type Values<C extends CommandSpec> = ReturnType<typeof parseArgs<C["flags"]>>["values"];
  type Produce = Values<typeof PRODUCE_COMMAND>;
  typeCheck<Equal<Produce["rate"], number>>();
  typeCheck<Equal<Produce["seed"], string | undefined>>();
  typeCheck<Equal<Produce["startTime"], number | undefined>>();
  typeCheck<Equal<Produce["duration"], number | undefined>>();
  typeCheck<Equal<Produce["brokers"], string[]>>();
  type Consume = Values<typeof CONSUME_COMMAND>;
  typeCheck<Equal<Consume["format"], "auto" | "json" | "pretty">>();
  typeCheck<Equal<Consume["follow"], boolean>>();
  type Evaluate = Values<typeof EVALUATE_COMMAND>;
  typeCheck<Equal<Evaluate["settle"], number>>();
  typeCheck<Equal<Evaluate["anomalies"], string>>();
});

// ---------------------------------------------------------------------------
// A stream job's topics, declared once: its topic flags and its processors.

/** The topics aggregate.ts lists for runJob today (its main), for comparison. */
function aggregateTopicsToday(
  v: { appId: string; input: string; output: string; deadLetters: string },
) {
  const topo = topology();
  const internal = internalTopicNames(v.appId);
  const like = (name: string, spec: string) => topicAs(topo, spec, name);
  const defaults = internalTopicNames(APP_IDS.aggregate);
  return [
    topicAs(topo, TOPICS.transactions, v.input),
    like(v.output, TOPICS.aggregates),
    like(v.deadLetters, TOPICS.deadLetters),
    like(internal.repartition, defaults.repartition),
    like(internal.rekeyChangelog, defaults.rekeyChangelog),
    like(internal.changelog, defaults.changelog),
  ];
}

/** The topics detect.ts lists for runJob today (its main), for comparison. */
function detectTopicsToday(
  v: { appId: string; input: string; output: string; deadLetters: string },
) {
  const topo = topology();
  const like = (name: string, spec: string) => topicAs(topo, spec, name);
  return [
    like(v.input, TOPICS.transactions),
    like(v.output, TOPICS.anomalies),
    like(v.deadLetters, TOPICS.deadLetters),
    like(internalTopicNames(v.appId).changelog, internalTopicNames(APP_IDS.detect).changelog),
    // The control topic it follows (--rules-topic): read only, created by the spec's owner.
    like(TOPICS.detectRules, TOPICS.detectRules),
  ];
}

/** The topic flags' values, typed or not (the commands' specs may be either). */
function topicValues(v: Readonly<Record<string, unknown>>) {
  return {
    appId: String(v.appId),
    input: String(v.input),
    output: String(v.output),
    deadLetters: String(v.deadLetters),
  };
}

const byName = <T extends { name: string }>(ts: T[]) =>
  [...ts].sort((a, b) => a.name.localeCompare(b.name));

const CUSTOM = [
  "--input",
  "t_in",
  "--output",
  "t_out",
  "--dead-letters",
  "t_dlq",
  "--app-id",
  "t-app",
];

Deno.test("job: streamTopics gives aggregate's topics from its flags and processors", () => {
  for (const args of [[], CUSTOM]) {
    const parsed = parseArgs(AGGREGATE_COMMAND, args, noEnv).values;
    const v = topicValues(parsed);
    const processors = Object.values(aggregateProcessors({
      appId: v.appId,
      input: v.input,
      output: v.output,
      inputPartitions: 3,
      repartitionPartitions: 3,
      allowedLatenessMs: 0,
      windowMs: 1000,
    }));
    const derived = streamTopics(AGGREGATE_COMMAND, parsed, processors);
    assert.deepEqual(byName(derived), byName(aggregateTopicsToday(v)), args.join(" "));
  }
});

Deno.test("job: streamTopics gives detect's topics from its flags and processor", () => {
  for (const args of [[], CUSTOM]) {
    const parsed = parseArgs(DETECT_COMMAND, args, noEnv).values;
    const v = topicValues(parsed);
    const processor = detectProcessor({ ...v, config: DEFAULT_DETECT_CONFIG });
    const derived = streamTopics(DETECT_COMMAND, parsed, [processor]);
    assert.deepEqual(byName(derived), byName(detectTopicsToday(v)), args.join(" "));
  }
});

Deno.test("job: streamTopics names the spec's topics for a topic that stands for none", () => {
  const spec = defineCommand({
    name: "j",
    summary: "j",
    flags: defineFlags({ ...streamFlags("detect") }),
  });
  const v = parseArgs(spec, [], noEnv).values;
  assert.throws(
    () => streamTopics(spec, v, [{ source: v.input, changelog: "elsewhere-changelog" }]),
    /unknown topic "elsewhere-changelog"; expected one of .*financial_transactions/,
  );
});

Deno.test("cli: detect's --prior-gap is a duration of at least a second; start gives detect its producer's pace", async () => {
  assert.equal(parseArgs(DETECT_COMMAND, ["--prior-gap", "100s"], noEnv).values.priorGap, 100_000);
  assert.equal(parseArgs(DETECT_COMMAND, [], noEnv).values.priorGap, undefined);
  assert.throws(
    () => parseArgs(DETECT_COMMAND, ["--prior-gap", "10ms"], noEnv),
    (err: Error) => err instanceof UsageError && /--prior-gap/.test(err.message),
  );
  const { priorGap } = await import("../jobs/start.ts");
  // 200 records/s: 20 000 users (the default population), each paying every 100 s
  assert.deepEqual(priorGap(200), ["--prior-gap", "100000ms"]);
  // 5 000 records/s: 40 users per record/s, each paying every 40 s
  assert.deepEqual(priorGap(5_000), ["--prior-gap", "40000ms"]);
  assert.deepEqual(priorGap(0), [], "unthrottled: the pace is not known");
});
