/**
 * Faster produce requests for the producer job (delivery.ts) and the stream
 * jobs' transactional sends (sendByPartition in kafka.ts): their records are
 * encoded once per request by txpipe ({@link encodeRecords}: one buffer, no per-record
 * allocation, CRC32C sliced by 8) instead of by kafkajs 2.2.4, whose encoder
 * allocates a 512-byte Buffer per record and copies each record three times
 * more (profiled: Buffer allocation and copies, kafkajs's record encoding and
 * its byte-at-a-time CRC32C took 30 % of the producer's busy time).
 *
 * The bytes are kafkajs's own (the unit test compares them): records with
 * offset deltas 0, 1, … and timestamp delta 0 (no record of the producer
 * carries a timestamp of its own, so kafkajs stamps them all with the time
 * of the request), in a RecordBatch v2 whose header (producer id, epoch,
 * first sequence, first/max timestamp, CRC) is written per request, as
 * kafkajs writes it. Only the encoding changes: kafkajs still decides the
 * sequence numbers, the broker, the retries and reads the answer.
 *
 * How: {@link prepare} attaches the encoded records to the message objects
 * of one kafkajs send (one partition's request, see delivery.ts), and
 * {@link installRecordBatchEncoding} (called by patchKafkajs,
 * kafkajs_patches.ts) wraps kafkajs's Broker.produce so that a request whose partitions
 * are all prepared, uncompressed and of produce version 3 or later (every
 * version Kafka 4 accepts) is encoded here. Any other request (another
 * producer's, a compressed one, messages changed since) goes through
 * kafkajs unchanged.
 *
 * Installed before produce_timeout.ts's wrapper (patchKafkajs does): that
 * one wraps Broker.produce in turn, and its checks (revoked sends) and
 * timeout handling must see these requests too.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import Broker from "kafkajs/src/broker/index.js";
import Encoder from "kafkajs/src/protocol/encoder.js";
import apiKeys from "kafkajs/src/protocol/requests/apiKeys.js";
import requestsModule from "kafkajs/src/protocol/requests/index.js";

/** The records of one produce request, encoded. */
export interface EncodedRecords {
  /** Records, as they follow a RecordBatch header. */
  bytes: Uint8Array;
  count: number;
}

/** A record as the producer hands it to kafkajs (kafkajs's Message, without timestamps). */
export interface RecordInput {
  key?: Uint8Array | string | null;
  value: Uint8Array | string | null;
  headers?: Record<string, Uint8Array | string | Array<Uint8Array | string> | undefined>;
  timestamp?: string;
}

const utf8 = new TextEncoder();

/** Zigzag varint size of a 32-bit signed value (kafkajs's writeVarInt). */
function varIntSize(v: number): number {
  let z = ((v << 1) ^ (v >> 31)) >>> 0;
  let n = 1;
  while (z >= 0x80) {
    z >>>= 7;
    n++;
  }
  return n;
}

function writeVarInt(buf: Uint8Array, at: number, v: number): number {
  let z = ((v << 1) ^ (v >> 31)) >>> 0;
  while (z >= 0x80) {
    buf[at++] = (z & 0x7f) | 0x80;
    z >>>= 7;
  }
  buf[at++] = z;
  return at;
}

/**
 * A key, value or header value as it is written: bytes, or a string of
 * ASCII (copied into the request a character at a time, with no buffer of
 * its own: the allocation, not the copy, was the cost), or null. Other
 * strings as their UTF-8, as kafkajs writes them.
 */
type Part = Uint8Array | string | null;

function partOf(v: unknown): Part {
  if (v === null || v === undefined) return null;
  if (v instanceof Uint8Array) return v;
  const s = String(v);
  for (let i = 0; i < s.length; i++) {
    if (s.charCodeAt(i) > 0x7f) return utf8.encode(s);
  }
  return s;
}

