/**
 * The authentication and authorization settings of a secured Kafka node,
 * shared by the local runner's listener layout (CLIENT, and CLIENT_TLS with
 * SASL_SSL) and the Docker stack's (INTERNAL and EXTERNAL):
 *
 * - every client listener takes SASL/SCRAM-SHA-512 only; the inter-broker
 *   listener's JAAS entry also holds the admin's credentials, which the
 *   broker uses towards the other brokers;
 * - the CONTROLLER listener takes SASL/PLAIN from the admin only (KRaft's
 *   controllers cannot use SCRAM: its credentials live in the metadata they
 *   serve); every node also connects to the controllers with it;
 * - KRaft's StandardAuthorizer on every node, the admin its only super user,
 *   and no access where no ACL allows it.
 *
 * With `clientListeners: ["CLIENT"]` and `interBrokerListener: "CLIENT"`
 * these are exactly the settings of stacks/local/cluster.ts's
 * `securityProperties` (tests/stack_test.ts checks it); the local nodes add
 * CLIENT_TLS to the client listeners, with the same SCRAM settings.
 *
 * @module
 */
import { scramJaas } from "../jobs/lib/credentials.ts";
import { ADMIN_USER, AUTHORIZER, SCRAM_MECHANISM } from "./security.ts";
import type { KafkaNode } from "./topology.ts";

/** How a node's listeners are named. */
export interface SecuredListeners {
  /** The brokers' client listeners (SCRAM), e.g. `["INTERNAL", "EXTERNAL"]` or `["CLIENT", "CLIENT_TLS"]`. */
  readonly clientListeners: readonly string[];
  /** The one of them brokers replicate over (its JAAS entry holds the admin's credentials). */
  readonly interBrokerListener: string;
}

/** A JAAS line for PLAIN with these credentials, as a client only. */
export function plainJaasConfig(username: string, password: string): string {
  return `org.apache.kafka.common.security.plain.PlainLoginModule required ` +
    `username="${username}" password="${password}";`;
}

/**
 * The security settings of one node (server properties). `adminPassword`
 * may be a Terraform expression: it is only ever interpolated.
 */
export function kafkaSecurityProperties(
  node: KafkaNode,
  adminPassword: string,
  listeners: SecuredListeners,
): Record<string, string> {
  const props: Record<string, string> = {
    "authorizer.class.name": AUTHORIZER,
    "allow.everyone.if.no.acl.found": "false",
    "super.users": `User:${ADMIN_USER}`,
    "sasl.mechanism.controller.protocol": "PLAIN",
    "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
    // The controller listener's server side (user_admin) and every node's
    // client side towards the controllers (username, password).
    "listener.name.controller.plain.sasl.jaas.config":
      `org.apache.kafka.common.security.plain.PlainLoginModule required ` +
      `username="${ADMIN_USER}" password="${adminPassword}" user_${ADMIN_USER}="${adminPassword}";`,
  };
  if (node.role !== "controller") {
    const mechanism = SCRAM_MECHANISM.toLowerCase();
    for (const listener of listeners.clientListeners) {
      props[`listener.name.${listener.toLowerCase()}.sasl.enabled.mechanisms`] = SCRAM_MECHANISM;
    }
    props["sasl.mechanism.inter.broker.protocol"] = SCRAM_MECHANISM;
    for (const listener of listeners.clientListeners) {
      const key = `listener.name.${listener.toLowerCase()}.${mechanism}.sasl.jaas.config`;
      // Server side only: the credentials are checked against the SCRAM
      // users in the metadata; only the inter-broker listener needs the
      // admin's own, as the client side of replication.
      props[key] = listener === listeners.interBrokerListener
        ? scramJaas(ADMIN_USER, adminPassword)
        : "org.apache.kafka.common.security.scram.ScramLoginModule required;";
    }
  }
  return props;
}

/**
 * The security protocol map of these listeners: SASL_PLAINTEXT everywhere,
 * SASL_SSL on `tlsListenerNames` (the local runner's CLIENT_TLS), no
 * PLAINTEXT.
 */
export function securedProtocolMap(
  listenerNames: readonly string[],
  tlsListenerNames: readonly string[] = [],
): string {
  return [
    ...listenerNames.map((l) => `${l}:SASL_PLAINTEXT`),
    ...tlsListenerNames.map((l) => `${l}:SASL_SSL`),
  ].join(",");
}

/**
 * The Java client properties (Kafka's command-line tools) of the admin:
 * SCRAM on the brokers' listeners, PLAIN on the controllers'.
 */
export function adminClientProperties(
  adminPassword: string,
  towards: "brokers" | "controllers",
): Record<string, string> {
  return {
    "security.protocol": "SASL_PLAINTEXT",
    "sasl.mechanism": towards === "brokers" ? SCRAM_MECHANISM : "PLAIN",
    "sasl.jaas.config": towards === "brokers"
      ? scramJaas(ADMIN_USER, adminPassword)
      : plainJaasConfig(ADMIN_USER, adminPassword),
  };
}
