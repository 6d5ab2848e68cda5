/**
 * The local cluster's TLS material: a CA of its own and one keystore per
 * broker signed by it, for the brokers' `CLIENT_TLS` listener (SASL_SSL on
 * 127.0.0.1, stacks/local/cluster.ts). Generated with the JDK's `keytool`
 * on the first `deno task cluster up`, kept after, under `$TXPIPE_HOME/tls/`
 * (a 0700 folder):
 *
 *   ca.p12             the CA's key and certificate (PKCS12, 0600)
 *   ca.pem             the CA's certificate in PEM (0644): clients trust it
 *                      (`TXPIPE_KAFKA_CA_FILE`)
 *   <node>.p12         a broker's key and certificate chain (PKCS12, 0600),
 *                      the certificate for 127.0.0.1 and localhost
 *   keystore.password  the keystores' random password (0600, never printed)
 *
 * keytool reads the password from its environment (`-storepass:env`), never
 * from its command line. A new CA (its files missing) makes new broker
 * keystores too: the old ones are signed by another CA.
 *
 * @module
 */
import { join } from "node:path";
import { homeDir, randomPassword } from "../../jobs/lib/credentials.ts";

/** The subject alternative names of every broker certificate (keytool's `-ext SAN=` syntax). */
export const BROKER_SANS = "ip:127.0.0.1,dns:localhost";

/** How long the CA and broker certificates are valid, in days (local use only). */
export const VALIDITY_DAYS = 3650;

/** The environment variable keytool reads the keystore password from. */
const PASSWORD_ENV = "TXPIPE_TLS_STOREPASS";

/** The folder of the local cluster's TLS material. */
export function tlsDir(home = homeDir()): string {
  return join(home, "tls");
}

/** The local CA's certificate in PEM, for clients (`TXPIPE_KAFKA_CA_FILE`). */
export function caPemFile(home = homeDir()): string {
  return join(tlsDir(home), "ca.pem");
}

/** The PKCS12 keystore of one broker. */
export function keystoreFile(nodeName: string, home = homeDir()): string {
  return join(tlsDir(home), `${nodeName}.p12`);
}

/** The file holding the keystores' password. */
export function keystorePasswordFile(home = homeDir()): string {
  return join(tlsDir(home), "keystore.password");
}

/** A broker's keystore, as its server properties name it. */
export interface NodeKeystore {
  /** The PKCS12 file. */
  readonly path: string;
  /** Its store and key password. */
  readonly password: string;
}

/** What {@link ensureTlsKeystores} found or made. */
export interface TlsMaterial {
  /** The CA certificate in PEM. */
  readonly caPem: string;
  /** Each broker's keystore, by node name. */
  readonly keystores: Readonly<Record<string, NodeKeystore>>;
  /** Whether the CA was generated now. */
  readonly newCa: boolean;
  /** The brokers whose keystores were generated now. */
  readonly created: readonly string[];
}

/** A failure of keytool or of the TLS folder: printed as one message. */
export class TlsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TlsError";
  }
}