/** UTF-8 of `s`; short ASCII strings (header names) without a call into the runtime's encoder. */
function stringBytes(s: string): Uint8Array {
  if (s.length > 64) return utf8.encode(s);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0x7f) return utf8.encode(s);
    out[i] = c;
  }
  return out;
}

/** Header names, encoded once. */
const headerNames = new Map<string, Uint8Array>();

function headerName(name: string): Uint8Array {
  let b = headerNames.get(name);
  if (!b) {
    b = stringBytes(name);
    if (headerNames.size < 1000) headerNames.set(name, b);
  }
  return b;
}

/**
 * The records of one produce request, as kafkajs 2.2.4 encodes them for
 * messages without a timestamp: offset delta i, timestamp delta 0.
 * Throws for a message with a timestamp (the caller leaves those to kafkajs).
 */
export function encodeRecords(messages: readonly RecordInput[]): EncodedRecords {
  const parts: Array<{ key: Part; value: Part; headers: Part[] }> = new Array(messages.length);
  const bodies = new Array<number>(messages.length);
  let total = 0;
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i];
    if (m.timestamp !== undefined && m.timestamp !== null) {
      throw new Error("encodeRecords: messages with a timestamp are left to kafkajs");
    }
    const key = partOf(m.key);
    const value = partOf(m.value);
    const headers: Part[] = []; // name, value, name, value, …
    let body = 1 + 1 + varIntSize(i); // attributes, timestamp delta 0, offset delta
    body += key ? varIntSize(key.length) + key.length : 1;
    body += value ? varIntSize(value.length) + value.length : 1;
    let headerCount = 0;
    for (const name in m.headers ?? {}) {
      const given = m.headers![name];
      for (const v of Array.isArray(given) ? given : [given]) {
        const k = headerName(name);
        const hv = partOf(v);
        headers.push(k, hv);
        body += varIntSize(k.length) + k.length + (hv ? varIntSize(hv.length) + hv.length : 1);
        headerCount++;
      }
    }
    body += varIntSize(headerCount);
    parts[i] = { key, value, headers };
    bodies[i] = body;
    total += varIntSize(body) + body;
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (let i = 0; i < messages.length; i++) {
    const { key, value, headers } = parts[i];
    at = writeVarInt(out, at, bodies[i]);
    out[at++] = 0; // attributes
    out[at++] = 0; // timestamp delta 0
    at = writeVarInt(out, at, i);
    at = writeBytes(out, at, key);
    at = writeBytes(out, at, value);
    at = writeVarInt(out, at, headers.length / 2);
    for (let h = 0; h < headers.length; h += 2) {
      at = writeBytes(out, at, headers[h]);
      at = writeBytes(out, at, headers[h + 1]);
    }
  }
  return { bytes: out, count: messages.length };
}

function writeBytes(buf: Uint8Array, at: number, b: Part): number {
  if (b === null) return writeVarInt(buf, at, -1);
  at = writeVarInt(buf, at, b.length);
  if (typeof b === "string") {
    for (let i = 0; i < b.length; i++) buf[at + i] = b.charCodeAt(i);
  } else buf.set(b, at);
  return at + b.length;
}

/** CRC32C tables for slicing by 8 (Castagnoli polynomial, reflected). */
const CRC_TABLES = (() => {
  const t = new Int32Array(8 * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c;
  }
  for (let n = 0; n < 256; n++) {
    for (let s = 1; s < 8; s++) {
      t[s * 256 + n] = (t[(s - 1) * 256 + n] >>> 8) ^ t[t[(s - 1) * 256 + n] & 0xff];
    }
  }
  return t;
})();

