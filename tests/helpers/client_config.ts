/**
 * The admin's credentials for the benchmark's Java clients (Kafka's tools,
 * the Kafka Streams peer, Spark's Kafka connector): a temporary Java
 * properties file of {@link javaClientProperties}, created mode 0600 before
 * anything is written to it, handed to a client by its path (never the
 * password on a command line), and deleted when the client is done.
 *
 * On a cluster without authentication or TLS (`kafkaConnection("admin")`
 * finds neither) nothing is written and the clients run exactly as before.
 *
 * @module
 */
import {
  javaClientProperties,
  type KafkaAuth,
  kafkaConnection,
} from "../../jobs/lib/credentials.ts";

/** A written client config, or none (no credentials). */
export interface ClientConfig {
  /** The properties file, or undefined when there are no credentials (nothing written). */
  readonly path: string | undefined;
  /** `[flag, path]` with a file, else `[]`: the arguments that hand it to a client. */
  args(flag: string): string[];
  /** Deletes the file; nothing without one, and nothing the second time. */
  remove(): Promise<void>;
}

/** Where the credentials come from, and where the file goes (seams for tests). */
export interface ClientConfigOptions {
  /** Finds the credentials; the admin's (`kafkaConnection("admin")`) unless given. */
  auth?: () => KafkaAuth | undefined;
  /** The folder of the file; the system's temporary folder unless given. */
  dir?: string;
}

/** Escapes one key or value of a Java properties file: ASCII only, nothing read as syntax. */
function escapeProperty(text: string, isKey: boolean): string {
  let out = "";
  for (const [i, ch] of [...text].entries()) {
    const code = ch.codePointAt(0)!;
    if (ch === "\\") out += "\\\\";
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (ch === "\f") out += "\\f";
    else if ((isKey || i === 0) && " =:#!".includes(ch)) out += `\\${ch}`;
    else if (code < 0x20 || code > 0x7e) {
      // Properties.load(InputStream) reads ISO-8859-1: every other character as \uXXXX.
      for (const unit of ch.split("")) {
        out += `\\u${unit.charCodeAt(0).toString(16).padStart(4, "0")}`;
      }
    } else out += ch;
  }
  return out;
}

/** The text of a Java properties file holding `props` (java.util.Properties#load reads it back). */
export function propertiesText(props: Record<string, string>): string {
  const lines = Object.entries(props).map(([k, v]) =>
    `${escapeProperty(k, true)}=${escapeProperty(v, false)}`
  );
  return lines.length === 0 ? "" : lines.join("\n") + "\n";
}

/**
 * Writes the Java client properties of the admin's credentials to a new
 * temporary file of mode 0600 (set before the content is written), or writes
 * nothing when there are none. The caller removes it when its client is done.
 */
export async function writeClientConfig(o: ClientConfigOptions = {}): Promise<ClientConfig> {
  // The admin's connection (TLS, mechanism, CA: see kafkaConnection), with the given credentials.
  const connection = kafkaConnection("admin", o.auth ? { auth: o.auth() ?? null } : {});
  const props = javaClientProperties(connection.auth, connection);
  if (Object.keys(props).length === 0) {
    return { path: undefined, args: () => [], remove: () => Promise.resolve() };
  }
  const path = await Deno.makeTempFile({
    dir: o.dir,
    prefix: "txpipe-client-",
    suffix: ".properties",
  });
  let removed = false;
  const remove = async () => {
    if (removed) return;
    removed = true;
    await Deno.remove(path).catch((err) => {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    });
  };
  try {
    await Deno.chmod(path, 0o600);
    await Deno.writeTextFile(path, propertiesText(props));
  } catch (err) {
    await remove().catch(() => {});
    throw err;
  }
  return { path, args: (flag) => [flag, path], remove };
}

/** Runs `fn` with the admin's client config written (see {@link writeClientConfig}), then deletes it. */
export async function withClientConfig<T>(
  fn: (config: ClientConfig) => Promise<T>,
  o: ClientConfigOptions = {},
): Promise<T> {
  const config = await writeClientConfig(o);
  try {
    return await fn(config);
  } finally {
    await config.remove();
  }
}
