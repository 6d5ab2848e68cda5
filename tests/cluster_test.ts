/** The local cluster runner's commands and errors, against the running cluster. */
import assert from "node:assert/strict";
import { ensureCluster, runScript, withAdmin } from "./helpers/cluster.ts";
import { join } from "node:path";
import { topology } from "../stacks/topology.ts";
import { nodeDir } from "../stacks/local/cluster.ts";

const kafkaTest = { sanitizeOps: false, sanitizeResources: false };

Deno.test(
  "cluster: every partition of every spec topic has a leader and a full ISR after up",
  kafkaTest,
  async () => {
    await ensureCluster();
    const topo = topology("cluster");
    const meta = await withAdmin((admin) =>
      admin.fetchTopicMetadata({ topics: topo.topics.map((t) => t.name) })
    );
    for (const spec of topo.topics) {
      const t = meta.topics.find((m) => m.name === spec.name);
      assert.ok(t, `${spec.name} exists`);
      assert.equal(t.partitions.length, spec.partitions, spec.name);
      for (const p of t.partitions) {
        assert.ok(p.leader >= 4 && p.leader <= 6, `${spec.name}/${p.partitionId} led by a broker`);
        assert.equal(p.isr.length, 3, `${spec.name}/${p.partitionId} full ISR`);
      }
    }
    const configs = await withAdmin((admin) =>
      admin.describeConfigs({
        includeSynonyms: false,
        resources: topo.topics.map((t) => ({ type: 2, name: t.name })),
      })
    );
    for (const r of configs.resources) {
      const get = (n: string) => r.configEntries.find((e) => e.configName === n)?.configValue;
      assert.equal(get("min.insync.replicas"), "2", r.resourceName);
      assert.equal(get("retention.ms"), String(7 * 24 * 3600 * 1000), r.resourceName);
    }
  },
);

Deno.test("cluster: status lists six running nodes and healthy topics", kafkaTest, async () => {
  await ensureCluster();
  const run = await runScript("stacks/local/cluster.ts", ["status"]);
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stdout.match(/running \(pid \d+\)/g)?.length, 6);
  assert.match(run.stdout, /financial_transactions\s+partitions=5 rf=3 full-isr=5\/5/);
});

Deno.test(
  "cluster: every node writes Kafka's own log (server.log has the start-up lines, no NOP logger)",
  kafkaTest,
  async () => {
    await ensureCluster();
    for (const node of topology("cluster").nodes) {
      const logs = join(nodeDir("cluster", node), "logs");
      const server = await Deno.readTextFile(join(logs, "server.log"));
      const role = node.role === "controller" ? "controller" : "broker";
      assert.match(
        server,
        new RegExp(`\\[KafkaRaftServer nodeId=${node.id}\\] Kafka Server started`),
      );
      assert.match(server, new RegExp(`INFO .*${role}`, "i"), `${node.name}: ${role} lines`);
      const stdout = await Deno.readTextFile(join(logs, "stdout.log"));
      assert.doesNotMatch(stdout, /SLF4J: Defaulting to no-operation/, node.name);
      const tail = await runScript("stacks/local/cluster.ts", ["logs", node.name, "--lines", "5"]);
      assert.equal(tail.code, 0, tail.stderr);
      assert.match(tail.stdout, /server\.log \(last 5 lines\)\n(\[[^\n]+\n?){5}/, node.name);
    }
  },
);

Deno.test("cluster: a taken port is named with its node, and up exits 1", kafkaTest, async () => {
  await ensureCluster();
  // The single-node mode wants 9092, which the running cluster's first broker holds.
  const run = await runScript("stacks/local/cluster.ts", ["up", "--mode", "single"]);
  assert.equal(run.code, 1);
  assert.match(run.stderr, /port 9092 \(client port of kafka-single\) is already in use/);
  assert.doesNotMatch(run.stderr, /\n\s+at /, "no stack trace");
});

Deno.test("cluster: an unknown command or flag value exits 2 naming it", async () => {
  const cmd = await runScript("stacks/local/cluster.ts", ["explode"]);
  assert.equal(cmd.code, 2);
  assert.match(
    cmd.stderr,
    /expected a command \(up, down, status, logs, stop, reset, jars\), got "explode"/,
  );
  const mode = await runScript("stacks/local/cluster.ts", ["up", "--mode", "triple"]);
  assert.equal(mode.code, 2);
  assert.match(mode.stderr, /--mode: expected one of cluster, single, got "triple"/);
});
