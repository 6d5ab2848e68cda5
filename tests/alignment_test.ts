/**
 * Event-time alignment's decisions (jobs/lib/alignment.ts), without Kafka;
 * aggregate_test.ts runs it on the real cluster.
 *
 * @module
 */
import assert from "node:assert/strict";
import { EventTimeAlignment } from "../jobs/lib/alignment.ts";

const MIN = 60_000;

Deno.test("alignment: a partition more than the drift ahead of the slowest pauses, and resumes once it is within", () => {
  const a = new EventTimeAlignment(5 * MIN);
  assert.deepEqual(a.update(0, 0, false), { pause: [], resume: [] });
  assert.deepEqual(a.update(1, 5 * MIN, false), { pause: [], resume: [] }); // exactly the drift
  assert.deepEqual(a.update(2, 5 * MIN + 1, false), { pause: [2], resume: [] });
  assert.deepEqual(a.update(1, 9 * MIN, false), { pause: [1], resume: [] });
  assert.deepEqual([...a.paused].sort(), [1, 2]);
  // The slowest moves on: partition 2 is within the drift again, 1 not yet.
  assert.deepEqual(a.update(0, 1 * MIN, false), { pause: [], resume: [2] });
  assert.deepEqual(a.update(0, 4 * MIN, false), { pause: [], resume: [1] });
  assert.deepEqual([...a.paused], []);
});

Deno.test("alignment: a partition that has read all there is, or none yet, holds nobody back; the slowest never pauses", () => {
  const a = new EventTimeAlignment(MIN);
  a.update(0, 0, false);
  assert.deepEqual(a.update(1, 10 * MIN, false), { pause: [1], resume: [] });
  // Partition 0 reached the end of what is committed: 1 goes on.
  assert.deepEqual(a.update(0, 30_000, true), { pause: [], resume: [1] });
  // Not fetched yet (no event time): not the slowest either.
  assert.deepEqual(a.update(3, undefined, false), { pause: [], resume: [] });
  // New records on 0: it is the slowest again, and 1 waits again.
  assert.deepEqual(a.update(0, 40_000, false), { pause: [1], resume: [] });
  assert.ok(!a.paused.has(0));
});

Deno.test("alignment: a partition that leaves is resumed and no longer counts; reset resumes every paused one", () => {
  const a = new EventTimeAlignment(MIN);
  a.update(0, 0, false);
  a.update(1, 10 * MIN, false);
  a.update(2, 20 * MIN, false);
  assert.deepEqual([...a.paused].sort(), [1, 2]);
  // The slowest goes elsewhere: 1 is the slowest now, 2 still waits.
  assert.deepEqual(a.remove(0), { pause: [], resume: [1] });
  // A paused partition that goes is resumed, so a later owner here fetches it.
  assert.deepEqual(a.remove(2), { pause: [], resume: [2] });
  a.update(4, 30 * MIN, false);
  assert.deepEqual(a.reset(), [4]);
  assert.deepEqual([...a.paused], []);
});
