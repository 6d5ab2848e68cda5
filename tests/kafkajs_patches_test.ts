/**
 * txpipe's patches to kafkajs (jobs/lib/kafkajs_patches.ts) are one explicit
 * call: importing them changes nothing, patchKafkajs() installs every one,
 * a second call changes nothing more, and createKafka calls it. Each runs
 * in a fresh Deno process, so no other test's patching shows.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url).pathname;

/** Runs `code` as a module in a fresh process from the project root; its stdout parsed as JSON. */
async function fresh(code: string): Promise<Record<string, unknown>> {
  const file = await Deno.makeTempFile({ dir: `${ROOT}tests`, prefix: ".patches_", suffix: ".ts" });
  try {
    await Deno.writeTextFile(file, code);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", file],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    return JSON.parse(new TextDecoder().decode(out.stdout));
  } finally {
    await Deno.remove(file);
  }
}

/** Reads the functions the patches replace, as identities. */
const PROBE = `
import Broker from "kafkajs/src/broker/index.js";
import Cluster from "kafkajs/src/cluster/index.js";
import fetchV11 from "kafkajs/src/protocol/requests/fetch/v11/response.js";
import RequestQueue from "kafkajs/src/network/requestQueue/index.js";
const p = Broker.prototype;
const ids = new Map();
const id = (f) => { if (!ids.has(f)) ids.set(f, ids.size); return ids.get(f); };
const probe = () => ({
  produce: id(p.produce),
  addPartitionsToTxn: id(p.addPartitionsToTxn),
  addOffsetsToTxn: id(p.addOffsetsToTxn),
  endTxn: id(p.endTxn),
  txnOffsetCommit: id(p.txnOffsetCommit),
  findGroupCoordinator: id(Cluster.prototype.findGroupCoordinator),
  fetchDecode: id(fetchV11.decode),
  createSocketRequest: id(RequestQueue.prototype.createSocketRequest),
});
`;

Deno.test("kafkajs patches: importing changes nothing; patchKafkajs() replaces every patched function once; a second call changes nothing", async () => {
  const r = await fresh(`${PROBE}
const before = probe();
const { patchKafkajs } = await import("${ROOT}jobs/lib/kafkajs_patches.ts");
const imported = probe();
const report = patchKafkajs();
const patched = probe();
patchKafkajs();
const again = probe();
console.log(JSON.stringify({ before, imported, patched, again, report }));
`);
  assert.deepEqual(r.imported, r.before, "an import alone patches nothing");
  const before = r.before as Record<string, number>;
  const patched = r.patched as Record<string, number>;
  for (const name of Object.keys(before)) {
    assert.notEqual(patched[name], before[name], `${name} is replaced`);
  }
  assert.deepEqual(r.again, r.patched, "idempotent");
  assert.deepEqual(r.report, {
    fetchDecoding: true,
    readCommitted: true,
    concurrentTransactions: true,
    coordinators: true,
    recordBatch: true,
    produceTimeout: true,
    handshakeTimeout: true,
    linearGrouping: true,
  });
});

Deno.test("kafkajs patches: createKafka installs them (every txpipe client has them)", async () => {
  const r = await fresh(`${PROBE}
const { createKafka } = await import("${ROOT}jobs/lib/kafka.ts");
const before = probe();
createKafka({ clientId: "t", brokers: ["127.0.0.1:1"] });
const after = probe();
const { patchKafkajs } = await import("${ROOT}jobs/lib/kafkajs_patches.ts");
patchKafkajs();
console.log(JSON.stringify({ before, after, again: probe() }));
`);
  assert.notDeepEqual(r.after, r.before);
  assert.deepEqual(r.again, r.after, "createKafka installed all of them");
});

Deno.test("kafkajs patches: every job loads the linear grouping before kafkajs", async () => {
  for (const job of ["produce", "aggregate", "detect", "consume", "evaluate", "start", "rules"]) {
    const r = await fresh(`
await import("${ROOT}jobs/${job}.ts");
const { groupingPatched } = await import("${ROOT}jobs/lib/group_by_partition.ts");
console.log(JSON.stringify({ groupingPatched }));
`);
    assert.equal(r.groupingPatched, true, job);
  }
});
