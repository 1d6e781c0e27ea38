import type { Collection } from 'mongodb';
import type { Party, SourceKind } from '../domain/schemas';
import { COLLECTIONS, type Store } from './db';

export interface SourceDoc {
  _id: string;
  name: string;
  kind: SourceKind;
  party: Party;
  labels: string[];
  writeKeyHash: string;
  createdAt: Date;
}

/** Write keys are looked up by the hash of the key, as an exact `_id`; the key itself is never stored. */
interface SourceKeyDoc {
  _id: string;
  sourceId: string;
}

export class SourceStore {
  private readonly sources: Collection<SourceDoc>;
  private readonly keys: Collection<SourceKeyDoc>;

  constructor(store: Store) {
    this.sources = store.db.collection<SourceDoc>(COLLECTIONS.sources);
    this.keys = store.db.collection<SourceKeyDoc>(COLLECTIONS.sourceKeys);
  }

  async create(source: SourceDoc): Promise<void> {
    await this.sources.insertOne(source);
    try {
      await this.keys.insertOne({ _id: source.writeKeyHash, sourceId: source._id });
    } catch (error) {
      await this.sources.deleteOne({ _id: source._id });
      throw error;
    }
  }

  /** Undoes `create` when the source's workflow could not be started, so nothing is left half-made. */
  async remove(source: SourceDoc): Promise<void> {
    await this.keys.deleteOne({ _id: source.writeKeyHash });
    await this.sources.deleteOne({ _id: source._id });
  }

  get(id: string): Promise<SourceDoc | null> {
    return this.sources.findOne({ _id: id });
  }

  async sourceIdForKeyHash(keyHash: string): Promise<string | null> {
    return (await this.keys.findOne({ _id: keyHash }))?.sourceId ?? null;
  }

  list(): Promise<SourceDoc[]> {
    return this.sources.find({}).sort({ createdAt: 1 }).toArray();
  }
}
