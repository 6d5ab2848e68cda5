/**
 * Named state stores over a partition's one changelog.
 *
 * A processor declares its stores ({@link StreamProcessor.stores}); they all
 * live in its one compacted changelog topic, one partition per source
 * partition. A store's entries are told apart by their changelog key:
 *
 *     <store name> U+001F <key>      a store's entry
 *     <key>                          an entry of the unprefixed store (at most one)
 *
 * U+001F (unit separator) may not appear in a store name, so the prefix ends
 * at the first one; keys themselves may hold anything. A key is read as
 * prefixed when the text before its first U+001F is the name of one of the
 * processor's prefixed stores; anything else is the unprefixed store's, or,
 * when the processor says so ({@link StreamProcessor.legacy}), an entry
 * written before named stores, rewritten into the stores before the first
 * batch after a restore. A put that would read back otherwise (a key of the
 * unprefixed store that starts with a prefixed store's prefix) throws.
 *
 * So a processor with one store declared `unprefixed` keeps the changelog
 * format of before (detect's per-user keys), and a changelog an older
 * version wrote restores into the right stores. The runtime's own keys
 * (`__txpipe_next_offset__`, `__txpipe_restore_barrier__`, stream.ts) never
 * reach a store: the runtime reads them aside before restoring.
 *
 * @module
 */
import type { PartitionState, Store, StoreEntry, StoreOptions, StreamProcessor } from "./stream.ts";

/** What ends a store's prefix in a changelog key. */
export const STORE_SEPARATOR = "\u001f";

/** The changelog key of `key` in store `store` (unprefixed: undefined). */
export function changelogKey(store: string | undefined, key: string): string {
  return store === undefined ? key : store + STORE_SEPARATOR + key;
}

/** A processor's stores over a partition state: the typed views and the restore of old entries. */
export class StoreLayout<S> {
  readonly #prefixed = new Set<string>();
  readonly #unprefixed: string | undefined;
  readonly #legacy: StreamProcessor<unknown, S>["legacy"];
  readonly #migrated = new WeakSet<PartitionState>();
  readonly #views = new WeakMap<PartitionState, Map<string, Store<unknown>>>();

  constructor(processor: Pick<StreamProcessor<unknown, S>, "name" | "stores" | "legacy">) {
    let unprefixed: string | undefined;
    for (const [name, options] of Object.entries<StoreOptions>(processor.stores ?? {})) {
      if (name === "" || name.includes(STORE_SEPARATOR)) {
        throw new Error(
          `${processor.name}: store name ${JSON.stringify(name)} is empty or holds U+001F`,
        );
      }
      if (options.unprefixed) {
        if (unprefixed !== undefined) {
          throw new Error(
            `${processor.name}: one unprefixed store at most, given ${unprefixed} and ${name}`,
          );
        }
        unprefixed = name;
      } else this.#prefixed.add(name);
    }
    this.#unprefixed = unprefixed;
    this.#legacy = processor.legacy;
  }

  /** The store a changelog key belongs to, and its key there (store undefined: an unprefixed key). */
  decode(changelogKey: string): { store: string | undefined; key: string } {
    const i = changelogKey.indexOf(STORE_SEPARATOR);
    if (i > 0) {
      const store = changelogKey.slice(0, i);
      if (this.#prefixed.has(store)) return { store, key: changelogKey.slice(i + 1) };
    }
    return { store: undefined, key: changelogKey };
  }

  /** Store `name`'s view of `state` (made once per state and store). */
  view<K extends keyof S & string>(state: PartitionState, name: K): Store<S[K]> {
    let views = this.#views.get(state);
    if (!views) this.#views.set(state, views = new Map());
    let view = views.get(name);
    if (!view) views.set(name, view = this.#view(state, name));
    return view as Store<S[K]>;
  }

  #view<K extends keyof S & string>(state: PartitionState, name: K): Store<S[K]> {
    if (name === this.#unprefixed) return this.#unprefixedView(state);
    if (!this.#prefixed.has(name)) throw new Error(`no store ${name}: not declared`);
    const prefix = name + STORE_SEPARATOR;
    return {
      get: (key) => state.get(prefix + key) as S[K] | undefined,
      put: (key, value) => state.put(prefix + key, value),
      delete: (key) => state.delete(prefix + key),
      entries: function* () {
        for (const [k, v] of state.entries()) {
          if (k.startsWith(prefix)) yield [k.slice(prefix.length), v as S[K]];
        }
      },
    };
  }

  #unprefixedView<V>(state: PartitionState): Store<V> {
    const unambiguous = this.#prefixed.size === 0;
    const own = (key: string) => unambiguous || this.decode(key).store === undefined;
    return {
      get: (key) => own(key) ? state.get(key) as V | undefined : undefined,
      put: (key, value) => {
        if (!own(key)) {
          throw new Error(`key ${JSON.stringify(key)} would read back as another store's`);
        }
        state.put(key, value);
      },
      delete: (key) => {
        if (own(key)) state.delete(key);
      },
      entries: function* () {
        for (const [k, v] of state.entries()) if (own(k)) yield [k, v as V];
      },
    };
  }

  /**
   * Rewrites into the stores, once per state object (after each restore),
   * the unprefixed entries the processor's `legacy` claims: their new keys
   * put, their old keys deleted, all in the next batch's changes.
   */
  migrate(state: PartitionState): void {
    if (this.#migrated.has(state)) return;
    this.#migrated.add(state);
    const legacy = this.#legacy;
    if (legacy === undefined && this.#unprefixed !== undefined) return;
    const found: Array<[string, ReadonlyArray<StoreEntry<S>>]> = [];
    for (const [key, value] of state.entries()) {
      if (this.decode(key).store !== undefined) continue;
      const entries = legacy?.(key, value);
      if (entries) found.push([key, entries]);
      else if (this.#unprefixed === undefined) {
        throw new Error(`changelog key ${JSON.stringify(key)} belongs to no store`);
      }
    }
    for (const [key, entries] of found) {
      state.delete(key);
      for (const [store, k, v] of entries) this.view(state, store).put(k, v);
    }
  }
}

const layouts = new WeakMap<object, unknown>();

/** The store layout of `processor` (made once per processor object). */
export function storeLayout<S>(processor: StreamProcessor<unknown, S>): StoreLayout<S> {
  const known = layouts.get(processor);
  if (known) return known as StoreLayout<S>;
  const layout = new StoreLayout<S>(processor);
  layouts.set(processor, layout);
  return layout;
}
