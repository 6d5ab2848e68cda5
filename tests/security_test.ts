/**
 * Security on the real cluster (docs/security.md): no client without valid
 * credentials gets in, each job's principal is refused what it must not do,
 * the grant rule of stacks/security.ts is all a job needs, and the secrets
 * are the owner's alone and never logged.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  AclOperationTypes,
  AclPermissionTypes,
  AclResourceTypes,
  type Kafka,
  ResourcePatternTypes,
} from "kafkajs";
import { createKafka, ensureTopics } from "../jobs/lib/kafka.ts";
import { homeDir, kafkaAuth, passwordFile, secretsDir } from "../jobs/lib/credentials.ts";
import { applyAcls } from "../jobs/lib/acl.ts";
import { KAFKA_USERS, type PrincipalName, PRINCIPALS, streamAcls } from "../stacks/security.ts";
import { nodeDir } from "../stacks/local/cluster.ts";
import { topicAs, TOPICS } from "../stacks/topology.ts";
import {
  BROKERS,
  ensureCluster,
  freshTopic,
  readTopic,
  runScript,
  TOPO,
  withAdmin,
} from "./helpers/cluster.ts";
import { generate, startInstance, stopInstance, toMessage, waitCaughtUp } from "./helpers/jobs.ts";

const kafkaTest = { sanitizeOps: false, sanitizeResources: false };

/** A client of `principal` that gives up at once (no retries), so a refusal comes back fast. */
function clientOf(
  principal: PrincipalName,
  auth?: { username: string; password: string } | null,
): Kafka {
  return createKafka({
    principal,
    clientId: `txpipe-test-security-${principal}`,
    brokers: BROKERS,
    auth: auth === undefined ? undefined : auth && { ...auth, source: "test" },
    retry: { retries: 0 },
  });
}

/** The Kafka error codes inside a kafkajs error (its causes and nested errors too). */
function errorTypes(err: unknown, seen = new Set<unknown>()): string[] {
  if (!err || typeof err !== "object" || seen.has(err)) return [];
  seen.add(err);
  const e = err as {
    type?: string;
    name?: string;
    cause?: unknown;
    originalError?: unknown;
    errors?: unknown[];
  };
  return [
    ...(e.type ? [e.type] : []),
    ...(e.name ? [e.name] : []),
    ...errorTypes(e.cause, seen),
    ...errorTypes(e.originalError, seen),
    ...(Array.isArray(e.errors) ? e.errors.flatMap((x) => errorTypes(x, seen)) : []),
  ];
}

/** Asserts `run` fails because Kafka refused an authorization, naming `what`. */
async function assertRefused(
  what: string,
  run: () => Promise<unknown>,
  code = /AUTHORIZATION_FAILED/,
) {
  let failure: unknown;
  try {
    await run();
  } catch (err) {
    failure = err;
  }
  assert.ok(failure, `${what}: allowed, but must be refused`);
  const types = errorTypes(failure);
  assert.ok(
    types.some((t) => code.test(t)),
    `${what}: failed, but not as refused (${types.join(", ")}: ${(failure as Error).message})`,
  );
}

/** Sends one record to `topic` as `principal` (an idempotent producer, as every txpipe producer is). */
async function sendAs(principal: PrincipalName, topic: string): Promise<void> {
  const producer = clientOf(principal).producer({
    idempotent: true,
    maxInFlightRequests: 1,
    retry: { retries: 1, initialRetryTime: 100 }, // an idempotent producer must retry
  });
  await producer.connect();
  try {
    await producer.send({ topic, acks: -1, messages: [{ key: "k", value: "{}" }] });
  } finally {
    await producer.disconnect().catch(() => {});
  }
}

/** Joins a group and reads `topic` as `principal`; rejects with the consumer's crash. */
async function readAs(principal: PrincipalName, topic: string, groupId: string): Promise<void> {
  const consumer = clientOf(principal).consumer({ groupId, retry: { retries: 0 } });
  const crashed = new Promise<never>((_, reject) => {
    consumer.on(consumer.events.CRASH, (e) => reject(e.payload.error));
  });
  try {
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({ eachMessage: async () => {} });
    await Promise.race([
      crashed,
      new Promise((r) => setTimeout(r, 15_000)),
    ]);
  } finally {
    await consumer.disconnect().catch(() => {});
  }
}

