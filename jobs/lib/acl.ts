/**
 * Applies stacks/security.ts's ACL rules to a cluster with kafkajs's admin
 * client (as the admin principal). Creating an ACL that exists already is a
 * no-op in Kafka, so applying the same rules again changes nothing.
 *
 * @module
 */
import {
  AclOperationTypes,
  AclPermissionTypes,
  AclResourceTypes,
  type Admin,
  ResourcePatternTypes,
} from "kafkajs";
import {
  type AclOperation,
  type AclResource,
  type AclRule,
  KAFKA_USERS,
} from "../../stacks/security.ts";

const RESOURCE: Record<AclResource, AclResourceTypes> = {
  topic: AclResourceTypes.TOPIC,
  group: AclResourceTypes.GROUP,
  "transactional-id": AclResourceTypes.TRANSACTIONAL_ID,
  cluster: AclResourceTypes.CLUSTER,
};

const OPERATION: Record<AclOperation, AclOperationTypes> = {
  read: AclOperationTypes.READ,
  write: AclOperationTypes.WRITE,
  describe: AclOperationTypes.DESCRIBE,
  create: AclOperationTypes.CREATE,
  delete: AclOperationTypes.DELETE,
  "idempotent-write": AclOperationTypes.IDEMPOTENT_WRITE,
};

/** The kafkajs ACL entries of `rules`: one per rule and operation, allowed from any host. */
export function aclEntries(rules: readonly AclRule[]) {
  return rules.flatMap((r) =>
    r.operations.map((op) => ({
      resourceType: RESOURCE[r.resource],
      resourceName: r.name,
      resourcePatternType: r.pattern === "prefixed"
        ? ResourcePatternTypes.PREFIXED
        : ResourcePatternTypes.LITERAL,
      principal: `User:${KAFKA_USERS[r.principal]}`,
      host: "*",
      operation: OPERATION[op],
      permissionType: AclPermissionTypes.ALLOW,
    }))
  );
}

/** Creates every ACL of `rules` (idempotent); returns how many entries were sent. */
export async function applyAcls(admin: Admin, rules: readonly AclRule[]): Promise<number> {
  const acl = aclEntries(rules);
  if (acl.length > 0) await admin.createAcls({ acl });
  return acl.length;
}
