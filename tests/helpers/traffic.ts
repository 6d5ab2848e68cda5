/**
 * Generator options for tests of the default detection thresholds: the
 * "rule envelope", traffic inside what jobs/config/detect_defaults.json was
 * written for. No hard negatives; the four patterns those rules cover, each
 * drawn per instance from ranges inside their thresholds (a velocity burst of
 * at least 8 within 60 s, card testing of at least 7 charges of at most 2.00
 * USD-equivalent within 4 minutes at several merchants, a spike far above
 * 30× the median, a jump of
 * at least 1 000 km far faster than 1 000 km/h); background amounts with the
 * narrow spread (σ 0.5, no tail) the spike rule's baseline assumes.
 *
 * Tests that hold the rules to recall ≥ 0.99 and precision ≥ 0.95 use it:
 * they test the rules on the traffic they were built for. Realistic traffic,
 * the generator's default (docs/detection.md), is what issue 13's evaluation
 * measures them on.
 *
 * @module
 */
import {
  type FraudPattern,
  GENERATOR_DEFAULTS,
  type GeneratorOptions,
  meanUserGapMs,
} from "../../jobs/lib/generator.ts";
import { type DetectConfig, parseDetectConfig } from "../../jobs/lib/rules.ts";

/**
 * The patterns the envelope injects (account_takeover has a rule, but no
 * recall target: it is reported, not asserted).
 */
export const RULE_PATTERNS: readonly FraudPattern[] = [
  "velocity_burst",
  "amount_spike",
  "impossible_travel",
  "card_testing",
];

/** Generator options inside the default rules' envelope (see the module comment). */
export const RULE_ENVELOPE: Readonly<GeneratorOptions> = Object.freeze({
  hardNegativeRate: 0,
  fraudPatterns: RULE_PATTERNS,
  fraudRanges: {
    velocityBurst: { transactions: { min: 11, max: 15 }, spanMs: { min: 20_000, max: 45_000 } },
    cardTesting: {
      transactions: { min: 7, max: 12 },
      amountUsd: { min: 0.5, max: 2 },
      spanMs: { min: 20_000, max: 60_000 },
      singleMerchantShare: 0,
    },
    amountSpike: { multiple: { min: 50, max: 80 }, minHistory: 16 },
    impossibleTravel: { minDistanceKm: 3_000, speedKmh: { min: 90_000, max: 1_000_000 } },
  },
  spending: { sigma: 0.5, tailShare: 0 },
});

/**
 * The envelope's traffic is compressed in event time (the generator's
 * default: 20 000 users at 200 records/s): a user pays every 100 s, not about
 * every 12 hours as the default prior pace assumes. The rules are given that
 * pace (`priorGapMs`), as `deno task start` gives it to detect for its producer.
 */
export const ENVELOPE_PRIOR_GAP_MS = meanUserGapMs(
  GENERATOR_DEFAULTS.eventsPerSecond,
  GENERATOR_DEFAULTS.users,
);

/** The detect thresholds for envelope traffic: the defaults with its pace. */
export const ENVELOPE_DETECT_CONFIG: DetectConfig = parseDetectConfig({
  priorGapMs: ENVELOPE_PRIOR_GAP_MS,
});

/**
 * The same as a `--config` file: tests/helpers/jobs.ts's startInstance gives
 * it to every detect instance it starts (unless the test passes its own).
 */
export const ENVELOPE_CONFIG_FILE = new URL("./detect_envelope.json", import.meta.url).pathname;
