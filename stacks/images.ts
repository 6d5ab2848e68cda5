/**
 * Every container image the Docker stack runs, each pinned to one tag.
 *
 * Kafka's tag comes from the topology spec, so local mode (Maven Central jars)
 * and Docker run the same release. The three Elastic images share one version.
 *
 * @module
 */
import { KAFKA_VERSION } from "./topology.ts";

/** The Elastic Stack release of Elasticsearch, Logstash and Kibana (all three must match). */
export const ELASTIC_VERSION = "8.19.10";

/** Pinned `repository:tag` of every image the stack pulls. */
export const IMAGES = {
  /** Apache Kafka's official image: controllers, brokers and the topic-creation job. */
  kafka: `apache/kafka:${KAFKA_VERSION}`,
  /** Fetches the JMX exporter agent jar from Maven Central into a shared volume. */
  maven: "maven:3.9.9-eclipse-temurin-21",
  prometheus: "prom/prometheus:v3.5.0",
  grafana: "grafana/grafana:12.4.0",
  elasticsearch: `docker.elastic.co/elasticsearch/elasticsearch:${ELASTIC_VERSION}`,
  logstash: `docker.elastic.co/logstash/logstash:${ELASTIC_VERSION}`,
  kibana: `docker.elastic.co/kibana/kibana:${ELASTIC_VERSION}`,
  /** The official Deno image for the three jobs: the Deno release `.ci/run` installs. */
  deno: "denoland/deno:2.9.6",
} as const;
