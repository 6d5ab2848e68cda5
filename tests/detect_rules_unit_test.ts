/**
 * Rules that change without a restart, without Kafka: the control records
 * (jobs/lib/detect_rules.ts), detect following them on the test driver
 * (the switch at a batch boundary, recorded in the partition's state, the
 * same anomalies through crashes and whatever the batch sizes, a tombstone
 * and a reset), and the publisher refusing a bad file before it writes.
 * The real cluster's test is tests/detect_rules_test.ts.
 */
import assert from "node:assert/strict";
import { seeded } from "./helpers/random.ts";
import { Writable } from "node:stream";
import {
  type DetectedAnomaly,
  detectProcessor,
  RULES_KEY,
  type RulesInForce,
} from "../jobs/detect.ts";
import { TestDriver } from "../jobs/lib/test_driver.ts";
import { encodeTransaction, parseTransaction } from "../jobs/lib/transaction.ts";
import type { GeneratedRecord } from "../jobs/lib/generator.ts";
import {
  DEFAULT_DETECT_CONFIG,
  detect,
  type DetectConfig,
  parseDetectConfig,
  type UserState,
} from "../jobs/lib/rules.ts";
import {
  encodeRulesRecord,
  nextRules,
  OWN_RULES,
  parseRulesRecord,
  type PublishedRules,
  RulesRecordError,
} from "../jobs/lib/detect_rules.ts";
import { createLogger } from "../jobs/lib/log.ts";
import { rulesChanges } from "../jobs/lib/metrics.ts";
import type { StreamProcessor } from "../jobs/lib/stream.ts";
import { generate } from "./helpers/jobs.ts";

const RULES_TOPIC = "rules";
/** A config that changes what fires: more velocity and card-testing incidents. */
const STRICT = { velocity: { minCount: 4 }, cardTesting: { minCount: 3 } };
/** And one that fires less. */
const LAX = { velocity: { minCount: 20 }, impossibleTravel: { maxSpeedKmh: 5000 } };

const input = generate(16_000, "rules-driver", 0.02);
const toInput = (r: GeneratedRecord) => ({ key: r.key, value: encodeTransaction(r.tx) });

/** A detect processor of `appId` on a driver, following the driver's `rules` topic. */
function rulesDriver(appId: string, lines?: string[], priorGapMs?: number): TestDriver {
  const logger = lines === undefined ? undefined : createLogger("detect", {
    format: "ecs",
    destination: new Writable({
      write(chunk, _encoding, done) {
        lines.push(String(chunk));
        done();
      },
    }),
  });
  return new TestDriver({
    topics: { input: 5, anomalies: 3, [RULES_TOPIC]: 1 },
    processors: [
      detectProcessor({
        appId,
        input: "input",
        output: "anomalies",
        config: DEFAULT_DETECT_CONFIG,
        rulesTopic: RULES_TOPIC,
        priorGapMs,
      }) as StreamProcessor<unknown, unknown>,
    ],
    logger,
  });
}

let published = 0;
/** Publishes `config` (null: back to the job's own) as `version` of `appId`'s rules. */
function publish(
  driver: TestDriver,
  appId: string,
  version: number,
  config: Record<string, unknown> | null,
): void {
  const value = encodeRulesRecord({
    version,
    config,
    publishedAt: 1_800_000_000_000 + published++,
    publishedBy: "test",
  });
  driver.pipe(RULES_TOPIC, [{ key: appId, value, partition: 0 }]);
}

/** The rules in force on each of the 5 partitions, as their state records them. */
function rulesInForce(driver: TestDriver): Array<RulesInForce | undefined> {
  return [0, 1, 2, 3, 4].map((p) =>
    driver.store<RulesInForce>("detect", p, "rules").get(RULES_KEY)
  );
}

/** One switch of a partition: from `from` on, `version` with `config`. */
interface Switch {
  from: number;
  version: number;
  config: DetectConfig;
}