/** Options of {@link ensureTlsKeystores}. */
export interface TlsOptions {
  /** TXPIPE_HOME (default: {@link homeDir}). */
  readonly home?: string;
  /** The keytool command (default: `keytool` on PATH). */
  readonly keytool?: string;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/**
 * Makes sure the CA and a keystore for each of `nodeNames` exist under
 * `$TXPIPE_HOME/tls/` (see the module doc), generating what is missing,
 * and returns where they are with their password.
 */
export async function ensureTlsKeystores(
  nodeNames: readonly string[],
  options: TlsOptions = {},
): Promise<TlsMaterial> {
  const home = options.home ?? homeDir();
  const dir = tlsDir(home);
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  await Deno.chmod(dir, 0o700);
  const password = await ensurePassword(home);
  const keytool = (args: string[]) => runKeytool(options.keytool ?? "keytool", args, password);
  const ca = join(dir, "ca.p12");
  const newCa = !(await exists(ca)) || !(await exists(caPemFile(home)));
  if (newCa) {
    await removeKeystores(dir);
    await generateCa(keytool, dir, home);
  }
  const created: string[] = [];
  // One after the other: each is a few JVM starts, once.
  for (const name of nodeNames) {
    if (await exists(keystoreFile(name, home))) continue;
    await generateBrokerKeystore(keytool, name, dir, home);
    created.push(name);
  }
  const keystores: Record<string, NodeKeystore> = {};
  for (const name of nodeNames) {
    const path = keystoreFile(name, home);
    await Deno.chmod(path, 0o600);
    keystores[name] = { path, password };
  }
  await Deno.chmod(ca, 0o600);
  await Deno.chmod(caPemFile(home), 0o644);
  return { caPem: caPemFile(home), keystores, newCa, created };
}

/** The keystores' password, generated (0600) the first time. */
async function ensurePassword(home: string): Promise<string> {
  const path = keystorePasswordFile(home);
  try {
    const password = (await Deno.readTextFile(path)).trim();
    await Deno.chmod(path, 0o600);
    if (password) return password;
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  const password = randomPassword();
  await Deno.writeTextFile(path, password + "\n", { mode: 0o600 });
  await Deno.chmod(path, 0o600);
  return password;
}

/** Deletes every keystore of the folder (the CA's and the brokers'), for a new CA. */
async function removeKeystores(dir: string): Promise<void> {
  for await (const e of Deno.readDir(dir)) {
    if (e.name.endsWith(".p12") || e.name.endsWith(".pem") || e.name.endsWith(".tmp")) {
      await Deno.remove(join(dir, e.name));
    }
  }
}

type Keytool = (args: string[]) => Promise<void>;

/** The password options of a keytool command, read from its environment. */
function storeArgs(keystore: string): string[] {
  return [
    "-keystore",
    keystore,
    "-storetype",
    "PKCS12",
    "-storepass:env",
    PASSWORD_ENV,
  ];
}

/** keytool's arguments for a new RSA 2048 key pair `alias` named `dname`, valid VALIDITY_DAYS. */
function keyPairArgs(alias: string, dname: string): string[] {
  return [
    "-genkeypair",
    "-alias",
    alias,
    "-keyalg",
    "RSA",
    "-keysize",
    "2048",
    "-validity",
    String(VALIDITY_DAYS),
    "-dname",
    dname,
  ];
}

/** The CA: a self-signed key pair (ca.p12) and its certificate in PEM (ca.pem). */
async function generateCa(keytool: Keytool, dir: string, home: string): Promise<void> {
  const tmp = join(dir, "ca.p12.tmp");
  const pemTmp = join(dir, "ca.pem.tmp");
  await keytool([
    ...keyPairArgs("ca", "CN=txpipe local CA"),
    "-ext",
    "bc:c=ca:true",
    "-ext",
    "ku:c=keyCertSign,cRLSign",
    ...storeArgs(tmp),
    "-keypass:env",
    PASSWORD_ENV,
  ]);
  await keytool(["-exportcert", "-rfc", "-alias", "ca", "-file", pemTmp, ...storeArgs(tmp)]);
  await Deno.chmod(tmp, 0o600);
  await Deno.rename(tmp, join(dir, "ca.p12"));
  await Deno.rename(pemTmp, caPemFile(home));
}

/**
 * A broker's keystore: a key pair, its certificate signed by the CA for
 * {@link BROKER_SANS} (server authentication), the CA's certificate before
 * it so that the chain is complete.
 */
async function generateBrokerKeystore(
  keytool: Keytool,
  name: string,
  dir: string,
  home: string,
): Promise<void> {
  const tmp = join(dir, `${name}.p12.tmp`);
  const csr = join(dir, `${name}.csr.tmp`);
  const crt = join(dir, `${name}.crt.tmp`);
  try {
    await keytool([
      ...keyPairArgs(name, `CN=${name}`),
      "-ext",
      `SAN=${BROKER_SANS}`,
      ...storeArgs(tmp),
      "-keypass:env",
      PASSWORD_ENV,
    ]);
    await keytool(["-certreq", "-alias", name, "-file", csr, ...storeArgs(tmp)]);
    await keytool([
      "-gencert",
      "-alias",
      "ca",
      "-infile",
      csr,
      "-outfile",
      crt,
      "-rfc",
      "-validity",
      String(VALIDITY_DAYS),
      "-ext",
      `SAN=${BROKER_SANS}`,
      "-ext",
      "ku:c=digitalSignature,keyEncipherment",
      "-ext",
      "eku=serverAuth",
      ...storeArgs(join(dir, "ca.p12")),
    ]);
    await keytool([
      "-importcert",
      "-noprompt",
      "-alias",
      "ca",
      "-file",
      caPemFile(home),
      ...storeArgs(tmp),
    ]);
    await keytool(["-importcert", "-noprompt", "-alias", name, "-file", crt, ...storeArgs(tmp)]);
    await Deno.chmod(tmp, 0o600);
    await Deno.rename(tmp, keystoreFile(name, home));
  } finally {
    for (const f of [tmp, csr, crt]) await Deno.remove(f).catch(() => {});
  }
}

/** Runs keytool with the password in its environment; throws a {@link TlsError} with its output. */
async function runKeytool(command: string, args: string[], password: string): Promise<void> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(command, {
      args,
      env: { [PASSWORD_ENV]: password },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new TlsError(
        `${command} not found on PATH. The local cluster's TLS listener needs the JDK's keytool ` +
          "(e.g. `apt-get install openjdk-17-jre-headless`, which has it) to make its keystores.",
      );
    }
    throw err;
  }
  if (!out.success) {
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    throw new TlsError(`keytool ${args[0]} failed: ${text.trim().slice(-1000)}`);
  }
}
