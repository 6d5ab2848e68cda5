/**
 * Group by key, window by event time: a two-stage topology the runtime
 * provides, so a job supplies only what differs (parse, the grouping key,
 * the window's partial, merge and output) and this module owns the rest.
 *
 *   source (any key)
 *     stage 1 ("rekey", state: store `progress`)
 *     → records behind their input partition's watermark → dead letters (late_record)
 *     → per batch, one partial per group key and window (`add`)
 *     → the partials, keyed by group, onto the repartition topic, then, when
 *       the partition's watermark advanced, one marker per repartition partition
 *   repartition
 *     stage 2 ("windows", state: stores `windows` and `watermarks`)
 *     → partials merged into their windows (`merge`)
 *     → markers: each input partition's watermark
 *     → at the end of a batch, every window the lowest input watermark has
 *       passed, by window start then `order`: out (`close`) and deleted
 *
 * The watermark of an input partition is its highest event time minus the
 * allowed lateness. Markers travel with the records, after the batch's
 * partials, so a window never closes before its records arrive, and it
 * closes only once every input partition's watermark has passed it: its
 * content depends neither on timing, instance count nor crashes.
 *
 * The wire format, which a running deployment upgrades over in place: a
 * partial is its JSON (key: the group key); a marker has key
 * `__watermark__`, header `txpipe-watermark: 1`, an explicit partition, and
 * value `{"source":<input partition>,"watermark":<ms>}`.
 *
 * The changelogs: stage 1 keeps the progress under the unprefixed key
 * `progress`, stage 2 its windows under their unprefixed `windowKey` and the
 * watermarks under `watermarks` U+001F <input partition> (stores.ts); an
 * older stage 2 changelog's single `watermarks` entry (all input partitions)
 * restores into the `watermarks` store.
 *
 * @module
 */
import type {
  OutputRecord,
  Parsed,
  ProcessContext,
  SourceRecord,
  StreamProcessor,
} from "./stream.ts";
import { combinedWatermark, watermark, windowStart } from "./windows.ts";
import { lateRecords, watermarkSeconds } from "./metrics.ts";

/** Key of a watermark marker on the repartition topic. */
export const MARKER_KEY = "__watermark__";
/** Header marking a watermark marker (value "1"). */
export const MARKER_HEADER = "txpipe-watermark";
/** "No event seen yet": JSON-safe, unlike -Infinity. */
const NEVER = Number.MIN_SAFE_INTEGER;

/** A window's partial or total: the event-time range it covers. */
export interface Window {
  readonly windowStart: number;
  readonly windowEnd: number;
}

/** What a job supplies to {@link windowedAggregation}. */
export interface WindowedAggregationOptions<T, W extends Window> {
  /** Job name: logs, metrics, dead-letter headers. */
  readonly name: string;
  /** Stage 1's group is `<appId>-rekey`, stage 2's `<appId>-windows`. */
  readonly appId: string;
  readonly input: string;
  /** The internal topics: the repartition topic and the two stages' changelogs. */
  readonly topics: { repartition: string; rekeyChangelog: string; changelog: string };
  readonly inputPartitions: number;
  readonly repartitionPartitions: number;
  /** Tumbling windows of this size. */
  readonly windowMs: number;
  readonly allowedLatenessMs: number;
  /**
   * Stage 1 fetches an input partition only while its event time is at most
   * this far ahead of the slowest one's (alignment.ts; 0 or none: no alignment).
   */
  readonly maxDriftMs?: number;
  /** Decodes and validates an input record. */
  readonly parse: (record: SourceRecord) => Parsed<T>;
  /** A value's event time, and the name of its field (in the late records' message). */
  readonly eventTime: { readonly field: string; readonly of: (value: T) => number };
  /** The group key: values of one group and window are aggregated together. */
  readonly groupBy: (value: T) => string;
  /**
   * Adds a value to a window's partial (undefined: a new one). The partial
   * is the batch's own until the batch ends, so `add` may change it in
   * place and return it.
   */
  readonly add: (partial: W | undefined, value: T) => W;
  /** Merges a partial into the window's total (undefined: a new window). */
  readonly merge: (total: W | undefined, partial: W) => W;
  /** A partial from a repartition record's JSON value; undefined when it is none. */
  readonly decodePartial: (value: unknown) => W | undefined;
  /** A partial's repartition value, which `decodePartial` reads back (default: its JSON). */
  readonly encodePartial?: (window: W) => string;
  /** What `decodePartial` takes, for the dead letter of a record it refuses. */
  readonly partialDescription: string;
  /** A window's key in stage 2's `windows` store (unique per group and window). */
  readonly windowKey: (window: W) => string;
  /** The order of closed windows of the same start. */
  readonly order: (a: W, b: W) => number;
  /** The output record of a closed window. */
  readonly close: (window: W) => OutputRecord;
}

