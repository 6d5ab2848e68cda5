/**
 * Detection rules published while detect runs: the records of the control
 * topic `txpipe-detect-rules` (compacted, one partition), what they mean and
 * how they are checked. Pure: no Kafka, no clock.
 *
 * A record's key is the rule set's name, the detect app id it is for (so two
 * apps can run different rules); its value is JSON:
 *
 *     { "version": 3, "config": { "velocity": { "minCount": 6 } },
 *       "publishedAt": 1796004660000, "publishedBy": "alice@host" }
 *
 * - `version`: an integer ≥ 1, above the version in force (each publish
 *   takes the version in force + 1, `deno task rules`);
 * - `config`: the thresholds exactly as `deno task detect --config` takes
 *   them (partial is fine: the rest comes from jobs/config/detect_defaults.json),
 *   checked by rules.ts's `parseDetectConfig`; `null` means "back to the
 *   job's own --config or defaults" at this version (`deno task rules reset`);
 * - `publishedAt` (epoch ms) and `publishedBy`: who and when, for the log.
 *
 * A tombstone (null value, e.g. written with Kafka's own tools) also means
 * "back to the job's own config", at version 0, as if the key had never been
 * written (which is what compaction makes of it): the next version may start
 * again at 1. The publisher's reset writes a record instead, so that a
 * version number is never used twice for one app id.
 *
 * The value in force ({@link PublishedRules}) changes only through
 * {@link nextRules}, which refuses a bad record with a message naming what
 * is wrong; a refused record leaves the rules before it in force.
 *
 * @module
 */
import { type DetectConfig, parseDetectConfig } from "./rules.ts";

/** The value of a control record (see the module documentation). */
export interface RulesRecord {
  readonly version: number;
  /** The thresholds as published (partial is fine), or null: the job's own. */
  readonly config: Record<string, unknown> | null;
  readonly publishedAt: number;
  readonly publishedBy: string;
}

/** The rules in force for one detect app id, as the control topic says. */
export interface PublishedRules {
  /** 0: no control record (or a tombstone): the job's own --config or defaults. */
  readonly version: number;
  /** The thresholds as published (checked), or null: the job's own. */
  readonly config: Record<string, unknown> | null;
  /** Offset of the record in the control topic; -1 when there is none. */
  readonly offset: number;
  readonly publishedAt?: number;
  readonly publishedBy?: string;
}

/** The rules in force before any control record: the job's own, version 0. */
export const OWN_RULES: PublishedRules = { version: 0, config: null, offset: -1 };

/** A control record that cannot be used: the message names what is wrong. */
export class RulesRecordError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RulesRecordError";
  }
}

function fail(what: string, expected: string, given: unknown): never {
  const shown = given === undefined ? "nothing" : JSON.stringify(given);
  const where = what === "" ? "rules record" : `rules record ${what}`;
  throw new RulesRecordError(`${where}: expected ${expected}, given ${shown}`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Checks a rules config (`--config`'s JSON; partial is fine) and returns
 * the thresholds it gives. Throws a {@link RulesRecordError} naming the key,
 * what was expected and what was given.
 */
export function checkRulesConfig(config: unknown): DetectConfig {
  try {
    return parseDetectConfig(config);
  } catch (err) {
    throw new RulesRecordError(`rules record config: ${(err as Error).message}`);
  }
}

/**
 * Parses a control record's value (JSON text; null: a tombstone) and checks
 * every field, the config with `parseDetectConfig`. Throws a
 * {@link RulesRecordError} naming what is wrong.
 */
export function parseRulesRecord(value: string | null): RulesRecord | null {
  if (value === null) return null;
  let json: unknown;
  try {
    json = JSON.parse(value);
  } catch (err) {
    throw new RulesRecordError(
      `rules record: expected JSON, given ${JSON.stringify(value.slice(0, 80))} ` +
        `(${(err as Error).message})`,
    );
  }
  if (!isObject(json)) fail("", "an object", json);
  const known = ["version", "config", "publishedAt", "publishedBy"];
  for (const key of Object.keys(json)) {
    if (!known.includes(key)) fail(key, `one of ${known.join(", ")}`, key);
  }
  const { version, config, publishedAt, publishedBy } = json;
  if (typeof version !== "number" || !Number.isSafeInteger(version) || version < 1) {
    fail("version", "an integer ≥ 1", version);
  }
  if (config !== null && !isObject(config)) fail("config", "an object or null", config);
  if (config !== null) checkRulesConfig(config);
  if (typeof publishedAt !== "number" || !Number.isSafeInteger(publishedAt) || publishedAt < 0) {
    fail("publishedAt", "epoch milliseconds (an integer ≥ 0)", publishedAt);
  }
  if (typeof publishedBy !== "string" || publishedBy.trim() === "") {
    fail("publishedBy", "a non-empty string", publishedBy);
  }
  return { version, config, publishedAt, publishedBy };
}

/** The JSON text of a control record. */
export function encodeRulesRecord(r: RulesRecord): string {
  return JSON.stringify({
    version: r.version,
    config: r.config,
    publishedAt: r.publishedAt,
    publishedBy: r.publishedBy,
  });
}

/**
 * The rules in force after the control record at `offset` (its value; null:
 * a tombstone), given those in force before it. Throws a
 * {@link RulesRecordError} for a record that cannot be used, or whose
 * version is not above the one in force.
 */
export function nextRules(
  previous: PublishedRules | undefined,
  value: string | null,
  offset: number,
): PublishedRules {
  const before = previous ?? OWN_RULES;
  let record: RulesRecord | null;
  try {
    record = parseRulesRecord(value);
  } catch (err) {
    throw new RulesRecordError(`at offset ${offset}: ${(err as Error).message}`);
  }
  if (record === null) return { version: 0, config: null, offset };
  if (record.version <= before.version) {
    throw new RulesRecordError(
      `at offset ${offset}: rules record version ${record.version} is not above the version ` +
        `in force, ${before.version} (a publish takes the version in force + 1)`,
    );
  }
  return {
    version: record.version,
    config: record.config,
    offset,
    publishedAt: record.publishedAt,
    publishedBy: record.publishedBy,
  };
}

/** The thresholds of `rules`: its published config, or `own` (the job's --config or defaults). */
export function rulesConfig(
  rules: Pick<PublishedRules, "config">,
  own: DetectConfig,
): DetectConfig {
  return rules.config === null ? own : parseDetectConfig(rules.config);
}
