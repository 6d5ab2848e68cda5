/**
 * `deno task test`: brings up the shared 3+3 KRaft cluster once (unless it
 * is already running), runs the whole suite against it with `deno test`, and
 * stops the cluster again if this run started it.
 *
 * @module
 */
import { clusterDown, clusterUp, runningPid } from "../stacks/local/cluster.ts";
import { topology } from "../stacks/topology.ts";

const topo = topology("cluster");
const running = await Promise.all(topo.nodes.map((n) => runningPid("cluster", n)));
const startedHere = running.every((pid) => pid === undefined);

const t0 = performance.now();
console.log("==> shared test cluster (3 controllers + 3 brokers)");
await clusterUp({ mode: "cluster" });
console.log(`    ready in ${((performance.now() - t0) / 1000).toFixed(1)}s\n`);

const test = new Deno.Command(Deno.execPath(), {
  args: ["test", "-A", ...Deno.args, "tests/"],
  stdin: "null",
  env: { TXPIPE_TEST_CLUSTER: "up" },
}).spawn();
const { code } = await test.status;

if (startedHere) {
  console.log("\n==> stopping the test cluster (this run started it)");
  await clusterDown({ mode: "cluster" });
}
console.log(`test suite took ${((performance.now() - t0) / 1000).toFixed(0)}s`);
Deno.exit(code);
