import { Binary, BSON, type Collection } from 'mongodb';
import type { ItemNeighbours } from '../domain/recommendations';
import { findByIds, forEachConcurrently, replaceUnlessNewer, type Store } from './db';

export const ITEM_MODEL_COLLECTIONS = {
  /** A build's neighbour lists, `<buildId>:<n>`, MODEL_CHUNK_ITEMS items each (one binary value: the store converts nothing). */
  chunks: 'item_model_chunks',
  /** `current`: the build the API serves, and the one before it (removed once the new one is published). */
  head: 'item_model_head',
} as const;

export interface ItemModelHead {
  _id: 'current';
  buildId: string;
  /** When the build's pass began. */
  at: Date;
  chunks: number;
  items: number;
  people: number;
  eventTypes: string[];
  previous: { buildId: string; chunks: number } | null;
}

interface ModelChunk {
  _id: string;
  body: Binary;
}

/** The item model: chunks written by key, then published by replacing the head; read whole by the API. */
export class ItemModelStore {
  readonly chunks: Collection<ModelChunk>;
  readonly heads: Collection<ItemModelHead>;

  constructor(store: Store) {
    this.chunks = store.db.collection<ModelChunk>(ITEM_MODEL_COLLECTIONS.chunks);
    this.heads = store.db.collection<ItemModelHead>(ITEM_MODEL_COLLECTIONS.head);
  }

  head(): Promise<ItemModelHead | null> {
    return this.heads.findOne({ _id: 'current' });
  }

  /** Writes a build's chunks (the same ids again on a retry). */
  async writeChunks(buildId: string, chunks: ItemNeighbours[][]): Promise<void> {
    await forEachConcurrently(
      chunks.map((items, n) => ({ n, items })),
      4,
      async ({ n, items }) => {
        await this.chunks.replaceOne({ _id: `${buildId}:${n}` }, { body: new Binary(BSON.serialize({ items })) }, { upsert: true });
      },
    );
  }

  /** Makes a build the served one, unless a build begun later is served already. */
  publish(head: ItemModelHead): Promise<void> {
    return replaceUnlessNewer(this.heads, head);
  }

  /** Removes a build's chunks, by key. */
  async drop(build: { buildId: string; chunks: number }): Promise<void> {
    await forEachConcurrently(
      Array.from({ length: build.chunks }, (_, n) => n),
      4,
      async (n) => {
        await this.chunks.deleteOne({ _id: `${build.buildId}:${n}` });
      },
    );
  }

  /** A build's neighbour lists, by item. */
  async read(head: ItemModelHead): Promise<Map<string, ItemNeighbours>> {
    const found = await findByIds(this.chunks, Array.from({ length: head.chunks }, (_, n) => `${head.buildId}:${n}`), 4);
    const model = new Map<string, ItemNeighbours>();
    for (const chunk of found.values()) for (const item of (BSON.deserialize(chunk.body.buffer) as { items: ItemNeighbours[] }).items) model.set(item.item, item);
    return model;
  }
}
