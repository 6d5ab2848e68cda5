/**
 * Kafka credentials: where each principal's SCRAM password lives and how a
 * process finds the one it connects with.
 *
 * Locally, `deno task cluster up` generates one random password per
 * principal (stacks/security.ts) the first time, under
 * `$TXPIPE_HOME/secrets/` (a 0700 folder of 0600 files, never printed or
 * logged), and seeds them into the cluster's storage as it formats it. A
 * process connecting as principal P uses, first found:
 * 1. `TXPIPE_KAFKA_USER` with `TXPIPE_KAFKA_PASSWORD` or
 *    `TXPIPE_KAFKA_PASSWORD_FILE` (how the Docker stack and a managed
 *    cluster's users pass them);
 * 2. P's local secret file, when the local cluster generated one;
 * 3. no credentials: a cluster without authentication.
 *
 * `TXPIPE_KAFKA_CONFIG` may name a Java-style client properties file (what
 * a managed cluster hands out) whose `sasl.jaas.config` comes between 1 and
 * 2; it, `TXPIPE_KAFKA_SECURITY_PROTOCOL`, `TXPIPE_KAFKA_SASL_MECHANISM` and
 * `TXPIPE_KAFKA_CA_FILE` also choose TLS and the SASL mechanism, the
 * variables before the file ({@link kafkaConnection}).
 *
 * @module
 */
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import {
  KAFKA_USERS,
  type PrincipalName,
  PRINCIPALS,
  SCRAM_MECHANISM,
} from "../../stacks/security.ts";

/** The repository root. */
const ROOT = fileURLToPath(new URL("../../", import.meta.url));

/** Where jars, data, logs and secrets live; TXPIPE_HOME overrides the default `.cache/`. */
export function homeDir(): string {
  return Deno.env.get("TXPIPE_HOME") ?? join(ROOT, ".cache");
}

/** The folder of the local cluster's generated secrets. */
export function secretsDir(home = homeDir()): string {
  return join(home, "secrets");
}

/** The file holding a principal's Kafka password (local cluster). */
export function passwordFile(principal: PrincipalName, home = homeDir()): string {
  return join(secretsDir(home), `kafka-${KAFKA_USERS[principal]}.password`);
}

/** SASL/SCRAM credentials of one Kafka user. */
export interface KafkaAuth {
  readonly username: string;
  readonly password: string;
  /** Where they came from, for messages (never the password). */
  readonly source: string;
}

/** A setting read from the environment (a seam for tests). */
export type EnvGet = (name: string) => string | undefined;

const envGet: EnvGet = (name) => Deno.env.get(name);

/** Thrown for credentials given but unusable: printed as one message. */
export class CredentialsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CredentialsError";
  }
}

function readSecret(path: string, readFile: ReadFile = Deno.readTextFileSync): string | undefined {
  try {
    return readFile(path).trim();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw new CredentialsError(`cannot read ${path}: ${(err as Error).message}`);
  }
}

/** How a client talks to the brokers: Kafka's `security.protocol` values. */
export type SecurityProtocol = "PLAINTEXT" | "SASL_PLAINTEXT" | "SASL_SSL" | "SSL";

/** Every {@link SecurityProtocol}, as messages list them. */
export const SECURITY_PROTOCOLS: readonly SecurityProtocol[] = [
  "PLAINTEXT",
  "SASL_PLAINTEXT",
  "SASL_SSL",
  "SSL",
];

/** The SASL mechanisms txpipe's clients speak, by kafkajs's names. */
export type SaslMechanism = "scram-sha-512" | "scram-sha-256" | "plain";

/** Every {@link SaslMechanism}, the default first. */
export const SASL_MECHANISMS: readonly SaslMechanism[] = [
  "scram-sha-512",
  "scram-sha-256",
  "plain",
];

/** Java's (and Kafka's) name of each mechanism. */
const JAVA_MECHANISMS: Readonly<Record<SaslMechanism, string>> = {
  "scram-sha-512": SCRAM_MECHANISM,
  "scram-sha-256": "SCRAM-SHA-256",
  "plain": "PLAIN",
};

