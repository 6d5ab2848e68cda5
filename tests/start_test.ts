/**
 * `deno task start` refuses before touching anything: while another start
 * holds TXPIPE_HOME's lock, and when a port it needs is taken. Every run here
 * uses a temporary TXPIPE_HOME and exits before Kafka: the cluster ports are
 * fixed, and the shared test cluster holds them.
 */
import assert from "node:assert/strict";
import { acquireLock } from "../stacks/local/lock.ts";
import { runningPid } from "../stacks/local/cluster.ts";
import { findPrometheus } from "../jobs/lib/prometheus_local.ts";
import { topology } from "../stacks/topology.ts";
import { ensureCluster, type RunResult, runScript } from "./helpers/cluster.ts";

const kafkaTest = { sanitizeOps: false, sanitizeResources: false };

/** Runs start with a fresh TXPIPE_HOME; returns its result and what it left in that home. */
async function startIn(args: string[], before?: (home: string) => Promise<() => Promise<void>>) {
  const home = await Deno.makeTempDir({ prefix: "txpipe-start-" });
  const after = before ? await before(home) : async () => {};
  try {
    const sharedBefore = await sharedClusterPids();
    const run: RunResult = await runScript("jobs/start.ts", args, { env: { TXPIPE_HOME: home } });
    const left = [...Deno.readDirSync(home)].map((e) => e.name).sort();
    assert.deepEqual(await sharedClusterPids(), sharedBefore, "the shared cluster is untouched");
    return { run, home, left };
  } finally {
    await after();
    await Deno.remove(home, { recursive: true });
  }
}

/** The pids of the shared cluster's nodes (default TXPIPE_HOME). */
function sharedClusterPids(): Promise<Array<number | undefined>> {
  return Promise.all(topology("cluster").nodes.map((n) => runningPid("cluster", n)));
}

/** A port this test process listens on, until `close`. */
function occupy(): { port: number; close: () => void } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  return { port: (listener.addr as Deno.NetAddr).port, close: () => listener.close() };
}

Deno.test("start: a second start exits 1 naming the running one (pid, since) and starts nothing", async () => {
  const { run, home, left } = await startIn([], async (home) => {
    const held = await acquireLock("start", { home, command: "deno task start" });
    return () => held.release();
  });
  assert.equal(run.code, 1, run.stderr);
  assert.match(
    run.stderr,
    new RegExp(
      `^deno task start: deno task start \\(pid ${Deno.pid}, since \\d\\d:\\d\\d:\\d\\d, ` +
        `running for \\d\\d:\\d\\d\\) is already running on ${home}; only one \`deno task start\` or ` +
        "`deno task test` runs per TXPIPE_HOME",
    ),
  );
  assert.doesNotMatch(run.stderr, /\n\s+at /, "no stack trace");
  assert.equal(run.stdout, "", "it said nothing else: no `==> Kafka`");
  assert.deepEqual(left, ["start.lock"], "no kafka/, logs/ or prometheus/ folder");
});

Deno.test(
  "start: a taken --metrics-base port exits 2 before touching the cluster, naming port and flag",
  kafkaTest,
  async () => {
    const taken = occupy();
    try {
      const { run, left } = await startIn(["--metrics-base", String(taken.port)]);
      assert.equal(run.code, 2, run.stderr);
      assert.match(run.stderr, /^deno task start: ports it needs are taken; nothing was started\./);
      assert.match(
        run.stderr,
        new RegExp(
          `\n  port ${taken.port} \\(produce's /metrics\\) is already in use by pid ${Deno.pid} ` +
            "\\(deno [^\n]*\\)\n",
        ),
      );
      assert.match(
        run.stderr,
        /\n {2}→ move the jobs' four \/metrics ports with --metrics-base PORT or TXPIPE_METRICS_BASE/,
      );
      assert.doesNotMatch(run.stderr, /\n\s+at |Uncaught/, "no stack trace");
      assert.equal(run.stdout, "");
      assert.deepEqual(left, ["start.lock"]);
    } finally {
      taken.close();
    }
  },
);

Deno.test(
  "start: a taken --prometheus-port exits 2 naming it and --prometheus-port",
  { ...kafkaTest, ignore: findPrometheus() === undefined },
  async () => {
    const taken = occupy();
    try {
      const { run, left } = await startIn(["--prometheus-port", String(taken.port)]);
      assert.equal(run.code, 2, run.stderr);
      assert.match(
        run.stderr,
        new RegExp(
          `\n  port ${taken.port} \\(Prometheus\\) is already in use by pid ${Deno.pid} [^\n]*\n` +
            "  → move it with --prometheus-port PORT or TXPIPE_PROMETHEUS_PORT",
        ),
      );
      assert.deepEqual(left, ["start.lock"]);
    } finally {
      taken.close();
    }
  },
);

Deno.test(
  "start: Kafka's ports held by another cluster exit 1 naming each with its java holder",
  kafkaTest,
  async () => {
    await ensureCluster();
    // The shared cluster (default TXPIPE_HOME) holds every node port; this home runs none.
    const { run, left } = await startIn([]);
    assert.equal(run.code, 1, run.stderr);
    for (const node of topology("cluster").nodes) {
      const port = node.clientPort ?? node.controllerPort;
      assert.match(
        run.stderr,
        new RegExp(
          `port ${port} \\(\\w+ port of ${node.name}\\) is already in use by pid \\d+ \\(java `,
        ),
      );
    }
    assert.match(run.stderr, /→ Kafka's ports are fixed by the topology spec/);
    assert.deepEqual(left, ["start.lock"]);
  },
);
