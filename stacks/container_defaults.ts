/**
 * Small helpers that every component construct uses the same way: joining
 * the network, publishing a port on 127.0.0.1 only, shipping logs to Logstash
 * and pulling a pinned image.
 *
 * @module
 */
import type { Construct } from "constructs";
import { container, image } from "@cdktf/provider-docker";
import { SERVICE_PORTS } from "./topology.ts";

/** The only host address the stack publishes ports on. */
export const HOST_IP = "127.0.0.1";

/** Joins the txpipe network, optionally under extra DNS aliases. */
export function onNetwork(
  networkName: string,
  aliases: string[] = [],
): container.ContainerNetworksAdvanced[] {
  return [{ name: networkName, aliases }];
}

/** Publishes a container port on 127.0.0.1 at the same host port (or `hostPort`). */
export function loopbackPort(
  port: number,
  options: { hostPort?: number; protocol?: "tcp" | "udp" } = {},
): container.ContainerPorts {
  return {
    internal: port,
    external: options.hostPort ?? port,
    ip: HOST_IP,
    protocol: options.protocol ?? "tcp",
  };
}

/**
 * Ships a container's stdout/stderr to Logstash's GELF input with Docker's
 * gelf log driver. The Docker daemon sends from the host, so the address is
 * the GELF port Logstash publishes on 127.0.0.1. UDP never blocks the
 * container: lines sent while Logstash is down are dropped, and `docker logs`
 * still works through Docker's local cache (dual logging).
 *
 * `tag` tells the Logstash pipeline how to parse the lines ("kafka" or "txpipe-job").
 */
export function gelfLogging(tag: string): Pick<container.ContainerConfig, "logDriver" | "logOpts"> {
  return {
    logDriver: "gelf",
    logOpts: {
      "gelf-address": `udp://${HOST_IP}:${SERVICE_PORTS.logstashGelf}`,
      tag,
    },
  };
}

/** Pulls a pinned image; kept locally on destroy so a redeploy does not download it again. */
export function pinnedImage(scope: Construct, id: string, name: string): image.Image {
  return new image.Image(scope, id, { name, keepLocally: true });
}

/**
 * Text that Terraform must take literally (a rendered file or script): escapes
 * Terraform's template sequences `${` and `%{` as `$${` and `%%{`.
 */
export function terraformLiteral(text: string): string {
  // Replacer functions: in a replacement string, `$$` would itself mean one `$`.
  return text.replaceAll("${", () => "$${").replaceAll("%{", () => "%%{");
}
