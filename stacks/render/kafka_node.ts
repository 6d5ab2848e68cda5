/**
 * The start script of a secured Kafka node in the `apache/kafka` image, run
 * before the image's own `/etc/kafka/docker/run`.
 *
 * The image formats a node's storage at its first start
 * (`KafkaDockerWrapper setup`: the server properties decoded from the
 * `KAFKA_*` environment, then `kafka-storage format`), but offers no way to
 * pass `--add-scram`. Yet the brokers authenticate to each other with the
 * admin's SCRAM credentials, which must therefore be in the cluster's
 * bootstrap metadata from the start. So on first start this script formats
 * the storage itself, from the same properties decoded the same way, with
 * `--add-scram SCRAM-SHA-512=[name=admin,password=...]`; the image's setup
 * then finds the storage "already formatted", which its launch script accepts,
 * and starts the node as usual. The jobs' SCRAM users are created later, by
 * the topic-creation step (stacks/render/topics.ts), as the admin.
 *
 * It also writes the admin's client configs for the Kafka tools the
 * healthcheck runs (mode 0600, in the container's /tmp) and refuses a data
 * volume formatted before the stack required authentication.
 *
 * @module
 */
import { ADMIN_USER, SCRAM_MECHANISM } from "../security.ts";
import { ADMIN_PASSWORD_ENV, KAFKA_BIN, writeAdminConfigLines } from "./topics.ts";

export { ADMIN_PASSWORD_ENV };

/** Where the node script writes the admin's client configs. */
export const KAFKA_CLIENT_CONFIG_DIR = "/tmp/txpipe";

/** The admin's client config towards the brokers (SCRAM). */
export const ADMIN_SCRAM_CONFIG = `${KAFKA_CLIENT_CONFIG_DIR}/admin-scram.properties`;

/** The admin's client config towards the controllers (PLAIN). */
export const ADMIN_PLAIN_CONFIG = `${KAFKA_CLIENT_CONFIG_DIR}/admin-plain.properties`;

/** Written into the data folder once the storage was formatted with the admin's SCRAM credentials. */
export const SECURED_STAMP = ".txpipe-secured";

/** The `KAFKA_*` variables the image's KafkaDockerWrapper does not turn into server properties. */
export const NOT_SERVER_PROPERTIES = [
  "KAFKA_VERSION",
  "KAFKA_HEAP_OPTS",
  "KAFKA_LOG4J_OPTS",
  "KAFKA_OPTS",
  "KAFKA_JMX_OPTS",
  "KAFKA_JVM_PERFORMANCE_OPTS",
  "KAFKA_GC_LOG_OPTS",
  "KAFKA_LOG4J_ROOT_LOGLEVEL",
  "KAFKA_LOG4J_LOGGERS",
  "KAFKA_TOOLS_LOG4J_LOGLEVEL",
  "KAFKA_JMX_HOSTNAME",
] as const;

/** Options of `renderNodeScript`. */
export interface NodeScriptOptions {
  /** The node's data folder (`log.dirs`). */
  readonly dataDir: string;
  /** Folder of kafka-storage.sh. Default `/opt/kafka/bin`. */
  readonly bin?: string;
  /** What runs the node once its storage is formatted. Default the image's `/etc/kafka/docker/run`. */
  readonly run?: string;
  /** Where the admin's client configs go. Default {@link KAFKA_CLIENT_CONFIG_DIR}. */
  readonly clientConfigDir?: string;
}

/** The node's start script (bash, `set -euo pipefail`); see the module doc. */
export function renderNodeScript(options: NodeScriptOptions): string {
  const bin = options.bin ?? KAFKA_BIN;
  const run = options.run ?? "/etc/kafka/docker/run";
  const dir = options.clientConfigDir ?? KAFKA_CLIENT_CONFIG_DIR;
  const data = options.dataDir;
  return [
    "set -euo pipefail",
    `: "\${${ADMIN_PASSWORD_ENV}:?the password of ${ADMIN_USER} is not set}"`,
    "umask 077",
    `mkdir -p "${dir}"`,
    "# The admin's client configs for the tools (healthcheck): SCRAM on the brokers' listeners,",
    "# PLAIN on the controllers'.",
    ...writeAdminConfigLines(`${dir}/admin-scram.properties`, "brokers"),
    ...writeAdminConfigLines(`${dir}/admin-plain.properties`, "controllers"),
    `if [ -e "${data}/meta.properties" ]; then`,
    `  if [ ! -e "${data}/${SECURED_STAMP}" ]; then`,
    `    echo "txpipe: the storage in ${data} was formatted before the stack required ` +
    `authentication and holds no SCRAM credentials; delete this node's data volume ` +
    `(terraform destroy, or docker volume rm) and apply again" >&2`,
    "    exit 1",
    "  fi",
    "else",
    `  echo "txpipe: formatting the storage of $(hostname) with the ${ADMIN_USER}'s ` +
    `${SCRAM_MECHANISM} credentials"`,
    "  # The server properties, decoded from the KAFKA_* environment exactly as the image's",
    "  # KafkaDockerWrapper decodes them.",
    `  props="${dir}/format.properties"`,
    "  for name in $(compgen -e); do",
    '    case "$name" in',
    `      ${NOT_SERVER_PROPERTIES.join("|")}) ;;`,
    "      KAFKA_*)",
    '        key="${name#KAFKA_}"; key="${key,,}"; key="${key//_/.}"',
    '        key="${key//.../-}"; key="${key//../_}"',
    `        printf '%s=%s\\n' "$key" "\${!name}" ;;`,
    "    esac",
    '  done > "$props"',
    `  KAFKA_OPTS= ${bin}/kafka-storage.sh format --cluster-id "$CLUSTER_ID" --config "$props" ` +
    `--add-scram "${SCRAM_MECHANISM}=[name=${ADMIN_USER},password=\${${ADMIN_PASSWORD_ENV}}]"`,
    '  rm -f "$props"',
    `  echo ${SCRAM_MECHANISM} > "${data}/${SECURED_STAMP}"`,
    "fi",
    `exec ${run}`,
    "",
  ].join("\n");
}
