/**
 * A transaction's coordinators, found once and followed when they move, as
 * the Java client does, for kafkajs 2.2.4 ({@link installCoordinatorHandling},
 * called by patchKafkajs in kafkajs_patches.ts, which createKafka calls:
 * every txpipe client has it).
 *
 * A transaction talks to two coordinators: the transaction coordinator
 * (AddPartitionsToTxn, AddOffsetsToTxn, EndTxn), the leader of the
 * `__transaction_state` partition of its transactional id, and the group
 * coordinator (TxnOffsetCommit), the leader of the group's
 * `__consumer_offsets` partition. Either moves when its partition's leader
 * does: a broker restarts, the controller moves leaders back to their
 * preferred replicas. The old broker then answers NOT_COORDINATOR, and the
 * new one COORDINATOR_LOAD_IN_PROGRESS until it has read the partition
 * (kafkajs names Kafka's codes 16, 15 and 14 `NOT_COORDINATOR_FOR_GROUP`,
 * `GROUP_COORDINATOR_NOT_AVAILABLE` and `GROUP_LOAD_IN_PROGRESS`).
 *
 * Three defects of kafkajs, seen on the local 3+3 cluster (Kafka 4.4.0,
 * 2026-12-07) with detect running at 2 000 records/s while every
 * coordinator moved, twice (tests/coordinators_test.ts does the same):
 *
 * 1. **A commit failed where it could go on.** EndTxn and AddOffsetsToTxn
 *    are sent once: on either error the transaction aborted and the stream
 *    job dropped that partition's state to restore it from the changelog
 *    ("batch failed; state dropped", 4 times in that run). kafkajs's
 *    TxnOffsetCommit retry means to find the group coordinator again on
 *    these errors, but lists them by the Java client's names
 *    (`COORDINATOR_LOAD_IN_PROGRESS`, `NOT_COORDINATOR`,
 *    `COORDINATOR_NOT_AVAILABLE`, eosManager/index.js), which no kafkajs
 *    error carries, so it gives up on the first.
 * 2. **A loading coordinator was waited for with the producer's backoff.**
 *    AddPartitionsToTxn failed the whole send, which kafkajs retried after
 *    300 ms, 600 ms, 1.2 s...: 2.5 s for one move in that run. The Java
 *    client retries in place after 100 ms (its TransactionManager).
 * 3. **Every request of a transaction asked where its coordinator is.**
 *    kafkajs sends a FindCoordinator request before each AddPartitionsToTxn,
 *    AddOffsetsToTxn, EndTxn and TxnOffsetCommit: four more round trips per
 *    transaction, each about 0.5 ms on a quiet local cluster. The Java client
 *    remembers the coordinator until it answers that it is not.
 *
 * The fixes:
 * - the four requests, and InitProducerId (a job's takeover of a
 *   partition), are retried here, with the same arguments, on those three
 *   errors: on the same broker while it loads; on the coordinator found
 *   again when it moved. A refused request was not applied, and the
 *   coordinator answers a repeated EndTxn of a transaction it already
 *   completed with success, so a retry is what the Java client does too.
 *   Waits: 2 ms, doubling up to 50 ms ({@link RETRY_SCHEDULE} of
 *   concurrent_transactions.ts), for at most {@link MAX_RETRY_MS}; then the
 *   error goes to kafkajs as before;
 * - the transaction coordinator of each transactional id is remembered per
 *   kafkajs client, and forgotten at any error of a request sent to it, so
 *   the next lookup asks Kafka (the group coordinator is still looked up
 *   each time: kafkajs's consumer and admin use that lookup too, with
 *   requests this module does not watch). Every request kafkajs sends to a
 *   transaction coordinator is watched: when InitProducerId was not, a
 *   job's takeover retried it against the remembered coordinator that had
 *   moved until kafkajs gave up (tests/detect_test.ts caught it).
 *
 * @module
 */
import Broker from "kafkajs/src/broker/index.js";
import Cluster from "kafkajs/src/cluster/index.js";
import { MAX_RETRY_MS, retryWhile } from "./concurrent_transactions.ts";

/** kafkajs's coordinator types (protocol/coordinatorTypes.js). */
const GROUP = 0;
const TRANSACTION = 1;

