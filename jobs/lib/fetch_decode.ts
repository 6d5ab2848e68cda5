/**
 * Faster Fetch responses for every txpipe consumer ({@link installFetchDecoding},
 * called by patchKafkajs in kafkajs_patches.ts): the records of a Fetch v11
 * response (the version kafkajs 2.2.4 speaks with Kafka 4) are decoded here,
 * into exactly the objects kafkajs's own decoder returns, without its
 * per-record detours.
 *
 * Why: kafkajs's record decoder works out each record's offset and timestamp
 * with its BigInt-based `Long` (a decimal string parsed, a sum, a string
 * printed, for both), reads the timestamp delta a byte at a time through
 * `Long` objects, and makes a sub-buffer and a decoder object per record.
 * Profiled over the aggregation's catch-up, `Long` alone took 5.6 % of the
 * busy time and the decoding around it 3 % more, all of it garbage
 * (docs/benchmarks.md). Here offsets and timestamps are plain numbers while
 * they are safe integers (always, for real offsets and epoch milliseconds),
 * and BigInt only beyond.
 *
 * What stays kafkajs's: the response shape (the unit test compares the two
 * decoders' output on real Fetch responses, field by field), its handling
 * of a truncated last batch (dropped, fetched again), its codecs for
 * compressed batches, and anything unusual: a legacy message set (magic 0
 * or 1, which Kafka 4 no longer writes) or bytes this decoder cannot read
 * send the whole response through kafkajs's decoder, so the result or the
 * error is kafkajs's own. Fetch v4 to v10 are left to kafkajs.
 *
 * Installed before read_committed.ts's filter (patchKafkajs does), which
 * then filters what this decoder returns.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import fetchV11 from "kafkajs/src/protocol/requests/fetch/v11/response.js";
import compression from "kafkajs/src/protocol/message/compression/index.js";

/** kafkajs's view of a record batch, shared by its records (recordBatch/v0/decoder.js). */
export interface BatchContext {
  firstOffset: string;
  firstTimestamp: string;
  partitionLeaderEpoch: number;
  inTransaction: boolean;
  isControlBatch: boolean;
  lastOffsetDelta: number;
  producerId: string;
  producerEpoch: number;
  firstSequence: number;
  maxTimestamp: string;
  timestampType: number;
  magicByte: number;
}

/** A record as kafkajs decodes it (recordBatch/record/v0/decoder.js). */
export interface DecodedRecord {
  magicByte: number;
  attributes: number;
  timestamp: string;
  offset: string;
  key: Buffer | null;
  value: Buffer | null;
  headers: Record<string, Buffer | null | Array<Buffer | null>>;
  isControlRecord: boolean;
  batchContext: BatchContext;
}

/** A fetched partition as kafkajs's Fetch v11 decoder returns it. */
export interface FetchPartitionV11 {
  partition: number;
  errorCode: number;
  highWatermark: string;
  lastStableOffset: string;
  lastStartOffset: string;
  abortedTransactions: Array<{ producerId: string; firstOffset: string }>;
  preferredReadReplica: number;
  messages: DecodedRecord[];
}

/** A Fetch v11 response as kafkajs's decoder returns it. */
export interface FetchResponseV11 {
  throttleTime: number;
  clientSideThrottleTime: number;
  errorCode: number;
  sessionId: number;
  responses: Array<{ topicName: string | null; partitions: FetchPartitionV11[] }>;
}

type Decode = (raw: Buffer) => Promise<FetchResponseV11>;

/** Thrown inside the decoder when kafkajs's own decoder must handle the response. */
class UseKafkajs extends Error {}

const MAGIC_V2 = 2;
const MAGIC_OFFSET = 16; // of the magic byte, in a record batch and in a legacy message set
const RECORD_BATCH_OVERHEAD = 49; // kafkajs reads a batch only when this much is left
const LOG_APPEND_TIME = 1;
const TIMESTAMP_TYPE_FLAG = 0x8;
const TRANSACTIONAL_FLAG = 0x10;
const CONTROL_FLAG = 0x20;
const CODEC_MASK = 0x07;

