/**
 * Topics provisioned declaratively from the spec: a one-shot container from
 * the same `apache/kafka` image runs the rendered script (create with
 * `--if-not-exists`, set every config, describe) once all brokers are
 * healthy. Terraform waits for it to finish and fails the apply when it exits
 * non-zero. It runs again whenever the topic spec, and so the script, changes.
 *
 * The cluster is secured, so the job connects as the admin (SCRAM) and, after
 * the topics, sets every other principal's SCRAM credentials and adds every
 * ACL rule of stacks/security.ts (`jobAcls()`), both idempotent. It is the one
 * container that holds every Kafka password: the admin's to connect, the
 * others' to set them. It runs again when a password changes, too.
 *
 * @module
 */
import { Construct } from "constructs";
import { container, type image } from "@cdktf/provider-docker";
import { onNetwork, terraformLiteral } from "./container_defaults.ts";
import { ADMIN_PASSWORD_ENV, renderTopicsScript, type ScramUser } from "./render/topics.ts";
import { type AclRule, KAFKA_USERS, type PrincipalName, PRINCIPALS } from "./security.ts";
import type { TopicSpec } from "./topology.ts";

/** The environment variable holding a (non-admin) principal's password in the setup job. */
export function principalPasswordEnv(principal: PrincipalName): string {
  return `TXPIPE_KAFKA_PASSWORD_${principal.toUpperCase()}`;
}

/** The users whose SCRAM credentials the setup job sets: every principal but the admin. */
export function scramUsers(): ScramUser[] {
  return PRINCIPALS.filter((p) => p !== "admin").map((p) => ({
    user: KAFKA_USERS[p],
    passwordEnv: principalPasswordEnv(p),
  }));
}

/** Props of `Topics`. */
export interface TopicsProps {
  readonly topics: readonly TopicSpec[];
  readonly networkName: string;
  /** The Kafka image (its command-line tools create the topics). */
  readonly kafkaImage: image.Image;
  /** In-network bootstrap list. */
  readonly bootstrap: string;
  /** Created after these are healthy (the brokers). */
  readonly after: readonly container.Container[];
  /** Every principal's password (Terraform expressions; sensitive). */
  readonly passwords: Readonly<Record<PrincipalName, string>>;
  /** The ACL rules to add (stacks/security.ts's `jobAcls()`). */
  readonly acls: readonly AclRule[];
}

/** The one-shot topic-creation container. */
export class Topics extends Construct {
  /** The container; jobs depend on it, so they start only once their topics exist. */
  readonly job: container.Container;
  /** The script it runs (also asserted by tests). */
  readonly script: string;

  constructor(scope: Construct, id: string, props: TopicsProps) {
    super(scope, id);
    this.script = renderTopicsScript(props.topics, {
      bootstrap: props.bootstrap,
      security: { adminPasswordEnv: ADMIN_PASSWORD_ENV, users: scramUsers(), acls: props.acls },
    });
    this.job = new container.Container(this, "create-topics", {
      name: "txpipe-create-topics",
      image: props.kafkaImage.imageId,
      entrypoint: ["/bin/bash", "-c"],
      command: [terraformLiteral(this.script)],
      env: [
        "KAFKA_HEAP_OPTS=-Xmx256m",
        `${ADMIN_PASSWORD_ENV}=${props.passwords.admin}`,
        ...PRINCIPALS.filter((p) => p !== "admin").map((p) =>
          `${principalPasswordEnv(p)}=${props.passwords[p]}`
        ),
      ],
      networksAdvanced: onNetwork(props.networkName),
      attach: true,
      mustRun: false,
      logs: true,
      dependsOn: [...props.after],
      lifecycle: {
        postcondition: [{
          condition: "${self.exit_code == 0}",
          errorMessage: "topic, user or ACL creation failed; see container_logs of this resource " +
            "or `docker logs txpipe-create-topics`",
        }],
      },
    });
  }
}