/** kafkajs's name of Kafka's COORDINATOR_LOAD_IN_PROGRESS (code 14). */
export const COORDINATOR_LOADING = "GROUP_LOAD_IN_PROGRESS";
/** kafkajs's names of Kafka's NOT_COORDINATOR (16) and COORDINATOR_NOT_AVAILABLE (15). */
export const COORDINATOR_MOVED: ReadonlySet<string> = new Set([
  "NOT_COORDINATOR_FOR_GROUP",
  "GROUP_COORDINATOR_NOT_AVAILABLE",
]);

/**
 * The requests handled here (kafkajs's Broker methods), the coordinator each
 * goes to, and the name kafkajs's connection logs its response by.
 */
const REQUESTS = {
  // Every request kafkajs sends to a transaction coordinator it looked up
  // (eosManager's findTransactionCoordinator): one left out would be sent,
  // again and again, to a remembered coordinator that moved.
  initProducerId: { coordinator: TRANSACTION, logged: "InitProducerId" },
  addPartitionsToTxn: { coordinator: TRANSACTION, logged: "AddPartitionsToTxn" },
  addOffsetsToTxn: { coordinator: TRANSACTION, logged: "AddOffsetsToTxn" },
  endTxn: { coordinator: TRANSACTION, logged: "EndTxn" },
  txnOffsetCommit: { coordinator: GROUP, logged: "TxnOffsetCommit" },
} as const;
type RequestName = keyof typeof REQUESTS;

/**
 * The requests retried here, as kafkajs's connection names them in its
 * "Response <name>(key: …)" log lines (log.ts makes those lines debug).
 */
export const COORDINATOR_REQUESTS_LOGGED: readonly string[] = Object.values(REQUESTS).map((r) =>
  r.logged
);

/** What this module did, per request; for tests and the note of a run. */
export const coordinatorRetries: Record<RequestName, { loading: number; moved: number }> = {
  initProducerId: { loading: 0, moved: 0 },
  addPartitionsToTxn: { loading: 0, moved: 0 },
  addOffsetsToTxn: { loading: 0, moved: 0 },
  endTxn: { loading: 0, moved: 0 },
  txnOffsetCommit: { loading: 0, moved: 0 },
};

/** Transaction-coordinator lookups answered from memory and asked of Kafka; for tests. */
export const coordinatorLookups = { remembered: 0, asked: 0 };

/** Whether {@link coordinatorLookups} may be answered from memory (only the bench turns it off). */
export const COORDINATOR_MEMORY = { enabled: true };

/** How an error of a coordinator's request is handled here. */
export function coordinatorError(err: unknown): "loading" | "moved" | undefined {
  const type = (err as { type?: string } | null)?.type;
  if (type === COORDINATOR_LOADING) return "loading";
  if (type !== undefined && COORDINATOR_MOVED.has(type)) return "moved";
  return undefined;
}

/** The kafkajs Cluster a coordinator Broker was found by, set on the Broker. */
export const FOUND_BY = Symbol.for("txpipe.coordinatorFoundBy");

interface KafkajsCluster {
  findGroupCoordinator(args: { groupId: string; coordinatorType?: number }): Promise<KafkajsBroker>;
  findBroker(args: { nodeId: number }): Promise<KafkajsBroker>;
}
interface KafkajsBroker {
  nodeId?: number;
  [FOUND_BY]?: KafkajsCluster;
}

/** Per kafkajs client (its Cluster), the node of each transactional id's coordinator. */
const remembered = new WeakMap<KafkajsCluster, Map<string, number>>();

function forget(cluster: KafkajsCluster | undefined, type: number, key: string): void {
  if (cluster && type === TRANSACTION) remembered.get(cluster)?.delete(key);
}

/**
 * Sends `request` (a coordinator request named `name`, by `send` on a
 * broker) to `broker`, retried on a coordinator that loads or moved (see the
 * module documentation). Exported for tests, which pass a stand-in broker
 * and cluster.
 */
