/**
 * TLS on the real cluster (docs/security.md): the brokers' CLIENT_TLS
 * listener (SASL_SSL, 127.0.0.1:9095–9097) takes the producer, a stream job,
 * the topic reader and Kafka's Java tools, configured only by the TXPIPE_*
 * variables, their certificates checked against the local CA; a client that
 * does not trust that CA is refused.
 *
 * The listener exists on brokers started by this version of the runner: a
 * cluster started before it has to be restarted (`deno task cluster down`,
 * then `up`) first, which the first test says.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { homeDir } from "../jobs/lib/credentials.ts";
import { javaClientProperties, kafkaAuth } from "../jobs/lib/credentials.ts";
import { caPemFile } from "../stacks/local/tls.ts";
import { tlsBootstrapServers, TOPICS } from "../stacks/topology.ts";
import { ensureCluster, freshTopic, readTopic, runScript, TOPO } from "./helpers/cluster.ts";
import { propertiesText } from "./helpers/client_config.ts";
import { runTopics, startInstance, stopCleanly, waitCaughtUp } from "./helpers/jobs.ts";

const kafkaTest = { sanitizeOps: false, sanitizeResources: false };

/** The brokers' TLS listeners. */
const TLS_BROKERS = tlsBootstrapServers(TOPO);

/** What a process is given to connect over SASL_SSL with the local CA (its credentials: its own). */
function tlsEnv(): Record<string, string> {
  return { TXPIPE_KAFKA_SECURITY_PROTOCOL: "SASL_SSL", TXPIPE_KAFKA_CA_FILE: caPemFile() };
}

/** Fails with what to do when the running brokers have no TLS listener yet. */
async function assertTlsListening(): Promise<void> {
  for (const address of TLS_BROKERS) {
    const [hostname, port] = address.split(":");
    try {
      (await Deno.connect({ hostname, port: Number(port) })).close();
    } catch {
      assert.fail(
        `nothing listens on ${address}: the brokers were started before they had a TLS ` +
          "listener. Restart the cluster (`deno task cluster down`, then `up`).",
      );
    }
  }
}

Deno.test({
  name:
    "tls: the producer and a stream job (detect) run over SASL_SSL on the brokers' TLS listener, verified against the local CA",
  ...kafkaTest,
  fn: async () => {
    await ensureCluster();
    await assertTlsListening();
    const input = await freshTopic(TOPICS.transactions, "tls_in");
    const produced = await runScript(
      "jobs/produce.ts",
      [
        "--brokers",
        TLS_BROKERS.join(","),
        "--topic",
        input,
        "--count",
        "5000",
        "--seed",
        "tls-1",
        "--metrics-port",
        "0",
      ],
      { env: tlsEnv() },
    );
    assert.equal(produced.code, 0, produced.stderr);
    assert.match(produced.stderr, /produced 5,000 records/);
    assert.equal((await readTopic(input, { expected: 5000 })).length, 5000);

    const topics = runTopics(input, "tls");
    const instance = startInstance("detect", topics, [], { brokers: TLS_BROKERS, env: tlsEnv() });
    try {
      await waitCaughtUp("detect", topics, 120_000);
    } finally {
      await stopCleanly(instance, "detect over SASL_SSL");
    }
    const log = await Deno.readTextFile(instance.logFile);
    assert.doesNotMatch(log, /"log\.level":"(error|fatal)"/, `errors in ${instance.logFile}`);
  },
});

Deno.test({
  name:
    "tls: deno task consume reads over SASL_SSL, set by flags; a client that does not trust the local CA is refused in one sentence; a bad protocol flag exits 2",
  ...kafkaTest,
  fn: async () => {
    await ensureCluster();
    await assertTlsListening();
    const topic = await freshTopic(TOPICS.transactions, "tls_consume");
    const produced = await runScript(
      "jobs/produce.ts",
      [
        "--brokers",
        TLS_BROKERS.join(","),
        "--topic",
        topic,
        "--count",
        "20",
        "--metrics-port",
        "0",
      ],
      { env: tlsEnv() },
    );
    assert.equal(produced.code, 0, produced.stderr);
    // The same settings as flags (their names are the variables'; either case).
    const read = await runScript("jobs/consume.ts", [
      topic,
      "--brokers",
      TLS_BROKERS.join(","),
      "--format",
      "json",
      "--kafka-security-protocol",
      "sasl_ssl",
      "--kafka-ca-file",
      caPemFile(),
    ]);
    assert.equal(read.code, 0, read.stderr);
    assert.equal(read.stdout.trim().split("\n").length, 20);

    // The system's CAs only: the brokers' certificates are the local CA's.
    const untrusting = await runScript(
      "jobs/produce.ts",
      ["--brokers", TLS_BROKERS.join(","), "--topic", topic, "--count", "1", "--metrics-port", "0"],
      { env: { TXPIPE_KAFKA_SECURITY_PROTOCOL: "SASL_SSL", TXPIPE_KAFKA_CA_FILE: "" } },
    );
    assert.equal(untrusting.code, 1, untrusting.stderr);
    assert.match(untrusting.stderr, /certificate|verify/i);
    assert.doesNotMatch(untrusting.stderr, /\n\s+at /, "no stack trace");

    const badFlag = await runScript("jobs/consume.ts", [topic, "--kafka-security-protocol", "TLS"]);
    assert.equal(badFlag.code, 2, badFlag.stderr);
    assert.match(
      badFlag.stderr,
      /--kafka-security-protocol: expected one of PLAINTEXT, SASL_PLAINTEXT, SASL_SSL, SSL, got "TLS"/,
    );
  },
});

Deno.test({
  name: "tls: Kafka's Java tools connect over SASL_SSL with the CA as a PEM truststore",
  ...kafkaTest,
  fn: async () => {
    await ensureCluster();
    await assertTlsListening();
    const topic = await freshTopic(TOPICS.transactions, "tls_java");
    const auth = kafkaAuth("admin");
    assert.ok(auth, "the local cluster's admin credentials");
    const props = javaClientProperties(auth, {
      tls: true,
      mechanism: "scram-sha-512",
      caFile: caPemFile(),
    });
    assert.equal(props["security.protocol"], "SASL_SSL");
    const dir = await Deno.makeTempDir({ prefix: "txpipe-tls-java-" });
    const config = join(dir, "client.properties");
    try {
      await Deno.writeTextFile(config, "", { mode: 0o600 });
      await Deno.writeTextFile(config, propertiesText(props));
      const out = await new Deno.Command("java", {
        args: [
          "-Xmx256m",
          "-XX:TieredStopAtLevel=1",
          "-XX:+UseSerialGC",
          "-cp",
          `${join(homeDir(), "kafka", "lib")}/*`,
          "org.apache.kafka.tools.TopicCommand",
          "--bootstrap-server",
          TLS_BROKERS.join(","),
          "--command-config",
          config,
          "--list",
        ],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stdout = new TextDecoder().decode(out.stdout);
      assert.ok(out.success, new TextDecoder().decode(out.stderr).slice(-2000));
      assert.ok(stdout.split("\n").includes(topic), `${topic} listed over TLS`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