/**
 * The anomalies of the driver's input computed here, record by record: each
 * partition in offset order through rules.ts's detect, with the config of
 * the last switch at or before each record's offset.
 */
function reference(
  driver: TestDriver,
  switches: ReadonlyArray<ReadonlyArray<Switch>>,
  own: DetectConfig = DEFAULT_DETECT_CONFIG,
): string[] {
  const out: string[] = [];
  for (let p = 0; p < 5; p++) {
    const users = new Map<string, UserState>();
    for (const r of driver.read("input").filter((r) => r.partition === p)) {
      const parsed = parseTransaction(r.value);
      if (!parsed.ok) continue;
      let rules: Switch = { from: 0, version: 0, config: own };
      for (const s of switches[p]) if (s.from <= r.offset) rules = s;
      const result = detect(
        users.get(parsed.tx.userId),
        parsed.tx,
        parsed.amountMinor,
        rules.config,
      );
      users.set(parsed.tx.userId, result.state);
      for (const a of result.anomalies) {
        out.push(JSON.stringify(rules.version === 0 ? a : { ...a, rulesVersion: rules.version }));
      }
    }
  }
  return out.sort();
}

const outputs = (driver: TestDriver) =>
  driver.read("anomalies").map((r) => new TextDecoder().decode(r.value!)).sort();

/** The partition and offset of each input transaction, by id. */
function positions(driver: TestDriver): Map<string, { partition: number; offset: number }> {
  const at = new Map<string, { partition: number; offset: number }>();
  for (const r of driver.read("input")) {
    const parsed = parseTransaction(r.value);
    if (parsed.ok) at.set(parsed.tx.transactionId, { partition: r.partition, offset: r.offset });
  }
  return at;
}

Deno.test("detect rules: a published change takes effect on each partition exactly at its next batch boundary, recorded in its state", () => {
  const app = "rules-boundary";
  const driver = rulesDriver(app);
  driver.pipe("input", input.map(toInput));
  // Batches of 1000 in turn over the 5 partitions: after 8, partitions 0 to 2
  // are at 2000, the others at 1000.
  assert.equal(driver.run({ batchSize: 1000, maxBatches: 8 }), 8);
  assert.deepEqual(rulesInForce(driver), [undefined, undefined, undefined, undefined, undefined]);
  publish(driver, app, 1, STRICT);
  driver.run({ batchSize: 1000 });
  const strict = parseDetectConfig(STRICT);
  const froms = [2000, 2000, 2000, 1000, 1000];
  assert.deepEqual(
    rulesInForce(driver),
    froms.map((from, partition) => ({
      version: 1,
      controlOffset: 0,
      config: STRICT,
      partition,
      fromOffset: String(from),
    })),
  );
  // Record for record: the default thresholds before each partition's switch, STRICT from it.
  const expected = reference(driver, froms.map((from) => [{ from, version: 1, config: strict }]));
  assert.deepEqual(outputs(driver), expected);
  // Each anomaly names the version that raised it: the one in force at its newest evidence.
  const at = positions(driver);
  const anomalies = driver.readValues<DetectedAnomaly>("anomalies");
  let before = 0;
  let after = 0;
  for (const a of anomalies) {
    const trigger = a.transactionIds.map((id) => at.get(id)!).reduce((x, y) =>
      y.offset > x.offset ? y : x
    );
    const version = trigger.offset >= froms[trigger.partition] ? 1 : 0;
    assert.equal(a.rulesVersion ?? 0, version, a.anomalyId);
    if (version === 0) before++;
    else after++;
  }
  assert.ok(before > 0 && after > 0, `anomalies before (${before}) and after (${after})`);
  // The change changed something: without it, other anomalies.
  const unchanged = rulesDriver("rules-unchanged");
  unchanged.pipe("input", input.map(toInput));
  unchanged.run({ batchSize: 400 });
  assert.notDeepEqual(outputs(unchanged), expected);
  assert.deepEqual(outputs(unchanged), reference(unchanged, [[], [], [], [], []]));
});

