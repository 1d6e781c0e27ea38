import { Binary, BSON, type Collection } from 'mongodb';
import { rangesBySize } from '../domain/bySize';
import type { CooccurrenceState, ItemChange, ItemNeighbours } from '../domain/recommendations';
import { findByIds, forEachConcurrently, replaceUnlessNewer, type Store } from './db';
import { deflateSequence, inflateSequence } from './deflatedBson';
import { VersionClaims } from './versionClaims';

export const ITEM_MODEL_COLLECTIONS = {
  /** A build's neighbour lists, `<buildId>:<n>`, up to CHUNK_BYTES each (one binary value: the store converts nothing). */
  chunks: 'item_model_chunks',
  /** `current`: the build the API serves, and the one before it (removed once the new one is published). */
  head: 'item_model_head',
  /** A build's counts (items, people per item, pair counts), `<buildId>:<n>`, that refreshes apply changes to. */
  state: 'item_model_state',
  /** `full:<at>`: a full build under way, renewed while it runs: refreshes wait for it (see ItemModelStore.markFullBuild). */
  builds: 'item_model_builds',
  /** Per fold that changed someone's items (`_id` its write group): who, and their items before and after (objects: the store takes no nested arrays). */
  changes: 'item_changes',
} as const;

/** Pair counts per stored state chunk (16 bytes each: a chunk stays well under a document's 16 MB). */
const PAIRS_PER_CHUNK = 400_000;

/** The most a chunk's neighbour lists take as BSON: item names are up to 1 KB each. */
const CHUNK_BYTES = 8 * 1024 * 1024;
/** The most a state chunk's item names and their people take: beside up to PAIRS_PER_CHUNK pairs (6.4 MB). */
const STATE_NAME_BYTES = 4 * 1024 * 1024;

interface BuildUnderWay {
  _id: string;
  at: Date;
  until: Date;
}

const buildMarkId = (at: Date) => `full:${at.getTime()}`;

/** A build's stored parts: its neighbour chunks and its state chunks. */
export interface ItemModelBuild {
  buildId: string;
  chunks: number;
  stateChunks?: number;
}

export interface ItemChangesDoc {
  _id: string;
  at: Date;
  people: ItemChange[];
}

/**
 * An item change record as stored: its people as a deflated sequence (see deflateSequence), each
 * serialized on its own — thousands of people with dozens of long item names each pass what one
 * BSON document holds. Records written before hold them as a field.
 */
export type StoredItemChanges = Pick<ItemChangesDoc, '_id' | 'at'> & ({ parts: Binary } | Pick<ItemChangesDoc, 'people'>);

export function storedItemChanges({ _id, at, people }: ItemChangesDoc): StoredItemChanges {
  return { _id, at, parts: deflateSequence(people) };
}

export function itemChangesDoc(stored: StoredItemChanges): ItemChangesDoc {
  return 'parts' in stored ? { _id: stored._id, at: stored.at, people: inflateSequence<ItemChange>(stored.parts) } : stored;
}

export interface ItemModelHead {
  _id: 'current';
  buildId: string;
  /** When the build's pass began. */
  at: Date;
  chunks: number;
  items: number;
  people: number;
  eventTypes: string[];
  /** Chunks of the counts this build's neighbours came from. */
  stateChunks?: number;
  /** When the full build these counts descend from began (a refresh keeps it). */
  fullAt?: Date;
  /** The item change records this build applied (a retried refresh skips them). */
  applied?: string[];
  previous: ItemModelBuild | null;
}

interface ModelChunk {
  _id: string;
  body: Binary;
}

interface StateChunk {
  _id: string;
  names?: string[];
  people?: number[];
  pairs: Binary;
}

/** The item model: chunks written by key, then published by replacing the head; read whole by the API. */
export class ItemModelStore {
  readonly chunks: Collection<ModelChunk>;
  readonly heads: Collection<ItemModelHead>;
  readonly states: Collection<StateChunk>;
  readonly changes: Collection<StoredItemChanges>;
  private readonly builds: Collection<BuildUnderWay>;
  private readonly claims: VersionClaims;

