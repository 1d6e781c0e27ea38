import type { Collection } from 'mongodb';
import type { ConsentPolicy, DrainPosition, Party, SourceKind, SourceState } from '../domain/schemas';
import type { FeedConfig } from '../domain/feeds';
import type { CrmMapping } from '../domain/uploads';
import { COLLECTIONS, isDuplicateKeyError, type Store } from './db';

export interface SourceDoc {
  _id: string;
  name: string;
  kind: SourceKind;
  party: Party;
  labels: string[];
  writeKeyHash: string;
  createdAt: Date;
  /** Absent on sources made before policies existed: they get DEFAULT_CONSENT_POLICY. */
  consent?: ConsentPolicy;
  /** How a `crm` source's uploads are read. */
  mapping?: CrmMapping;
  /** Where a `feed` source's files come from, when, and how they are read. */
  feed?: FeedConfig;
  /** Whether draining is paused; absent means active. Set by the API, read when a workflow (re)starts. */
  state?: SourceState;
}

/**
 * Where a source's drain stands, written by the drain itself after each batch (one writer: the
 * source's workflow), so a terminated and restarted workflow resumes at its cursor with its counts.
 */
interface DrainPositionDoc extends DrainPosition {
  _id: string;
}

/** Write keys are looked up by the hash of the key, as an exact `_id`; the key itself is never stored. */
interface SourceKeyDoc {
  _id: string;
  sourceId: string;
}

export class SourceStore {
  private readonly sources: Collection<SourceDoc>;
  private readonly keys: Collection<SourceKeyDoc>;
  private readonly positions: Collection<DrainPositionDoc>;

  constructor(store: Store) {
    this.sources = store.db.collection<SourceDoc>(COLLECTIONS.sources);
    this.keys = store.db.collection<SourceKeyDoc>(COLLECTIONS.sourceKeys);
    this.positions = store.db.collection<DrainPositionDoc>(COLLECTIONS.drainPositions);
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

  async setState(id: string, state: SourceState): Promise<void> {
    await this.sources.updateOne({ _id: id }, { $set: { state } });
  }

  /** The drain's saved position, or null before its first batch. */
  async loadPosition(id: string): Promise<DrainPosition | null> {
    const doc = await this.positions.findOne({ _id: id });
    if (!doc) return null;
    const { _id, ...position } = doc;
    return position;
  }

  /**
   * Replaces the saved position by `_id`, unless the stored one is further on: the same batch saved
   * twice writes the same document, and a turn of a stalled worker, routing a range again after
   * another worker took the source over and went past it, cannot set the position back (a fresh
   * start would route from there again). When it is further on, the filter matches nothing and the
   * upsert's insert is a duplicate, which leaves it be. Atomic on MongoDB; on FerretDB a read and a
   * write back, which leaves a window of milliseconds, not a stall's length.
   */
  async savePosition(id: string, position: DrainPosition): Promise<void> {
    try {
      await this.positions.replaceOne({ _id: id, cursor: { $lte: position.cursor } }, position, { upsert: true });
    } catch (error) {
      if (!isDuplicateKeyError(error)) throw error;
    }
  }
}