/**
 * How a process connects to Kafka, resolved by {@link kafkaConnection}:
 * the security protocol, the SASL credentials and mechanism, the CA.
 */
export interface KafkaConnection {
  readonly protocol: SecurityProtocol;
  /** Whether the connection is TLS (`SASL_SSL` or `SSL`). */
  readonly tls: boolean;
  /** The SASL mechanism (used only with credentials). */
  readonly mechanism: SaslMechanism;
  /** The credentials: set exactly when the protocol is `SASL_PLAINTEXT` or `SASL_SSL`. */
  readonly auth?: KafkaAuth;
  /** The PEM CA bundle's path; none: the system's trusted CAs (TLS only). */
  readonly caFile?: string;
  /** The CA bundle's text, read from `caFile`. */
  readonly caPem?: string;
}

/** Reads a text file, throwing Deno.errors.NotFound when absent (a seam for tests). */
export type ReadFile = (path: string) => string;

/** Where {@link kafkaConnection} looks; every field has a default. */
export interface ConnectionSources {
  /** The environment (default: the process's). */
  readonly env?: EnvGet;
  /** How files are read: TXPIPE_KAFKA_CONFIG, the CA bundle, a password file. */
  readonly readFile?: ReadFile;
  /** TXPIPE_HOME, for the local cluster's password files. */
  readonly home?: string;
  /**
   * These credentials instead of the principal's (`null`: none); they then
   * decide alone whether the connection uses SASL, the protocol's TLS half
   * stays as configured.
   */
  readonly auth?: KafkaAuth | null;
}

/** The settings a Java-style client properties file (TXPIPE_KAFKA_CONFIG) gives. */
export interface ClientConfigFile {
  readonly path: string;
  readonly protocol?: string;
  readonly mechanism?: string;
  /** From `sasl.jaas.config`. */
  readonly username?: string;
  readonly password?: string;
  /** `ssl.ca.location`, resolved against the file's folder. */
  readonly caLocation?: string;
}

/** One setting and where it came from, for messages. */
interface Given {
  readonly value: string;
  readonly where: string;
}

/**
 * How `principal` connects to Kafka. Each setting comes from, first found,
 * its TXPIPE_* variable, then the client properties file named by
 * TXPIPE_KAFKA_CONFIG, then the default:
 * - `TXPIPE_KAFKA_SECURITY_PROTOCOL` / `security.protocol`: PLAINTEXT,
 *   SASL_PLAINTEXT, SASL_SSL or SSL. Default: TLS when a CA file is given,
 *   SASL when credentials are found (SASL_PLAINTEXT with credentials,
 *   PLAINTEXT without, SASL_SSL / SSL with a CA file);
 * - `TXPIPE_KAFKA_SASL_MECHANISM` / `sasl.mechanism`: scram-sha-512
 *   (default), scram-sha-256 or plain, in either case;
 * - `TXPIPE_KAFKA_CA_FILE` / `ssl.ca.location`: a PEM CA bundle the brokers'
 *   certificates must chain to (default: the system's trusted CAs);
 * - the credentials: `TXPIPE_KAFKA_USER` with `TXPIPE_KAFKA_PASSWORD` or
 *   `TXPIPE_KAFKA_PASSWORD_FILE`, then `sasl.jaas.config`'s username and
 *   password, then the principal's local password file.
 * Throws a {@link CredentialsError} naming the variable (or file key) for a
 * value it cannot use, a SASL protocol without credentials, a CA file with a
 * plaintext protocol, or a CA file that holds no PEM certificate.
 */
