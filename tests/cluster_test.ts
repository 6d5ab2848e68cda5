/** The local cluster runner's commands and errors, against the running cluster. */
import assert from "node:assert/strict";
import { ensureCluster, runScript, withAdmin } from "./helpers/cluster.ts";
import { join } from "node:path";
import { topology } from "../stacks/topology.ts";
import {
  LEADER_IMBALANCE_CHECK_SECONDS,
  leadersSettled,
  nodeDir,
} from "../stacks/local/cluster.ts";
import { acquireLock } from "../stacks/local/lock.ts";

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

Deno.test(
  "cluster: every leader, coordinators' included, is back on its preferred replica within seconds",
  kafkaTest,
  async () => {
    await ensureCluster();
    // clusterUp waits for it after a restart; a test that restarted a broker
    // or moved the coordinators since gets it back within the controllers'
    // period of LEADER_IMBALANCE_CHECK_SECONDS (Kafka's default is 300 s: a
    // move of every coordinator in the middle of whatever runs then).
    const topo = topology("cluster");
    const misled = await withAdmin((admin) =>
      leadersSettled(admin, topo, {
        timeoutMs: Math.max(10, 3 * LEADER_IMBALANCE_CHECK_SECONDS) * 1000,
      })
    );
    assert.deepEqual(misled, [], "partitions led by another broker than their preferred replica");
    const controller = await Deno.readTextFile(
      join(nodeDir("cluster", topo.nodes[0]), "server.properties"),
    );
    assert.match(
      controller,
      new RegExp(
        `^leader\\.imbalance\\.check\\.interval\\.seconds=${LEADER_IMBALANCE_CHECK_SECONDS}$`,
        "m",
      ),
    );
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
  "cluster: every node writes Kafka's own log (its start-up line, unless rolled away; no NOP logger)",
  kafkaTest,
  async () => {
    await ensureCluster();
    for (const node of topology("cluster").nodes) {
      const logs = join(nodeDir("cluster", node), "logs");
      const server = await Deno.readTextFile(join(logs, "server.log"));
      const role = node.role === "controller" ? "controller" : "broker";
      assert.match(server, new RegExp(`INFO .*${role}`, "i"), `${node.name}: ${role} lines`);
      // The start-up line is in server.log or a rolled file (50 MB each, 3
      // kept: a cluster up for hours has rolled it away, then all 3 exist).
      const rolled = [1, 2, 3].map((i) => join(logs, `server.log.${i}`));
      const texts = [
        server,
        ...await Promise.all(rolled.map((f) => Deno.readTextFile(f).catch(() => ""))),
      ];
      const started = new RegExp(`\\[KafkaRaftServer nodeId=${node.id}\\] Kafka Server started`);
      assert.ok(
        texts.some((t) => started.test(t)) || texts.every((t) => t.length > 0),
        `${node.name}: the start-up line in server.log or a rolled file`,
      );
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
    /expected a command \(up, down, status, logs, stop, reset, jars, acls, grant\), got "explode"/,
  );
  const mode = await runScript("stacks/local/cluster.ts", ["up", "--mode", "triple"]);
  assert.equal(mode.code, 2);
  assert.match(mode.stderr, /--mode: expected one of cluster, single, got "triple"/);
});

Deno.test("cluster: up, stop, down and reset exit 1 naming the command changing the cluster; status answers", async () => {
  const home = await Deno.makeTempDir({ prefix: "txpipe-cluster-lock-" });
  const held = await acquireLock("cluster", { home, command: "deno task cluster up" });
  try {
    const env = { TXPIPE_HOME: home };
    for (const args of [["up"], ["stop", "kafka-broker-2"], ["down"], ["reset"]]) {
      const run = await runScript("stacks/local/cluster.ts", args, { env });
      assert.equal(run.code, 1, `${args}: ${run.stderr}`);
      assert.match(
        run.stderr,
        new RegExp(
          `^deno task cluster: deno task cluster up \\(pid ${Deno.pid}, since [\\d:]+, ` +
            `running for [\\d:]+\\) is changing the cluster of ${home}; wait until it has ` +
            "finished, then run again.\n$",
        ),
        `${args}`,
      );
    }
    const status = await runScript("stacks/local/cluster.ts", ["status"], { env });
    assert.equal(status.code, 0, "status only reads: it takes no lock");
    assert.match(status.stdout, /kafka-broker-1 .* stopped/);
    assert.deepEqual(
      [...Deno.readDirSync(home)].map((e) => e.name).sort(),
      ["cluster.lock", "start.lock"],
      "only the locks: nothing was started",
    );
  } finally {
    await held.release();
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test(
  "cluster: down and reset refuse while a start runs on the cluster; up is still allowed",
  kafkaTest,
  async () => {
    await ensureCluster();
    const home = await Deno.makeTempDir({ prefix: "txpipe-cluster-lock-" });
    const held = await acquireLock("start", { home, command: "deno task start" });
    try {
      for (const cmd of ["down", "reset"]) {
        const run = await runScript("stacks/local/cluster.ts", [cmd], {
          env: { TXPIPE_HOME: home },
        });
        assert.equal(run.code, 1, run.stderr);
        assert.match(
          run.stderr,
          new RegExp(
            `^deno task cluster: deno task start \\(pid ${Deno.pid}, [^)]+\\) is already running on ${home}; ` +
              ".*Stop that one first \\(Ctrl-C in its terminal\\), then run again\\.\n$",
          ),
        );
      }
      // up takes only cluster.lock: here it gets as far as its port check (the shared
      // cluster holds the ports), which proves the running start did not stop it.
      const up = await runScript("stacks/local/cluster.ts", ["up"], { env: { TXPIPE_HOME: home } });
      assert.equal(up.code, 1, up.stderr);
      assert.match(up.stderr, /ports of the nodes to start are taken/);
      assert.deepEqual(
        [...Deno.readDirSync(home)].map((e) => e.name).sort(),
        ["cluster.lock", "start.lock"],
        "reset deleted nothing; up started nothing",
      );
    } finally {
      await held.release();
      await Deno.remove(home, { recursive: true });
    }
  },
);