Deno.test({
  name:
    "security: a client without credentials or with a wrong password is refused; a job says so in one sentence and exits 1",
  ...kafkaTest,
  fn: async () => {
    await ensureCluster();
    const admin = kafkaAuth("admin");
    assert.ok(admin, "the local cluster generated the admin's credentials");

    // No credentials: the SASL listener closes the connection before any request.
    const anonymous = clientOf("admin", null).admin();
    await assert.rejects(async () => {
      await anonymous.connect();
      await anonymous.listTopics();
    });
    await anonymous.disconnect().catch(() => {});

    // A known user with a wrong password, and an unknown user.
    for (
      const auth of [{ username: admin.username, password: "wrong" }, {
        username: "mallory",
        password: admin.password,
      }]
    ) {
      const c = clientOf("admin", auth).admin();
      await assertRefused(`user ${auth.username}`, () => c.connect(), /SASLAuthentication/);
      await c.disconnect().catch(() => {});
    }

    const topic = await freshTopic(TOPICS.transactions, "security_refused");
    const run = await runScript(
      "jobs/produce.ts",
      ["--topic", topic, "--count", "10", "--metrics-port", "0", "--log-format", "ecs"],
      { env: { TXPIPE_KAFKA_USER: KAFKA_USERS.produce, TXPIPE_KAFKA_PASSWORD: "wrong" } },
    );
    assert.equal(run.code, 1, run.stderr);
    assert.match(run.stderr, /refused the credentials of txpipe-produce/);
    assert.doesNotMatch(run.stderr, /\n\s+at /, "no stack trace");
    assert.equal(run.stderr.trim().split("\n").length, 1, run.stderr);
  },
});

Deno.test({
  name:
    "security: each principal is refused what it must not do: the producer reads, detect writes aggregates, the evaluator writes, no one but the admin deletes a topic or creates one it does not write",
  ...kafkaTest,
  fn: async () => {
    await ensureCluster();
    // The producer has no group at all: kafkajs reports the GROUP_AUTHORIZATION_FAILED
    // of FindCoordinator as "Failed to find group coordinator".
    for (const group of [`txpipe-produce-${crypto.randomUUID()}`, "txpipe-detect"]) {
      await assertRefused(
        `txpipe-produce reads financial_transactions in group ${group}`,
        () => readAs("produce", TOPICS.transactions, group),
        /AUTHORIZATION_FAILED|GroupCoordinatorNotFound/,
      );
    }
    // In a group it may use, a topic it may not read is refused as such.
    await assertRefused(
      "txpipe-detect reads transaction_aggregates",
      () => readAs("detect", TOPICS.aggregates, `test-security-${crypto.randomUUID()}`),
      /TOPIC_AUTHORIZATION_FAILED/,
    );
    await assertRefused(
      "txpipe-detect writes transaction_aggregates",
      () => sendAs("detect", TOPICS.aggregates),
    );
    await assertRefused(
      "txpipe-aggregate writes transaction_anomalies",
      () => sendAs("aggregate", TOPICS.anomalies),
    );
    await assertRefused(
      "txpipe-detect writes financial_transactions",
      () => sendAs("detect", TOPICS.transactions),
    );
    for (const topic of [TOPICS.transactions, TOPICS.anomalies, TOPICS.deadLetters]) {
      await assertRefused(`txpipe-evaluate writes ${topic}`, () => sendAs("evaluate", topic));
    }
    await assertRefused(
      "txpipe-consume writes transaction_dead_letters",
      () => sendAs("consume", TOPICS.deadLetters),
    );
    // The rules publisher writes the control topic only; detect only reads it.
    await assertRefused(
      "txpipe-rules writes transaction_anomalies",
      () => sendAs("rules", TOPICS.anomalies),
    );
    await assertRefused(
      "txpipe-detect writes txpipe-detect-rules",
      () => sendAs("detect", TOPICS.detectRules),
    );

    const victim = await freshTopic(TOPICS.anomalies, "security_victim");
    for (const p of PRINCIPALS.filter((p) => p !== "admin")) {
      const admin = clientOf(p).admin();
      await admin.connect();
      try {
        await assertRefused(
          `${KAFKA_USERS[p]} deletes a topic`,
          () => admin.deleteTopics({ topics: [victim], timeout: 5000 }),
        );
        await assertRefused(
          `${KAFKA_USERS[p]} creates a topic`,
          () => admin.createTopics({ topics: [{ topic: `sec_new_${p}`, numPartitions: 1 }] }),
        );
      } finally {
        await admin.disconnect();
      }
    }
    await withAdmin(async (admin) => {
      assert.ok((await admin.listTopics()).includes(victim), "no one but the admin deleted it");
      await admin.deleteTopics({ topics: [victim] });
    });
  },
});