export function kafkaConnection(
  principal: PrincipalName,
  sources: ConnectionSources = {},
): KafkaConnection {
  const env = sources.env ?? envGet;
  const readFile = sources.readFile ?? Deno.readTextFileSync;
  const file = clientConfigFile(env, readFile);
  const protocolGiven = given(env, "TXPIPE_KAFKA_SECURITY_PROTOCOL", file, "protocol");
  const explicit = protocolGiven ? parseProtocol(protocolGiven) : undefined;
  const mechanismGiven = given(env, "TXPIPE_KAFKA_SASL_MECHANISM", file, "mechanism");
  const mechanism = mechanismGiven ? parseMechanism(mechanismGiven) : "scram-sha-512";
  const caGiven = given(env, "TXPIPE_KAFKA_CA_FILE", file, "caLocation");
  const auth = sources.auth !== undefined
    ? sources.auth ?? undefined
    : findAuth(principal, env, readFile, file, sources.home ?? homeDir());

  const tls = explicit ? explicit.endsWith("SSL") : caGiven !== undefined;
  const sasl = explicit && sources.auth === undefined
    ? explicit.startsWith("SASL_")
    : auth !== undefined;
  if (sasl && !auth) {
    throw new CredentialsError(
      `${protocolGiven!.where} is ${explicit} but no credentials were found: set ` +
        "TXPIPE_KAFKA_USER with TXPIPE_KAFKA_PASSWORD or TXPIPE_KAFKA_PASSWORD_FILE, or " +
        "sasl.jaas.config in the file TXPIPE_KAFKA_CONFIG names",
    );
  }
  if (caGiven && !tls) {
    throw new CredentialsError(
      `${caGiven.where} is ${caGiven.value} but ${protocolGiven!.where} is ${explicit}: ` +
        "a CA file is for SASL_SSL or SSL",
    );
  }
  const protocol: SecurityProtocol = tls
    ? (sasl ? "SASL_SSL" : "SSL")
    : (sasl ? "SASL_PLAINTEXT" : "PLAINTEXT");
  return {
    protocol,
    tls,
    mechanism,
    ...(sasl ? { auth } : {}),
    ...(caGiven ? { caFile: caGiven.value, caPem: readCa(caGiven, readFile) } : {}),
  };
}

/** The setting `name` of the environment, else `key` of the file, with where it came from. */
function given(
  env: EnvGet,
  name: string,
  file: ClientConfigFile | undefined,
  key: "protocol" | "mechanism" | "caLocation",
): Given | undefined {
  const value = env(name);
  if (value) return { value, where: name };
  const fromFile = file?.[key];
  if (fromFile) return { value: fromFile, where: `${FILE_KEYS[key]} in ${file!.path}` };
  return undefined;
}

/** The properties file's key of each setting. */
const FILE_KEYS = {
  protocol: "security.protocol",
  mechanism: "sasl.mechanism",
  caLocation: "ssl.ca.location",
} as const;

function parseProtocol(g: Given): SecurityProtocol {
  const value = g.value.trim().toUpperCase() as SecurityProtocol;
  if (SECURITY_PROTOCOLS.includes(value)) return value;
  throw new CredentialsError(
    `${g.where}: expected one of ${SECURITY_PROTOCOLS.join(", ")}, got "${g.value}"`,
  );
}

function parseMechanism(g: Given): SaslMechanism {
  const value = g.value.trim().toLowerCase() as SaslMechanism;
  if (SASL_MECHANISMS.includes(value)) return value;
  throw new CredentialsError(
    `${g.where}: expected one of ${
      SASL_MECHANISMS.map((m) => JAVA_MECHANISMS[m]).join(", ")
    } (in either case), got "${g.value}"`,
  );
}

/** The CA bundle's text; it must hold at least one PEM certificate. */
function readCa(g: Given, readFile: ReadFile): string {
  let pem: string;
  try {
    pem = readFile(g.value);
  } catch (err) {
    throw new CredentialsError(`${g.where} is ${g.value}, which cannot be read: ${errText(err)}`);
  }
  if (!pem.includes("-----BEGIN CERTIFICATE-----")) {
    throw new CredentialsError(
      `${g.where} is ${g.value}, which holds no PEM certificate ` +
        '("-----BEGIN CERTIFICATE-----"): give the CA bundle in PEM',
    );
  }
  return pem;
}

function errText(err: unknown): string {
  return err instanceof Deno.errors.NotFound ? "no such file" : (err as Error)?.message ?? `${err}`;
}

