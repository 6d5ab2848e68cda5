/**
 * The local cluster runner: the topology spec's Kafka nodes as JVM processes
 * on 127.0.0.1, from Apache Kafka jars resolved from Maven Central.
 *
 *   deno task cluster up | down | status | logs NODE | stop NODE | reset | jars
 *
 * Each node runs `kafka.Kafka` with the Prometheus JMX exporter agent on its
 * own port. Brokers take clients on two listeners: CLIENT (SASL_PLAINTEXT)
 * and CLIENT_TLS (SASL_SSL, keystores from the local CA made on first `up`:
 * stacks/local/tls.ts). Storage is formatted once; `down` then `up` keeps every record.
 * `up` returns when every topic of the spec exists and every partition has a
 * leader and a full ISR. The commands that change the cluster take
 * TXPIPE_HOME's locks first (stacks/local/lock.ts), so two never race and
 * `down`/`reset` refuse while `deno task start` or `deno task test` runs.
 *
 * @module
 */
import type { Admin } from "kafkajs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  bootstrapServers,
  brokerDefaults,
  brokerNodes,
  type ClusterMode,
  JMX_EXPORTER_VERSION,
  KAFKA_VERSION,
  type KafkaNode,
  quorumVoters,
  tlsBootstrapServers,
  TOPICS,
  type Topology,
  topology,
} from "../topology.ts";
import { defineCommand, parseCommandLine, type Parsed } from "../../jobs/lib/cli.ts";
import { createKafka, ensureTopics, unhealthyPartitions } from "../../jobs/lib/kafka.ts";
import {
  clashMessage,
  clashReport,
  type PortClash,
  portClashes,
  type WantedPort,
} from "../../jobs/lib/ports.ts";
import { acquireLocks, LockedError, type LockName } from "./lock.ts";
import { ensureSecrets, homeDir, secretsDir } from "../../jobs/lib/credentials.ts";
import {
  adminClientProperties,
  kafkaSecurityProperties,
  securedProtocolMap,
} from "../kafka_security.ts";
import { caPemFile, ensureTlsKeystores, type NodeKeystore, tlsDir, TlsError } from "./tls.ts";
import { applyAcls } from "../../jobs/lib/acl.ts";
import {
  type AclRule,
  describeAcl,
  jobAcls,
  KAFKA_USERS,
  type PrincipalName,
  PRINCIPALS,
  SCRAM_MECHANISM,
  streamAcls,
} from "../security.ts";

/** The repository root. */
export const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const POM = join(ROOT, "stacks/local/pom.xml");
const JMX_RULES = join(ROOT, "stacks/config/kafka_jmx_exporter.yml");

export { homeDir };

function libDir(): string {
  return join(homeDir(), "kafka", "lib");
}

/** The folder of one node: config, data (`data/`), logs (`logs/`), pid file. */
export function nodeDir(mode: ClusterMode, node: KafkaNode): string {
  return join(homeDir(), "kafka", mode, node.name);
}

/** A runner error: printed as a message, never as a stack trace. */
export class ClusterError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ClusterError";
  }
}

type Say = (line: string) => void;

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

async function which(cmd: string): Promise<boolean> {
  const out = await new Deno.Command("sh", { args: ["-c", `command -v ${cmd}`], stdout: "null" })
    .output();
  return out.success;
}

