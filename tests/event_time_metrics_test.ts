/**
 * Event time ahead of the clock is counted, never hidden: the latency
 * histogram observes only outputs at or behind the clock, the others go to
 * txpipe_event_time_ahead_records_total and txpipe_event_time_lead_seconds
 * (jobs/lib/metrics.ts). That every stream processor exports both from its
 * start (at 0) is proved by tests/observability_test.ts, whose dashboard panel
 * and alert read them from a real Prometheus.
 */
import assert from "node:assert/strict";
import { observeEventTimes, registry } from "../jobs/lib/metrics.ts";

/** The value of one sample line of the registry's text, or undefined. */
async function sample(name: string, labels: string): Promise<number | undefined> {
  const text = await registry.metrics();
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1));
}

Deno.test("metrics: outputs ahead of the clock are counted apart with their lead, never observed as 0 latency", async () => {
  const now = 1_750_000_000_000;
  const p = 'processor="test-ahead"';
  observeEventTimes("test-ahead", [now - 1_600, now - 200, now, now + 26_000, now + 694_000], now);
  // Three at or behind the clock in the histogram: 0 s, 0.2 s and 1.6 s.
  assert.equal(await sample("txpipe_event_to_output_latency_seconds_count", p), 3);
  assert.equal(await sample("txpipe_event_to_output_latency_seconds_sum", p), 1.8);
  assert.equal(
    await sample("txpipe_event_to_output_latency_seconds_bucket", `le="0.05",${p}`),
    1,
    "only the output at the clock is within 0.05 s",
  );
  // Two ahead: counted, the larger lead is the gauge.
  assert.equal(await sample("txpipe_event_time_ahead_records_total", p), 2);
  assert.equal(await sample("txpipe_event_time_lead_seconds", p), 694);

  // A later batch entirely behind the clock: the lead is back to 0, the count stays.
  observeEventTimes("test-ahead", [now + 10_000], now + 12_500);
  assert.equal(await sample("txpipe_event_time_lead_seconds", p), 0);
  assert.equal(await sample("txpipe_event_time_ahead_records_total", p), 2);
  assert.equal(await sample("txpipe_event_to_output_latency_seconds_count", p), 4);

  // A batch without event-time outputs changes nothing.
  observeEventTimes("test-ahead", [], now);
  assert.equal(await sample("txpipe_event_to_output_latency_seconds_count", p), 4);
});