  constructor(store: Store) {
    this.chunks = store.db.collection<ModelChunk>(ITEM_MODEL_COLLECTIONS.chunks);
    this.heads = store.db.collection<ItemModelHead>(ITEM_MODEL_COLLECTIONS.head);
    this.states = store.db.collection<StateChunk>(ITEM_MODEL_COLLECTIONS.state);
    this.changes = store.db.collection<StoredItemChanges>(ITEM_MODEL_COLLECTIONS.changes);
    this.builds = store.db.collection<BuildUnderWay>(ITEM_MODEL_COLLECTIONS.builds);
    this.claims = new VersionClaims(store);
  }

  /** Records a fold's item changes under its write group (a retry writes the same record). */
  async recordChanges(doc: ItemChangesDoc): Promise<void> {
    await this.changes.replaceOne({ _id: doc._id }, storedItemChanges(doc), { upsert: true });
  }

  /** Whether a fold's change record is held (not yet folded into a build, or never written). */
  async hasChanges(id: string): Promise<boolean> {
    return (await this.changes.findOne({ _id: id }, { projection: { _id: 1 } })) !== null;
  }

  /**
   * Whether no build can have folded in, or be folding in, a change record `id` written after
   * `writtenAt`, once `hasChanges` found it absent: the served build (`head`) and every full build
   * under way began before then, and the served one did not apply it. A build that took it in is
   * served before the record goes, and each later one begins after that.
   */
  async neverApplied(head: ItemModelHead, id: string, writtenAt: Date): Promise<boolean> {
    if (head.at >= writtenAt || (head.applied ?? []).includes(id)) return false;
    return (await this.builds.find({}).toArray()).every((mark) => mark.at < writtenAt);
  }

  /** Every change record not yet folded into a build, oldest first. A scan: the collection holds only those. */
  async pendingChanges(): Promise<ItemChangesDoc[]> {
    const docs = (await this.changes.find({}).toArray()).map(itemChangesDoc);
    return docs.sort((a, b) => a.at.getTime() - b.at.getTime() || (a._id < b._id ? -1 : 1));
  }

  /** Removes change records a published build holds. */
  async dropChanges(ids: string[]): Promise<void> {
    for (let start = 0; start < ids.length; start += 1000) await this.changes.deleteMany({ _id: { $in: ids.slice(start, start + 1000) } });
  }

  /**
   * Writes a build's counts (the same ids again on a retry); returns how many chunks hold them. The
   * pair counts, and the item names with their people, are each spread over the chunks in order.
   */
  async writeState(buildId: string, state: CooccurrenceState): Promise<number> {
    const names = rangesBySize(state.names, (name) => Buffer.byteLength(name) + 24, STATE_NAME_BYTES);
    const parts = Math.max(1, Math.ceil(state.pairs.length / 2 / PAIRS_PER_CHUNK), names.length);
    await forEachConcurrently(
      Array.from({ length: parts }, (_, n) => n),
      2,
      async (n) => {
        const pairs = state.pairs.subarray(n * PAIRS_PER_CHUNK * 2, (n + 1) * PAIRS_PER_CHUNK * 2);
        const [from, to] = names[n] ?? [0, 0];
        const body = { pairs: new Binary(new Uint8Array(pairs.buffer, pairs.byteOffset, pairs.byteLength)), names: state.names.slice(from, to), people: state.people.slice(from, to) };
        await this.states.replaceOne({ _id: `${buildId}:${n}` }, body, { upsert: true });
      },
    );
    return parts;
  }

