/** Flag parsing: precedence, kinds, bounds and messages that name the flag. */
import assert from "node:assert/strict";
import {
  type CommandSpec,
  flagSource,
  helpText,
  parseArgs,
  parseDuration,
  UsageError,
} from "../jobs/lib/cli.ts";

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
});

Deno.test("cli: bad values name the flag, what was expected and what was given", () => {
  const cases: Array<[string[], string]> = [
    [["--rate", "x"], '--rate: expected a number, got "x"'],
    [["--rate", "-1"], '--rate: expected a value >= 0, got "-1"'],
    [["--count", "2.5"], '--count: expected an integer, got "2.5"'],
    [["--mode", "c"], '--mode: expected one of a, b, got "c"'],
    [["--wait", "later"], "--wait: expected a duration such as 500ms, 30s, 5m or 1h"],
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