/** The credentials, first found: TXPIPE_KAFKA_USER, the file's JAAS line, the local secret. */
function findAuth(
  principal: PrincipalName,
  env: EnvGet,
  readFile: ReadFile,
  file: ClientConfigFile | undefined,
  home: string,
): KafkaAuth | undefined {
  const user = env("TXPIPE_KAFKA_USER");
  if (user) {
    const path = env("TXPIPE_KAFKA_PASSWORD_FILE");
    const password = env("TXPIPE_KAFKA_PASSWORD") ??
      (path ? readSecret(path, readFile) : undefined);
    if (!password) {
      throw new CredentialsError(
        `TXPIPE_KAFKA_USER is ${user} but no password is given: set TXPIPE_KAFKA_PASSWORD ` +
          "or TXPIPE_KAFKA_PASSWORD_FILE (a file holding only the password)",
      );
    }
    return { username: user, password, source: "TXPIPE_KAFKA_USER" };
  }
  if (file?.username !== undefined && file.password !== undefined) {
    return {
      username: file.username,
      password: file.password,
      source: `sasl.jaas.config in ${file.path}`,
    };
  }
  const path = passwordFile(principal, home);
  const password = readSecret(path, readFile);
  if (password === undefined) return undefined;
  return { username: KAFKA_USERS[principal], password, source: path };
}

/**
 * The credentials `principal` connects with (see {@link kafkaConnection}
 * for the order), or undefined for a connection without SASL.
 */
export function kafkaAuth(
  principal: PrincipalName,
  env: EnvGet = envGet,
  home = homeDir(),
): KafkaAuth | undefined {
  return kafkaConnection(principal, { env, home }).auth;
}

/** The file TXPIPE_KAFKA_CONFIG names, parsed; undefined when it is not set. */
function clientConfigFile(env: EnvGet, readFile: ReadFile): ClientConfigFile | undefined {
  const path = env("TXPIPE_KAFKA_CONFIG");
  if (!path) return undefined;
  let text: string;
  try {
    text = readFile(path);
  } catch (err) {
    throw new CredentialsError(
      `TXPIPE_KAFKA_CONFIG is ${path}, which cannot be read: ${errText(err)}`,
    );
  }
  return parseClientConfig(text, path);
}

/**
 * The connection settings of a Java-style client properties file:
 * `security.protocol`, `sasl.mechanism`, `sasl.jaas.config` (its `username`
 * and `password`) and `ssl.ca.location` (a PEM CA bundle, as librdkafka
 * names it; relative to the file's folder). Other keys are ignored, but a
 * Java truststore or keystore (`ssl.truststore.location`,
 * `ssl.keystore.location`) is a {@link CredentialsError}: Deno's TLS takes
 * PEM only, and client certificates are not supported.
 */
export function parseClientConfig(text: string, path: string): ClientConfigFile {
  const props = parseJavaProperties(text);
  if (props["ssl.truststore.location"]) {
    throw new CredentialsError(
      `ssl.truststore.location in ${path}: txpipe's Deno clients cannot read a Java ` +
        "truststore; give the CA certificates as a PEM file with ssl.ca.location (as " +
        "librdkafka names it) or TXPIPE_KAFKA_CA_FILE",
    );
  }
  if (props["ssl.keystore.location"]) {
    throw new CredentialsError(
      `ssl.keystore.location in ${path}: client certificates (mutual TLS) are not supported; ` +
        "authenticate with SASL (sasl.jaas.config or TXPIPE_KAFKA_USER)",
    );
  }
  const jaas = props["sasl.jaas.config"];
  const options = jaas ? parseJaasOptions(jaas, path) : {};
  const ca = props["ssl.ca.location"];
  return {
    path,
    protocol: props["security.protocol"] || undefined,
    mechanism: props["sasl.mechanism"] || undefined,
    username: options.username,
    password: options.password,
    caLocation: ca ? resolve(dirname(path), ca) : undefined,
  };
}

/**
 * The `key=value` options of a JAAS line (`Module required username="u"
 * password="p";`); a quoted value takes `\` escapes. Throws when it lacks a
 * username or a password.
 */