export function coordinatorRequest<T>(
  name: RequestName,
  broker: KafkajsBroker,
  request: { transactionalId?: string; groupId?: string },
  send: (broker: KafkajsBroker) => Promise<T>,
  maxRetryMs = MAX_RETRY_MS,
): Promise<T> {
  const type = REQUESTS[name].coordinator;
  const key = (type === TRANSACTION ? request.transactionalId : request.groupId) ?? "";
  let kind: "loading" | "moved" | undefined;
  let findAgain = false;
  return retryWhile(
    async () => {
      if (findAgain) {
        broker = await broker[FOUND_BY]!.findGroupCoordinator({
          groupId: key,
          coordinatorType: type,
        });
        findAgain = false;
      }
      return await send(broker);
    },
    (err) => {
      forget(broker[FOUND_BY], type, key); // whatever went wrong, the next lookup asks Kafka
      kind = coordinatorError(err);
      return kind === "loading" || (kind === "moved" && broker[FOUND_BY] !== undefined);
    },
    {
      maxRetryMs,
      onRetry: () => {
        coordinatorRetries[name][kind!]++;
        findAgain = kind === "moved";
      },
    },
  );
}

/**
 * Runs `request` (a kafkajs call that finds its coordinator itself, such as
 * admin.fetchOffsets) again while it fails because that coordinator loads or
 * moved ({@link retryWhile}'s schedule, for at most `maxRetryMs`); any other
 * error, or this one past the deadline, is thrown as is.
 */
export function whileCoordinatorMoves<T>(
  request: () => Promise<T>,
  maxRetryMs = MAX_RETRY_MS,
): Promise<T> {
  return retryWhile(request, (err) => coordinatorError(err) !== undefined, { maxRetryMs });
}

const INSTALLED = Symbol.for("txpipe.coordinators");

/**
 * Wraps kafkajs's coordinator lookup and the five coordinator requests of a
 * transaction (see the module documentation). Idempotent. Called by
 * patchKafkajs (kafkajs_patches.ts) after the CONCURRENT_TRANSACTIONS
 * retries, which it wraps: a request refused so is retried there first.
 */
export function installCoordinatorHandling(): void {
  // deno-lint-ignore no-explicit-any
  const clusterProto = Cluster.prototype as Record<string | symbol, any>;
  // deno-lint-ignore no-explicit-any
  const brokerProto = Broker.prototype as Record<string | symbol, any>;
  if (brokerProto[INSTALLED]) return;
  const find = clusterProto.findGroupCoordinator;
  if (typeof find !== "function") {
    throw new Error("kafkajs Cluster.findGroupCoordinator not found: expected kafkajs 2.2.4");
  }
  for (const name of Object.keys(REQUESTS) as RequestName[]) {
    if (typeof brokerProto[name] !== "function") {
      throw new Error(`kafkajs Broker.${name} not found: expected kafkajs 2.2.4`);
    }
  }
  clusterProto.findGroupCoordinator = async function (
    this: KafkajsCluster,
    args: { groupId: string; coordinatorType?: number },
  ): Promise<KafkajsBroker> {
    if ((args.coordinatorType ?? GROUP) !== TRANSACTION) {
      const broker: KafkajsBroker = await find.call(this, args);
      broker[FOUND_BY] = this;
      return broker;
    }
    let nodes = remembered.get(this);
    if (!nodes) remembered.set(this, nodes = new Map());
    const node = nodes.get(args.groupId);
    if (node !== undefined && COORDINATOR_MEMORY.enabled) {
      try {
        const broker = await this.findBroker({ nodeId: node });
        broker[FOUND_BY] = this;
        coordinatorLookups.remembered++;
        return broker;
      } catch {
        nodes.delete(args.groupId); // gone from the metadata, or unreachable: ask Kafka
      }
    }
    const broker: KafkajsBroker = await find.call(this, args);
    broker[FOUND_BY] = this;
    coordinatorLookups.asked++;
    if (broker.nodeId !== undefined) nodes.set(args.groupId, broker.nodeId);
    return broker;
  };
  for (const name of Object.keys(REQUESTS) as RequestName[]) {
    const inner = brokerProto[name];
    brokerProto[name] = function (
      this: KafkajsBroker,
      request: { transactionalId?: string; groupId?: string },
    ) {
      return coordinatorRequest(name, this, request, (b) => inner.call(b, request));
    };
  }
  brokerProto[INSTALLED] = true;
}