Deno.test("detect rules: --prior-gap (priorGapMs) holds over the job's own config and over published rules", () => {
  const app = "rules-prior";
  const prior = 100_000; // the input's compressed pace (tests/helpers/traffic.ts)
  const driver = rulesDriver(app, undefined, prior);
  driver.pipe("input", input.map(toInput));
  assert.equal(driver.run({ batchSize: 1000, maxBatches: 8 }), 8);
  publish(driver, app, 1, STRICT); // no priorGapMs: the defaults' 12 hours, but --prior-gap wins
  driver.run({ batchSize: 1000 });
  const froms = [2000, 2000, 2000, 1000, 1000];
  const strict = { ...parseDetectConfig(STRICT), priorGapMs: prior };
  const own = { ...DEFAULT_DETECT_CONFIG, priorGapMs: prior };
  const expected = reference(
    driver,
    froms.map((from) => [{ from, version: 1, config: strict }]),
    own,
  );
  assert.deepEqual(outputs(driver), expected);
  // And it changed something: the defaults' prior gives other anomalies.
  const withDefault = reference(
    driver,
    froms.map((from) => [{
      from,
      version: 1,
      config: parseDetectConfig(STRICT),
    }]),
  );
  assert.notDeepEqual(expected, withDefault);
});

/**
 * Feeds the input in four chunks, running to the end after each, with a
 * rules history in between: STRICT (v1), LAX (v2) and a reset (v3, the
 * job's own), STRICT (v4) and a tombstone (version 0). `run` runs the
 * driver. Returns the driver and where each chunk begins on each partition.
 */
function runWithHistory(
  app: string,
  run: (driver: TestDriver) => void,
): { driver: TestDriver; starts: number[][] } {
  const driver = rulesDriver(app);
  const chunk = Math.ceil(input.length / 4);
  const history: Array<() => void> = [
    () => publish(driver, app, 1, STRICT),
    () => {
      publish(driver, app, 2, LAX);
      publish(driver, app, 3, null);
    },
    () => {
      publish(driver, app, 4, STRICT);
      driver.pipe(RULES_TOPIC, [{ key: app, value: null, partition: 0 }]);
    },
  ];
  const starts: number[][] = [];
  for (let i = 0; i < 4; i++) {
    const fed = driver.read("input");
    starts.push([0, 1, 2, 3, 4].map((p) => fed.filter((r) => r.partition === p).length));
    driver.pipe("input", input.slice(i * chunk, (i + 1) * chunk).map(toInput));
    run(driver);
    history[i]?.();
  }
  return { driver, starts };
}

/** Runs to the end with random batch sizes, crashing every few batches, a fifth failing halfway. */
function crashing(seed: number): (driver: TestDriver) => void {
  const rand = seeded(seed);
  return (driver) => {
    for (;;) {
      const n = driver.run({
        batchSize: () => 1 + Math.floor(rand() * 700),
        failBatch: () => rand() < 0.2,
        maxBatches: 3,
      });
      if (n === 0) return;
      driver.crash();
    }
  };
}