/** A cursor over one buffer. Reads past its end throw (the Buffer's own RangeError). */
class Reader {
  pos = 0;
  constructor(readonly buf: Buffer, public end = buf.length) {}

  int8(): number {
    if (this.pos + 1 > this.end) throw new UseKafkajs("past the end");
    return (this.buf[this.pos++] << 24) >> 24;
  }
  /** An array's length: -1 (null) reads as empty, as in kafkajs. */
  arrayLength(): number {
    const n = this.int32();
    if (n < -1) throw new UseKafkajs("negative array length");
    return n === -1 ? 0 : n;
  }
  int16(): number {
    if (this.pos + 2 > this.end) throw new UseKafkajs("past the end");
    const v = this.buf.readInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
  int32(): number {
    if (this.pos + 4 > this.end) throw new UseKafkajs("past the end");
    const v = this.buf.readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  int64(): bigint {
    if (this.pos + 8 > this.end) throw new UseKafkajs("past the end");
    const v = this.buf.readBigInt64BE(this.pos);
    this.pos += 8;
    return v;
  }
  /** A zigzag varint, with kafkajs's arithmetic (decoder.js readVarInt). */
  varInt(): number {
    const buf = this.buf;
    let result = 0;
    let shift = 0;
    let byte: number;
    do {
      if (this.pos >= this.end) throw new UseKafkajs("past the end");
      byte = buf[this.pos++];
      result += (byte & 0x7f) << shift;
      shift += 7;
    } while (byte >= 0x80);
    return (result >>> 1) ^ -(result & 1);
  }
  /**
   * A zigzag varlong (kafkajs's readVarLong): a number while it is a safe
   * integer (a timestamp delta always is), else a BigInt.
   */
  varLong(): number | bigint {
    const start = this.pos;
    let raw = 0;
    let scale = 1;
    let byte: number;
    do {
      if (this.pos >= this.end) throw new UseKafkajs("past the end");
      if (scale > 2 ** 42) {
        this.pos = start;
        return this.#varLongBig();
      }
      byte = this.buf[this.pos++];
      raw += (byte & 0x7f) * scale;
      scale *= 128;
    } while (byte >= 0x80);
    return raw % 2 === 0 ? raw / 2 : -(raw + 1) / 2;
  }
  #varLongBig(): bigint {
    let raw = 0n;
    let shift = 0n;
    let byte: number;
    do {
      if (shift > 63n) throw new UseKafkajs("varlong longer than 9 bytes");
      if (this.pos >= this.end) throw new UseKafkajs("past the end");
      byte = this.buf[this.pos++];
      raw += BigInt(byte & 0x7f) << shift;
      shift += 7n;
    } while (byte >= 0x80);
    return (raw >> 1n) ^ -(raw & 1n);
  }
  /** Varint-length bytes: a view, or null for length -1 (kafkajs's readVarIntBytes). */
  varBytes(): Buffer | null {
    const end = this.#end(this.varInt());
    if (end === undefined) return null;
    const b = this.buf.slice(this.pos, end);
    this.pos = end;
    return b;
  }
  /** Varint-length UTF-8, or null for length -1 (kafkajs's readVarIntString). */
  varString(): string | null {
    return this.#utf8(this.varInt());
  }
  /** Int16-length UTF-8, or null for length -1 (kafkajs's readString). */
  string(): string | null {
    return this.#utf8(this.int16());
  }
  #utf8(length: number): string | null {
    const end = this.#end(length);
    if (end === undefined) return null;
    const s = this.buf.toString("utf8", this.pos, end);
    this.pos = end;
    return s;
  }
  /** Where `length` bytes from here end; undefined for -1 (null). */
  #end(length: number): number | undefined {
    if (length === -1) return undefined;
    if (length < 0 || this.pos + length > this.end) throw new UseKafkajs("bytes past the end");
    return this.pos + length;
  }
}

/** `base + delta` as kafkajs prints it: exact, in numbers while they are safe. */
function plus(base: number, baseBig: bigint, delta: number): string {
  const sum = base + delta;
  return Number.isSafeInteger(sum) ? String(sum) : String(baseBig + BigInt(delta));
}

