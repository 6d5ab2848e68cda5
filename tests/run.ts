/**
 * `deno task test`: brings up the shared 3+3 KRaft cluster once (unless it
 * is already running), runs the whole suite against it with `deno test`, and
 * stops the cluster again if this run started it.
 *
 * The test files that need no Kafka (none of them imports the cluster
 * helpers) run at the same time in a second `deno test`, whose output is
 * printed after the cluster's; each prints its own `ok | N passed` line.
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
import { bootstrapServers, topology } from "../stacks/topology.ts";
import { createKafka } from "../jobs/lib/kafka.ts";

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

// The files that need no Kafka run in a second `deno test` beside the cluster's, from the start:
// most of the cluster tests' time is spent waiting (outages, restarts, jobs catching up).
const NEEDS_CLUSTER =
  /helpers\/cluster\.ts|helpers\/jobs\.ts|stacks\/local\/cluster\.ts|ensureCluster|clusterUp|freshTopic|bench\/(bench|kafka_streams|spark|latency)\.ts/;
const files = [...Deno.readDirSync("tests")]
  .filter((e) => e.isFile && e.name.endsWith("_test.ts"))
  .map((e) => `tests/${e.name}`)
  .sort();
const pureFiles = files.filter((f) => !NEEDS_CLUSTER.test(Deno.readTextFileSync(f)));
const clusterFiles = files.filter((f) => !pureFiles.includes(f));
const pure = new Deno.Command(Deno.execPath(), {
  args: ["test", "-A", ...Deno.args, ...pureFiles],
  stdin: "null",
  stdout: "piped",
  stderr: "piped",
}).output();
console.log(
  `==> ${pureFiles.length} test files that need no Kafka, in the background (their output at the end)`,
);
console.log("==> shared test cluster (3 controllers + 3 brokers)");
await clusterUp({ mode: "cluster" });
await clusterLock.release();
console.log(`    ready in ${((performance.now() - t0) / 1000).toFixed(1)}s\n`);

console.log(`==> the ${clusterFiles.length} test files that use the cluster`);
const test = new Deno.Command(Deno.execPath(), {
  args: ["test", "-A", ...Deno.args, ...clusterFiles],
  stdin: "null",
  env: { TXPIPE_TEST_CLUSTER: "up" },
}).spawn();
const clusterCode = (await test.status).code;
const pureRun = await pure;
console.log(`\n==> the ${pureFiles.length} test files that need no Kafka`);
await Deno.stdout.write(pureRun.stdout);
await Deno.stderr.write(pureRun.stderr);
const code = clusterCode !== 0 ? clusterCode : pureRun.code;

// The suite's topics are all named test_…/test-…: remove them.
try {
  const admin = createKafka({
    principal: "admin",
    clientId: "txpipe-test-cleanup",
    brokers: bootstrapServers(topo),
  })
    .admin();
  await admin.connect();
  const topics = (await admin.listTopics()).filter((t) => /^test[_-]/.test(t));
  if (topics.length > 0) await admin.deleteTopics({ topics });
  await admin.disconnect();
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
