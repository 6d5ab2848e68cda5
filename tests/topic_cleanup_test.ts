/**
 * The suite deletes a test file's topics once that file ends
 * (tests/helpers/topic_cleanup.ts), so the cluster does not pile up
 * partitions through the suite.
 *
 * @module
 */
import assert from "node:assert/strict";
import { ensureCluster, withAdmin } from "./helpers/cluster.ts";

const decoder = new TextDecoder();

Deno.test("topic cleanup: a test file's fresh topics are deleted after the file ends", async () => {
  await ensureCluster();
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["test", "-A", "tests/fixtures/one_topic.ts"],
    cwd: new URL("../", import.meta.url).pathname,
    env: { TXPIPE_TEST_CLUSTER: "up", NO_COLOR: "1" },
    stdin: "null",
  }).output();
  const text = decoder.decode(out.stdout);
  assert.equal(out.code, 0, text + decoder.decode(out.stderr));
  const topic = /TOPIC=(\S+)/.exec(text)?.[1];
  assert.ok(topic, `the fixture printed no topic:\n${text}`);
  // The deletion runs on after the fixture's process has ended.
  const deadline = Date.now() + 30_000;
  let topics = await withAdmin((admin) => admin.listTopics());
  while (topics.includes(topic) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
    topics = await withAdmin((admin) => admin.listTopics());
  }
  assert.ok(!topics.includes(topic), `${topic} still exists 30 s after its file ended`);
});