/** Stage 1's state: one input partition's highest event time seen and the watermark marked. */
export interface InputProgress {
  maxEventTime: number;
  marked: number;
}

/** Stage 1's stores: the progress, under the one key "progress". */
export type RekeyStores = { progress: InputProgress };
/** Stage 2's stores: open windows by window key, watermarks by input partition. */
export type WindowStores<W> = { windows: W; watermarks: number };

/** A repartition record: a partial, or an input partition's watermark. */
export type Repartitioned<W> =
  | { kind: "partial"; window: W }
  | { kind: "watermark"; source: number; watermark: number };

const PROGRESS = "progress";
const decoder = new TextDecoder();

/** The two stages of a windowed aggregation over a repartition topic; see the module documentation. */
export function windowedAggregation<T, W extends Window>(o: WindowedAggregationOptions<T, W>): {
  rekey: StreamProcessor<T, RekeyStores>;
  windows: StreamProcessor<Repartitioned<W>, WindowStores<W>>;
} {
  return { rekey: rekeyStage(o), windows: windowStage(o) };
}

/** Stage 1's batch in progress on one input partition. */
interface RekeyBatch<W> {
  /** The batch's partials by window and group, in the order they began. */
  readonly partials: Map<string, { readonly key: string; partial: W }>;
  /** The highest event time applied, this batch's included. */
  maxEventTime: number;
}

function rekeyStage<T, W extends Window>(
  o: WindowedAggregationOptions<T, W>,
): StreamProcessor<T, RekeyStores> {
  const groupId = `${o.appId}-rekey`;
  // The batch in progress by input partition: its partials by window and
  // group, and the highest event time so far (into the store at its end).
  const batches = new Map<number, RekeyBatch<W>>();
  const progressOf = (ctx: ProcessContext<RekeyStores>) =>
    ctx.store("progress").get(PROGRESS) ?? { maxEventTime: NEVER, marked: NEVER };
  const batchOf = (ctx: ProcessContext<RekeyStores>) => {
    let b = batches.get(ctx.partition);
    if (!b) {
      batches.set(
        ctx.partition,
        b = { partials: new Map(), maxEventTime: progressOf(ctx).maxEventTime },
      );
    }
    return b;
  };
  // Each input partition's highest event time applied, for the alignment
  // (a hint: a batch run again only sets it again).
  const eventTimes = new Map<number, number>();
  return {
    name: o.name,
    groupId,
    source: o.input,
    changelog: o.topics.rekeyChangelog,
    stores: { progress: { unprefixed: true } },
    alignment: { maxDriftMs: o.maxDriftMs ?? 0, eventTime: (p) => eventTimes.get(p) },
    releasePartition: (p) => void eventTimes.delete(p),
    parse: o.parse,
    // Nothing from an earlier run of this batch (failed, abandoned) may reach this one.
    beginBatch: (ctx) => void batches.delete(ctx.partition),
    process: (value, record, ctx) => {
      const batch = batchOf(ctx);
      const t = o.eventTime.of(value);
      const wm = watermark(batch.maxEventTime, o.allowedLatenessMs);
      if (t < wm) {
        lateRecords.inc({ processor: groupId });
        ctx.deadLetter(
          record,
          "late_record",
          `${o.eventTime.field}: expected at least the watermark ${wm}, given ${t}`,
        );
        return;
      }
      const key = o.groupBy(value);
      // The window's start first: it holds no "|", so no two pairs give one id.
      const id = `${windowStart(t, o.windowMs)}|${key}`;
      const had = batch.partials.get(id);
      if (had === undefined) batch.partials.set(id, { key, partial: o.add(undefined, value) });
      else had.partial = o.add(had.partial, value);
      if (t > batch.maxEventTime) {
        batch.maxEventTime = t;
        eventTimes.set(ctx.partition, t);
      }
    },
    endBatch: (ctx) => {
      const encode = o.encodePartial ?? JSON.stringify;
      const batch = batchOf(ctx);
      batches.delete(ctx.partition);
      for (const { key, partial } of batch.partials.values()) {
        ctx.emit({ topic: o.topics.repartition, key, value: encode(partial) });
      }
      const before = progressOf(ctx);
      if (batch.maxEventTime > before.maxEventTime) {
        ctx.store("progress").put(PROGRESS, { ...before, maxEventTime: batch.maxEventTime });
      }
      const progress = ctx.store("progress").get(PROGRESS);
      if (!progress) return;
      const wm = watermark(progress.maxEventTime, o.allowedLatenessMs);
      if (wm <= progress.marked) return;
      // After this batch's partials, so a window never closes before its records arrive.
      for (let p = 0; p < o.repartitionPartitions; p++) {
        ctx.emit({
          topic: o.topics.repartition,
          key: MARKER_KEY,
          value: JSON.stringify({ source: ctx.partition, watermark: wm }),
          headers: { [MARKER_HEADER]: "1" },
          partition: p,
        });
      }
      ctx.store("progress").put(PROGRESS, { ...progress, marked: wm });
      watermarkSeconds.set({ processor: groupId, partition: String(ctx.partition) }, wm / 1000);
    },
  };
}

