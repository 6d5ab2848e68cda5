/**
 * The topic reader: what `rpk topic consume` and `kcat -C` show, for txpipe.
 *
 *   TOPIC, from its first offset (read_committed: only committed records)
 *     → one view per record: partition, offset, timestamp, key, headers
 *       (UTF-8), value (parsed JSON, else the text); a dead letter's reason
 *     → stdout: pretty JSON on a terminal, NDJSON when piped (--format)
 *     → stop at the end offsets of the start, after --limit records, or
 *       (--follow) on Ctrl-C / SIGTERM
 *
 * Where it stops. Without --follow the reader stops once its position in
 * every partition has reached that partition's end offset as it was at the
 * start. read_committed reads to the last stable offset (LSO): the end
 * offsets are listed read_committed, so they are LSOs (an open transaction
 * holds the end before its first record). The position is judged by the
 * offsets the reader has moved past, not by counting records: transaction
 * markers and aborted records occupy offsets that are never printed.
 *
 * No consumer group. Each partition is read with its own fetches
 * (jobs/lib/partition_reader.ts), as the Java client's `assign()` reads: no
 * group to join (a new group's first join waits out the broker's
 * `group.initial.rebalance.delay.ms`, 3 s by Kafka's default), none left
 * behind, no offset committed, and no group rights needed.
 *
 * Records go to stdout, everything else (progress, errors) to stderr, and
 * kafkajs stays silent (no logger), so piping stays clean.
 *
 * Run `deno task consume --help` for the flags.
 *
 * @module
 */
import type { Admin, IHeaders, Kafka, KafkaMessage } from "kafkajs";
import { defineCommand, parseCommandLine } from "./lib/cli.ts";
import { connectionFlags, exportSecurityFlags, securityFlags } from "./lib/job.ts";
import {
  connectWithRetry,
  createKafka,
  KafkaConnectError,
  missingCredentialsHint,
  probeKafka,
} from "./lib/kafka.ts";
import { CredentialsError } from "./lib/credentials.ts";
import { formatCount, formatElapsed } from "./lib/progress.ts";
import { DLQ_HEADERS } from "./lib/stream.ts";
import { PartitionReader, readEach } from "./lib/partition_reader.ts";
import type { DecodedRecord } from "./lib/fetch_decode.ts";

// The connection flags every command shares (a reader serves no /metrics).
const { brokers, "connect-attempts": connectAttempts } = connectionFlags();

/** The reader's flags. */
export const CONSUME_COMMAND = defineCommand({
  name: "deno task consume",
  summary: "print the committed records of a topic (read_committed), from its beginning",
  usage: "deno task consume TOPIC [flags]",
  flags: {
    brokers,
    "connect-attempts": connectAttempts,
    ...securityFlags(),
    follow: {
      kind: "boolean",
      default: false,
      help: "keep printing new records until Ctrl-C or SIGTERM, instead of stopping at the end " +
        "offsets the topic had at the start",
    },
    limit: {
      kind: "int",
      min: 0,
      default: 0,
      help: "stop after N records; 0 = no limit",
      placeholder: "N",
    },
    format: {
      kind: "string",
      choices: ["auto", "json", "pretty"],
      default: "auto",
      help: "json: one JSON object per line (NDJSON); pretty: indented JSON; auto: pretty on " +
        "a terminal, json when piped",
      placeholder: "auto|json|pretty",
    },
  },
  examples: [
    "deno task consume transaction_dead_letters",
    "deno task consume financial_transactions --limit 5 --format json | jq .value.amount",
    "deno task consume transaction_anomalies --follow",
  ],
});

/** A dead letter's reason, from its `txpipe-dlq-*` headers. */
export interface DeadLetterView {
  reason: string;
  message?: string;
  /** Where the rejected record was: `topic/partition@offset`. */
  source?: string;
  job?: string;
}

/** One record as the reader prints it. */
export interface RecordView {
  topic: string;
  partition: number;
  offset: number;
  /** Epoch ms. */
  timestamp: number;
  /** The key as UTF-8 text; base64 when it is not valid UTF-8 (then `keyEncoding`). */
  key: string | null;
  keyEncoding?: "base64";
  /** Present when the record carries a `txpipe-dlq-reason` header. */
  deadLetter?: DeadLetterView;
  /** Header values as UTF-8 text; a repeated header as a list. */
  headers: Record<string, string | string[]>;
  /** Parsed JSON when the bytes are JSON, else the text; base64 when not UTF-8 (then `valueEncoding`). */
  value: unknown;
  valueEncoding?: "base64";
}

