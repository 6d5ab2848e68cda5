/**
 * TLS and external clusters without a cluster: how a process resolves its
 * connection (security protocol, SASL mechanism, credentials, CA) from the
 * TXPIPE_* variables and a Java-style client properties file, what kafkajs
 * and Java clients are given, the local CA and broker keystores, and the
 * brokers' CLIENT_TLS listener.
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { join } from "node:path";
import socketFactory from "kafkajs/src/network/socketFactory.js";
import {
  CredentialsError,
  ensureSecrets,
  javaClientProperties,
  type KafkaAuth,
  kafkaAuth,
  kafkaConnection,
  kafkajsSecurity,
  parseClientConfig,
  parseJaasOptions,
  parseJavaProperties,
  securityOf,
} from "../jobs/lib/credentials.ts";
import { createKafka } from "../jobs/lib/kafka.ts";
import {
  BROKER_SANS,
  caPemFile,
  ensureTlsKeystores,
  keystoreFile,
  keystorePasswordFile,
  tlsDir,
  type TlsMaterial,
} from "../stacks/local/tls.ts";
import { LOCAL_PROTOCOL_MAP, nodeProperties } from "../stacks/local/cluster.ts";
import { securedProtocolMap } from "../stacks/kafka_security.ts";
import { topology } from "../stacks/topology.ts";

const env = (vars: Record<string, string>) => (name: string) => vars[name];

/** A PEM certificate: the content is never parsed by the resolution. */
const PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

/** A file reader over an in-memory folder; absent files throw NotFound as Deno's does. */
function files(contents: Record<string, string>) {
  return (path: string): string => {
    if (path in contents) return contents[path];
    throw new Deno.errors.NotFound(`No such file or directory (os error 2): readfile '${path}'`);
  };
}

/** A CredentialsError whose message matches every pattern. */
function credentialsError(...patterns: RegExp[]) {
  return (err: unknown) => {
    assert.ok(err instanceof CredentialsError, `a CredentialsError, got ${err}`);
    for (const p of patterns) assert.match(err.message, p);
    return true;
  };
}

const CONFLUENT_LIKE = [
  "# Required connection configs for Kafka producer, consumer, and admin",
  "bootstrap.servers=pkc-00000.europe-west1.gcp.confluent.cloud:9092",
  "security.protocol=SASL_SSL",
  "sasl.mechanisms=PLAIN",
  "sasl.mechanism=PLAIN",
  "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required \\",
  '    username="APIKEY" password="se\\\\"cr=et";',
  "ssl.ca.location = certs/ca.pem",
  "! another comment",
  "client.dns.lookup=use_all_dns_ips",
  "",
].join("\n");

