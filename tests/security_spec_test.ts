/**
 * The security spec and credentials, without a cluster: who is granted what
 * (stacks/security.ts), where credentials come from and how the local
 * secrets are written (jobs/lib/credentials.ts).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  type AclRule,
  jobAcls,
  KAFKA_USERS,
  type PrincipalName,
  PRINCIPALS,
  scratchAcls,
  streamAcls,
} from "../stacks/security.ts";
import {
  CredentialsError,
  ensureSecrets,
  javaClientProperties,
  kafkaAuth,
  passwordFile,
  scramJaas,
  secretsDir,
} from "../jobs/lib/credentials.ts";
import { aclEntries } from "../jobs/lib/acl.ts";
import { APP_IDS, TOPICS } from "../stacks/topology.ts";

/** What `principal` may do on the topic `name` under `rules` (literal or prefixed match). */
function topicOps(rules: AclRule[], principal: PrincipalName, name: string): string[] {
  return rules
    .filter((r) => r.principal === principal && r.resource === "topic")
    .filter((r) =>
      r.pattern === "prefixed" ? name.startsWith(r.name) : r.name === name || r.name === "*"
    )
    .flatMap((r) => r.operations)
    .sort();
}

Deno.test("security spec: each job's default grants are least privilege: it creates only the topics it writes, by name, and only the admin deletes", () => {
  const rules = jobAcls();
  assert.deepEqual(topicOps(rules, "produce", TOPICS.transactions), [
    "create",
    "describe",
    "write",
  ]);
  assert.deepEqual(topicOps(rules, "produce", TOPICS.aggregates), []);
  assert.deepEqual(topicOps(rules, "aggregate", TOPICS.transactions), ["describe", "read"]);
  assert.deepEqual(topicOps(rules, "aggregate", TOPICS.aggregates), [
    "create",
    "describe",
    "write",
  ]);
  assert.deepEqual(topicOps(rules, "aggregate", TOPICS.anomalies), []);
  assert.deepEqual(topicOps(rules, "aggregate", `${APP_IDS.aggregate}-repartition`), [
    "create",
    "describe",
    "read",
    "write",
  ]);
  assert.deepEqual(topicOps(rules, "detect", TOPICS.aggregates), []);
  assert.deepEqual(topicOps(rules, "detect", TOPICS.anomalies), ["create", "describe", "write"]);
  assert.deepEqual(topicOps(rules, "detect", `${APP_IDS.aggregate}-changelog`), []);
  assert.deepEqual(topicOps(rules, "evaluate", TOPICS.anomalies), ["describe", "read"]);
  assert.deepEqual(topicOps(rules, "consume", "anything"), ["describe", "read"]);
  // The control topic: detect reads it; only the rules publisher writes it, and creates nothing.
  assert.deepEqual(topicOps(rules, "detect", TOPICS.detectRules), ["describe", "read"]);
  assert.deepEqual(topicOps(rules, "rules", TOPICS.detectRules), ["describe", "read", "write"]);
  for (const p of PRINCIPALS.filter((p) => p !== "rules" && p !== "admin")) {
    assert.ok(!topicOps(rules, p, TOPICS.detectRules).includes("write"), `${p} writes the rules`);
  }
  for (const t of [TOPICS.transactions, TOPICS.anomalies, TOPICS.aggregates, TOPICS.deadLetters]) {
    assert.deepEqual(topicOps(rules, "rules", t), [], `the rules publisher on ${t}`);
  }
  assert.deepEqual(
    rules.filter((r) => r.principal === "rules" && r.resource !== "topic")
      .map((r) => `${r.resource} ${r.pattern} ${r.name}: ${r.operations.join(",")}`),
    [
      "transactional-id prefixed txpipe-rules-: write,describe",
      "cluster literal kafka-cluster: idempotent-write",
    ],
  );
  for (const r of rules) {
    if (r.operations.includes("create")) {
      assert.ok(r.resource === "topic" && r.pattern === "literal" && r.name !== "*", "by name");
      assert.ok(r.operations.includes("write"), "only a topic it writes");
    }
  }
  for (const r of [...rules, ...scratchAcls("test")]) {
    // Nothing: the readers read without groups (partition_reader.ts), so they delete none.
    assert.ok(!r.operations.includes("delete"), `${r.principal} deletes ${r.resource} ${r.name}`);
    assert.notEqual(r.principal, "admin", "the admin is a super user, it needs no ACL");
  }
  // Groups and transactional ids: named after the app id only.
  const detect = streamAcls("detect", {
    appId: "my-detect",
    input: "in",
    outputs: ["out"],
    deadLetters: "dlq",
  });
  assert.deepEqual(
    detect.filter((r) => r.resource === "group" || r.resource === "transactional-id")
      .map((r) => `${r.resource} ${r.pattern} ${r.name}`),
    ["group prefixed my-detect", "transactional-id prefixed my-detect"],
  );
  assert.deepEqual(topicOps(detect, "detect", "my-detect-changelog"), [
    "create",
    "describe",
    "read",
    "write",
  ]);
  // kafkajs entries: one per operation, each for its user.
  const entries = aclEntries(detect);
  assert.equal(entries.length, detect.reduce((n, r) => n + r.operations.length, 0));
  assert.ok(entries.every((e) => e.principal === `User:${KAFKA_USERS.detect}`));
});

