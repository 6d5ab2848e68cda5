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
 * @module
 */
import { join } from "node:path";
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

function readSecret(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(path).trim();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw new CredentialsError(`cannot read ${path}: ${(err as Error).message}`);
  }
}

/**
 * The credentials `principal` connects with (see the module doc for the
 * order), or undefined for a cluster without authentication.
 */
export function kafkaAuth(
  principal: PrincipalName,
  env: EnvGet = envGet,
  home = homeDir(),
): KafkaAuth | undefined {
  const user = env("TXPIPE_KAFKA_USER");
  if (user) {
    const file = env("TXPIPE_KAFKA_PASSWORD_FILE");
    const password = env("TXPIPE_KAFKA_PASSWORD") ?? (file ? readSecret(file) : undefined);
    if (!password) {
      throw new CredentialsError(
        `TXPIPE_KAFKA_USER is ${user} but no password is given: set TXPIPE_KAFKA_PASSWORD ` +
          "or TXPIPE_KAFKA_PASSWORD_FILE (a file holding only the password)",
      );
    }
    return { username: user, password, source: "TXPIPE_KAFKA_USER" };
  }
  const path = passwordFile(principal, home);
  const password = readSecret(path);
  if (password === undefined) return undefined;
  return { username: KAFKA_USERS[principal], password, source: path };
}

const authOfClient = new WeakMap<object, KafkaAuth>();

/**
 * Remembers the credentials a kafkajs client (an admin, say) was made with,
 * for code that opens connections of its own beside it (jobs/lib/leaders.ts).
 */
export function rememberAuth(client: object, auth: KafkaAuth | null | undefined): void {
  if (auth) authOfClient.set(client, auth);
}

/** The credentials {@link rememberAuth} recorded for `client`, if any. */
export function authOf(client: object): KafkaAuth | undefined {
  return authOfClient.get(client);
}

/** kafkajs's `sasl` option for these credentials. */
export function kafkajsSasl(auth: KafkaAuth) {
  return {
    mechanism: "scram-sha-512" as const,
    username: auth.username,
    password: auth.password,
  };
}

/**
 * The Java client properties (Kafka's tools, Kafka Streams, Spark) that
 * connect with these credentials.
 */
export function javaClientProperties(auth: KafkaAuth | undefined): Record<string, string> {
  if (!auth) return {};
  return {
    "security.protocol": "SASL_PLAINTEXT",
    "sasl.mechanism": SCRAM_MECHANISM,
    "sasl.jaas.config": scramJaas(auth.username, auth.password),
  };
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