Deno.test("detect rules: the same input with the same rules history gives the same anomalies and versions whatever the batch sizes, crashes and batches failing halfway", () => {
  const { driver: uninterrupted, starts } = runWithHistory(
    "rules-history",
    (d) => d.run({ batchSize: 5_000 }),
  );
  const expected = outputs(uninterrupted);
  const own = DEFAULT_DETECT_CONFIG;
  const strict = parseDetectConfig(STRICT);
  const switches = [0, 1, 2, 3, 4].map((p) => [
    { from: starts[1][p], version: 1, config: strict },
    // v2 (LAX) and v3 came together: the next batch begins with v3 in force.
    { from: starts[2][p], version: 3, config: own },
    // v4 and the tombstone too: version 0, the job's own config.
    { from: starts[3][p], version: 0, config: own },
  ]);
  assert.deepEqual(expected, reference(uninterrupted, switches));
  const versions = new Set(
    uninterrupted.readValues<DetectedAnomaly>("anomalies").map((a) => a.rulesVersion ?? 0),
  );
  assert.deepEqual([...versions].sort(), [0, 1, 3]);

  for (const batchSize of [1, 97, 1_000]) {
    const { driver } = runWithHistory(`rules-history-${batchSize}`, (d) => d.run({ batchSize }));
    assert.deepEqual(outputs(driver), expected, `batches of ${batchSize}`);
  }
  for (const seed of [1, 2]) {
    const { driver } = runWithHistory(`rules-crashing-${seed}`, crashing(seed));
    assert.deepEqual(outputs(driver), expected, `crashing, seed ${seed}`);
    // The state restored after the last crash holds the same switch points.
    assert.deepEqual(
      rulesInForce(driver).map((r) => r && [r.version, r.fromOffset]),
      rulesInForce(uninterrupted).map((r) => r && [r.version, r.fromOffset]),
    );
  }
});

Deno.test("detect rules: a tombstone reverts to the job's own config at version 0; anomalies then carry no version", () => {
  const app = "rules-tombstone";
  const driver = rulesDriver(app);
  const half = Math.floor(input.length / 2);
  driver.pipe("input", input.slice(0, half).map(toInput));
  publish(driver, app, 1, STRICT);
  driver.run({ batchSize: 300 });
  assert.ok(rulesInForce(driver).every((r) => r?.version === 1));
  driver.pipe(RULES_TOPIC, [{ key: app, value: null, partition: 0 }]);
  driver.pipe("input", input.slice(half).map(toInput));
  driver.run({ batchSize: 300 });
  assert.ok(rulesInForce(driver).every((r) => r?.version === 0 && r.config === null));
  const at = positions(driver);
  const froms = rulesInForce(driver).map((r) => Number(r!.fromOffset));
  const anomalies = driver.readValues<DetectedAnomaly>("anomalies");
  for (const a of anomalies) {
    const trigger = a.transactionIds.map((id) => at.get(id)!).reduce((x, y) =>
      y.offset > x.offset ? y : x
    );
    const reverted = trigger.offset >= froms[trigger.partition];
    assert.equal(a.rulesVersion, reverted ? undefined : 1, a.anomalyId);
    assert.equal("rulesVersion" in a, !reverted);
  }
  const strict = parseDetectConfig(STRICT);
  assert.deepEqual(
    outputs(driver),
    reference(
      driver,
      froms.map((from) => [
        { from: 0, version: 1, config: strict },
        { from, version: 0, config: DEFAULT_DETECT_CONFIG },
      ]),
    ),
  );
  // After a tombstone the versions may start again at 1.
  publish(driver, app, 1, LAX);
  assert.equal(driver.control<PublishedRules>("detect")?.version, 1);
});

Deno.test("detect rules: one ECS line rules-changed per switch per partition, with versions and offsets, and the counter, once the batch has committed", async () => {
  const app = "rules-logged";
  const lines: string[] = [];
  const driver = rulesDriver(app, lines);
  const counted = async () =>
    (await rulesChanges.get()).values.find((v) => v.labels.processor === app)?.value ?? 0;
  assert.equal(await counted(), 0, "the series exists at 0");
  driver.pipe("input", input.slice(0, 3_000).map(toInput));
  driver.run({ batchSize: 200, maxBatches: 5 });
  publish(driver, app, 1, STRICT);
  // A batch that fails halfway logs and counts nothing: only its retry, once committed.
  driver.run({ batchSize: 200, failBatch: (b) => b.partition === 0 });
  const changed = lines.map((l) => JSON.parse(l)).filter((l) =>
    l["event.action"] === "rules-changed"
  );
  assert.equal(changed.length, 5, "one per partition");
  assert.deepEqual(
    changed.map((l) => [
      l.partition,
      l["txpipe.rules.old_version"],
      l["txpipe.rules.new_version"],
      l["txpipe.rules.control_offset"],
      l["txpipe.rules.from_offset"],
    ]).sort(),
    [0, 1, 2, 3, 4].map((p) => [p, 0, 1, 0, "200"]),
  );
  for (const l of changed) {
    assert.equal(l["log.level"], "info");
    assert.equal(l["service.name"], "txpipe-detect");
    assert.equal(l["txpipe.rules.published_by"], "test");
    assert.match(l.message, /^rules version 0 → 1 on partition \d from offset 200 /);
  }
  assert.equal(await counted(), 5);
  // Nothing new, nothing logged: the next batches keep the rules.
  driver.pipe("input", input.slice(3_000, 4_000).map(toInput));
  driver.run({ batchSize: 200 });
  assert.equal(await counted(), 5);
});