Deno.test("credentials: TXPIPE_KAFKA_USER with a password or a password file, else the principal's local secret, else none", async () => {
  const home = await Deno.makeTempDir({ prefix: "txpipe-secrets-" });
  try {
    const env = (vars: Record<string, string>) => (name: string) => vars[name];
    assert.equal(kafkaAuth("detect", env({}), home), undefined, "no credentials anywhere");
    const { passwords, created } = await ensureSecrets(home);
    assert.deepEqual(created, [...PRINCIPALS]);
    assert.equal((await Deno.stat(secretsDir(home))).mode! & 0o777, 0o700);
    for (const p of PRINCIPALS) {
      assert.equal((await Deno.stat(passwordFile(p, home))).mode! & 0o777, 0o600);
    }
    const again = await ensureSecrets(home);
    assert.deepEqual(again.created, [], "generated once");
    assert.deepEqual(again.passwords, passwords);

    const local = kafkaAuth("detect", env({}), home)!;
    assert.equal(local.username, "txpipe-detect");
    assert.equal(local.password, passwords.detect);

    const given = kafkaAuth(
      "detect",
      env({ TXPIPE_KAFKA_USER: "u", TXPIPE_KAFKA_PASSWORD: "p" }),
      home,
    )!;
    assert.deepEqual([given.username, given.password], ["u", "p"]);
    const file = join(home, "pw");
    await Deno.writeTextFile(file, "from-file\n");
    const fromFile = kafkaAuth(
      "detect",
      env({ TXPIPE_KAFKA_USER: "u", TXPIPE_KAFKA_PASSWORD_FILE: file }),
      home,
    )!;
    assert.equal(fromFile.password, "from-file");
    assert.throws(
      () => kafkaAuth("detect", env({ TXPIPE_KAFKA_USER: "u" }), home),
      (e: Error) => e instanceof CredentialsError && /TXPIPE_KAFKA_PASSWORD/.test(e.message),
    );

    const props = javaClientProperties(local);
    assert.equal(props["security.protocol"], "SASL_PLAINTEXT");
    assert.equal(props["sasl.mechanism"], "SCRAM-SHA-512");
    assert.match(props["sasl.jaas.config"], /ScramLoginModule required username="txpipe-detect"/);
    assert.deepEqual(javaClientProperties(undefined), {});
    // A password given by hand may hold JAAS's quote and escape characters.
    assert.match(scramJaas("u", 'a"b\\c'), /password="a\\"b\\\\c";$/);
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});