/** A fetched record: what {@link recordView} reads of a kafkajs message. */
export type FetchedMessage = Pick<KafkaMessage, "offset" | "timestamp" | "key" | "value"> & {
  /** A header without a value (null) is left out of the view. */
  headers?: IHeaders | Record<string, Uint8Array | null | Array<Uint8Array | null>>;
};

const utf8 = new TextDecoder("utf-8", { fatal: true });
const lossyUtf8 = new TextDecoder("utf-8");

/** The bytes as UTF-8 text, or undefined when they are not valid UTF-8. */
function utf8Text(bytes: Uint8Array): string | undefined {
  try {
    return utf8.decode(bytes);
  } catch {
    return undefined;
  }
}

function base64(bytes: Uint8Array): string {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

function headerText(v: unknown): string {
  return typeof v === "string" ? v : lossyUtf8.decode(v as Uint8Array);
}

/** The printable view of `message`, read from `partition` of `topic`. */
export function recordView(topic: string, partition: number, message: FetchedMessage): RecordView {
  const headers: Record<string, string | string[]> = {};
  for (const [name, v] of Object.entries(message.headers ?? {})) {
    if (v === undefined || v === null) continue;
    headers[name] = Array.isArray(v)
      ? v.filter((x: unknown) => x !== null).map(headerText)
      : headerText(v);
  }
  const key = printable(message.key, false);
  const value = printable(message.value, true);
  const deadLetter = deadLetterOf(headers);
  // Fields in the order they print: a dead letter's reason before its headers and value.
  return {
    topic,
    partition,
    offset: Number(message.offset),
    timestamp: Number(message.timestamp),
    key: key.data as string | null,
    ...(key.base64 ? { keyEncoding: "base64" as const } : {}),
    ...(deadLetter ? { deadLetter } : {}),
    headers,
    value: value.data,
    ...(value.base64 ? { valueEncoding: "base64" as const } : {}),
  };
}

/**
 * Bytes as they print: null, the UTF-8 text (parsed when `json` and it is
 * JSON), or base64 when they are not UTF-8.
 */
function printable(bytes: Uint8Array | null, json: boolean): { data: unknown; base64?: true } {
  if (!bytes) return { data: null };
  const text = utf8Text(bytes);
  if (text === undefined) return { data: base64(bytes), base64: true };
  return { data: json ? parseJson(text) : text };
}

/** `text` parsed as JSON, or `text` itself when it is not JSON. */
function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** The dead-letter reason of a record's decoded headers, or undefined when it is none. */
export function deadLetterOf(
  headers: Readonly<Record<string, string | string[]>>,
): DeadLetterView | undefined {
  const one = (name: string) => {
    const v = headers[name];
    return Array.isArray(v) ? v[0] : v;
  };
  const reason = one(DLQ_HEADERS.reason);
  if (reason === undefined) return undefined;
  const view: DeadLetterView = { reason };
  const message = one(DLQ_HEADERS.message);
  if (message !== undefined) view.message = message;
  const topic = one(DLQ_HEADERS.topic);
  if (topic !== undefined) {
    view.source = `${topic}/${one(DLQ_HEADERS.partition) ?? "?"}@${one(DLQ_HEADERS.offset) ?? "?"}`;
  }
  const job = one(DLQ_HEADERS.job);
  if (job !== undefined) view.job = job;
  return view;
}

/** How records are printed: NDJSON, or indented JSON for people. */
export type OutputFormat = "json" | "pretty";

/** A record as one line of NDJSON (no newline). */
export function formatJsonLine(view: RecordView): string {
  return JSON.stringify(view);
}

/**
 * A record as indented JSON with an ISO timestamp; a dead letter starts with
 * a `DEAD LETTER` line naming its reason (red and bold when `color`).
 */
export function formatPretty(view: RecordView, color = false): string {
  const { deadLetter, ...rest } = view;
  const json = JSON.stringify({ ...rest, timestamp: isoTime(view.timestamp) }, null, 2);
  if (!deadLetter) return json;
  let banner = `DEAD LETTER  ${deadLetter.reason}`;
  if (deadLetter.message) banner += `: ${deadLetter.message}`;
  const from = [
    deadLetter.source ? `from ${deadLetter.source}` : "",
    deadLetter.job ? `job ${deadLetter.job}` : "",
  ].filter((s) => s !== "").join(", ");
  if (from) banner += `  (${from})`;
  return `${color ? `\x1b[1;31m${banner}\x1b[0m` : banner}\n${json}`;
}

function isoTime(ms: number): string {
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? String(ms) : d.toISOString();
}

/** A partition's offsets as the topic listing gives them (read_committed: `high` is the LSO). */
export interface PartitionOffsets {
  partition: number;
  /** First offset (log start). */
  low: string;
  /** End offset: the next offset to be written, or the last stable offset. */
  high: string;
}

/**
 * The end offsets a reader stops at, as they were at its start, and how far
 * it has read in each partition. The position counts every offset the
 * consumer has moved past (data records, aborted records and transaction
 * markers alike), so a partition whose last records are markers or aborted
 * ones still reaches its end.
 */
export class EndOffsets {
  readonly #ends = new Map<number, bigint>();
  readonly #positions = new Map<number, bigint>();

  constructor(partitions: readonly PartitionOffsets[]) {
    for (const p of partitions) {
      this.#ends.set(p.partition, BigInt(p.high));
      this.#positions.set(p.partition, BigInt(p.low));
    }
  }

  /** Whether the record at `offset` of `partition` lies before that partition's end. */
  contains(partition: number, offset: string): boolean {
    const end = this.#ends.get(partition);
    return end !== undefined && BigInt(offset) < end;
  }

  /** Notes that the consumer has moved past `lastOffset` of `partition`. */
  advance(partition: number, lastOffset: string): void {
    const next = BigInt(lastOffset) + 1n;
    if (next > (this.#positions.get(partition) ?? -1n)) this.#positions.set(partition, next);
  }

  /** Whether `partition` has been read to its end. */
  atEnd(partition: number): boolean {
    const end = this.#ends.get(partition);
    return end === undefined || (this.#positions.get(partition) ?? -1n) >= end;
  }

  /** Whether every partition has been read to its end. */
  get reachedEnd(): boolean {
    return [...this.#ends.keys()].every((p) => this.atEnd(p));
  }
}

/** The most bytes a partition's fetch returns: what one partition's records hold in memory at once. */
const FETCH_BYTES = 1024 * 1024;

/** What a read is told to do. */
interface ReadOptions {
  topic: string;
  follow: boolean;
  /** 0 = no limit. */
  limit: number;
  /** Prints one fetched batch's records (already cut to the limit and the end). */
  print: (views: RecordView[]) => Promise<void>;
  /** Resolves when the user asks to stop (Ctrl-C, SIGTERM). */
  stopSignal: Promise<void>;
}

/**
 * Reads `topic` from its beginning, every partition at once with no consumer
 * group, until the end offsets of the start (or forever with `follow`), the
 * limit, or the stop signal. Returns the records printed.
 */
async function consumeTopic(kafka: Kafka, admin: Admin, o: ReadOptions): Promise<number> {
  const offsets = await admin.fetchTopicOffsets(o.topic);
  const ends = new EndOffsets(offsets);
  let printed = 0;
  if (!o.follow && ends.reachedEnd) return printed; // empty: nothing to read

  const readers = await PartitionReader.openAll(
    kafka,
    o.topic,
    offsets.map((p) => p.partition).sort((a, b) => a - b),
    FETCH_BYTES,
  );
  let over = false; // at the end, the limit or a stop: nothing more is printed
  // One batch printed at a time, so that the limit counts across partitions.
  let printing = Promise.resolve();
  const print = (partition: number, records: readonly DecodedRecord[]) =>
    printing = printing.then(async () => {
      if (over) return;
      const views: RecordView[] = [];
      for (const m of records) {
        if (!o.follow && !ends.contains(partition, m.offset)) break; // past the start's end
        views.push(recordView(o.topic, partition, m));
        if (o.limit > 0 && printed + views.length >= o.limit) break;
      }
      if (views.length === 0) return;
      try {
        await o.print(views);
        printed += views.length;
      } catch (err) {
        if (err instanceof Deno.errors.BrokenPipe) over = true; // e.g. `| head`
        else throw err;
      }
      if (o.limit > 0 && printed >= o.limit) over = true;
    });
  const reading = readEach(readers, {
    maxWaitMs: 1000, // how long a fetch waits for new records (a stop ends it at once)
    more: (r) => !over && (o.follow || !ends.atEnd(r.partition)),
    onFetch: (r, records) => {
      // Every offset the reader moved past, printed or not (markers, aborted records).
      if (r.position > 0) ends.advance(r.partition, String(r.position - 1));
      return records.length > 0 ? print(r.partition, records) : undefined;
    },
  });
  o.stopSignal.then(() => {
    over = true;
    reading.stop();
  });
  try {
    await reading.done;
  } finally {
    over = true;
    await reading.stop();
  }
  return printed;
}

/** Writes records to stdout in `format`, a batch at a time. */
function stdoutPrinter(
  format: OutputFormat,
  color: boolean,
): (views: RecordView[]) => Promise<void> {
  const writer = Deno.stdout.writable.getWriter();
  const encoder = new TextEncoder();
  return async (views) => {
    const lines = views.map((v) => format === "json" ? formatJsonLine(v) : formatPretty(v, color));
    await writer.write(encoder.encode(lines.join("\n") + "\n"));
  };
}

/** Prints a usage error as parseCommandLine does, and exits 2. */
function usageError(message: string): never {
  console.error(`${CONSUME_COMMAND.name}: ${message}\nRun with --help for usage.`);
  Deno.exit(2);
}

async function main(): Promise<number> {
  const { values: v, positional } = parseCommandLine(CONSUME_COMMAND);
  if (positional.length === 0) usageError("expected a TOPIC argument, got none");
  if (positional.length > 1) {
    usageError(`expected one TOPIC argument, got ${positional.length}: ${positional.join(" ")}`);
  }
  const topic = positional[0];
  exportSecurityFlags(v);
  const follow = v.follow;
  const brokerList = v.brokers;
  const terminal = Deno.stdout.isTerminal();
  const format: OutputFormat = v.format === "auto" ? (terminal ? "pretty" : "json") : v.format;
  const color = format === "pretty" && terminal && !Deno.env.get("NO_COLOR");

  const name = CONSUME_COMMAND.name;
  let resolveStop!: () => void;
  const stopSignal = new Promise<void>((r) => resolveStop = r);
  Deno.addSignalListener("SIGINT", resolveStop);
  Deno.addSignalListener("SIGTERM", resolveStop);

  // No logger: kafkajs logs nothing, stdout carries only records.
  let kafka: Kafka;
  try {
    kafka = createKafka({ principal: "consume", clientId: "txpipe-consume", brokers: brokerList });
  } catch (err) {
    console.error(`${name}: ${(err as Error).message}`);
    return 1;
  }
  const admin = kafka.admin();
  const started = performance.now();
  try {
    // Each attempt is a silent probe trying every broker once (as runJob does).
    const attempts = v.connectAttempts;
    const connected = connectWithRetry(
      brokerList,
      () => probeKafka(brokerList, "txpipe-consume", "consume"),
      {
        attempts,
        hint: missingCredentialsHint("consume"),
        who: "txpipe-consume",
        onRetry: (attempt, delay) =>
          console.error(
            `${name}: waiting for Kafka at ${brokerList.join(",")} ` +
              `(attempt ${attempt}/${attempts} failed, next in ${delay / 1000} s)`,
          ),
      },
    ).then(() => admin.connect());
    if (await Promise.race([connected.then(() => false), stopSignal.then(() => true)])) {
      return 0; // stopped before anything was read
    }
    if (!(await admin.listTopics()).includes(topic)) {
      console.error(`${name}: topic "${topic}" does not exist on ${brokerList.join(",")}`);
      return 1;
    }
    console.error(
      follow
        ? `reading ${topic} from the beginning, then following new records (Ctrl-C to stop)`
        : `reading ${topic} from the beginning to its current end`,
    );
    const count = await consumeTopic(kafka, admin, {
      topic,
      follow,
      limit: v.limit,
      print: stdoutPrinter(format, color),
      stopSignal,
    });
    const seconds = (performance.now() - started) / 1000;
    console.error(
      `read ${formatCount(count)} record${count === 1 ? "" : "s"} from ${topic} in ${
        seconds < 60 ? `${seconds.toFixed(1)}s` : formatElapsed(seconds)
      }`,
    );
    return 0;
  } catch (err) {
    if (err instanceof KafkaConnectError || err instanceof CredentialsError) {
      console.error(`${name}: ${err.message}`);
    } else console.error(`${name}: failed: ${(err as Error)?.message ?? err}`);
    return 1;
  } finally {
    await admin.disconnect().catch(() => {});
    Deno.removeSignalListener("SIGINT", resolveStop);
    Deno.removeSignalListener("SIGTERM", resolveStop);
  }
}

if (import.meta.main) {
  Deno.exit(await main());
}