  /** A build's counts; null when it has none stored (built before counts were kept, or removed). */
  async readState(head: ItemModelHead): Promise<CooccurrenceState | null> {
    if (!head.stateChunks) return null;
    const found = await findByIds(this.states, Array.from({ length: head.stateChunks }, (_, n) => `${head.buildId}:${n}`), 2);
    const parts = Array.from({ length: head.stateChunks }, (_, n) => found.get(`${head.buildId}:${n}`));
    if (parts.some((part) => !part) || !parts[0]?.names || !parts[0].people) return null;
    // Builds written before names were spread hold them all in the first chunk.
    const names = (parts as StateChunk[]).flatMap((part) => part.names ?? []);
    const people = (parts as StateChunk[]).flatMap((part) => part.people ?? []);
    const pairs = new Float64Array(parts.reduce((sum, part) => sum + (part as StateChunk).pairs.buffer.byteLength / 8, 0));
    let at = 0;
    for (const part of parts as StateChunk[]) {
      const bytes = part.pairs.buffer;
      // Copied through a fresh buffer: the driver's bytes need not be 8-byte aligned.
      pairs.set(new Float64Array(Uint8Array.from(bytes).buffer), at);
      at += bytes.byteLength / 8;
    }
    return { names, people, pairs };
  }

  head(): Promise<ItemModelHead | null> {
    return this.heads.findOne({ _id: 'current' });
  }

  /** Writes a build's neighbour lists in chunks of at most CHUNK_BYTES (the same ids again on a retry); returns how many. */
  async writeChunks(buildId: string, neighbours: ItemNeighbours[]): Promise<number> {
    const ranges = rangesBySize(neighbours, (item) => BSON.calculateObjectSize(item) + 16, CHUNK_BYTES);
    await forEachConcurrently(
      ranges.map(([from, to], n) => ({ n, items: neighbours.slice(from, to) })),
      4,
      async ({ n, items }) => {
        await this.chunks.replaceOne({ _id: `${buildId}:${n}` }, { body: new Binary(BSON.serialize({ items })) }, { upsert: true });
      },
    );
    return ranges.length;
  }

  /**
   * Marks a full build begun at `at` as under way until `until` (one mark per build: two may run at
   * once): a refresh begun meanwhile would be published before it with a later time, and the build
   * then dropped as older.
   */
  async markFullBuild(at: Date, until: Date): Promise<void> {
    await this.builds.replaceOne({ _id: buildMarkId(at) }, { at, until }, { upsert: true });
    // Marks of builds that died ran out long before: they go (a scan of a mark or two).
    await this.builds.deleteMany({ until: { $lt: at } });
  }

  /** Renews the mark of the build begun at `at`; one already ended is not made again. */
  async renewFullBuild(at: Date, until: Date): Promise<void> {
    await this.builds.updateOne({ _id: buildMarkId(at) }, { $set: { until } });
  }

  /** Ends the mark of the full build begun at `at`. */
  async endFullBuild(at: Date): Promise<void> {
    await this.builds.deleteOne({ _id: buildMarkId(at) });
  }

  /** Whether a full build is under way at `now`: one marked and renewed lately (a scan of a collection of a mark or two). */
  async fullBuildUnderWay(now: Date): Promise<boolean> {
    return (await this.builds.find({}).toArray()).some((mark) => mark.until > now);
  }

  /** Makes a build the served one, unless a build begun later is served already. */
  publish(head: ItemModelHead): Promise<void> {
    return replaceUnlessNewer(this.heads, head, this.claims);
  }

  /** Removes a build's chunks and counts, by key. */
  async drop(build: ItemModelBuild): Promise<void> {
    await forEachConcurrently(
      Array.from({ length: build.chunks }, (_, n) => n),
      4,
      async (n) => {
        await this.chunks.deleteOne({ _id: `${build.buildId}:${n}` });
      },
    );
    for (let n = 0; n < (build.stateChunks ?? 0); n++) await this.states.deleteOne({ _id: `${build.buildId}:${n}` });
  }

  /** A build's neighbour lists, by item. */
  async read(head: ItemModelHead): Promise<Map<string, ItemNeighbours>> {
    const found = await findByIds(this.chunks, Array.from({ length: head.chunks }, (_, n) => `${head.buildId}:${n}`), 4);
    const model = new Map<string, ItemNeighbours>();
    for (const chunk of found.values()) for (const item of (BSON.deserialize(chunk.body.buffer) as { items: ItemNeighbours[] }).items) model.set(item.item, item);
    return model;
  }
}
