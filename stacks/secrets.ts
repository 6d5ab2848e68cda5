/**
 * The Docker stack's generated secrets: one `random_password` per Kafka
 * principal (stacks/security.ts) and per Elasticsearch user the stack uses.
 * There is no default password anywhere; each value exists only in
 * Terraform's state and in the containers that need it:
 *
 * | secret                           | who gets it                                          |
 * | -------------------------------- | ---------------------------------------------------- |
 * | `kafka_password_admin`           | every Kafka node, the topic/user/ACL setup job       |
 * | `kafka_password_<job>`           | that job's containers; the setup job (to set it)     |
 * | `kafka_password_consume`         | the setup job; the host user (`terraform output`)    |
 * | `kafka_password_rules`           | the setup job; the host user (`terraform output`)    |
 * | `elasticsearch_password_elastic` | Elasticsearch (bootstrap password), the setup job    |
 * | `elasticsearch_password_kibana_system` | Kibana, the Elasticsearch setup job            |
 * | `elasticsearch_password_logstash` | Logstash, the Elasticsearch setup job               |
 *
 * The passwords are letters and digits only, so they need no escaping in a
 * JAAS line, a `--add-scram` argument, a JSON body or a Logstash setting.
 *
 * @module
 */
import type { Construct } from "constructs";
import { password } from "@cdktf/provider-random";
import { type PrincipalName, PRINCIPALS } from "./security.ts";

/** Length of every generated password. */
export const PASSWORD_LENGTH = 32;

/** The Elasticsearch users the stack generates passwords for. */
export const ELASTIC_USERS = ["elastic", "kibana_system", "logstash"] as const;

/** The generated passwords, as Terraform expressions (sensitive). */
export interface StackSecrets {
  /** Each Kafka principal's SCRAM password. */
  readonly kafka: Readonly<Record<PrincipalName, string>>;
  /** Each Elasticsearch user's password. */
  readonly elastic: Readonly<Record<(typeof ELASTIC_USERS)[number], string>>;
}

function generated(scope: Construct, id: string): string {
  return new password.Password(scope, id, { length: PASSWORD_LENGTH, special: false }).result;
}

/** Creates the passwords as direct children of `scope` (the stack), ids `kafka_password_<principal>`, ... */
export function generateSecrets(scope: Construct): StackSecrets {
  const kafka = {} as Record<PrincipalName, string>;
  for (const p of PRINCIPALS) kafka[p] = generated(scope, `kafka_password_${p}`);
  const elastic = {} as Record<(typeof ELASTIC_USERS)[number], string>;
  for (const u of ELASTIC_USERS) elastic[u] = generated(scope, `elasticsearch_password_${u}`);
  return { kafka, elastic };
}
