/**
 * `deno task test`: brings up the shared 3+3 KRaft cluster once (unless it
 * is already running), runs the whole suite against it with `deno test`, and
 * stops the cluster again if this run started it.
 *
 * Like `deno task start` it holds TXPIPE_HOME's start.lock for its whole run
 * and cluster.lock while it brings the cluster up or down
 * (stacks/local/lock.ts); the tests' own in-process `clusterUp` calls take no
 * lock, so they cannot wait on this one.
 *
 * @module
 */
import { clusterDown, clusterUp, homeDir, runningPid } from "../stacks/local/cluster.ts";
import { acquireLock, describeHolder, type HeldLock, LockedError } from "../stacks/local/lock.ts";
import { topology } from "../stacks/topology.ts";
import { deleteTopicsWhere, isTestTopic } from "./helpers/cluster.ts";

const COMMAND = "deno task test";

async function lock(name: "start" | "cluster", waitMs = 0): Promise<HeldLock> {
  try {
    return await acquireLock(name, {
      home: homeDir(),
      command: COMMAND,
      waitMs,
      onWait: (holder) => console.log(`    waiting for ${describeHolder(holder)} to finish`),
    });
  } catch (err) {
    if (!(err instanceof LockedError)) throw err;
    console.error(`${COMMAND}: ${err.message}`);
    Deno.exit(1);
  }
}

const runLock = await lock("start");
let clusterLock = await lock("cluster");
const topo = topology("cluster");
const running = await Promise.all(topo.nodes.map((n) => runningPid("cluster", n)));
const startedHere = running.every((pid) => pid === undefined);

const t0 = performance.now();
console.log("==> shared test cluster (3 controllers + 3 brokers)");
await clusterUp({ mode: "cluster" });
await clusterLock.release();
console.log(`    ready in ${((performance.now() - t0) / 1000).toFixed(1)}s\n`);

const test = new Deno.Command(Deno.execPath(), {
  args: ["test", "-A", ...Deno.args, "tests/"],
  stdin: "null",
  env: { TXPIPE_TEST_CLUSTER: "up" },
}).spawn();
const { code } = await test.status;

// The suite's topics are all named test_…/test-…: remove them.
try {
  await deleteTopicsWhere(isTestTopic);
} catch (err) {
  console.error(`could not delete the test topics: ${(err as Error).message}`);
}

if (startedHere) {
  console.log("\n==> stopping the test cluster (this run started it)");
  clusterLock = await lock("cluster", 300_000);
  await clusterDown({ mode: "cluster" });
  await clusterLock.release();
}
await runLock.release();
console.log(`test suite took ${((performance.now() - t0) / 1000).toFixed(0)}s`);
Deno.exit(code);