Deno.test({
  name:
    "security: the grant rule is all a job needs: detect with an app id and topics outside every other grant reads, writes and commits exactly",
  ...kafkaTest,
  fn: async () => {
    await ensureCluster();
    const id = crypto.randomUUID().slice(0, 8);
    const names = {
      appId: `sec-detect-${id}`,
      input: `sec_in_${id}`,
      outputs: [`sec_anomalies_${id}`],
      deadLetters: `sec_dlq_${id}`,
      control: TOPICS.detectRules,
    };
    const dataset = generate(3000, `security-${id}`, 0.05);
    await withAdmin(async (admin) => {
      await ensureTopics(admin, [
        topicAs(TOPO, TOPICS.transactions, names.input),
        topicAs(TOPO, TOPICS.anomalies, names.outputs[0]),
        topicAs(TOPO, TOPICS.deadLetters, names.deadLetters),
        topicAs(TOPO, `${"txpipe-detect"}-changelog`, `${names.appId}-changelog`),
      ]);
      await applyAcls(admin, streamAcls("detect", names));
      const producer = createKafka({
        principal: "admin",
        clientId: "txpipe-test",
        brokers: BROKERS,
      }).producer({ idempotent: true });
      await producer.connect();
      await producer.send({
        topic: names.input,
        acks: -1,
        messages: dataset.map((r) => toMessage(r)),
      });
      await producer.disconnect();
    });
    const topics = {
      input: names.input,
      output: names.outputs[0],
      deadLetters: names.deadLetters,
      appId: names.appId,
    };
    const instance = startInstance("detect", topics);
    try {
      await waitCaughtUp("detect", topics, 120_000);
    } finally {
      assert.equal(await stopInstance(instance), 0);
    }
    const anomalies = await readTopic(names.outputs[0], { expected: 1, settleMs: 500 });
    assert.ok(anomalies.length > 0, "detect wrote anomalies as txpipe-detect");
    await withAdmin((admin) =>
      admin.deleteTopics({
        topics: [names.input, names.outputs[0], names.deadLetters, `${names.appId}-changelog`],
      })
    );

    // The same rule from the command line, for a user's extra app id on the default topics.
    const cli = await runScript("stacks/local/cluster.ts", ["grant", "aggregate", `sec-cli-${id}`]);
    assert.equal(cli.code, 0, cli.stderr);
    assert.match(cli.stdout, /User:txpipe-aggregate may read, describe on group sec-cli-.{8}\*/);
    const { resources } = await withAdmin((admin) =>
      admin.describeAcls({
        resourceType: AclResourceTypes.TOPIC,
        resourceName: `sec-cli-${id}-repartition`,
        resourcePatternType: ResourcePatternTypes.LITERAL,
        principal: `User:${KAFKA_USERS.aggregate}`,
        host: "*",
        operation: AclOperationTypes.ANY,
        permissionType: AclPermissionTypes.ALLOW,
      })
    );
    assert.equal(resources.length, 1, "the repartition topic of the new app id is granted");
  },
});

Deno.test({
  name:
    "security: the secrets are 0600 files in a 0700 folder, node configs with a password are 0600, and no password is in a node's or job's log",
  ...kafkaTest,
  fn: async () => {
    await ensureCluster();
    assert.equal((await Deno.stat(secretsDir())).mode! & 0o777, 0o700);
    const passwords: string[] = [];
    for (const p of PRINCIPALS) {
      const st = await Deno.stat(passwordFile(p));
      assert.equal(st.mode! & 0o777, 0o600, passwordFile(p));
      const password = (await Deno.readTextFile(passwordFile(p))).trim();
      assert.ok(password.length >= 32, "a long random password");
      passwords.push(password);
    }
    assert.equal(new Set(passwords).size, passwords.length, "one password per principal");
    for (const node of TOPO.nodes) {
      const props = join(nodeDir("cluster", node), "server.properties");
      assert.equal((await Deno.stat(props)).mode! & 0o777, 0o600, props);
      for (const log of ["stdout.log", "server.log"]) {
        const text = await Deno.readTextFile(join(nodeDir("cluster", node), "logs", log)).catch(
          () => "",
        );
        for (const password of passwords) {
          assert.ok(!text.includes(password), `a password in ${node.name}'s ${log}`);
        }
      }
    }
    const logs = join(homeDir(), "test-logs");
    const entries = await Array.fromAsync(Deno.readDir(logs)).catch(() => []);
    for (const e of entries) {
      const text = await Deno.readTextFile(join(logs, e.name));
      for (const password of passwords) {
        assert.ok(!text.includes(password), `a password in ${e.name}`);
      }
    }
  },
});