/** One record, as recordBatch/record/v0/decoder.js builds it. */
function decodeRecord(
  r: Reader,
  ctx: BatchContext,
  firstOffset: number,
  firstOffsetBig: bigint,
  firstTimestamp: number,
  firstTimestampBig: bigint,
): DecodedRecord {
  const length = r.varInt();
  if (length < 0 || r.pos + length > r.end) throw new UseKafkajs("record past the end");
  const end = r.pos + length;
  const outer = r.end;
  // The record's own bounds, as kafkajs reads it from a slice of its length.
  r.end = end;
  const attributes = r.int8();
  const delta = r.varLong();
  const timestamp = ctx.timestampType === LOG_APPEND_TIME && ctx.maxTimestamp
    ? ctx.maxTimestamp
    : typeof delta === "number"
    ? plus(firstTimestamp, firstTimestampBig, delta)
    : String(firstTimestampBig + delta);
  const offset = plus(firstOffset, firstOffsetBig, r.varInt());
  const key = r.varBytes();
  const value = r.varBytes();
  const headers: Record<string, Buffer | null | Array<Buffer | null>> = {};
  const count = r.varInt();
  for (let i = 0; i < count; i++) {
    const name = String(r.varString());
    const v = r.varBytes();
    const had = Object.hasOwn(headers, name) ? headers[name] : undefined;
    const next = had === undefined ? v : Array.isArray(had) ? had.concat([v]) : [had, v];
    // An own property even for "__proto__", as kafkajs's object spread makes it.
    if (name === "__proto__") {
      Object.defineProperty(headers, name, {
        value: next,
        enumerable: true,
        writable: true,
        configurable: true,
      });
    } else headers[name] = next;
  }
  r.end = outer;
  r.pos = end;
  return {
    magicByte: ctx.magicByte,
    attributes,
    timestamp,
    offset,
    key,
    value,
    headers,
    isControlRecord: ctx.isControlBatch,
    batchContext: ctx,
  };
}

/** Safe-integer number of a BigInt, or NaN (then every sum takes the BigInt path). */
function num(v: bigint): number {
  const n = Number(v);
  return Number.isSafeInteger(n) ? n : NaN;
}

/** The records of one partition's record set (fetch/v4/decodeMessages.js), into `out`. */
async function decodeRecordSet(r: Reader, out: DecodedRecord[]): Promise<void> {
  const size = r.int32();
  if (size <= 0 || r.end - r.pos < size) return;
  const start = r.pos;
  const end = start + size;
  r.pos = end;
  if (size <= MAGIC_OFFSET) throw new UseKafkajs("record set too short");
  if (r.buf.readInt8(start + MAGIC_OFFSET) !== MAGIC_V2) throw new UseKafkajs("legacy message set");
  let at = start;
  while (end - at >= RECORD_BATCH_OVERHEAD) {
    const b = new Reader(r.buf, end);
    b.pos = at;
    const firstOffsetBig = b.int64();
    const length = b.int32();
    if (length < 0) throw new UseKafkajs("negative batch length");
    const batchEnd = b.pos + length;
    if (batchEnd > end) break; // a truncated last batch: kafkajs drops it, the next fetch has it
    at = batchEnd;
    b.end = batchEnd;
    const partitionLeaderEpoch = b.int32();
    const magicByte = b.int8();
    b.int32(); // CRC: kafkajs does not check it either
    const attributes = b.int16();
    const lastOffsetDelta = b.int32();
    const firstTimestampBig = b.int64();
    const maxTimestamp = String(b.int64());
    const producerId = String(b.int64());
    const producerEpoch = b.int16();
    const firstSequence = b.int32();
    const ctx: BatchContext = {
      firstOffset: String(firstOffsetBig),
      firstTimestamp: String(firstTimestampBig),
      partitionLeaderEpoch,
      inTransaction: (attributes & TRANSACTIONAL_FLAG) > 0,
      isControlBatch: (attributes & CONTROL_FLAG) > 0,
      lastOffsetDelta,
      producerId,
      producerEpoch,
      firstSequence,
      maxTimestamp,
      timestampType: (attributes & TIMESTAMP_TYPE_FLAG) > 0 ? LOG_APPEND_TIME : 0,
      magicByte,
    };
    const firstOffset = num(firstOffsetBig);
    const firstTimestamp = num(firstTimestampBig);
    const count = b.int32();
    if (count < -1) throw new UseKafkajs("negative record count");
    // Compressed: inflated by kafkajs's codec (gzip; it throws for the codecs it lacks).
    const compressed = (attributes & CODEC_MASK) !== 0;
    if (compressed && count <= 0) continue;
    const records = compressed
      ? new Reader(
        await compression.lookupCodecByAttributes(attributes).decompress(
          b.buf.slice(b.pos, batchEnd),
        ),
      )
      : b;
    for (let i = 0; i < count; i++) {
      out.push(
        decodeRecord(records, ctx, firstOffset, firstOffsetBig, firstTimestamp, firstTimestampBig),
      );
    }
  }
}