/** CRC32C of `buf` (as Kafka's RecordBatch CRC), as an unsigned 32-bit integer. */
export function crc32c(buf: Uint8Array): number {
  const t = CRC_TABLES;
  let crc = -1;
  let i = 0;
  const end8 = buf.length - (buf.length % 8);
  for (; i < end8; i += 8) {
    const a = crc ^ (buf[i] | (buf[i + 1] << 8) | (buf[i + 2] << 16) | (buf[i + 3] << 24));
    crc = t[1792 + (a & 0xff)] ^ t[1536 + ((a >>> 8) & 0xff)] ^ t[1280 + ((a >>> 16) & 0xff)] ^
      t[1024 + (a >>> 24)] ^ t[768 + buf[i + 4]] ^ t[512 + buf[i + 5]] ^ t[256 + buf[i + 6]] ^
      t[buf[i + 7]];
  }
  for (; i < buf.length; i++) crc = t[(crc ^ buf[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ -1) >>> 0;
}

/** Prepared records by the first message object of the send they were prepared for. */
const prepared = new WeakMap<object, { messages: readonly object[]; records: EncodedRecords }>();

/** Requests encoded here, for tests and diagnosis. */
export const fastRequests = { count: 0 };

/**
 * Attaches `records` (the encoding of `messages`) to the message objects of
 * one kafkajs send: a produce request carrying exactly these objects, in
 * this order, as one partition's records, is encoded from `records`.
 */
export function prepare(messages: readonly object[], records: EncodedRecords): void {
  if (messages.length === 0 || messages.length !== records.count) return;
  prepared.set(messages[0], { messages, records });
}

/** The prepared records of a partition's messages in a request, if they are exactly a prepared send. */
function preparedFor(messages: readonly object[] | undefined): EncodedRecords | undefined {
  if (!messages || messages.length === 0) return undefined;
  const p = prepared.get(messages[0]);
  if (!p || p.messages.length !== messages.length) return undefined;
  for (let i = 0; i < messages.length; i++) if (p.messages[i] !== messages[i]) return undefined;
  return p.records;
}

/** A producer id as kafkajs passes it: a string (from InitProducerId), its Long (a BigInt in `value`), a number. */
export type Long = { value: bigint } | number | string;

export interface ProduceArgs {
  topicData: Array<{
    topic: string;
    partitions: Array<{ partition: number; firstSequence?: number; messages: object[] }>;
  }>;
  transactionalId?: string | null;
  producerId?: Long | number;
  producerEpoch?: number;
  acks?: number;
  timeout?: number;
  compression?: number;
}

/** Bytes of a RecordBatch v2 header, firstOffset to record count. */
const BATCH_HEADER = 8 + 4 + 4 + 1 + 4 + 2 + 4 + 8 + 8 + 8 + 2 + 4 + 4;

/** The body of a produce request v3…v7 (they are the same), for prepared partitions. */
export function encodeProduce(args: ProduceArgs, batches: EncodedRecords[][]): Uint8Array {
  const names = args.topicData.map((t) => utf8.encode(t.topic));
  const txId = args.transactionalId == null ? null : utf8.encode(args.transactionalId);
  let size = 2 + (txId?.length ?? 0) + 2 + 4 + 4;
  args.topicData.forEach((_, i) => {
    size += 2 + names[i].length + 4;
    for (const r of batches[i]) size += 4 + 4 + BATCH_HEADER + r.bytes.length;
  });
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  let at = 0;
  view.setInt16(at, txId ? txId.length : -1);
  at += 2;
  if (txId) out.set(txId, at), at += txId.length;
  view.setInt16(at, args.acks ?? -1);
  view.setInt32(at + 2, args.timeout ?? 30_000);
  view.setInt32(at + 6, args.topicData.length);
  at += 10;
  const now = Date.now();
  const producerId = int64(args.producerId ?? -1);
  args.topicData.forEach((t, ti) => {
    view.setInt16(at, names[ti].length);
    out.set(names[ti], at + 2);
    at += 2 + names[ti].length;
    view.setInt32(at, t.partitions.length);
    at += 4;
    t.partitions.forEach((p, pi) => {
      const records = batches[ti][pi];
      const batchSize = BATCH_HEADER + records.bytes.length;
      view.setInt32(at, p.partition);
      view.setInt32(at + 4, batchSize);
      at += 8;
      const start = at;
      view.setBigInt64(at, 0n); // first offset
      view.setInt32(at + 8, batchSize - 12); // length: what follows it
      view.setInt32(at + 12, 0); // partition leader epoch
      out[at + 16] = 2; // magic
      const crcAt = at + 17;
      at += 21;
      const crcFrom = at;
      view.setInt16(at, args.transactionalId ? 16 : 0); // attributes: no compression
      view.setInt32(at + 2, records.count - 1); // last offset delta
      view.setBigInt64(at + 6, BigInt(now)); // first timestamp
      view.setBigInt64(at + 14, BigInt(now)); // max timestamp
      view.setBigInt64(at + 22, producerId);
      view.setInt16(at + 30, args.producerEpoch ?? 0);
      view.setInt32(at + 32, p.firstSequence ?? 0);
      view.setInt32(at + 36, records.count);
      at += 40;
      out.set(records.bytes, at);
      at += records.bytes.length;
      view.setUint32(crcAt, crc32c(out.subarray(crcFrom, at)));
      if (at - start !== batchSize) throw new Error("record batch size mismatch");
    });
  });
  return out;
}

function int64(v: Long): bigint {
  return typeof v === "object" && v !== null && "value" in v ? BigInt(v.value) : BigInt(String(v));
}

// deno-lint-ignore no-explicit-any
type Any = any;

const INSTALLED = Symbol.for("txpipe.recordBatch");

/**
 * Wraps kafkajs's Broker.produce so that prepared requests are encoded here
 * (see the module documentation). Idempotent. Called by patchKafkajs
 * (kafkajs_patches.ts), before produce_timeout.ts's wrapper, which must see
 * these requests too.
 */
export function installRecordBatchEncoding(): void {
  const proto = Broker.prototype as Record<string | symbol, Any>;
  if (proto[INSTALLED]) return;
  const base = proto.produce;
  const SEND_REQUEST = Object.getOwnPropertySymbols(proto)
    .find((s) => s.description === "private:Broker:sendRequest");
  const { requests } = requestsModule as Any;
  if (typeof base !== "function" || !SEND_REQUEST || !requests?.Produce) {
    throw new Error("kafkajs Broker.produce internals not found: expected kafkajs 2.2.4");
  }
  proto.produce = async function (this: Any, args: ProduceArgs) {
    const batches = args.compression ? undefined : preparedBatches(args);
    if (!batches) return await base.call(this, args);
    const protocol = this.lookupRequest(apiKeys.Produce, requests.Produce)({
      acks: args.acks ?? -1,
      timeout: args.timeout ?? 30_000,
      compression: 0,
      topicData: args.topicData,
      transactionalId: args.transactionalId,
      producerId: args.producerId,
      producerEpoch: args.producerEpoch,
    });
    if (!(protocol.request.apiVersion >= 3)) return await base.call(this, args);
    protocol.request.encode = () => {
      const body = encodeProduce(args, batches);
      // kafkajs frames the request around an Encoder holding these bytes.
      const encoder = new Encoder(0);
      encoder.buf = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
      encoder.offset = body.byteLength;
      return Promise.resolve(encoder);
    };
    fastRequests.count++;
    return await this[SEND_REQUEST!](protocol);
  };
  proto[INSTALLED] = true;
}

function preparedBatches(args: ProduceArgs): EncodedRecords[][] | undefined {
  const out: EncodedRecords[][] = [];
  for (const t of args.topicData ?? []) {
    const list: EncodedRecords[] = [];
    for (const p of t.partitions ?? []) {
      const records = preparedFor(p.messages);
      if (!records) return undefined;
      list.push(records);
    }
    out.push(list);
  }
  return out.length > 0 ? out : undefined;
}