Deno.test("detect rules: bad JSON, a bad config and a version not above the one in force are refused with the reason; the rules before stay in force", () => {
  const app = "rules-refused";
  const driver = rulesDriver(app);
  publish(driver, app, 2, STRICT);
  driver.pipe(RULES_TOPIC, [
    { key: app, value: "{not json", partition: 0 },
    {
      key: app,
      value: JSON.stringify({
        version: 3,
        config: { velocity: { minCount: 1 } },
        publishedAt: 1,
        publishedBy: "x",
      }),
      partition: 0,
    },
    {
      key: app,
      value: encodeRulesRecord({ version: 2, config: LAX, publishedAt: 1, publishedBy: "x" }),
      partition: 0,
    },
    // Another app's rules are not this one's.
    { key: "another-app", value: "{not json", partition: 0 },
  ]);
  driver.pipe("input", input.slice(0, 1_000).map(toInput));
  driver.run({ batchSize: 500 });
  const refused = driver.controlRefusals();
  assert.deepEqual(refused.map((r) => r.offset), [1, 2, 3]);
  assert.match(refused[0].reason, /^at offset 1: rules record: expected JSON, given "\{not json"/);
  assert.match(
    refused[1].reason,
    /^at offset 2: rules record config: detect config velocity\.minCount: expected an integer from 2 to 64, given 1$/,
  );
  assert.match(
    refused[2].reason,
    /^at offset 3: rules record version 2 is not above the version in force, 2 /,
  );
  assert.ok(rulesInForce(driver).every((r) => r?.version === 2 && r.controlOffset === 0));
});

Deno.test("detect rules: control records are parsed and checked field by field, each problem named", () => {
  const ok = {
    version: 1,
    config: { velocity: { minCount: 5 } },
    publishedAt: 0,
    publishedBy: "a",
  };
  assert.deepEqual(parseRulesRecord(JSON.stringify(ok)), ok);
  assert.equal(parseRulesRecord(null), null, "a tombstone");
  assert.deepEqual(parseRulesRecord(encodeRulesRecord({ ...ok, config: null }))?.config, null);
  const bad: Array<[unknown, RegExp]> = [
    ["[1]", /^rules record: expected an object, given \[1\]$/],
    [
      { ...ok, extra: 1 },
      /^rules record extra: expected one of version, config, publishedAt, publishedBy/,
    ],
    [{ ...ok, version: 0 }, /^rules record version: expected an integer ≥ 1, given 0$/],
    [{ ...ok, version: 1.5 }, /^rules record version: expected an integer ≥ 1, given 1\.5$/],
    [
      { ...ok, version: undefined },
      /^rules record version: expected an integer ≥ 1, given nothing$/,
    ],
    [{ ...ok, config: [] }, /^rules record config: expected an object or null, given \[\]$/],
    [
      { ...ok, config: { velocity: { minCount: "8" } } },
      /^rules record config: detect config velocity\.minCount: expected an integer from 2 to 64, given "8"$/,
    ],
    [
      { ...ok, config: { speed: 1 } },
      /^rules record config: detect config speed: expected one of velocity, amountSpike/,
    ],
    [{ ...ok, publishedAt: -1 }, /^rules record publishedAt: expected epoch milliseconds/],
    [
      { ...ok, publishedBy: " " },
      /^rules record publishedBy: expected a non-empty string, given " "$/,
    ],
  ];
  for (const [value, message] of bad) {
    const text = typeof value === "string" ? value : JSON.stringify(value);
    assert.throws(
      () => parseRulesRecord(text),
      (e: Error) => e instanceof RulesRecordError && message.test(e.message),
      text,
    );
  }
  assert.throws(() => parseRulesRecord("{"), /^RulesRecordError: rules record: expected JSON/);

  // Versions rise; a tombstone starts again from 0.
  const v1 = nextRules(undefined, JSON.stringify(ok), 7);
  assert.deepEqual(v1, { ...ok, offset: 7 });
  assert.throws(
    () => nextRules(v1, JSON.stringify(ok), 8),
    /at offset 8: rules record version 1 is not above the version in force, 1/,
  );
  const v3 = nextRules(v1, JSON.stringify({ ...ok, version: 3 }), 8);
  assert.equal(v3.version, 3, "a version may skip");
  const gone = nextRules(v3, null, 9);
  assert.deepEqual(gone, { ...OWN_RULES, offset: 9 });
  assert.equal(nextRules(gone, JSON.stringify(ok), 10).version, 1);
});

