/**
 * Renders the one-shot script that prepares Elasticsearch's users once it
 * runs with security on (as Elastic's own docker-compose example does with a
 * `setup` container):
 *
 * - sets the password of the built-in `kibana_system` user, which Kibana
 *   connects as (`POST _security/user/kibana_system/_password`);
 * - creates or updates the Logstash role (least privilege: write documents
 *   into txpipe's data streams, auto-creating them, and nothing else;
 *   `monitor` for the output's version and license checks) and the Logstash
 *   user with that role only (`PUT _security/role/...`, `PUT _security/user/...`).
 *
 * Every call is idempotent. It authenticates as `elastic`; the passwords come
 * from environment variables, reach curl through a 0600 config file and
 * request bodies on stdin, and never appear in the script, its arguments or
 * its output.
 *
 * @module
 */

/** The Logstash user the stack creates in Elasticsearch. */
export const LOGSTASH_USER = "txpipe_logstash";

/** Its only role. */
export const LOGSTASH_ROLE = "txpipe_logstash_writer";

/**
 * The data streams the Logstash pipeline writes (logstash/pipeline/txpipe.conf):
 * `logs-txpipe.jobs-default`, `logs-txpipe.other-default`, `logs-kafka.broker-default`.
 */
export const LOGSTASH_INDEX_PATTERNS = ["logs-txpipe.*-*", "logs-kafka.*-*"] as const;

/** The environment variables the setup script reads. */
export const ELASTIC_SETUP_ENV = {
  elastic: "ELASTIC_PASSWORD",
  kibanaSystem: "KIBANA_SYSTEM_PASSWORD",
  logstash: "LOGSTASH_PASSWORD",
} as const;

/**
 * The Logstash role: `create_doc` (data streams take only `create`
 * actions) and `auto_configure` (the first event creates its data stream from
 * Elasticsearch's built-in `logs-*-*` template) on txpipe's data streams;
 * `monitor` on the cluster. No template, ILM or read privileges: the output
 * in data-stream mode manages neither.
 */
export function logstashRole(): Record<string, unknown> {
  return {
    cluster: ["monitor"],
    indices: [{
      names: [...LOGSTASH_INDEX_PATTERNS],
      privileges: ["create_doc", "auto_configure"],
    }],
  };
}

/** Options of `renderElasticSetupScript`. */
export interface ElasticSetupOptions {
  /** Elasticsearch's URL on the network, e.g. `http://txpipe-elasticsearch:9200`. */
  readonly url: string;
  /** The curl to run. Default `curl`. */
  readonly curl?: string;
}

/** The setup script (bash, `set -euo pipefail`); see the module doc. */
export function renderElasticSetupScript(options: ElasticSetupOptions): string {
  const curl = options.curl ?? "curl";
  const env = ELASTIC_SETUP_ENV;
  return [
    "set -euo pipefail",
    ...Object.values(env).map((v) => `: "\${${v}:?${v} is not set}"`),
    `ES=${options.url}`,
    "umask 077",
    'CURL_CONFIG="$(mktemp)"',
    `printf 'user = "elastic:%s"\\n' "$${env.elastic}" > "$CURL_CONFIG"`,
    "# es METHOD PATH: the request body on stdin",
    `es() { ${curl} --silent --show-error --fail-with-body --config "$CURL_CONFIG" ` +
    `-H 'Content-Type: application/json' -X "$1" "$ES$2" --data-binary @- || return; echo; }`,
    "",
    `echo "waiting for Elasticsearch at $ES"`,
    "for i in $(seq 1 60); do",
    `  es GET '/_cluster/health?wait_for_status=yellow&timeout=5s' < /dev/null > /dev/null && break`,
    '  [ "$i" -lt 60 ] || { echo "Elasticsearch did not answer" >&2; exit 1; }',
    "  sleep 2",
    "done",
    "",
    'echo "setting the password of kibana_system"',
    `printf '{"password":"%s"}' "$${env.kibanaSystem}" | ` +
    "es POST /_security/user/kibana_system/_password",
    "",
    `echo "creating role ${LOGSTASH_ROLE}"`,
    `printf '%s' '${JSON.stringify(logstashRole())}' | es PUT /_security/role/${LOGSTASH_ROLE}`,
    "",
    `echo "creating user ${LOGSTASH_USER}"`,
    `printf '{"password":"%s","roles":["${LOGSTASH_ROLE}"],"full_name":"txpipe Logstash"}' ` +
    `"$${env.logstash}" | es PUT /_security/user/${LOGSTASH_USER}`,
    'rm -f "$CURL_CONFIG"',
    "",
  ].join("\n");
}
