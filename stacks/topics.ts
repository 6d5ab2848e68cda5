/**
 * Topics provisioned declaratively from the spec: a one-shot container from
 * the same `apache/kafka` image runs the rendered script (create with
 * `--if-not-exists`, set every config, describe) once all brokers are
 * healthy. Terraform waits for it to finish and fails the apply when it exits
 * non-zero. It runs again whenever the topic spec, and so the script, changes.
 *
 * @module
 */
import { Construct } from "constructs";
import { container, type image } from "@cdktf/provider-docker";
import { onNetwork, terraformLiteral } from "./container_defaults.ts";
import { renderTopicsScript } from "./render/topics.ts";
import type { TopicSpec } from "./topology.ts";

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
}

/** The one-shot topic-creation container. */
export class Topics extends Construct {
  /** The container; jobs depend on it, so they start only once their topics exist. */
  readonly job: container.Container;
  /** The script it runs (also asserted by tests). */
  readonly script: string;

  constructor(scope: Construct, id: string, props: TopicsProps) {
    super(scope, id);
    this.script = renderTopicsScript(props.topics, { bootstrap: props.bootstrap });
    this.job = new container.Container(this, "create-topics", {
      name: "txpipe-create-topics",
      image: props.kafkaImage.imageId,
      entrypoint: ["/bin/bash", "-c"],
      command: [terraformLiteral(this.script)],
      env: ["KAFKA_HEAP_OPTS=-Xmx256m"],
      networksAdvanced: onNetwork(props.networkName),
      attach: true,
      mustRun: false,
      logs: true,
      dependsOn: [...props.after],
      lifecycle: {
        postcondition: [{
          condition: "${self.exit_code == 0}",
          errorMessage: "topic creation failed; see container_logs of this resource " +
            "or `docker logs txpipe-create-topics`",
        }],
      },
    });
  }
}
