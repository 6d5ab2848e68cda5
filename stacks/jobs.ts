/**
 * The Deno jobs of the spec (produce, aggregate, detect, evaluate) in the
 * official `denoland/deno` image, each with a configurable number of replicas
 * (Terraform `count`).
 *
 * Code: the repository is bind-mounted read-only at /app, so the containers
 * run exactly the checked-out scripts with the committed deno.json and
 * deno.lock (`--frozen`: a stale lockfile fails loudly instead of resolving
 * other versions). npm packages are downloaded once into a shared
 * `DENO_DIR` volume. The Docker daemon must therefore run on the machine that
 * holds the checkout, the usual case for this development stack; restart the
 * containers (or re-apply) to pick up edited code.
 *
 * Replicas of one job share a network alias (`txpipe-<job>`), which
 * Prometheus resolves to every replica (DNS service discovery), and each
 * replica gets a stable `TXPIPE_INSTANCE_ID` (`<job>-<index>`), for example
 * for transactional ids. Logs go to Logstash through the gelf log driver,
 * tagged `txpipe-job`, where the pipeline parses them as ECS JSON.
 *
 * Credentials: each job connects to Kafka as its own principal
 * (stacks/security.ts): its containers get `TXPIPE_KAFKA_USER` and
 * `TXPIPE_KAFKA_PASSWORD` of that principal only (jobs/lib/credentials.ts
 * reads them), and its ACLs allow nothing beyond its topics, groups and
 * transactional ids.
 *
 * @module
 */
import { Construct } from "constructs";
import { type ITerraformDependable, TerraformCount, Token } from "cdktf";
import { container, volume } from "@cdktf/provider-docker";
import { gelfLogging, onNetwork, pinnedImage } from "./container_defaults.ts";
import { IMAGES } from "./images.ts";
import { dockerJobAlias } from "./render/prometheus.ts";
import { repoRootAbsolute } from "./repo_files.ts";
import { KAFKA_USERS } from "./security.ts";
import { type JobSpec, v8FlagArgs } from "./topology.ts";

/** Where the repository is mounted in the job containers (the working directory). */
export const APP_DIR = "/app";

/** The shared Deno cache (npm packages) in the job containers. */
export const DENO_DIR = "/deno-dir";

/** The network alias all replicas of a job share; Prometheus resolves it to every replica. */
export const jobAlias = dockerJobAlias;

/** Props of `Jobs`. */
export interface JobsProps {
  readonly jobs: readonly JobSpec[];
  readonly networkName: string;
  /** In-network Kafka bootstrap list (`TXPIPE_BROKERS`). */
  readonly bootstrap: string;
  /** Each job's Kafka password (Terraform expressions; sensitive); a job gets its own only. */
  readonly kafkaPasswords: Readonly<Record<JobSpec["name"], string>>;
  /** Replicas per job: numbers or Terraform number expressions (variables). */
  readonly replicas: Readonly<Record<JobSpec["name"], number>>;
  /** Extra `NAME=value` environment per job, e.g. the producer's rate. */
  readonly extraEnv?: Readonly<Partial<Record<JobSpec["name"], readonly string[]>>>;
  /** Started after these (topic creation, Logstash). */
  readonly after: readonly ITerraformDependable[];
}

/** One container resource (with `count`) per job. */
export class Jobs extends Construct {
  /** The container resource of each job, by job name. */
  readonly containers: ReadonlyMap<JobSpec["name"], container.Container>;

  constructor(scope: Construct, id: string, props: JobsProps) {
    super(scope, id);
    const deno = pinnedImage(this, "deno-image", IMAGES.deno);
    const cache = new volume.Volume(this, "deno-cache", { name: "txpipe-deno-cache" });
    const containers = new Map<JobSpec["name"], container.Container>();
    for (const job of props.jobs) {
      const count = TerraformCount.of(props.replicas[job.name]);
      const index = Token.asString(count.index);
      const name = `txpipe-${job.name}-${index}`;
      const probe = `const r = await fetch("http://127.0.0.1:${job.metricsPort}/metrics");` +
        " Deno.exit(r.ok ? 0 : 1);";
      containers.set(
        job.name,
        new container.Container(this, job.name, {
          count,
          name,
          hostname: name,
          image: deno.imageId,
          user: "deno",
          workingDir: APP_DIR,
          command: [
            "run",
            "--allow-all",
            "--frozen",
            "--node-modules-dir=none",
            ...v8FlagArgs(job),
            job.script,
          ],
          env: [
            `TXPIPE_BROKERS=${props.bootstrap}`,
            `TXPIPE_KAFKA_USER=${KAFKA_USERS[job.name]}`,
            `TXPIPE_KAFKA_PASSWORD=${props.kafkaPasswords[job.name]}`,
            `TXPIPE_METRICS_PORT=${job.metricsPort}`,
            "TXPIPE_METRICS_HOST=0.0.0.0",
            "TXPIPE_LOG_FORMAT=ecs", // for Logstash, also when a container gets a tty
            `TXPIPE_INSTANCE_ID=${job.name}-${index}`,
            `DENO_DIR=${DENO_DIR}`,
            "DENO_NO_UPDATE_CHECK=1",
            ...(props.extraEnv?.[job.name] ?? []),
          ],
          mounts: [{
            type: "bind",
            source: repoRootAbsolute(),
            target: APP_DIR,
            readOnly: true,
          }],
          volumes: [{ volumeName: cache.name, containerPath: DENO_DIR }],
          networksAdvanced: onNetwork(props.networkName, [jobAlias(job)]),
          healthcheck: {
            test: ["CMD", "deno", "eval", probe],
            interval: "15s",
            timeout: "5s",
            retries: 4,
            startPeriod: "60s",
          },
          restart: "unless-stopped",
          destroyGraceSeconds: 30,
          ...gelfLogging("txpipe-job"),
          dependsOn: [...props.after],
        }),
      );
    }
    this.containers = containers;
  }
}