Deno.test("kafka connection: PLAINTEXT without credentials, SASL_PLAINTEXT with SCRAM-SHA-512 by default with them", async () => {
  const home = await Deno.makeTempDir({ prefix: "txpipe-tls-" });
  try {
    const none = kafkaConnection("detect", { env: env({}), home });
    assert.deepEqual(none, { protocol: "PLAINTEXT", tls: false, mechanism: "scram-sha-512" });
    assert.deepEqual(kafkajsSecurity(none), {});
    assert.deepEqual(javaClientProperties(none.auth, none), {});

    const { passwords } = await ensureSecrets(home);
    const local = kafkaConnection("detect", { env: env({}), home });
    assert.equal(local.protocol, "SASL_PLAINTEXT");
    assert.equal(local.tls, false);
    assert.equal(local.auth?.username, "txpipe-detect");
    assert.equal(local.auth?.password, passwords.detect);
    assert.deepEqual(kafkajsSecurity(local), {
      sasl: { mechanism: "scram-sha-512", username: "txpipe-detect", password: passwords.detect },
    });
    // As before TLS: what the existing callers of kafkaAuth and javaClientProperties get.
    assert.deepEqual(kafkaAuth("detect", env({}), home), local.auth);
    assert.equal(javaClientProperties(local.auth, local)["security.protocol"], "SASL_PLAINTEXT");
    assert.deepEqual(
      javaClientProperties(local.auth, local),
      javaClientProperties(local.auth),
      "without TLS the Java properties are the SCRAM ones of before",
    );
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("kafka connection: the TXPIPE_* variables choose SASL_SSL or SSL, the CA bundle and the mechanism", () => {
  const home = "/nonexistent-home";
  const readFile = files({ "/etc/ca.pem": PEM });
  const user = { TXPIPE_KAFKA_USER: "u", TXPIPE_KAFKA_PASSWORD: "p" };

  const saslSsl = kafkaConnection("produce", {
    env: env({
      ...user,
      TXPIPE_KAFKA_SECURITY_PROTOCOL: "SASL_SSL",
      TXPIPE_KAFKA_CA_FILE: "/etc/ca.pem",
    }),
    readFile,
    home,
  });
  assert.equal(saslSsl.protocol, "SASL_SSL");
  assert.equal(saslSsl.tls, true);
  assert.equal(saslSsl.caFile, "/etc/ca.pem");
  assert.deepEqual(kafkajsSecurity(saslSsl), {
    ssl: { rejectUnauthorized: true, ca: [PEM] },
    sasl: { mechanism: "scram-sha-512", username: "u", password: "p" },
  });

  // A CA file alone means TLS: SASL_SSL with credentials, SSL without.
  const caOnly = { TXPIPE_KAFKA_CA_FILE: "/etc/ca.pem" };
  assert.equal(
    kafkaConnection("produce", { env: env({ ...user, ...caOnly }), readFile, home }).protocol,
    "SASL_SSL",
  );
  const ssl = kafkaConnection("produce", { env: env(caOnly), readFile, home });
  assert.equal(ssl.protocol, "SSL");
  assert.deepEqual(kafkajsSecurity(ssl), { ssl: { rejectUnauthorized: true, ca: [PEM] } });

  // TLS without a CA file: the system's trusted CAs, still verified.
  const systemCa = kafkaConnection("produce", {
    env: env({ ...user, TXPIPE_KAFKA_SECURITY_PROTOCOL: "sasl_ssl" }),
    readFile,
    home,
  });
  assert.equal(systemCa.protocol, "SASL_SSL");
  assert.deepEqual(kafkajsSecurity(systemCa).ssl, { rejectUnauthorized: true });

  // An explicit SSL or PLAINTEXT drops the credentials found: no SASL.
  const sslWithUser = kafkaConnection("produce", {
    env: env({ ...user, TXPIPE_KAFKA_SECURITY_PROTOCOL: "SSL" }),
    readFile,
    home,
  });
  assert.equal(sslWithUser.auth, undefined);
  assert.equal(kafkajsSecurity(sslWithUser).sasl, undefined);

  for (
    const [given, mechanism] of [
      ["SCRAM-SHA-256", "scram-sha-256"],
      ["plain", "plain"],
      ["Scram-Sha-512", "scram-sha-512"],
    ] as const
  ) {
    const c = kafkaConnection("produce", {
      env: env({ ...user, TXPIPE_KAFKA_SASL_MECHANISM: given }),
      readFile,
      home,
    });
    assert.equal(c.mechanism, mechanism, given);
    assert.equal(kafkajsSecurity(c).sasl?.mechanism, mechanism, given);
  }

  // Credentials given by a test (createKafka's `auth`) decide SASL; the TLS half stays.
  const tlsEnv = env({ TXPIPE_KAFKA_SECURITY_PROTOCOL: "SASL_SSL", ...caOnly });
  const other: KafkaAuth = { username: "x", password: "y", source: "test" };
  assert.equal(
    kafkaConnection("produce", { env: tlsEnv, readFile, home, auth: null }).protocol,
    "SSL",
  );
  const given = kafkaConnection("produce", { env: tlsEnv, readFile, home, auth: other });
  assert.equal(given.protocol, "SASL_SSL");
  assert.equal(given.auth, other);
});

Deno.test("kafka connection: TXPIPE_KAFKA_CONFIG's client properties give every setting, each TXPIPE_* variable overrides it", async () => {
  const home = await Deno.makeTempDir({ prefix: "txpipe-tls-" });
  try {
    await ensureSecrets(home); // the file's credentials come before the local ones
    const readFile = files({
      "/cfg/client.properties": CONFLUENT_LIKE,
      "/cfg/certs/ca.pem": PEM,
      "/other/ca.pem": PEM.replace("MIIB", "MIIC"),
      "/run/pw": "from-file\n",
    });
    const config = { TXPIPE_KAFKA_CONFIG: "/cfg/client.properties" };
    const fromFile = kafkaConnection("consume", { env: env(config), readFile, home });
    assert.equal(fromFile.protocol, "SASL_SSL");
    assert.equal(fromFile.mechanism, "plain");
    assert.equal(fromFile.caFile, "/cfg/certs/ca.pem", "relative to the file's folder");
    assert.deepEqual(
      { ...fromFile.auth },
      {
        username: "APIKEY",
        password: 'se"cr=et',
        source: "sasl.jaas.config in /cfg/client.properties",
      },
    );

    const overridden = kafkaConnection("consume", {
      env: env({
        ...config,
        TXPIPE_KAFKA_SECURITY_PROTOCOL: "SSL",
        TXPIPE_KAFKA_SASL_MECHANISM: "scram-sha-256",
        TXPIPE_KAFKA_CA_FILE: "/other/ca.pem",
      }),
      readFile,
      home,
    });
    assert.equal(overridden.protocol, "SSL");
    assert.equal(overridden.mechanism, "scram-sha-256");
    assert.equal(overridden.caFile, "/other/ca.pem");
    assert.match(overridden.caPem!, /MIIC/);
    assert.equal(overridden.auth, undefined);

    const userFromEnv = kafkaConnection("consume", {
      env: env({ ...config, TXPIPE_KAFKA_USER: "me", TXPIPE_KAFKA_PASSWORD_FILE: "/run/pw" }),
      readFile,
      home,
    });
    assert.deepEqual([userFromEnv.auth?.username, userFromEnv.auth?.password], [
      "me",
      "from-file",
    ]);
    assert.equal(userFromEnv.protocol, "SASL_SSL", "the file's protocol still holds");

    // Without a JAAS line the local secret is next.
    const noJaas = files({ "/cfg/p": "security.protocol=SASL_PLAINTEXT\n" });
    const local = kafkaConnection("consume", {
      env: env({ TXPIPE_KAFKA_CONFIG: "/cfg/p" }),
      readFile: (p) => p === "/cfg/p" ? noJaas(p) : Deno.readTextFileSync(p),
      home,
    });
    assert.equal(local.auth?.username, "txpipe-consume");
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("kafka connection: an unusable setting is a CredentialsError naming the variable or file key, what was expected and what was given", () => {
  const home = "/nonexistent-home";
  const readFile = files({
    "/ca.pem": PEM,
    "/not-pem": "hello",
    "/bad-mech.properties": "sasl.mechanism=GSSAPI\n",
    "/truststore.properties": "ssl.truststore.location=/x.jks\n",
    "/keystore.properties": "ssl.keystore.location=/x.p12\n",
    "/nopw.properties": 'sasl.jaas.config=x.ScramLoginModule required username="u";\n',
    "/garbled.properties":
      'sasl.jaas.config=x.ScramLoginModule required username="u" password=se cret;\n',
  });
  const resolve = (vars: Record<string, string>) => () =>
    kafkaConnection("aggregate", { env: env(vars), readFile, home });
  const user = { TXPIPE_KAFKA_USER: "u", TXPIPE_KAFKA_PASSWORD: "p" };

  assert.throws(
    resolve({ TXPIPE_KAFKA_SECURITY_PROTOCOL: "TLS" }),
    credentialsError(
      /^TXPIPE_KAFKA_SECURITY_PROTOCOL: /,
      /expected one of PLAINTEXT, SASL_PLAINTEXT, SASL_SSL, SSL/,
      /got "TLS"/,
    ),
  );
  assert.throws(
    resolve({ ...user, TXPIPE_KAFKA_SASL_MECHANISM: "oauthbearer" }),
    credentialsError(
      /^TXPIPE_KAFKA_SASL_MECHANISM: /,
      /SCRAM-SHA-512, SCRAM-SHA-256, PLAIN/,
      /got "oauthbearer"/,
    ),
  );
  assert.throws(
    resolve({ ...user, TXPIPE_KAFKA_CONFIG: "/bad-mech.properties" }),
    credentialsError(/^sasl.mechanism in \/bad-mech.properties: /, /got "GSSAPI"/),
  );
  assert.throws(
    resolve({ TXPIPE_KAFKA_SECURITY_PROTOCOL: "SASL_SSL" }),
    credentialsError(/TXPIPE_KAFKA_SECURITY_PROTOCOL is SASL_SSL but no credentials/),
  );
  assert.throws(
    resolve({
      ...user,
      TXPIPE_KAFKA_SECURITY_PROTOCOL: "SASL_PLAINTEXT",
      TXPIPE_KAFKA_CA_FILE: "/ca.pem",
    }),
    credentialsError(/TXPIPE_KAFKA_CA_FILE is \/ca.pem but/, /a CA file is for SASL_SSL or SSL/),
  );
  assert.throws(
    resolve({ TXPIPE_KAFKA_CA_FILE: "/missing.pem" }),
    credentialsError(/TXPIPE_KAFKA_CA_FILE is \/missing.pem, which cannot be read: no such file/),
  );
  assert.throws(
    resolve({ TXPIPE_KAFKA_CA_FILE: "/not-pem" }),
    credentialsError(/holds no PEM certificate/),
  );
  assert.throws(
    resolve({ TXPIPE_KAFKA_CONFIG: "/missing.properties" }),
    credentialsError(/TXPIPE_KAFKA_CONFIG is \/missing.properties, which cannot be read/),
  );
  assert.throws(
    resolve({ TXPIPE_KAFKA_CONFIG: "/truststore.properties" }),
    credentialsError(/ssl.truststore.location in \/truststore.properties/, /ssl.ca.location/),
  );
  assert.throws(
    resolve({ TXPIPE_KAFKA_CONFIG: "/keystore.properties" }),
    credentialsError(/ssl.keystore.location/, /not supported/),
  );
  assert.throws(
    resolve({ TXPIPE_KAFKA_CONFIG: "/nopw.properties" }),
    credentialsError(/sasl.jaas.config in \/nopw.properties has no username or no password/),
  );
  assert.throws(
    resolve({ TXPIPE_KAFKA_CONFIG: "/garbled.properties" }),
    (err: Error) => {
      credentialsError(/cannot read/)(err);
      assert.doesNotMatch(err.message, /cret/, "never quotes what may be the password");
      return true;
    },
  );
  assert.throws(
    resolve({ TXPIPE_KAFKA_USER: "u" }),
    credentialsError(/TXPIPE_KAFKA_USER is u but no password is given/),
  );
});

Deno.test("client properties: Java's properties syntax, and JAAS options with escapes", () => {
  assert.deepEqual(
    parseJavaProperties(
      [
        "# comment",
        "   ! also a comment",
        "a=1",
        "b : 2",
        "c 3",
        "d=",
        "e=x=y",
        "f=long \\",
        "   value",
        "g=tab\\there \\u00e9",
        "h\\ key=spaced key",
        "i=ends with backslash \\\\",
        "j=last",
      ].join("\r\n"),
    ),
    {
      a: "1",
      b: "2",
      c: "3",
      d: "",
      e: "x=y",
      f: "long value",
      g: "tab\there é",
      "h key": "spaced key",
      i: "ends with backslash \\",
      j: "last",
    },
  );
  assert.deepEqual(
    parseJaasOptions(
      'org.apache.kafka.common.security.scram.ScramLoginModule required username="a b" ' +
        'password="q\\"uo\\\\te" tokenauth=true;',
    ),
    { username: "a b", password: 'q"uo\\te', tokenauth: "true" },
  );
  assert.deepEqual(
    parseJaasOptions("x.PlainLoginModule required username=u password=p"),
    { username: "u", password: "p" },
  );
  assert.throws(() => parseJaasOptions('username="u" password="p";'), CredentialsError);

  const file = parseClientConfig(CONFLUENT_LIKE, "/cfg/client.properties");
  assert.deepEqual(file, {
    path: "/cfg/client.properties",
    protocol: "SASL_SSL",
    mechanism: "PLAIN",
    username: "APIKEY",
    password: 'se"cr=et',
    caLocation: "/cfg/certs/ca.pem",
  });
  assert.equal(
    parseClientConfig("ssl.ca.location=/abs/ca.pem\n", "rel/c.properties").caLocation,
    "/abs/ca.pem",
  );
});

Deno.test("java client properties: SASL_SSL with the CA as a PEM truststore, the mechanism's JAAS module", () => {
  const auth: KafkaAuth = { username: "u", password: "p", source: "test" };
  const tls = { tls: true, mechanism: "scram-sha-512" as const, caFile: "/home/tls/ca.pem" };
  assert.deepEqual(javaClientProperties(auth, tls), {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.jaas.config":
      'org.apache.kafka.common.security.scram.ScramLoginModule required username="u" password="p";',
    "ssl.truststore.type": "PEM",
    "ssl.truststore.location": "/home/tls/ca.pem",
  });
  assert.deepEqual(javaClientProperties(undefined, tls), {
    "security.protocol": "SSL",
    "ssl.truststore.type": "PEM",
    "ssl.truststore.location": "/home/tls/ca.pem",
  });
  const plain = javaClientProperties(auth, { tls: true, mechanism: "plain" });
  assert.equal(plain["sasl.mechanism"], "PLAIN");
  assert.match(
    plain["sasl.jaas.config"],
    /^org\.apache\.kafka\.common\.security\.plain\.PlainLoginModule required/,
  );
  assert.equal(plain["ssl.truststore.location"], undefined, "the JVM's own CAs without a CA file");
  assert.equal(
    javaClientProperties(auth, { tls: false, mechanism: "scram-sha-256" })["sasl.mechanism"],
    "SCRAM-SHA-256",
  );
});

Deno.test("createKafka: the resolved TLS and SASL reach kafkajs and the admin's own connections (leaders.ts)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "txpipe-tls-" });
  const vars = ["TXPIPE_KAFKA_CONFIG", "TXPIPE_KAFKA_USER", "TXPIPE_KAFKA_SECURITY_PROTOCOL"];
  const saved = vars.map((v) => Deno.env.get(v));
  try {
    await Deno.writeTextFile(join(dir, "ca.pem"), PEM);
    await Deno.writeTextFile(
      join(dir, "client.properties"),
      "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-256\nssl.ca.location=ca.pem\n" +
        'sasl.jaas.config=x.ScramLoginModule required username="svc" password="pw";\n',
    );
    for (const v of vars) Deno.env.delete(v);
    Deno.env.set("TXPIPE_KAFKA_CONFIG", join(dir, "client.properties"));
    const kafka = createKafka({ principal: "detect", clientId: "t", brokers: ["127.0.0.1:1"] });
    const admin = kafka.admin();
    assert.deepEqual(securityOf(admin), {
      ssl: { rejectUnauthorized: true, ca: [PEM] },
      sasl: { mechanism: "scram-sha-256", username: "svc", password: "pw" },
    });
    const anonymous = createKafka({
      principal: "detect",
      clientId: "t",
      brokers: ["127.0.0.1:1"],
      auth: null,
    }).admin();
    assert.deepEqual(securityOf(anonymous), { ssl: { rejectUnauthorized: true, ca: [PEM] } });
    Deno.env.set("TXPIPE_KAFKA_SECURITY_PROTOCOL", "KERBEROS");
    assert.throws(
      () => createKafka({ principal: "detect", clientId: "t", brokers: ["127.0.0.1:1"] }),
      credentialsError(/TXPIPE_KAFKA_SECURITY_PROTOCOL: expected one of/),
    );
  } finally {
    vars.forEach((v, i) =>
      saved[i] === undefined ? Deno.env.delete(v) : Deno.env.set(v, saved[i]!)
    );
    await Deno.remove(dir, { recursive: true });
  }
});

// --- the local CA and the brokers' keystores (keytool, a few seconds) ---

const KEYTOOL = await available("keytool");
const OPENSSL = await available("openssl");

async function available(command: string): Promise<boolean> {
  const out = await new Deno.Command("sh", {
    args: ["-c", `command -v ${command}`],
    stdout: "null",
  }).output();
  return out.success;
}

async function run(command: string, args: string[], stdin?: string): Promise<string> {
  const child = new Deno.Command(command, {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const out = await child.output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(`${command} ${args[0]} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return text;
}

/** Keystores of two brokers under a temporary TXPIPE_HOME; deleted after each test. */
async function withKeystores(
  fn: (home: string, material: TlsMaterial) => Promise<void>,
): Promise<void> {
  const home = await Deno.makeTempDir({ prefix: "txpipe-tls-home-" });
  try {
    await fn(home, await ensureTlsKeystores(["kafka-broker-1", "kafka-broker-2"], { home }));
  } finally {
    await Deno.remove(home, { recursive: true });
  }
}

const mode = async (path: string) => (await Deno.stat(path)).mode! & 0o777;

Deno.test({
  name:
    "local TLS: first use makes a CA and one PKCS12 keystore per broker (0600 in a 0700 folder), signed for 127.0.0.1 and localhost; later uses keep them",
  ignore: !KEYTOOL,
  fn: () =>
    withKeystores(async (home, material) => {
      assert.equal(material.newCa, true);
      assert.deepEqual(material.created, ["kafka-broker-1", "kafka-broker-2"]);
      assert.equal(material.caPem, caPemFile(home));
      assert.equal(await mode(tlsDir(home)), 0o700);
      assert.equal(await mode(keystorePasswordFile(home)), 0o600);
      assert.equal(await mode(join(tlsDir(home), "ca.p12")), 0o600);
      assert.equal(await mode(caPemFile(home)), 0o644);
      const password = (await Deno.readTextFile(keystorePasswordFile(home))).trim();
      assert.match(password, /^[A-Za-z0-9_-]{32}$/);
      const names = [];
      for await (const e of Deno.readDir(tlsDir(home))) names.push(e.name);
      assert.deepEqual(names.sort(), [
        "ca.p12",
        "ca.pem",
        "kafka-broker-1.p12",
        "kafka-broker-2.p12",
        "keystore.password",
      ], "no request or certificate file is left behind");

      const caText = await Deno.readTextFile(caPemFile(home));
      const ca = new X509Certificate(caText);
      assert.equal(ca.ca, true);
      assert.equal(ca.subject, "CN=txpipe local CA");
      for (const name of ["kafka-broker-1", "kafka-broker-2"]) {
        const ks = material.keystores[name];
        assert.deepEqual(ks, { path: keystoreFile(name, home), password });
        assert.equal(await mode(ks.path), 0o600);
        // keytool reads the password from stdin here, never from its arguments.
        const list = await run(
          "keytool",
          ["-list", "-keystore", ks.path, "-storetype", "PKCS12"],
          password + "\n",
        );
        assert.match(list, new RegExp(`^${name}, .*PrivateKeyEntry`, "m"));
        assert.match(list, /^ca, .*trustedCertEntry/m);
        const pem = await run(
          "keytool",
          ["-exportcert", "-rfc", "-alias", name, "-keystore", ks.path, "-storetype", "PKCS12"],
          password + "\n",
        );
        const cert = new X509Certificate(pem.slice(pem.indexOf("-----BEGIN")));
        assert.equal(cert.subject, `CN=${name}`);
        assert.equal(cert.subjectAltName, "IP Address:127.0.0.1, DNS:localhost");
        assert.equal(BROKER_SANS, "ip:127.0.0.1,dns:localhost");
        assert.ok(cert.checkIssued(ca) && cert.verify(ca.publicKey), "signed by the local CA");
        assert.equal(cert.ca, false);
      }

      const again = await ensureTlsKeystores(["kafka-broker-1", "kafka-broker-2", "kafka-single"], {
        home,
      });
      assert.equal(again.newCa, false);
      assert.deepEqual(again.created, ["kafka-single"], "only the missing keystore is made");
      assert.equal(await Deno.readTextFile(caPemFile(home)), caText);

      // A lost CA makes a new one, and new keystores: the old ones are signed by the old CA.
      await Deno.remove(caPemFile(home));
      const renewed = await ensureTlsKeystores(["kafka-broker-1"], { home });
      assert.equal(renewed.newCa, true);
      assert.deepEqual(renewed.created, ["kafka-broker-1"]);
      await assert.rejects(Deno.stat(keystoreFile("kafka-broker-2", home)), Deno.errors.NotFound);
    }),
});

Deno.test({
  name:
    "local TLS: a generated broker keystore, as kafkajs clients and the broker's properties use it",
  ignore: !KEYTOOL,
  sanitizeResources: false,
  fn: (t) =>
    withKeystores(async (home, material) => {
      await t.step({
        name:
          "kafkajs's TLS socket, given the resolved ssl option, accepts the broker's certificate for 127.0.0.1 and localhost and refuses it without the CA",
        ignore: !OPENSSL,
        fn: () => handshakes(home, material),
      });
      await t.step(
        "the broker's node properties point its CLIENT_TLS listener (SASL_SSL, SCRAM) at its keystore",
        () => tlsListenerProperties(material),
      );
    }),
});

/** TLS handshakes with a server holding kafka-broker-1's key and certificate (openssl extracts them). */
async function handshakes(home: string, material: TlsMaterial): Promise<void> {
  const ks = material.keystores["kafka-broker-1"];
  const pass = ["-passin", `file:${keystorePasswordFile(home)}`];
  const key = await run("openssl", ["pkcs12", "-in", ks.path, ...pass, "-nodes", "-nocerts"]);
  const cert = await run("openssl", ["pkcs12", "-in", ks.path, ...pass, "-clcerts", "-nokeys"]);
  const listener = Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert, key });
  const port = (listener.addr as Deno.NetAddr).port;
  const serving = (async () => {
    for await (const conn of listener) {
      await conn.handshake().catch(() => {});
      conn.close();
    }
  })();
  const connection = kafkaConnection("produce", {
    env: env({ TXPIPE_KAFKA_CA_FILE: material.caPem }),
    home,
  });
  const connect = (host: string, ssl: unknown) =>
    new Promise<string>((resolve) => {
      const socket = socketFactory()({
        host,
        port,
        ssl,
        onConnect: () => {
          resolve("connected");
          socket.end();
        },
      });
      socket.on("error", (err: Error) => resolve(err.message));
    });
  try {
    const { ssl } = kafkajsSecurity(connection);
    assert.equal(await connect("127.0.0.1", ssl), "connected");
    assert.equal(await connect("localhost", ssl), "connected");
    assert.match(
      await connect("127.0.0.1", { rejectUnauthorized: true }),
      /unable to verify|self.signed|unknown ?issuer|certificate/i,
    );
  } finally {
    listener.close();
    await serving.catch(() => {});
  }
}

/** kafka-broker-2's server properties with its generated keystore. */
async function tlsListenerProperties(material: TlsMaterial): Promise<void> {
  const topo = topology("cluster");
  const broker = topo.nodes.find((n) => n.name === "kafka-broker-2")!;
  const keystore = material.keystores[broker.name];
  const props = parseJavaProperties(nodeProperties(topo, broker, "/data", "admin-pw", keystore));
  assert.equal(props["listeners"], "CLIENT://127.0.0.1:9093,CLIENT_TLS://127.0.0.1:9096");
  assert.equal(
    props["listener.security.protocol.map"],
    "CONTROLLER:SASL_PLAINTEXT,CLIENT:SASL_PLAINTEXT,CLIENT_TLS:SASL_SSL",
  );
  assert.equal(props["listener.security.protocol.map"], LOCAL_PROTOCOL_MAP);
  assert.equal(props["listener.name.client_tls.sasl.enabled.mechanisms"], "SCRAM-SHA-512");
  assert.equal(props["ssl.keystore.type"], "PKCS12");
  assert.equal(props["ssl.keystore.location"], keystore.path);
  await Deno.stat(props["ssl.keystore.location"]);
  assert.equal(props["ssl.keystore.password"], keystore.password);
  assert.equal(props["ssl.key.password"], keystore.password);
  assert.equal(props["inter.broker.listener.name"], "CLIENT", "replication stays on CLIENT");
  // The Docker stack's map is unchanged: no TLS listener there.
  assert.equal(
    securedProtocolMap(["CONTROLLER", "INTERNAL", "EXTERNAL"]),
    "CONTROLLER:SASL_PLAINTEXT,INTERNAL:SASL_PLAINTEXT,EXTERNAL:SASL_PLAINTEXT",
  );
}