/** Runs `deno task rules` with `args`; returns its exit code and output. */
async function rules(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "jobs/rules.ts", ...args],
    cwd: new URL("../", import.meta.url),
    env: { TXPIPE_CONFIG: "" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

Deno.test("rules publisher: a bad file or flag exits 2 naming the problem before reaching Kafka; an unreachable Kafka is one sentence and exit 1", async () => {
  const dir = await Deno.makeTempDir({ prefix: "txpipe-rules-" });
  try {
    // No Kafka listens on port 1: a refusal that came after connecting would say "cannot reach".
    const nowhere = ["--brokers", "127.0.0.1:1", "--connect-attempts", "1"];
    const badConfig = `${dir}/bad.json`;
    await Deno.writeTextFile(badConfig, JSON.stringify({ velocity: { minCount: 1 } }));
    const notJson = `${dir}/not.json`;
    await Deno.writeTextFile(notJson, "{velocity:");
    const cases: Array<[string[], RegExp]> = [
      [
        ["publish", "--config", badConfig],
        /^deno task rules: --config: rules record config: detect config velocity\.minCount: expected an integer from 2 to 64, given 1 \(in .*bad\.json\); nothing published$/m,
      ],
      [
        ["publish", "--config", notJson],
        /^deno task rules: --config: expected JSON in .*not\.json/m,
      ],
      [["publish", "--config", `${dir}/missing.json`], /--config: expected a readable JSON file/],
      [["publish"], /--config: expected a JSON file of thresholds to publish, got nothing/],
      [["show", "--config", badConfig], /--config: only publish takes a file, got one for show/],
      [[], /expected one command, publish, show, reset; got none/],
      [["drop"], /expected one command, publish, show, reset; got "drop"/],
      [["show", "--frob"], /unknown flag --frob; expected one of --brokers/],
      [["show", "--connect-attempts", "zero"], /--connect-attempts: expected/],
    ];
    for (const [args, message] of cases) {
      const r = await rules(...args, ...nowhere);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, message, args.join(" "));
      assert.doesNotMatch(r.stderr, /cannot reach|\n\s+at /, args.join(" "));
    }
    const help = await rules("--help");
    assert.equal(help.code, 0);
    assert.match(help.stdout, /Usage: deno task rules <publish --config FILE\|show\|reset>/);

    const unreachable = await rules("show", ...nowhere);
    assert.equal(unreachable.code, 1);
    const lines = unreachable.stderr.trim().split("\n");
    assert.equal(lines.length, 1, unreachable.stderr);
    assert.match(
      lines[0],
      /^deno task rules: cannot reach Kafka at 127\.0\.0\.1:1 after 1 attempts/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