function windowStage<T, W extends Window>(
  o: WindowedAggregationOptions<T, W>,
): StreamProcessor<Repartitioned<W>, WindowStores<W>> {
  const groupId = `${o.appId}-windows`;
  return {
    name: o.name,
    groupId,
    source: o.topics.repartition,
    changelog: o.topics.changelog,
    stores: { windows: { unprefixed: true }, watermarks: {} },
    // Before named stores: every input partition's watermark in one "watermarks" entry.
    legacy: (key, value) => {
      if (key !== "watermarks" || typeof value !== "object" || value === null) return undefined;
      return Object.entries(value).flatMap(([source, wm]) =>
        typeof wm === "number" ? [["watermarks", source, wm] as const] : []
      );
    },
    parse: (r) => parseRepartitioned(r, o),
    process: (routed, _record, ctx) => {
      if (routed.kind === "watermark") {
        const marks = ctx.store("watermarks");
        const source = String(routed.source);
        const known = marks.get(source);
        if (known === undefined || !(known >= routed.watermark)) {
          marks.put(source, routed.watermark);
        }
        return;
      }
      const windows = ctx.store("windows");
      const key = o.windowKey(routed.window);
      windows.put(key, o.merge(windows.get(key), routed.window));
    },
    endBatch: (ctx) => {
      const marks = ctx.store("watermarks");
      const bySource: Record<string, number> = {};
      for (let p = 0; p < o.inputPartitions; p++) {
        const w = marks.get(String(p));
        if (w !== undefined) bySource[p] = w;
      }
      const wm = combinedWatermark(bySource, o.inputPartitions);
      if (wm === -Infinity) return;
      watermarkSeconds.set({ processor: groupId, partition: String(ctx.partition) }, wm / 1000);
      const windows = ctx.store("windows");
      const closed: W[] = [];
      for (const [, w] of windows.entries()) if (w.windowEnd <= wm) closed.push(w);
      closed.sort((a, b) => a.windowStart - b.windowStart || o.order(a, b));
      for (const w of closed) {
        windows.delete(o.windowKey(w));
        ctx.emit(o.close(w));
      }
    },
  };
}

/** A partial (as `decodePartial` takes it) or a marker; anything else is refused. */
function parseRepartitioned<W extends Window>(
  r: SourceRecord,
  o: Pick<WindowedAggregationOptions<unknown, W>, "decodePartial" | "partialDescription">,
): Parsed<Repartitioned<W>> {
  try {
    const v = JSON.parse(decoder.decode(r.value ?? new Uint8Array()));
    if (r.headers[MARKER_HEADER] === "1") {
      if (Number.isInteger(v.source) && typeof v.watermark === "number") {
        return { ok: true, value: { kind: "watermark", source: v.source, watermark: v.watermark } };
      }
    } else {
      const window = o.decodePartial(v);
      if (window !== undefined) return { ok: true, value: { kind: "partial", window } };
    }
  } catch { /* reported below */ }
  return {
    ok: false,
    reason: "invalid_repartition_record",
    message: `expected ${o.partialDescription} or a watermark marker from the rekey stage`,
  };
}