/** Checks that Java 17+ is installed; throws a {@link ClusterError} saying how to get it. */
export async function checkJava(): Promise<void> {
  if (!(await which("java"))) {
    throw new ClusterError(
      "java not found on PATH. Kafka needs Java 17 or later: install it " +
        "(e.g. `apt-get install openjdk-17-jre-headless`) and run again.",
    );
  }
  const out = await new Deno.Command("java", { args: ["-version"], stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stderr);
  const m = /version "(\d+)/.exec(text);
  if (m && Number(m[1]) < 17) {
    throw new ClusterError(`Kafka ${KAFKA_VERSION} needs Java 17 or later; found ${m[0]}`);
  }
}

/** The SHA-256 of the committed pom, hex: the cache holds the jars of exactly this pom. */
async function pomDigest(): Promise<string> {
  const bytes = await crypto.subtle.digest("SHA-256", await Deno.readFile(POM));
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Resolves Kafka and the JMX exporter agent from Maven Central into the
 * cache with the committed pom, unless the cache already holds that pom's
 * jars. A changed pom (another Kafka version, say) empties the folder first:
 * two versions' jars on one classpath would mix.
 */
export async function ensureJars(say: Say): Promise<void> {
  const stamp = join(libDir(), "pom.sha256");
  const digest = await pomDigest();
  const cached = await Deno.readTextFile(stamp).catch(() => "");
  if (cached.trim() === digest) return;
  if (!(await which("mvn"))) {
    throw new ClusterError(
      "mvn not found on PATH. The local cluster resolves Apache Kafka from Maven Central " +
        "with Maven: install it (e.g. `apt-get install maven`) and run again.",
    );
  }
  say(`resolving Apache Kafka ${KAFKA_VERSION} from Maven Central (once) into ${libDir()} ...`);
  await Deno.remove(libDir(), { recursive: true }).catch(() => {});
  const out = await new Deno.Command("mvn", {
    args: [
      "-q",
      "-B",
      "-f",
      POM,
      "dependency:copy-dependencies",
      `-DoutputDirectory=${libDir()}`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const marker = join(libDir(), `kafka_2.13-${KAFKA_VERSION}.jar`);
  const agent = join(libDir(), `jmx_prometheus_javaagent-${JMX_EXPORTER_VERSION}.jar`);
  if (!out.success || !(await exists(marker)) || !(await exists(agent))) {
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    throw new ClusterError(`mvn could not resolve the Kafka jars:\n${text.slice(-2000)}`);
  }
  await Deno.writeTextFile(stamp, digest + "\n");
}

/** The Kafka jars of the cache as a Java classpath (the JMX agent jar left out). */
export async function kafkaClasspath(): Promise<string> {
  const jars: string[] = [];
  for await (const e of Deno.readDir(libDir())) {
    if (e.name.endsWith(".jar") && !e.name.startsWith("jmx_prometheus_javaagent")) {
      jars.push(join(libDir(), e.name));
    }
  }
  return jars.sort().join(":");
}

/** The local nodes' listener names and their security protocols, the same on every node. */
export const LOCAL_PROTOCOL_MAP = securedProtocolMap(["CONTROLLER", "CLIENT"], ["CLIENT_TLS"]);

/**
 * The bench's unauthenticated listener (`deno task bench security` only,
 * {@link UpOptions.benchPlaintext}): PLAINTEXT on 127.0.0.1, 6 ports above
 * each broker's client port (9098–9100). Its clients are User:ANONYMOUS, which
 * no ACL of the spec names: the bench grants it its own scratch names while it
 * measures and revokes them after, and the next `up` starts without it.
 */
export const BENCH_PLAINTEXT_LISTENER = "BENCH_PLAIN";

/** The port of a broker's {@link BENCH_PLAINTEXT_LISTENER}. */
export function benchPlaintextPort(node: KafkaNode): number | undefined {
  return node.clientPort === undefined ? undefined : node.clientPort + 6;
}

/** What {@link nodeProperties} adds for the bench. */
export interface NodeExtras {
  /** Also listen for PLAINTEXT clients on {@link BENCH_PLAINTEXT_LISTENER}. */
  readonly benchPlaintext?: boolean;
}

/**
 * The server.properties of a node in local mode, secured (docs/security.md):
 * - clients and brokers meet on the CLIENT listener, SASL/SCRAM-SHA-512 only;
 * - with `tls` (the runner always gives it), brokers also take clients on
 *   the CLIENT_TLS listener (its `tlsPort`): SASL_SSL, SCRAM-SHA-512 over
 *   TLS with the keystore `tls` names (stacks/local/tls.ts);
 * - the CONTROLLER listener takes SASL/PLAIN from the admin only (KRaft's
 *   controllers cannot use SCRAM: its credentials live in the metadata they
 *   serve), on 127.0.0.1 like every port here;
 * - KRaft's StandardAuthorizer on every node, the admin its only super user,
 *   and no access where no ACL allows it.
 * It holds the admin's password: the runner writes it mode 0600.
 */
export function nodeProperties(
  topo: Topology,
  node: KafkaNode,
  dataDir: string,
  adminPassword: string,
  tls?: NodeKeystore,
  extras: NodeExtras = {},
): string {
  const host = "127.0.0.1";
  const props: Record<string, string> = {
    "node.id": String(node.id),
    "process.roles": node.role === "combined" ? "broker,controller" : node.role,
    "controller.quorum.voters": quorumVoters(topo, () => host),
    "controller.listener.names": "CONTROLLER",
    "log.dirs": dataDir,
  };
  const listeners: string[] = [];
  const clients = clientListeners(node, tls);
  const open = extras.benchPlaintext && node.role !== "controller"
    ? [BENCH_PLAINTEXT_LISTENER]
    : [];
  for (const name of [...clients, ...open]) {
    listeners.push(`${name}://${host}:${listenerPort(node, name)}`);
  }
  if (node.role !== "broker") {
    listeners.push(`CONTROLLER://${host}:${node.controllerPort}`);
    // After a restart the first broker back leads every partition; the
    // controller moves leaders back to their preferred replicas on this
    // period (Kafka's default is 300 s, which moved 94 leaders and their
    // coordinators in the middle of a bench five minutes after a restart).
    // clusterUp waits for it (see {@link LEADERS_SETTLE_MS}).
    props["leader.imbalance.check.interval.seconds"] = String(LEADER_IMBALANCE_CHECK_SECONDS);
  }
  if (node.role !== "controller") {
    props["advertised.listeners"] = [...clients, ...open]
      .map((name) => `${name}://${host}:${listenerPort(node, name)}`)
      .join(",");
    props["inter.broker.listener.name"] = "CLIENT";
    Object.assign(props, brokerDefaults(topo));
  }
  props["listeners"] = listeners.join(",");
  props["listener.security.protocol.map"] = extras.benchPlaintext
    ? `${LOCAL_PROTOCOL_MAP},${BENCH_PLAINTEXT_LISTENER}:PLAINTEXT`
    : LOCAL_PROTOCOL_MAP;
  Object.assign(props, securityProperties(node, adminPassword, clients));
  if (clients.includes("CLIENT_TLS")) Object.assign(props, keystoreProperties(tls!));
  return Object.entries(props).map(([k, v]) => `${k}=${v}`).join("\n") + "\n";
}

/** The client listeners of a node: none on a controller, CLIENT, and CLIENT_TLS with a keystore. */
function clientListeners(node: KafkaNode, tls: NodeKeystore | undefined): string[] {
  if (node.role === "controller") return [];
  return tls && node.tlsPort ? ["CLIENT", "CLIENT_TLS"] : ["CLIENT"];
}

function listenerPort(node: KafkaNode, listener: string): number | undefined {
  if (listener === BENCH_PLAINTEXT_LISTENER) return benchPlaintextPort(node);
  return listener === "CLIENT_TLS" ? node.tlsPort : node.clientPort;
}

/**
 * The authentication and authorization settings of a local node (see
 * {@link nodeProperties}): SCRAM on each of `clientListeners` (by default
 * CLIENT alone, the settings the Docker stack's listeners share).
 */
export function securityProperties(
  node: KafkaNode,
  adminPassword: string,
  clientListeners: readonly string[] = ["CLIENT"],
): Record<string, string> {
  return kafkaSecurityProperties(node, adminPassword, {
    clientListeners,
    interBrokerListener: "CLIENT",
  });
}

/** The TLS listener's server side: the broker's PKCS12 keystore (stacks/local/tls.ts). */
export function keystoreProperties(keystore: NodeKeystore): Record<string, string> {
  return {
    "ssl.keystore.type": "PKCS12",
    "ssl.keystore.location": keystore.path,
    "ssl.keystore.password": keystore.password,
    "ssl.key.password": keystore.password,
    // Clients authenticate with SASL, not with certificates of their own.
    "ssl.client.auth": "none",
  };
}

function log4jConfig(logDir: string): string {
  return [
    "status = warn",
    "appender.file.type = RollingFile",
    "appender.file.name = file",
    `appender.file.fileName = ${logDir}/server.log`,
    `appender.file.filePattern = ${logDir}/server.log.%i`,
    "appender.file.layout.type = PatternLayout",
    "appender.file.layout.pattern = [%d] %p %m (%c)%n",
    "appender.file.policies.type = Policies",
    "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
    "appender.file.policies.size.size = 50MB",
    "appender.file.strategy.type = DefaultRolloverStrategy",
    "appender.file.strategy.max = 3",
    "rootLogger.level = info",
    "rootLogger.appenderRef.file.ref = file",
    "logger.clients.name = org.apache.kafka.clients",
    "logger.clients.level = warn",
    "",
  ].join("\n");
}

/** The pid of a node's running process, or undefined. */
export async function runningPid(mode: ClusterMode, node: KafkaNode): Promise<number | undefined> {
  let pid: number;
  try {
    pid = Number((await Deno.readTextFile(join(nodeDir(mode, node), "pid"))).trim());
  } catch {
    return undefined;
  }
  try {
    const cmdline = await Deno.readTextFile(`/proc/${pid}/cmdline`);
    return cmdline.includes(nodeDir(mode, node)) ? pid : undefined;
  } catch {
    return undefined;
  }
}

async function portOpen(port: number): Promise<boolean> {
  try {
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    c.close();
    return true;
  } catch {
    return false;
  }
}

/**
 * The ports of `nodes` as {@link WantedPort}s: the Kafka ports are fixed by
 * the topology spec, so the advice is to free them.
 */
export function wantedNodePorts(mode: ClusterMode, nodes: readonly KafkaNode[]): WantedPort[] {
  const other = mode === "single" ? "" : " --mode single";
  return nodes.flatMap((node) =>
    nodePorts(node).map(([what, port]) => ({
      port,
      what: `${what} port of ${node.name}`,
      advice: "Kafka's ports are fixed by the topology spec (stacks/topology.ts): stop that " +
        `process, or stop the other cluster mode first (\`deno task cluster down${other}\`)`,
    }))
  );
}

/** The ports of the nodes of `mode` not running yet that other processes hold. */
export async function nodePortClashes(mode: ClusterMode): Promise<PortClash[]> {
  const topo = topology(mode);
  const stopped: KafkaNode[] = [];
  for (const node of topo.nodes) if (!(await runningPid(mode, node))) stopped.push(node);
  return await portClashes(wantedNodePorts(mode, stopped));
}

function nodePorts(node: KafkaNode): Array<[string, number]> {
  const ports: Array<[string, number]> = [];
  if (node.clientPort) ports.push(["client", node.clientPort]);
  if (node.tlsPort) ports.push(["TLS client", node.tlsPort]);
  if (node.controllerPort) ports.push(["controller", node.controllerPort]);
  ports.push(["metrics", node.metricsPort]);
  return ports;
}

/** The last `lines` lines of a node's logs, for error messages. */
export async function logTail(mode: ClusterMode, node: KafkaNode, lines = 30): Promise<string> {
  const parts: string[] = [];
  for (const file of ["stdout.log", "server.log"]) {
    const path = join(nodeDir(mode, node), "logs", file);
    try {
      const text = await Deno.readTextFile(path);
      const tail = text.trimEnd().split("\n").slice(-lines).join("\n");
      if (tail) parts.push(`--- ${path} (last ${lines} lines)\n${tail}`);
    } catch { /* not written yet */ }
  }
  return parts.join("\n") || "(no log output yet)";
}

/** Written beside a node's storage once it was formatted with the principals' SCRAM credentials. */
const SECURED_STAMP = "secured";

async function formatStorage(
  topo: Topology,
  node: KafkaNode,
  cp: string,
  passwords: Record<PrincipalName, string>,
): Promise<boolean> {
  const dir = nodeDir(topo.mode, node);
  const stamp = join(dir, "formatted-by");
  if (await exists(join(dir, "data", "meta.properties"))) {
    if (!(await exists(join(dir, SECURED_STAMP)))) {
      throw new ClusterError(
        `the storage of ${node.name} was formatted before txpipe's cluster required ` +
          "authentication, so it holds none of the principals' credentials. Delete the " +
          `${topo.mode} data with \`deno task cluster reset${
            topo.mode === "single" ? " --mode single" : ""
          }\` and run again.`,
      );
    }
    // Kafka 4.4 refuses storage another version's tool formatted, with a
    // message that does not say what to do: say it before starting.
    const by = (await Deno.readTextFile(stamp).catch(() => "")).trim();
    if (by !== KAFKA_VERSION) {
      throw new ClusterError(
        `the storage of ${node.name} was formatted by ${
          by ? `Kafka ${by}` : "an earlier Kafka"
        }, not by this one (${KAFKA_VERSION}). ` +
          `Delete the ${topo.mode} data with \`deno task cluster reset${
            topo.mode === "single" ? " --mode single" : ""
          }\` and run again.`,
      );
    }
    return false;
  }
  const out = await new Deno.Command("java", {
    args: [
      "-cp",
      cp,
      `-Dlog4j2.configurationFile=${join(dir, "log4j2.properties")}`,
      "kafka.tools.StorageTool",
      "format",
      "--cluster-id",
      topo.clusterId,
      "--config",
      join(dir, "server.properties"),
      "--ignore-formatted",
      // Every principal's SCRAM credentials, in the bootstrap metadata.
      ...Object.entries(passwords).flatMap(([p, password]) => [
        "--add-scram",
        `${SCRAM_MECHANISM}=[name=${KAFKA_USERS[p as PrincipalName]},password=${password}]`,
      ]),
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    throw new ClusterError(`formatting storage of ${node.name} failed:\n${text.slice(-2000)}`);
  }
  await Deno.writeTextFile(stamp, KAFKA_VERSION + "\n");
  await Deno.writeTextFile(join(dir, SECURED_STAMP), `${SCRAM_MECHANISM}\n`);
  return true;
}

async function startNode(topo: Topology, node: KafkaNode, cp: string): Promise<number> {
  const dir = nodeDir(topo.mode, node);
  const logs = join(dir, "logs");
  const agent = join(libDir(), `jmx_prometheus_javaagent-${JMX_EXPORTER_VERSION}.jar`);
  const java = [
    "java",
    `-Xms${node.heap}`,
    `-Xmx${node.heap}`,
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-Djava.awt.headless=true",
    `-Dkafka.logs.dir=${logs}`,
    `-Dlog4j2.configurationFile=${join(dir, "log4j2.properties")}`,
    `-javaagent:${agent}=127.0.0.1:${node.metricsPort}:${JMX_RULES}`,
    "-cp",
    cp,
    "kafka.Kafka",
    join(dir, "server.properties"),
  ];
  const quoted = java.map((a) => `'${a.replaceAll("'", `'\\''`)}'`).join(" ");
  const pidFile = join(dir, "pid");
  await Deno.remove(pidFile).catch(() => {});
  // setsid -f: the node outlives this command and ignores the terminal's Ctrl-C.
  const script = `echo $$ > '${pidFile}'; exec ${quoted} >> '${logs}/stdout.log' 2>&1`;
  const out = await new Deno.Command("setsid", {
    args: ["-f", "sh", "-c", script],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).output();
  if (!out.success) throw new ClusterError(`could not start ${node.name}`);
  for (let i = 0; i < 50; i++) {
    const pid = await runningPid(topo.mode, node);
    if (pid) return pid;
    await sleep(100);
  }
  throw new ClusterError(`${node.name} did not start:\n${await logTail(topo.mode, node)}`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * The grants of a stream job run with another `--app-id` on the default
 * topics: the same rule as the default app id's (stacks/security.ts).
 */
export function grantAppId(job: "aggregate" | "detect", appId: string): AclRule[] {
  return streamAcls(job, {
    appId,
    input: TOPICS.transactions,
    outputs: [job === "aggregate" ? TOPICS.aggregates : TOPICS.anomalies],
    deadLetters: TOPICS.deadLetters,
    ...(job === "detect" ? { control: TOPICS.detectRules } : {}),
  });
}

/**
 * The users whose SCRAM credentials the cluster of `mode` holds, one per
 * line, beside the nodes' folders: formatting seeds every principal's, and
 * {@link ensureScramUsers} adds a principal introduced since.
 */
function scramUsersFile(mode: ClusterMode): string {
  return join(homeDir(), "kafka", mode, "scram-users");
}

/**
 * The users a secured storage formatted before {@link scramUsersFile}
 * existed holds: every principal of that time (the rules publisher came
 * later).
 */
const SEEDED_BEFORE_THE_LIST = ["produce", "aggregate", "detect", "evaluate", "consume"] as const;

/**
 * Sets the SCRAM credentials of every principal the running cluster does
 * not hold yet (a principal added to stacks/security.ts after its storage
 * was formatted), as the admin, with Kafka's own ConfigCommand. The
 * password goes in a 0600 file (`--add-config-file`) in a 0700 folder,
 * deleted after, never on a command line. `formattedNow`: every node was
 * formatted by this `up`, which seeded them all. A user it cannot add is
 * reported and tried again on the next `up`; the cluster is up anyway.
 */
async function ensureScramUsers(
  topo: Topology,
  cp: string,
  passwords: Record<PrincipalName, string>,
  formattedNow: boolean,
  say: Say,
): Promise<void> {
  const file = scramUsersFile(topo.mode);
  const everyone = PRINCIPALS.filter((p) => p !== "admin").map((p) => KAFKA_USERS[p]);
  if (formattedNow) {
    await Deno.writeTextFile(file, everyone.join("\n") + "\n");
    return;
  }
  const listed = await Deno.readTextFile(file).then(
    (t) => t.split("\n").filter((l) => l !== ""),
    () => SEEDED_BEFORE_THE_LIST.map((p) => KAFKA_USERS[p]),
  );
  const missing = PRINCIPALS.filter((p) => p !== "admin" && !listed.includes(KAFKA_USERS[p]));
  if (missing.length === 0) return;
  const dir = await Deno.makeTempDir({ prefix: "txpipe-scram-" });
  try {
    await Deno.chmod(dir, 0o700);
    const admin = join(dir, "admin.properties");
    const props = adminClientProperties(passwords.admin, "brokers");
    await Deno.writeTextFile(
      admin,
      Object.entries(props).map(([k, v]) => `${k}=${v}`).join("\n") + "\n",
      { mode: 0o600 },
    );
    for (const p of missing) {
      const user = KAFKA_USERS[p];
      const config = join(dir, "scram.properties");
      // A file's value is taken as it is (--add-config strips its brackets): no brackets here.
      await Deno.writeTextFile(config, `${SCRAM_MECHANISM}=password=${passwords[p]}\n`, {
        mode: 0o600,
      });
      const out = await new Deno.Command("java", {
        args: [
          "-Xmx256m",
          "-cp",
          cp,
          "org.apache.kafka.tools.ConfigCommand",
          "--bootstrap-server",
          bootstrapServers(topo).join(","),
          "--command-config",
          admin,
          "--alter",
          "--entity-type",
          "users",
          "--entity-name",
          user,
          "--add-config-file",
          config,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      if (!out.success) {
        // Only this principal is affected: the cluster is up for everyone else; the next up retries.
        const text = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-3).join(" ");
        say(
          `  could not add the Kafka user ${user} (${text}); it is refused until the next ` +
            "`deno task cluster up` adds it",
        );
        continue;
      }
      listed.push(user);
      await Deno.writeTextFile(file, listed.join("\n") + "\n");
      say(`  added the Kafka user ${user} (new since this cluster was formatted)`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** Options for {@link clusterUp}. */
export interface UpOptions {
  mode?: ClusterMode;
  /** Give up waiting for a healthy cluster after this many ms. */
  timeoutMs?: number;
  say?: Say;
  /**
   * Brokers started now also take unauthenticated clients on
   * {@link BENCH_PLAINTEXT_LISTENER}: for `deno task bench security` only,
   * which restarts the cluster without it when it is done.
   */
  benchPlaintext?: boolean;
}

/**
 * Starts every node that is not running, formats storage on first use,
 * creates the spec's topics and waits until every partition is healthy.
 */
export async function clusterUp(options: UpOptions = {}): Promise<Topology> {
  const say = options.say ?? ((l: string) => console.log(l));
  const topo = topology(options.mode ?? "cluster");
  const started = performance.now();
  const toStart: KafkaNode[] = [];
  for (const node of topo.nodes) {
    const pid = await runningPid(topo.mode, node);
    if (pid) say(`  ${node.name.padEnd(20)} already running (pid ${pid})`);
    else toStart.push(node);
  }
  // Before anything slow (resolving jars): a taken port fails at once.
  const wanted = wantedNodePorts(topo.mode, toStart);
  if (options.benchPlaintext) {
    for (const node of toStart.filter((n) => n.role !== "controller")) {
      wanted.push({
        port: benchPlaintextPort(node)!,
        what: `bench plaintext port of ${node.name}`,
        advice: "`deno task bench security` needs it while it measures: stop that process",
      });
    }
  }
  let clashes = await portClashes(wanted);
  // A port no process holds (a node just stopped: its sockets linger for a
  // moment) frees itself: look again for a few seconds before giving up.
  for (let i = 0; i < 20 && clashes.length > 0 && clashes.every((c) => !c.holder); i++) {
    await sleep(500);
    clashes = await portClashes(wanted);
  }
  if (clashes.length === 1) throw new ClusterError(clashMessage(clashes[0]));
  if (clashes.length > 1) {
    throw new ClusterError(
      `${clashes.length} ports of the nodes to start are taken:\n  ${
        clashReport(clashes).join("\n  ")
      }`,
    );
  }
  await checkJava();
  await ensureJars(say);
  const cp = await kafkaClasspath();
  const secrets = await ensureSecrets();
  if (secrets.created.length > 0) {
    say(
      `  generated Kafka passwords for ${secrets.created.length} principal(s) in ${secretsDir()}`,
    );
  }

  const tls = await ensureBrokerKeystores(topo, say);

  for (const node of toStart) {
    const dir = nodeDir(topo.mode, node);
    await Deno.mkdir(join(dir, "logs"), { recursive: true });
    // It holds the admin's and the keystore's passwords: readable by its owner only.
    const props = join(dir, "server.properties");
    await Deno.writeTextFile(
      props,
      nodeProperties(topo, node, join(dir, "data"), secrets.passwords.admin, tls[node.name], {
        benchPlaintext: options.benchPlaintext,
      }),
      { mode: 0o600 },
    );
    await Deno.chmod(props, 0o600);
    await Deno.writeTextFile(join(dir, "log4j2.properties"), log4jConfig(join(dir, "logs")));
  }
  const formatted = await Promise.all(
    toStart.map((n) => formatStorage(topo, n, cp, secrets.passwords)),
  );
  if (formatted.some((f) => f)) {
    say(`  formatted storage of ${formatted.filter((f) => f).length} node(s)`);
  }
  // Controllers first so brokers find a quorum; the JVMs then boot in parallel.
  const ordered = [...toStart].sort((a, b) => roleRank(a) - roleRank(b));
  for (const node of ordered) {
    const pid = await startNode(topo, node, cp);
    say(`  ${node.name.padEnd(20)} started (pid ${pid}) ${describePorts(node)}`);
  }

  await waitHealthy(topo, options.timeoutMs ?? 180_000, say);
  await ensureScramUsers(
    topo,
    cp,
    secrets.passwords,
    formatted.filter((f) => f).length === topo.nodes.length,
    say,
  );
  const secs = ((performance.now() - started) / 1000).toFixed(1);
  say(
    `cluster up (${topo.mode}, Kafka ${KAFKA_VERSION}) in ${secs}s; bootstrap ${
      bootstrapServers(topo).join(",")
    }`,
  );
  say(`  over TLS (SASL_SSL): ${tlsBootstrapServers(topo).join(",")}, CA ${caPemFile()}`);
  return topo;
}

/**
 * The keystore of every broker of `topo` for the CLIENT_TLS listener,
 * generated with the local CA on first use (stacks/local/tls.ts).
 */
async function ensureBrokerKeystores(
  topo: Topology,
  say: Say,
): Promise<Readonly<Record<string, NodeKeystore>>> {
  try {
    const tls = await ensureTlsKeystores(brokerNodes(topo).map((n) => n.name));
    if (tls.newCa) say(`  generated the local TLS CA: clients trust ${tls.caPem}`);
    if (tls.created.length > 0) {
      say(`  generated TLS keystores for ${tls.created.length} broker(s) in ${tlsDir()}`);
    }
    return tls.keystores;
  } catch (err) {
    if (err instanceof TlsError) throw new ClusterError(err.message);
    throw err;
  }
}

function roleRank(n: KafkaNode): number {
  return n.role === "controller" ? 0 : n.role === "combined" ? 1 : 2;
}

function describePorts(node: KafkaNode): string {
  return nodePorts(node).map(([w, p]) => `${w}:${p}`).join(" ");
}

async function waitHealthy(topo: Topology, timeoutMs: number, say: Say): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const brokers = bootstrapServers(topo);
  let phase = "";
  let lastProblem = "";
  const announce = (p: string) => {
    if (p !== phase) say(`  waiting: ${p}`);
    phase = p;
  };
  while (Date.now() < deadline) {
    for (const node of topo.nodes) {
      if (!(await runningPid(topo.mode, node))) {
        throw new ClusterError(
          `${node.name} exited during start-up:\n${await logTail(topo.mode, node)}`,
        );
      }
    }
    const listening = await Promise.all(
      topo.nodes.map((n) => portOpen((n.clientPort ?? n.controllerPort)!)),
    );
    if (listening.some((l) => !l)) {
      announce("nodes opening their ports");
      await sleep(500);
      continue;
    }
    const admin = createKafka({ principal: "admin", clientId: "txpipe-cluster", brokers }).admin();
    try {
      await admin.connect();
      const cluster = await admin.describeCluster();
      const expected = topo.nodes.filter((n) => n.role !== "controller").length;
      if (cluster.brokers.length < expected) {
        announce(`brokers registering (${cluster.brokers.length}/${expected})`);
        await sleep(500);
        continue;
      }
      announce("topics created and every partition led with a full ISR");
      const results = await ensureTopics(admin, topo.topics);
      for (const r of results.filter((r) => r.action === "created")) say(`  created ${r.name}`);
      const bad = await unhealthyPartitions(admin, topo.topics);
      if (bad.length === 0) {
        // Each job's least-privilege grants (stacks/security.ts); idempotent.
        await applyAcls(admin, jobAcls());
        await leadersSettled(admin, topo, {
          waiting: () => announce("partition leaders moving back to their preferred replicas"),
        });
        return;
      }
      lastProblem = `unhealthy partitions: ${bad.slice(0, 8).join(", ")}`;
    } catch (err) {
      lastProblem = err instanceof Error ? err.message : String(err);
      if (err instanceof Error && /spec expects/.test(err.message)) {
        throw new ClusterError(err.message);
      }
    } finally {
      await admin.disconnect().catch(() => {});
    }
    await sleep(500);
  }
  throw new ClusterError(
    `cluster not healthy after ${timeoutMs / 1000}s (${lastProblem || phase}). ` +
      "See `deno task cluster logs NODE`.",
  );
}

/**
 * How often the local controllers move leaders back to their preferred
 * replicas (s). The check reads the controller's own metadata: each second
 * costs nothing measurable, and a broker back from a restart (or a test
 * that moves the coordinators) has its leaders again within about a second.
 */
export const LEADER_IMBALANCE_CHECK_SECONDS = 1;
/** How long clusterUp waits for that after the cluster is otherwise healthy. */
export const LEADERS_SETTLE_MS = 30_000;

/** Kafka's internal topics whose partition leaders are the transaction and group coordinators. */
export const COORDINATOR_TOPICS = ["__transaction_state", "__consumer_offsets"] as const;

/**
 * Partitions of the spec's topics and of the transaction and offset topics
 * (whose leaders are the coordinators) led by another broker than their
 * preferred replica while that replica is in sync: the ones the controller
 * will move, as "topic/partition" strings.
 *
 * Kafka creates the two internal topics when a client first asks for a
 * coordinator; until then they are left out. (Asking for their metadata
 * fails until they exist: on a freshly formatted cluster every clusterUp,
 * the tests' included, used to wait out all of {@link LEADERS_SETTLE_MS}.)
 */
export async function misledPartitions(
  admin: Pick<Admin, "listTopics" | "fetchTopicMetadata">,
  topo: Topology,
): Promise<string[]> {
  const existing = new Set(await admin.listTopics());
  const names = [
    ...topo.topics.map((t) => t.name),
    ...COORDINATOR_TOPICS.filter((t) => existing.has(t)),
  ];
  const meta = await admin.fetchTopicMetadata({ topics: names });
  const out: string[] = [];
  for (const t of meta.topics) {
    for (const p of t.partitions) {
      const preferred = p.replicas[0];
      if (p.leader !== preferred && p.isr.includes(preferred)) {
        out.push(`${t.name}/${p.partitionId}`);
      }
    }
  }
  return out;
}

/**
 * Waits (at most `timeoutMs`, by default {@link LEADERS_SETTLE_MS}) until no
 * partition's leadership is about to move back to its preferred replica
 * ({@link misledPartitions}); returns the partitions still misled then (none
 * when settled). clusterUp waits so, so that a bench or a test begun after it
 * is not met by the controller's periodic election: after a restart of the
 * brokers it moved 94 leaders at once, coordinators included, and a detect
 * run measured at that moment saw outputs 33 s late. Past the wait clusterUp
 * goes on: a cluster that does not settle still works.
 */
export async function leadersSettled(
  admin: Pick<Admin, "listTopics" | "fetchTopicMetadata">,
  topo: Topology,
  options: { timeoutMs?: number; waiting?: () => void } = {},
): Promise<string[]> {
  const deadline = Date.now() + (options.timeoutMs ?? LEADERS_SETTLE_MS);
  for (;;) {
    const misled = await misledPartitions(admin, topo).catch(() => ["(metadata unavailable)"]);
    if (misled.length === 0 || Date.now() >= deadline) return misled;
    options.waiting?.();
    await sleep(500);
  }
}

/** Options for {@link clusterDown}. */
export interface DownOptions {
  mode?: ClusterMode;
  /** Only this node (by name). */
  node?: string;
  say?: Say;
  /** SIGKILL after this many ms of waiting for a clean shutdown. */
  graceMs?: number;
}

async function stopPid(pid: number, graceMs: number): Promise<"stopped" | "killed"> {
  try {
    Deno.kill(pid, "SIGTERM");
  } catch {
    return "stopped";
  }
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if (!(await exists(`/proc/${pid}`))) return "stopped";
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => "");
    if (/^\d+ \(.*\) Z/.test(stat)) return "stopped";
    await sleep(200);
  }
  try {
    Deno.kill(pid, "SIGKILL");
  } catch { /* gone */ }
  return "killed";
}

/** Stops nodes cleanly: brokers first (controlled shutdown needs the quorum), then controllers. */
export async function clusterDown(options: DownOptions = {}): Promise<void> {
  const say = options.say ?? ((l: string) => console.log(l));
  const topo = topology(options.mode ?? "cluster");
  const nodes = options.node ? [findNode(topo, options.node)] : topo.nodes;
  const groups = [
    nodes.filter((n) => n.role === "broker"),
    nodes.filter((n) => n.role !== "broker"),
  ];
  let any = false;
  for (const group of groups) {
    await Promise.all(group.map(async (node) => {
      const pid = await runningPid(topo.mode, node);
      if (!pid) return;
      any = true;
      const how = await stopPid(pid, options.graceMs ?? 60_000);
      say(`  ${node.name.padEnd(20)} ${how} (pid ${pid})`);
    }));
  }
  if (options.node) {
    say(
      any
        ? `${nodes[0].name} stopped; the rest of the cluster keeps running ` +
          "(`deno task cluster up` brings it back)"
        : `${nodes[0].name} was not running`,
    );
  } else say(any ? "cluster down; data kept" : "no node was running");
}

function findNode(topo: Topology, name: string): KafkaNode {
  const node = topo.nodes.find((n) => n.name === name || String(n.id) === name);
  if (!node) {
    throw new ClusterError(
      `unknown node "${name}"; expected one of ${topo.nodes.map((n) => n.name).join(", ")}`,
    );
  }
  return node;
}

/** One line per node: name, role, id, ports, state. */
export async function clusterStatus(mode: ClusterMode = "cluster"): Promise<string[]> {
  const topo = topology(mode);
  const lines: string[] = [];
  for (const node of topo.nodes) {
    const pid = await runningPid(mode, node);
    const state = pid ? `running (pid ${pid})` : "stopped";
    lines.push(
      `${node.name.padEnd(20)} ${node.role.padEnd(10)} id=${node.id} ${
        describePorts(node).padEnd(40)
      } ${state}`,
    );
  }
  return lines;
}

async function topicStatus(topo: Topology): Promise<string[]> {
  const admin = createKafka({
    principal: "admin",
    clientId: "txpipe-cluster",
    brokers: bootstrapServers(topo),
  })
    .admin();
  try {
    await admin.connect();
    const meta = await admin.fetchTopicMetadata({ topics: topo.topics.map((t) => t.name) });
    return meta.topics.map((t) => {
      const spec = topo.topics.find((s) => s.name === t.name)!;
      const full = t.partitions.filter((p) => p.isr.length >= spec.replicationFactor).length;
      return `${
        t.name.padEnd(28)
      } partitions=${t.partitions.length} rf=${spec.replicationFactor} ` +
        `full-isr=${full}/${t.partitions.length}`;
    });
  } catch (err) {
    return [`topics unavailable: ${err instanceof Error ? err.message : err}`];
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

const COMMAND = defineCommand({
  name: "deno task cluster",
  summary: "run the txpipe Kafka cluster (KRaft) as local JVM processes",
  usage:
    "deno task cluster <up|down|status|logs NODE|stop NODE|reset|jars|acls|grant JOB APP_ID> [flags]",
  flags: {
    mode: {
      kind: "string",
      choices: ["cluster", "single"],
      default: "cluster",
      help: "cluster: 3 controllers + 3 brokers; single: one combined node for quick development",
    },
    lines: { kind: "int", min: 1, default: 50, help: "lines shown by `logs`", placeholder: "N" },
    timeout: {
      kind: "duration",
      min: 1000,
      default: 180_000,
      help: "how long `up` waits for a healthy cluster",
    },
  },
  examples: [
    "deno task cluster up",
    "deno task cluster up --mode single",
    "deno task cluster status",
    "deno task cluster logs kafka-broker-1",
    "deno task cluster stop kafka-broker-2   # then `up` brings it back",
    "deno task cluster acls                  # who may do what (docs/security.md)",
    "deno task cluster grant detect my-detect   # grants for `deno task detect --app-id my-detect`",
    "deno task cluster down",
  ],
});

/**
 * The locks each command takes (stacks/local/lock.ts): the ones that change
 * the cluster take cluster.lock, so two never race; down and reset also take
 * start.lock, so they refuse while `deno task start` or `deno task test` runs
 * on the cluster. status and logs only read.
 */
const COMMAND_LOCKS: Readonly<Record<string, readonly LockName[]>> = {
  up: ["cluster"],
  stop: ["cluster"],
  jars: ["cluster"],
  grant: ["cluster"],
  down: ["start", "cluster"],
  reset: ["start", "cluster"],
};

async function main(): Promise<number> {
  const { values, positional } = parseCommandLine(COMMAND);
  const cmd = positional[0] ?? "";
  const locks = Object.hasOwn(COMMAND_LOCKS, cmd)
    ? await acquireLocks(COMMAND_LOCKS[cmd], {
      home: homeDir(),
      command: `deno task cluster ${cmd}`,
    })
    : [];
  try {
    return await runCommand(positional, values);
  } finally {
    for (const lock of locks.reverse()) await lock.release();
  }
}

async function runCommand(
  positional: string[],
  values: Parsed<typeof COMMAND.flags>["values"],
): Promise<number> {
  const mode: ClusterMode = values.mode;
  const [cmd, arg] = positional;
  const topo = topology(mode);
  switch (cmd) {
    case "up":
      await clusterUp({ mode, timeoutMs: values.timeout });
      return 0;
    case "down":
      await clusterDown({ mode });
      return 0;
    case "jars":
      await ensureJars((l) => console.log(l));
      console.log(`Kafka ${KAFKA_VERSION} jars in ${libDir()}`);
      return 0;
    case "stop":
      if (!arg) throw new ClusterError("stop: expected a node name, e.g. kafka-broker-2");
      await clusterDown({ mode, node: arg });
      return 0;
    case "status": {
      (await clusterStatus(mode)).forEach((l) => console.log(l));
      const running = await Promise.all(topo.nodes.map((n) => runningPid(mode, n)));
      if (running.some((p) => p)) {
        console.log("");
        (await topicStatus(topo)).forEach((l) => console.log(l));
        console.log(`\nbootstrap: ${bootstrapServers(topo).join(",")}`);
        console.log(`over TLS:  ${tlsBootstrapServers(topo).join(",")} (CA ${caPemFile()})`);
      }
      return 0;
    }
    case "logs": {
      if (!arg) throw new ClusterError("logs: expected a node name, e.g. kafka-broker-1");
      console.log(await logTail(mode, findNode(topo, arg), values.lines));
      return 0;
    }
    case "acls":
      for (const rule of jobAcls()) console.log(describeAcl(rule));
      return 0;
    case "grant": {
      const [, job, appId] = positional;
      if ((job !== "aggregate" && job !== "detect") || !appId) {
        throw new ClusterError(
          "grant: expected a stream job (aggregate or detect) and an app id, e.g. " +
            "`deno task cluster grant detect my-detect`",
        );
      }
      const rules = grantAppId(job, appId);
      const admin = createKafka({
        principal: "admin",
        clientId: "txpipe-cluster",
        brokers: bootstrapServers(topo),
      }).admin();
      await admin.connect();
      try {
        await applyAcls(admin, rules);
      } finally {
        await admin.disconnect();
      }
      for (const rule of rules) console.log(describeAcl(rule));
      console.log(`granted: deno task ${job} --app-id ${appId} may run on this cluster`);
      return 0;
    }
    case "reset": {
      await clusterDown({ mode });
      await Deno.remove(join(homeDir(), "kafka", mode), { recursive: true }).catch(() => {});
      console.log(`deleted all ${mode} data under ${join(homeDir(), "kafka", mode)}`);
      return 0;
    }
    default:
      console.error(
        `deno task cluster: expected a command (up, down, status, logs, stop, reset, jars, acls, grant), got ${
          cmd === undefined ? "nothing" : `"${cmd}"`
        }\nRun with --help for usage.`,
      );
      return 2;
  }
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (err) {
    if (err instanceof ClusterError || err instanceof LockedError) {
      console.error(`deno task cluster: ${err.message}`);
      Deno.exit(1);
    }
    throw err;
  }
}