export function parseJaasOptions(line: string, path = "the client config"): Record<string, string> {
  const bad = (why: string) =>
    new CredentialsError(
      `sasl.jaas.config in ${path} ${why}: expected e.g. ` +
        '`org.apache.kafka.common.security.scram.ScramLoginModule required username="u" ' +
        'password="p";`',
    );
  const head = /^\s*[\w.$]+\s+(?:required|requisite|sufficient|optional)(?=[\s;]|$)/.exec(line);
  if (!head) throw bad("is not a JAAS line");
  const option = /^\s*([\w.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s";]+))/s;
  const options: Record<string, string> = {};
  let rest = line.slice(head[0].length);
  for (let m = option.exec(rest); m; m = option.exec(rest)) {
    options[m[1]] = m[2] !== undefined ? m[2].replace(/\\(.)/gs, "$1") : m[3];
    rest = rest.slice(m[0].length);
  }
  // Never quoted back: what is left may hold a password.
  if (!/^\s*;?\s*$/.test(rest)) {
    throw bad("has an option it cannot read (a value with spaces or quotes must be quoted)");
  }
  if (options.username === undefined || options.password === undefined) {
    throw bad("has no username or no password");
  }
  return options;
}

/**
 * The key/value pairs of a Java properties file, as java.util.Properties
 * reads them: `#`/`!` comments, `=`, `:` or whitespace between key and
 * value, `\` line continuations and escapes (`\t`, `\n`, `\uXXXX`, ...).
 */
export function parseJavaProperties(text: string): Record<string, string> {
  const props: Record<string, string> = {};
  for (const line of logicalLines(text)) {
    let i = 0;
    let key = "";
    while (i < line.length && !"=: \t\f".includes(line[i])) {
      if (line[i] === "\\" && i + 1 < line.length) {
        key += line.slice(i, i + 2);
        i += 2;
      } else key += line[i++];
    }
    while (i < line.length && " \t\f".includes(line[i])) i++;
    if (i < line.length && "=:".includes(line[i])) i++;
    while (i < line.length && " \t\f".includes(line[i])) i++;
    props[unescapeProperty(key)] = unescapeProperty(line.slice(i));
  }
  return props;
}

/** The logical lines of a properties file: continuations joined, comments and blanks dropped. */
function logicalLines(text: string): string[] {
  const lines: string[] = [];
  let pending: string | undefined;
  for (const raw of text.split(/\r\n|\r|\n/)) {
    const natural = raw.replace(/^[ \t\f]+/, "");
    if (pending === undefined && (natural === "" || natural[0] === "#" || natural[0] === "!")) {
      continue;
    }
    const trailing = /\\*$/.exec(natural)![0].length;
    const joined = (pending ?? "") + (trailing % 2 === 1 ? natural.slice(0, -1) : natural);
    if (trailing % 2 === 1) pending = joined;
    else {
      lines.push(joined);
      pending = undefined;
    }
  }
  if (pending !== undefined) lines.push(pending);
  return lines;
}

function unescapeProperty(text: string): string {
  return text.replace(/\\(u[0-9a-fA-F]{4}|.)/gs, (_, e: string) => {
    if (e.length === 5) return String.fromCharCode(parseInt(e.slice(1), 16));
    return ({ t: "\t", n: "\n", r: "\r", f: "\f" } as Record<string, string>)[e] ?? e;
  });
}

/** kafkajs's `ssl` and `sasl` options of a connection. */
export interface KafkajsSecurity {
  readonly ssl?: { readonly rejectUnauthorized: true; readonly ca?: string[] };
  readonly sasl?: KafkajsSasl;
}

/**
 * kafkajs's options for a connection: `ssl` (verifying the brokers'
 * certificates, against the CA bundle when one is given) with TLS, `sasl`
 * with credentials.
 */
export function kafkajsSecurity(c: KafkaConnection): KafkajsSecurity {
  return {
    ...(c.tls
      ? { ssl: { rejectUnauthorized: true as const, ...(c.caPem ? { ca: [c.caPem] } : {}) } }
      : {}),
    ...(c.auth ? { sasl: kafkajsSasl(c.auth, c.mechanism) } : {}),
  };
}

const securityOfClient = new WeakMap<object, KafkajsSecurity>();

/**
 * Remembers the `ssl` and `sasl` options a kafkajs client (an admin, say)
 * was made with, for code that opens connections of its own beside it
 * (jobs/lib/leaders.ts).
 */
export function rememberSecurity(client: object, security: KafkajsSecurity): void {
  securityOfClient.set(client, security);
}

/** The options {@link rememberSecurity} recorded for `client`; none: plaintext, no SASL. */
export function securityOf(client: object): KafkajsSecurity {
  return securityOfClient.get(client) ?? {};
}

/** kafkajs's `sasl` option: one of its username and password mechanisms. */
export type KafkajsSasl = {
  [M in SaslMechanism]: { mechanism: M; username: string; password: string };
}[SaslMechanism];

/** kafkajs's `sasl` option for these credentials. */
export function kafkajsSasl(
  auth: KafkaAuth,
  mechanism: SaslMechanism = "scram-sha-512",
): KafkajsSasl {
  return { mechanism, username: auth.username, password: auth.password };
}

/**
 * The Java client properties (Kafka's tools, Kafka Streams, Spark) that
 * connect with these credentials and, with `connection`, its TLS and SASL
 * mechanism: a CA bundle as a PEM truststore (`ssl.truststore.type=PEM`).
 */
export function javaClientProperties(
  auth: KafkaAuth | undefined,
  connection?: Pick<KafkaConnection, "tls" | "mechanism" | "caFile">,
): Record<string, string> {
  const tls = connection?.tls ?? false;
  if (!auth && !tls) return {};
  const mechanism = connection?.mechanism ?? "scram-sha-512";
  return {
    "security.protocol": tls ? (auth ? "SASL_SSL" : "SSL") : "SASL_PLAINTEXT",
    ...(auth
      ? {
        "sasl.mechanism": JAVA_MECHANISMS[mechanism],
        "sasl.jaas.config": mechanism === "plain"
          ? plainJaas(auth.username, auth.password)
          : scramJaas(auth.username, auth.password),
      }
      : {}),
    ...(tls && connection?.caFile
      ? { "ssl.truststore.type": "PEM", "ssl.truststore.location": connection.caFile }
      : {}),
  };
}

/** A JAAS line for PLAIN with these credentials (a client's). */
export function plainJaas(username: string, password: string): string {
  return `org.apache.kafka.common.security.plain.PlainLoginModule required ` +
    `username="${jaasQuoted(username)}" password="${jaasQuoted(password)}";`;
}

/** A JAAS line for SCRAM with these credentials. */
export function scramJaas(username: string, password: string): string {
  return `org.apache.kafka.common.security.scram.ScramLoginModule required ` +
    `username="${jaasQuoted(username)}" password="${jaasQuoted(password)}";`;
}

/** A value inside a JAAS line's double quotes: `\` and `"` escaped with a backslash. */
export function jaasQuoted(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll('"', '\\"');
}

/** A new random password: 32 URL-safe characters (192 bits). */
export function randomPassword(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(24));
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_");
}

/**
 * Generates the password of every principal that has none yet under
 * `home`'s secrets folder (0700, files 0600, written without ever being
 * printed). Returns every principal's password, and which were new.
 */
export async function ensureSecrets(
  home = homeDir(),
): Promise<{ passwords: Record<PrincipalName, string>; created: PrincipalName[] }> {
  const dir = secretsDir(home);
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  await Deno.chmod(dir, 0o700);
  const passwords = {} as Record<PrincipalName, string>;
  const created: PrincipalName[] = [];
  for (const p of PRINCIPALS) {
    const path = passwordFile(p, home);
    let password = readSecret(path);
    if (password === undefined) {
      password = randomPassword();
      await Deno.writeTextFile(path, password + "\n", { mode: 0o600, createNew: true });
      created.push(p);
    }
    await Deno.chmod(path, 0o600);
    passwords[p] = password;
  }
  return { passwords, created };
}