/** Fetch v11, as kafkajs's fetch/v11/response.js decodes it; throws {@link UseKafkajs}. */
async function decodeV11(raw: Buffer): Promise<FetchResponseV11> {
  const r = new Reader(raw);
  const clientSideThrottleTime = r.int32();
  const errorCode = r.int16();
  const sessionId = r.int32();
  const topics = r.arrayLength();
  const responses: FetchResponseV11["responses"] = [];
  for (let t = 0; t < topics; t++) {
    const topicName = r.string();
    const count = r.arrayLength();
    const partitions: FetchPartitionV11[] = [];
    for (let p = 0; p < count; p++) {
      const partition = r.int32();
      const partErrorCode = r.int16();
      const highWatermark = String(r.int64());
      const lastStableOffset = String(r.int64());
      const lastStartOffset = String(r.int64());
      const aborted = r.arrayLength();
      const abortedTransactions = [];
      for (let a = 0; a < aborted; a++) {
        abortedTransactions.push({ producerId: String(r.int64()), firstOffset: String(r.int64()) });
      }
      const preferredReadReplica = r.int32();
      const messages: DecodedRecord[] = [];
      await decodeRecordSet(r, messages);
      partitions.push({
        partition,
        errorCode: partErrorCode,
        highWatermark,
        lastStableOffset,
        lastStartOffset,
        abortedTransactions,
        preferredReadReplica,
        messages,
      });
    }
    responses.push({ topicName, partitions });
  }
  return { throttleTime: 0, clientSideThrottleTime, errorCode, sessionId, responses };
}

/**
 * A Fetch v11 decoder: this module's, or kafkajs's `fallback` for what it
 * leaves to kafkajs (see the module's documentation).
 */
export function fetchV11Decoder(fallback: Decode): Decode {
  return async (raw) => {
    try {
      return await decodeV11(raw);
    } catch (e) {
      if (e instanceof UseKafkajs) return await fallback(raw);
      throw e; // a codec's error, as kafkajs would throw it
    }
  };
}

const INSTALLED = Symbol.for("txpipe.fetchDecoding");

/** kafkajs's own Fetch v11 decoder, as it was before {@link installFetchDecoding}. */
export const kafkajsFetchV11Decode: Decode = (fetchV11 as unknown as { decode: Decode }).decode;

/**
 * Replaces kafkajs's Fetch v11 response decoder with {@link fetchV11Decoder}.
 * Idempotent. Must come before read_committed.ts's filter, which wraps
 * whatever decoder it finds: patchKafkajs (kafkajs_patches.ts) installs both
 * in that order, and this throws if the filter is already in place.
 */
export function installFetchDecoding(): void {
  const mod = fetchV11 as unknown as { decode: Decode; [k: symbol]: unknown };
  if (mod[INSTALLED]) return;
  if (typeof mod.decode !== "function") {
    throw new Error("kafkajs Fetch v11 decoder not found: txpipe needs kafkajs 2.2.4 (deno.json)");
  }
  if (mod[Symbol.for("txpipe.readCommitted")]) {
    throw new Error("installFetchDecoding must come before installReadCommitted (patchKafkajs)");
  }
  mod.decode = fetchV11Decoder(kafkajsFetchV11Decode);
  mod[INSTALLED] = true;
}
